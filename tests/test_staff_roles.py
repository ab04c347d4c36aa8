"""Staff roles (issue 14): an owner may change the garage's settings and the staff accounts,
other staff may not — every owner-only route answers a staff account 403, on GET and POST,
and shows it no link to them. The accounts page: add, change a role, remove; never the last
owner; a role change or removal ends that account's sessions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from alembic import command
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import delete, select
from starlette.routing import BaseRoute

from garagebook.cli import alembic_config
from garagebook.errors import LastOwner
from garagebook.schema import staff_users
from garagebook.timeutil import utcnow
from garagebook.web.accounts import account_id as lookup_account
from garagebook.web.accounts import change_role
from garagebook.web.auth import OWNER, STAFF, Role, set_password
from tests.support.stack import Stack, in_thread
from tests.test_staff_sessions import opens_staff, session_cookie, staff_command
from tests.test_web_pages import PASSWORD, csrf_of

# Owner-only pages are under these prefixes; the change history is for all staff.
OWNER_PREFIXES = ("/staff/accounts", "/staff/settings")
FOR_ALL_STAFF = {"/staff/settings/history"}


async def add_account(app: FastAPI, name: str, role: Role | None = None) -> int:
    async with app.state.db.transaction() as conn:
        await set_password(conn, name, PASSWORD, utcnow(), role)
    return await account_id(app, name)


async def account_id(app: FastAPI, name: str) -> int:
    async with app.state.db.read() as conn:
        return await lookup_account(conn, name)


async def role_of(app: FastAPI, name: str) -> str | None:
    async with app.state.db.read() as conn:
        role: str | None = await conn.scalar(
            select(staff_users.c.role).where(staff_users.c.name == name)
        )
    return role


async def sign_in_as(api: httpx.AsyncClient, name: str) -> None:
    token = csrf_of((await api.get("/staff/login")).text)
    answer = await api.post(
        "/staff/login", data={"csrf_token": token, "name": name, "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.text


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, walking into included routers (`_IncludedRouter` on FastAPI 0.165,
    as in test_round_trips.py)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        router = getattr(route, "original_router", None)
        if router is not None:
            yield from api_routes(router.routes)


def owner_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) of an owner-only route, path parameters filled with 1."""
    found = []
    for route in api_routes(app.routes):
        if not route.path.startswith(OWNER_PREFIXES):
            continue
        if route.path in FOR_ALL_STAFF:
            continue
        path = route.path
        for name in route.param_convertors:
            path = path.replace("{" + name + "}", "1")
        found.extend((method, path) for method in sorted(route.methods) if method != "HEAD")
    return found


