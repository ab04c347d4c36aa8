"""The pages over HTTP, in-process (both stacks): security headers, escaping, CSRF, the staff
session cookie, the calendar file, and no customer data in URLs. The browser tests in
tests/browser/ drive the same pages in Chromium."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from icalendar import Calendar

from garagebook.app import create_app
from garagebook.timeutil import utcnow
from garagebook.web.auth import set_password
from tests.support.api import booking_body, free_slots
from tests.support.mail import running_app
from tests.support.stack import ADMIN_TOKEN, Stack

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

SQL = Callable[..., Awaitable[list[Any]]]
PASSWORD = "correct horse battery"
XSS = "<script>alert(1)</script>"


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, "the form carries a CSRF token"
    return match.group(1)


async def add_staff(app: FastAPI, name: str = "sam") -> None:
    async with app.state.db.transaction() as conn:
        await set_password(conn, name, PASSWORD, utcnow())


async def book(api: httpx.AsyncClient, name: str = "Ada Lovelace") -> dict[str, Any]:
    slot = (await free_slots(api))[0]
    body = booking_body(slot["id"])
    body["customer"] = {**body["customer"], "name": name}
    response = await api.post("/api/bookings", json=body)
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


async def sign_in(api: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    token = csrf_of((await api.get("/staff/login")).text)
    return await api.post(
        "/staff/login", data={"csrf_token": token, "name": "sam", "password": password}
    )


async def test_pages_carry_security_headers_and_the_api_is_untouched(
    api: httpx.AsyncClient,
) -> None:
    for path in ["/", "/staff/login", "/manage/unknown", "/static/app.css"]:
        response = await api.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    assert (await api.get("/manage/unknown")).headers["cache-control"] == "no-store"
    assert "content-security-policy" not in (await api.get("/api/services")).headers


async def test_the_booking_page_lists_services_days_and_times(api: httpx.AsyncClient) -> None:
    page = await api.get("/")
    assert page.status_code == 200
    assert "Full service" in page.text
    assert "£229.00" in page.text
    slot = (await free_slots(api, service_id=4))[0]
    day = slot["starts_at"][:10]
    page = await api.get("/", params={"service": 4, "date": day})
    assert f'data-slot-id="{slot["id"]}"' in page.text
    assert 'aria-disabled="true"' in page.text  # Sundays: shown, not bookable
    # A mangled link is the normal page (issue 8: deep links from mails), never an error.
    fallback = await api.get("/", params={"service": "x", "date": "2027-02-30", "slot": "-1"})
    assert fallback.status_code == 200
    assert "2. Day" not in fallback.text


async def test_what_a_customer_typed_is_escaped_on_their_page_and_in_the_calendar(
    api: httpx.AsyncClient,
) -> None:
    booking = await book(api, name=XSS)
    token = booking["cancel_token"]
    page = await api.get(f"/manage/{token}")
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    ics = await api.get(f"/manage/{token}/calendar.ics")
    assert ics.headers["content-type"].startswith("text/calendar")
    event = Calendar.from_ical(ics.content).walk("VEVENT")[0]
    assert event.decoded("dtstart").isoformat() == booking["starts_at"]
    assert booking["reference"] in str(event["description"])


async def test_cancel_link_asks_first_and_needs_the_form_token(api: httpx.AsyncClient) -> None:
    booking = await book(api)
    token = booking["cancel_token"]
    confirm_page = await api.get(f"/manage/{token}/cancel")
    assert "Yes, cancel my booking" in confirm_page.text
    assert (await api.get(f"/api/manage/{token}")).json()["status"] == "confirmed"
    refused = await api.post(f"/manage/{token}/cancel", data={})
    assert refused.status_code == 403
    assert (await api.get(f"/api/manage/{token}")).json()["status"] == "confirmed"
    done = await api.post(
        f"/manage/{token}/cancel", data={"csrf_token": csrf_of(confirm_page.text)}
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/manage/{token}"  # the token, and nothing personal
    assert (await api.get(f"/api/manage/{token}")).json()["status"] == "cancelled"
    assert (await api.get("/manage/not-a-token")).status_code == 404


async def test_staff_sign_in_sets_a_signed_httponly_samesite_cookie(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_staff(app)
    assert (await api.get("/staff")).headers["location"] == "/staff/login"
    assert (await api.get("/staff/grid")).status_code == 401
    wrong = await sign_in(api, password="wrong password")
    assert wrong.status_code == 401
    assert "gb_staff" not in wrong.headers.get("set-cookie", "")
    right = await sign_in(api)
    assert right.status_code == 303
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("gb_staff=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test
    day = await api.get("/staff")
    assert day.status_code == 200
    assert "Bay 1" in day.text
    # A forged cookie is no session.
    api.cookies.set("gb_staff", "eyJpZCI6MX0.forged.signature", path="/staff")
    assert (await api.get("/staff")).status_code == 303


async def test_staff_forms_without_the_csrf_token_are_refused(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_staff(app)
    no_token = await api.post("/staff/login", data={"name": "sam", "password": PASSWORD})
    assert no_token.status_code == 403
    assert "gb_staff" not in no_token.headers.get("set-cookie", "")
    booking = await book(api, name=XSS)
    assert (await sign_in(api)).status_code == 303
    day = booking["starts_at"][:10]
    page = await api.get("/staff", params={"date": day})
    assert XSS not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    refused = await api.post(f"/staff/bookings/{booking['id']}/cancel", data={"date": day})
    assert refused.status_code == 403
    forged = await api.post(
        f"/staff/bookings/{booking['id']}/cancel", data={"date": day, "csrf_token": "0" * 64}
    )
    assert forged.status_code == 403
    assert (await api.get(f"/api/bookings/{booking['id']}", headers=ADMIN_AUTH)).json()[
        "status"
    ] == "confirmed"
    cancelled = await api.post(
        f"/staff/bookings/{booking['id']}/cancel",
        data={"date": day, "csrf_token": csrf_of(page.text)},
    )
    assert cancelled.status_code == 303
    assert (await api.get(f"/api/bookings/{booking['id']}", headers=ADMIN_AUTH)).json()[
        "status"
    ] == "cancelled"


async def test_cookies_are_secure_over_https(api: httpx.AsyncClient, app: FastAPI) -> None:
    await add_staff(app)
    secure = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://garagebook.test"
    )
    async with secure:
        page = await secure.get("/staff/login")
        assert "Secure" in page.headers["set-cookie"]
        answer = await secure.post(
            "/staff/login",
            data={"csrf_token": csrf_of(page.text), "name": "sam", "password": PASSWORD},
        )
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]


async def test_a_slot_closed_by_staff_is_a_closure_and_reopening_frees_it(
    api: httpx.AsyncClient, app: FastAPI, sql: SQL
) -> None:
    await add_staff(app)
    slot = (await free_slots(api))[0]
    day = slot["starts_at"][:10]
    assert (await sign_in(api)).status_code == 303
    token = csrf_of((await api.get("/staff", params={"date": day})).text)
    closed = await api.post(
        f"/staff/slots/{slot['id']}/close", data={"date": day, "csrf_token": token}
    )
    assert closed.headers["location"].endswith("done=closed")
    taken = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert taken.status_code == 409
    # No booking, no customer, no job: a closure, shown as one on the grid.
    assert await sql("SELECT count(*) FROM bookings") == [(0,)]
    assert await sql("SELECT count(*) FROM customers") == [(0,)]
    assert await sql("SELECT count(*) FROM outbox") == [(0,)]
    assert await sql("SELECT closed_by, reopened_at FROM closures") == [("sam", None)]
    page = await api.get("/staff", params={"date": day})
    assert "/cancel" not in page.text
    match = re.search(r'action="/staff/closures/([0-9]+)/reopen"', page.text)
    assert match is not None
    assert f'data-closure="{match.group(1)}"' in page.text
    forged = await api.post(f"/staff/closures/{match.group(1)}/reopen", data={"date": day})
    assert forged.status_code == 403
    assert await sql("SELECT reopened_at FROM closures") == [(None,)]
    for bad in ("/staff/slots/99999999999/close", "/staff/closures/99999999999/reopen"):
        answer = await api.post(bad, data={"date": day, "csrf_token": token})
        assert answer.headers["location"].endswith("error=invalid"), bad
    unknown = await api.post("/staff/slots/999999/close", data={"date": day, "csrf_token": token})
    assert unknown.headers["location"].endswith("error=slot_not_found")
    reopened = await api.post(
        f"/staff/closures/{match.group(1)}/reopen", data={"date": day, "csrf_token": token}
    )
    assert reopened.headers["location"].endswith("done=reopened")
    assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201
    again = await api.post(
        f"/staff/closures/{match.group(1)}/reopen", data={"date": day, "csrf_token": token}
    )
    assert again.headers["location"].endswith("error=reopened_already")
    assert "That time was already reopened." in (await api.get(again.headers["location"])).text


async def test_times_are_the_garages_local_times_across_a_clock_change(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    """Clocks go forward on 28 March 2027: 08:00 local is 08:00Z on Friday 26 March and
    07:00Z on Monday 29 March. The staff day and the booking page's labels both say 08:00."""
    headers = {"Authorization": "Bearer test-admin-token"}
    for starts_at in ["2027-03-26T08:00:00+00:00", "2027-03-29T07:00:00+00:00"]:
        ends_at = starts_at.replace("T08:", "T09:").replace("T07:", "T08:")
        response = await api.post(
            "/api/admin/slots",
            json={"bay_id": 1, "starts_at": starts_at, "ends_at": ends_at},
            headers=headers,
        )
        assert response.status_code == 201, response.text
    await add_staff(app)
    assert (await sign_in(api)).status_code == 303
    for day in ["2027-03-26", "2027-03-29"]:
        grid = (await api.get("/staff/grid", params={"date": day})).text
        assert re.findall(r'<th scope="row" class="hour">([^<]+)</th>', grid) == ["08:00"]
        assert "08:00–09:00" in grid


