"""Staff sessions that can be ended (security review, finding 4) and CSRF tokens bound to the
session (finding 9): an old cookie opens nothing after sign-out, a password change or the
user's removal (`garagebook staff passwd|remove`), and a planted CSRF cookie with the
attacker's own token cannot act in a signed-in staff member's name."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from garagebook.app import create_app
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.test_web_pages import PASSWORD, add_staff, book, csrf_of, sign_in

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def session_cookie(client: httpx.AsyncClient, name: str = "gb_staff") -> str:
    value = client.cookies.get(name)
    assert value, f"{name} is set"
    return value


async def opens_staff(client: httpx.AsyncClient, cookie: str, name: str = "gb_staff") -> bool:
    """Whether `cookie` alone, as an old copy kept by someone, opens the day view."""
    transport = client._transport  # the same app
    path = "/" if name.startswith("__Host-") else "/staff"
    async with httpx.AsyncClient(transport=transport, base_url=str(client.base_url)) as copy:
        copy.cookies.set(name, cookie, path=path)
        answer = await copy.get("/staff")
    return answer.status_code == 200


async def sign_out(client: httpx.AsyncClient) -> None:
    token = csrf_of((await client.get("/staff")).text)
    answer = await client.post("/staff/logout", data={"csrf_token": token})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/staff/login"


def staff_command(
    stack: Stack, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "garagebook.cli", "staff", *args],
        input=password + "\n" if password is not None else None,
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_old_cookie_opens_nothing_after_sign_out(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_staff(app)
    assert (await sign_in(api)).status_code == 303
    cookie = session_cookie(api)
    assert await opens_staff(api, cookie)
    await sign_out(api)
    assert not await opens_staff(api, cookie)
    # Signing in again gives a new session that works.
    assert (await sign_in(api)).status_code == 303
    assert await opens_staff(api, session_cookie(api))


@pytest.mark.slow
async def test_passwd_ends_every_session_and_remove_ends_the_user(
    api: httpx.AsyncClient, app: FastAPI, stack: Stack
) -> None:
    await add_staff(app)
    assert (await sign_in(api)).status_code == 303
    before_passwd = session_cookie(api)
    assert await opens_staff(api, before_passwd)

    changed = staff_command(stack, "passwd", "sam", "--password-stdin", password="a new password!")
    assert changed.returncode == 0, changed.stderr
    assert not await opens_staff(api, before_passwd)
    assert (await sign_in(api)).status_code == 401  # the old password
    assert (await sign_in(api, password="a new password!")).status_code == 303
    before_remove = session_cookie(api)
    assert await opens_staff(api, before_remove)

    # The garage keeps an owner (test_staff_roles.py): sam, its first account, is one.
    assert staff_command(stack, "remove", "sam").returncode == 1
    promoted = staff_command(
        stack, "add", "olga", "--role", "owner", "--password-stdin", password=PASSWORD
    )
    assert promoted.returncode == 0, promoted.stderr
    removed = staff_command(stack, "remove", "sam")
    assert removed.returncode == 0, removed.stderr
    assert not await opens_staff(api, before_remove)
    assert (await sign_in(api, password="a new password!")).status_code == 401

    unknown = staff_command(stack, "remove", "sam")
    assert unknown.returncode == 1
    assert "no staff user" in unknown.stderr
    unknown = staff_command(stack, "passwd", "nobody", "--password-stdin", password=PASSWORD)
    assert unknown.returncode == 1


async def test_a_planted_csrf_cookie_with_the_attackers_token_is_refused(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    """The review's attack: the attacker gets a CSRF cookie and its token from their own
    browser, plants the cookie in the victim's browser (a sibling subdomain, or plain http),
    and makes the signed-in victim post a cancel with the attacker's token."""
    await add_staff(app)
    booking = await book(api)
    day = booking["starts_at"][:10]
    async with httpx.AsyncClient(transport=api._transport, base_url=str(api.base_url)) as evil:
        attackers_token = csrf_of((await evil.get("/staff/login")).text)
        attackers_cookie = evil.cookies.get("gb_csrf")
    assert attackers_cookie

    assert (await sign_in(api)).status_code == 303
    api.cookies.set("gb_csrf", attackers_cookie, path="/")  # planted
    attack = await api.post(
        f"/staff/bookings/{booking['id']}/cancel",
        data={"date": day, "csrf_token": attackers_token},
    )
    assert attack.status_code == 403
    now = await api.get(f"/api/bookings/{booking['id']}", headers=ADMIN_AUTH)
    assert now.json()["status"] == "confirmed"

    # The victim's own page still works, whatever CSRF cookie the browser holds: the token is
    # bound to the session.
    own_token = csrf_of((await api.get("/staff", params={"date": day})).text)
    cancelled = await api.post(
        f"/staff/bookings/{booking['id']}/cancel", data={"date": day, "csrf_token": own_token}
    )
    assert cancelled.status_code == 303
    now = await api.get(f"/api/bookings/{booking['id']}", headers=ADMIN_AUTH)
    assert now.json()["status"] == "cancelled"


async def test_a_token_from_one_session_does_not_fit_another(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_staff(app)
    assert (await sign_in(api)).status_code == 303
    old_token = csrf_of((await api.get("/staff")).text)
    await sign_out(api)
    assert (await sign_in(api)).status_code == 303
    answer = await api.post("/staff/logout", data={"csrf_token": old_token})
    assert answer.status_code == 403


async def test_host_prefixed_cookies_with_an_https_public_url(stack: Stack) -> None:
    """`__Host-` (Secure, Path=/, no Domain: no sibling subdomain or plain-http page can set
    them) when PUBLIC_URL is https; development over http keeps the plain names."""
    app = create_app(stack.settings(public_url="https://garagebook.test"))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="https://garagebook.test"
        ) as client,
    ):
        await add_staff(app)
        page = await client.get("/staff/login")
        csrf_cookie = page.headers["set-cookie"]
        assert csrf_cookie.startswith("__Host-gb_csrf=")
        assert "Secure" in csrf_cookie
        assert "Path=/" in csrf_cookie
        assert "Domain" not in csrf_cookie
        answer = await client.post(
            "/staff/login",
            data={"csrf_token": csrf_of(page.text), "name": "sam", "password": PASSWORD},
        )
        assert answer.status_code == 303
        staff_cookie = answer.headers["set-cookie"]
        assert staff_cookie.startswith("__Host-gb_staff=")
        assert "Secure" in staff_cookie
        assert "Path=/;" in staff_cookie
        assert "Domain" not in staff_cookie
        assert (await client.get("/staff")).status_code == 200
        cookie = session_cookie(client, "__Host-gb_staff")
        await sign_out(client)
        assert not await opens_staff(client, cookie, "__Host-gb_staff")