async def test_the_first_account_is_an_owner_and_later_ones_staff(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await add_account(app, "olga")
    await add_account(app, "sam")
    await add_account(app, "pat", OWNER)
    assert await role_of(app, "olga") == OWNER
    assert await role_of(app, "sam") == STAFF
    assert await role_of(app, "pat") == OWNER


async def test_a_staff_account_gets_403_on_every_owner_route_and_sees_no_links(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await add_account(app, "olga", OWNER)
    await add_account(app, "sam", STAFF)
    routes = owner_routes(app)
    assert ("GET", "/staff/accounts") in routes
    assert ("POST", "/staff/accounts/1/role") in routes
    await sign_in_as(api, "sam")
    day = await api.get("/staff")
    assert day.status_code == 200
    assert 'href="/staff/accounts"' not in day.text
    assert 'href="/staff/settings"' not in day.text
    token = csrf_of(day.text)
    for method, path in routes:
        data = {"csrf_token": token} if method == "POST" else None
        answer = await api.request(method, path, data=data)
        assert answer.status_code == 403, (method, path, answer.status_code)
        assert "Only an owner" in answer.text, (method, path)
    # Nothing was changed by those posts: both accounts are as they were.
    assert await role_of(app, "olga") == OWNER
    assert await role_of(app, "sam") == STAFF


async def test_signed_out_owner_routes_go_to_sign_in_or_are_refused(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    for method, path in owner_routes(app):
        answer = await api.request(method, path, data={} if method == "POST" else None)
        if method == "GET":
            assert answer.status_code == 303, path
            assert answer.headers["location"] == "/staff/login"
        else:
            assert answer.status_code == 403, path


async def test_an_owner_adds_changes_and_removes_accounts(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await add_account(app, "olga", OWNER)
    await sign_in_as(api, "olga")
    page = await api.get("/staff/accounts")
    assert page.status_code == 200
    assert 'href="/staff/accounts"' in (await api.get("/staff")).text
    token = csrf_of(page.text)

    added = await api.post(
        "/staff/accounts",
        data={"csrf_token": token, "name": "kim", "password": PASSWORD, "role": "staff"},
    )
    assert added.status_code == 303
    assert await role_of(app, "kim") == STAFF
    listed = await api.get("/staff/accounts?done=added")
    assert 'data-account="kim"' in listed.text
    assert "Account added" in listed.text

    # Kim signs in; making Kim an owner ends Kim's session.
    async with httpx.AsyncClient(transport=api._transport, base_url=str(api.base_url)) as kim:
        await sign_in_as(kim, "kim")
        kims_cookie = session_cookie(kim)
        assert await opens_staff(api, kims_cookie)
        kim_id = await account_id(app, "kim")
        promoted = await api.post(
            f"/staff/accounts/{kim_id}/role", data={"csrf_token": token, "role": "owner"}
        )
        assert promoted.status_code == 303
        assert await role_of(app, "kim") == OWNER
        assert not await opens_staff(api, kims_cookie)
        await sign_in_as(kim, "kim")
        assert (await kim.get("/staff/accounts")).status_code == 200  # an owner now
        kims_cookie = session_cookie(kim)

        removed = await api.post(f"/staff/accounts/{kim_id}/remove", data={"csrf_token": token})
        assert removed.status_code == 303
        assert await role_of(app, "kim") is None
        assert not await opens_staff(api, kims_cookie)


async def test_the_add_form_refuses_bad_input_and_keeps_what_was_typed(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await add_account(app, "olga", OWNER)
    await sign_in_as(api, "olga")
    token = csrf_of((await api.get("/staff/accounts")).text)
    cases = [
        ({"name": "kim", "password": "short", "role": "staff"}, 422, "at least 10"),
        ({"name": "kim", "password": PASSWORD, "role": "admin"}, 422, "Pick a role"),
        ({"name": "", "password": PASSWORD, "role": "staff"}, 422, "1 to 100"),
        ({"name": "olga", "password": PASSWORD, "role": "staff"}, 409, "already an account"),
    ]
    for fields, status, words in cases:
        answer = await api.post("/staff/accounts", data={"csrf_token": token, **fields})
        assert answer.status_code == status, (fields, answer.text)
        assert words in answer.text, fields
        assert PASSWORD not in answer.text
    assert await role_of(app, "kim") is None
    forged = await api.post(
        "/staff/accounts",
        data={"csrf_token": "forged", "name": "kim", "password": PASSWORD, "role": "owner"},
    )
    assert forged.status_code == 403
    assert await role_of(app, "kim") is None


async def test_the_last_owner_cannot_be_removed_or_made_staff(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    olga = await add_account(app, "olga", OWNER)
    await add_account(app, "sam", STAFF)
    await sign_in_as(api, "olga")
    token = csrf_of((await api.get("/staff/accounts")).text)
    demoted = await api.post(
        f"/staff/accounts/{olga}/role", data={"csrf_token": token, "role": "staff"}
    )
    assert demoted.status_code == 409
    assert "only owner" in demoted.text
    removed = await api.post(f"/staff/accounts/{olga}/remove", data={"csrf_token": token})
    assert removed.status_code == 409
    assert await role_of(app, "olga") == OWNER
    missing = await api.post("/staff/accounts/999999/remove", data={"csrf_token": token})
    assert missing.status_code == 404

    # With a second owner, Olga may step down: her own session ends with it.
    pat = await add_account(app, "pat", OWNER)
    stepped_down = await api.post(
        f"/staff/accounts/{olga}/role", data={"csrf_token": token, "role": "staff"}
    )
    assert stepped_down.status_code == 303
    assert stepped_down.headers["location"] == "/staff/login"
    assert await role_of(app, "olga") == STAFF
    assert (await api.get("/staff")).status_code == 303  # signed out
    assert pat


async def test_two_owners_demoting_each_other_at_once_leave_one_owner(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    """The race the lock is for: each sees the other as an owner when it starts."""
    for _ in range(5):
        a = await add_account(app, "ann", OWNER)
        b = await add_account(app, "bob", OWNER)

        async def demote(user_id: int) -> str:
            try:
                async with app.state.db.transaction() as conn:
                    await change_role(conn, user_id, STAFF, utcnow())
            except LastOwner:
                return "LastOwner"
            return "demoted"

        results = await asyncio.gather(demote(a), demote(b))
        assert sorted(results) == ["LastOwner", "demoted"], results
        roles = {await role_of(app, "ann"), await role_of(app, "bob")}
        assert roles == {OWNER, STAFF}
        async with app.state.db.transaction() as conn:
            await conn.execute(delete(staff_users))


@pytest.mark.slow
async def test_the_staff_command_takes_a_role_and_keeps_the_last_owner(
    app: FastAPI, api: httpx.AsyncClient, stack: Stack
) -> None:
    first = staff_command(stack, "add", "olga", "--password-stdin", password=PASSWORD)
    assert first.returncode == 0, first.stderr
    second = staff_command(stack, "add", "sam", "--password-stdin", password=PASSWORD)
    assert second.returncode == 0, second.stderr
    assert await role_of(app, "olga") == OWNER
    assert await role_of(app, "sam") == STAFF
    promoted = staff_command(
        stack, "add", "sam", "--role", "owner", "--password-stdin", password=PASSWORD
    )
    assert promoted.returncode == 0, promoted.stderr
    assert await role_of(app, "sam") == OWNER
    assert staff_command(stack, "remove", "olga").returncode == 0
    last = staff_command(stack, "remove", "sam")
    assert last.returncode == 1
    assert "only owner" in last.stderr
    assert await role_of(app, "sam") == OWNER
    bad = staff_command(
        stack, "add", "kim", "--role", "admin", "--password-stdin", password=PASSWORD
    )
    assert bad.returncode != 0


def test_existing_accounts_become_owners_in_the_migration(tmp_path: Path) -> None:
    """Before roles every account could do everything: the migration keeps it that way."""
    path = tmp_path / "old.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    in_thread(command.upgrade, config, "0010_staff_session_version")
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO staff_users (name, password_hash, created_at, updated_at) "
            "VALUES ('old', 'x', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    in_thread(command.upgrade, config, "head")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT role FROM staff_users").fetchall() == [("owner",)]
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE staff_users SET role = 'admin'")