async def test_the_pages_forms_share_the_apis_rate_limits(stack: Stack) -> None:
    settings = stack.settings(rate_limit_exempt="", max_holds_per_client=1)
    async with running_app(settings) as client:
        token = csrf_of((await client.get("/staff/login")).text)
        answers = []
        for slot in (await free_slots(client))[:2]:
            answer = await client.post(
                "/book/hold", data={"csrf_token": token, "slot_id": slot["id"], "service_id": 1}
            )
            answers.append(answer.status_code)
    assert answers == [200, 429]


async def test_staff_sign_in_is_rate_limited_per_address(stack: Stack) -> None:
    """Password guessing: after RATE_LIMIT_SIGN_IN attempts from one address, even the right
    password is answered 429 until the window passes (it used to be unlimited)."""
    settings = stack.settings(rate_limit_exempt="", rate_limit_sign_in="3/minute")
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        await add_staff(app)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://garagebook.test") as api:
            answers = [(await sign_in(api, "wrong password")).status_code for _ in range(3)]
            assert answers == [401, 401, 401]
            refused = await sign_in(api)
            assert refused.status_code == 429
            assert "Too many sign-in attempts" in refused.text
            assert "gb_staff" not in refused.headers.get("set-cookie", "")


def test_serve_with_several_workers_needs_a_session_secret(stack: Stack) -> None:
    env = {k: v for k, v in stack.env().items() if k != "SESSION_SECRET"}
    result = subprocess.run(
        [sys.executable, "-m", "garagebook.cli", "serve", "--workers", "2", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "set SESSION_SECRET" in result.stderr
