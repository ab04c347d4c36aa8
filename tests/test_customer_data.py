"""A customer's data (issue 16), on both stacks: the export holds everything about them; the
erasure is refused while a confirmed booking of theirs is to come, and afterwards no table, no
mail file of ours and no log line holds their name, e-mail or phone (searched in every text
column of every table the database has); the bookings stay as anonymous rows; the retention
period anonymises old bookings when the worker runs it; every export, erasure and retention
run leaves an audit row; exports and erasures are rate limited."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from garagebook.app import create_app
from garagebook.config import Settings
from garagebook.jobs.mail import DropFolderMailer
from garagebook.jobs.worker import Worker
from garagebook.logs import JsonFormatter
from tests.support.api import booking_body, free_slots, wait_until
from tests.support.mail import FAST_JOBS
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.test_vehicles import move_back

SQL = Callable[..., Awaitable[list[Any]]]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ZONE = ZoneInfo("Europe/London")
NAME, SURNAME = "Philippa Quartermaine", "Quartermaine"
EMAIL, PHONE = "philippa.q@example.com", "+44 7700 900456"
OTHER_NAME, OTHER_EMAIL = "Bartholomew Other", "bart.other@example.com"
CUSTOMER = f"/api/admin/customers/{EMAIL}"


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as client,
    ):
        yield app, client


async def book(
    api: httpx.AsyncClient,
    slot: dict[str, Any],
    *,
    name: str = NAME,
    email: str = EMAIL,
    registration: str = "AB12 CDE",
    key: str | None = None,
) -> dict[str, Any]:
    body = booking_body(slot["id"])
    body["customer"] = {"name": name, "email": email, "phone": PHONE if email == EMAIL else None}
    body["vehicle"] = {**body["vehicle"], "registration": registration}
    headers = {"Idempotency-Key": key} if key else {}
    response = await api.post("/api/bookings", json=body, headers=headers)
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


def next_sunday() -> date:
    """The demo garage has no slots on Sundays: a waitlist entry there is never offered."""
    today = datetime.now(ZONE).date()
    return today + timedelta(days=(6 - today.weekday()) or 7)


async def join_waitlist(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.post(
        "/api/waitlist",
        json={
            "service_id": 1,
            "day": next_sunday().isoformat(),
            "customer": {"name": NAME, "email": EMAIL, "phone": PHONE},
            "vehicle": {"registration": "AB12 CDE"},
        },
    )
    assert response.status_code == 201, response.text
    entry: dict[str, Any] = response.json()
    return entry


async def text_columns(sql: SQL, stack: Stack) -> list[tuple[str, str]]:
    """Every column of every table the database has (not only the ones the code knows)."""
    if stack.is_postgres:
        rows = await sql(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, column_name"
        )
        return [(t, c) for t, c in rows]
    tables = [t for (t,) in await sql("SELECT name FROM sqlite_master WHERE type = 'table'")]
    columns = []
    for table in tables:
        for row in await sql(f'PRAGMA table_info("{table}")'):
            columns.append((table, row[1]))
    return columns


async def tables_holding(sql: SQL, stack: Stack, needle: str) -> list[str]:
    """`table.column` of every value that contains `needle` (any case)."""
    found = []
    for table, column in await text_columns(sql, stack):
        hits = await sql(
            f'SELECT count(*) FROM "{table}" '  # noqa: S608 (names from the catalog)
            f'WHERE lower(CAST("{column}" AS TEXT)) LIKE :needle',
            needle=f"%{needle.lower()}%",
        )
        if hits[0][0]:
            found.append(f"{table}.{column}")
    return found


def files_holding(folder: Path, needle: str) -> list[str]:
    """The mail files holding `needle`. The drop folder writes a mail as `.<name>.tmp` and
    renames it when whole (or an erasure deletes one): a file gone between listing and
    reading means the folder changed under us, so it is listed again."""
    wanted = needle.lower().encode()
    while True:
        try:
            return [p.name for p in folder.iterdir() if wanted in p.read_bytes().lower()]
        except FileNotFoundError:
            continue


class Lines(logging.Handler):
    """Every log line as the server writes it (logs.JsonFormatter)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "httpx":  # the test's own client, which logs the URLs it asks for
            self.lines.append(self.format(record))


async def test_the_export_holds_everything_about_the_customer_and_is_audited(
    stack: Stack, sql: SQL
) -> None:
    async with running(stack.settings()) as (_, api):
        slots = await free_slots(api)
        booking = await book(api, slots[0])
        await book(api, slots[1], name=OTHER_NAME, email=OTHER_EMAIL, registration="XY99 ZZZ")
        entry = await join_waitlist(api)
        answer = await api.get(f"/api/admin/customers/{EMAIL.upper()}", headers=ADMIN)
        assert answer.status_code == 200, answer.text
        assert answer.headers["cache-control"] == "no-store"
        data = answer.json()
        assert data["email"] == EMAIL
        assert data["customer"]["name"] == NAME
        assert data["customer"]["phone"] == PHONE
        [held] = data["bookings"]
        assert held["id"] == booking["id"]
        assert held["reference"] == booking["reference"]
        assert held["customer"] == {"name": NAME, "email": EMAIL, "phone": PHONE}
        assert held["notes"] == "rattle from the front left"
        assert held["vehicle"]["registration"] == "AB12 CDE"
        assert [v["registration"] for v in data["vehicles"]] == ["AB12 CDE"]
        assert [(e["id"], e["status"]) for e in data["waitlist_entries"]] == [
            (entry["id"], "waiting")
        ]
        kinds = {m["kind"] for m in data["mails"]}
        assert "booking_confirmed" in kinds
        assert OTHER_EMAIL not in answer.text
        assert OTHER_NAME not in answer.text

        unknown = await api.get("/api/admin/customers/nobody@example.com", headers=ADMIN)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "customer_not_found"
        bad = await api.get("/api/admin/customers/not-an-address", headers=ADMIN)
        assert bad.status_code == 422
        assert (await api.get(CUSTOMER)).status_code == 401

        audit = (await api.get("/api/admin/personal-data/audit", headers=ADMIN)).json()
    [row] = audit
    assert row["action"] == "export"
    assert row["actor"] == "admin token"
    assert row["subject_hash"] == hashlib.sha256(EMAIL.encode()).hexdigest()
    assert EMAIL not in str(await sql("SELECT * FROM personal_data_audit"))


async def test_erasure_is_refused_while_a_confirmed_booking_is_to_come(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    booking = await book(api, (await free_slots(api))[0])
    refused = await api.delete(CUSTOMER, headers=ADMIN)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "customer_has_future_booking"
    assert error["booking"]["id"] == booking["id"]
    assert error["booking"]["reference"] == booking["reference"]
    assert error["booking"]["url"] == f"/api/bookings/{booking['id']}"
    assert booking["reference"] in error["message"]
    assert (await sql("SELECT customer_name FROM bookings"))[0][0] == NAME  # nothing changed
    assert await sql("SELECT action FROM personal_data_audit") == []
    # Cancelled, it no longer holds the erasure back.
    cancelled = await api.post(f"/api/bookings/{booking['id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200
    assert (await api.delete(CUSTOMER, headers=ADMIN)).status_code == 200


async def test_after_erasure_no_table_mail_file_or_log_line_holds_their_data(
    stack: Stack, sql: SQL, tmp_path: Path
) -> None:
    mail = tmp_path / "mail"
    settings = stack.settings(
        embedded_worker=True, mail_drop_dir=mail, log_level="INFO", **FAST_JOBS
    )
    lines = Lines()
    async with running(settings) as (_, api):
        logging.getLogger().addHandler(lines)  # after create_app() set up the logging
        try:
            slots = await free_slots(api)
            booking = await book(api, slots[0], key="retry-key-0123456789abcdef")
            await book(api, slots[1], name=OTHER_NAME, email=OTHER_EMAIL, registration="XY99 ZZZ")
            await join_waitlist(api)

            async def mailed() -> bool:
                return bool(mail.is_dir() and files_holding(mail, EMAIL))

            await wait_until(mailed, 20, "the confirmation in the drop folder")
            assert (await api.get(CUSTOMER, headers=ADMIN)).status_code == 200  # logged too
            await move_back(sql, stack, booking["id"], 30)  # over: the erasure may go ahead
            bookings_before = await sql("SELECT count(*) FROM bookings")
            assert await tables_holding(sql, stack, EMAIL)  # the search finds what is there

            erased = await api.delete(CUSTOMER, headers=ADMIN)
            assert erased.status_code == 200, erased.text
            counts = erased.json()
            assert counts["bookings"] == 1
            assert counts["waitlist_entries"] == 1
            assert counts["idempotency_records"] == 1
            assert counts["mail_files"] >= 1
            assert (await api.get(CUSTOMER, headers=ADMIN)).status_code == 404
            assert (await api.delete(CUSTOMER, headers=ADMIN)).status_code == 404
        finally:
            logging.getLogger().removeHandler(lines)

    for value in (NAME, SURNAME, EMAIL, PHONE, "900456", "rattle from the front left"):
        if value == "rattle from the front left":
            assert await tables_holding(sql, stack, value) == ["bookings.notes"]  # the other's
            continue
        assert await tables_holding(sql, stack, value) == [], value
        assert files_holding(mail, value) == [], value
    # The control: the other customer's data is all still there, and found by the same search.
    assert "bookings.customer_name" in await tables_holding(sql, stack, OTHER_NAME)
    assert files_holding(mail, OTHER_EMAIL)
    # The booking stays, as an anonymous row.
    assert await sql("SELECT count(*) FROM bookings") == bookings_before
    [(name, address, phone, notes, status)] = await sql(
        "SELECT customer_name, customer_email, customer_phone, notes, status FROM bookings "
        "WHERE id = :id",
        id=booking["id"],
    )
    assert (name, phone, notes, status) == ("(erased)", None, None, "confirmed")
    assert address.startswith("erased-")
    assert address.endswith("@invalid")
    # Logged: the requests were, without the address.
    assert any("/api/admin/customers/" in line for line in lines.lines)
    assert not [line for line in lines.lines if EMAIL in line.lower() or PHONE in line]
    [(action, subject, actor)] = await sql(
        "SELECT action, subject_hash, actor FROM personal_data_audit WHERE action = 'erase'"
    )
    assert (action, subject, actor) == (
        "erase",
        hashlib.sha256(EMAIL.encode()).hexdigest(),
        "admin token",
    )


async def test_the_worker_anonymises_bookings_older_than_the_retention_period(
    stack: Stack, sql: SQL, tmp_path: Path
) -> None:
    settings = stack.settings(personal_data_retention_months=1)
    async with running(settings) as (app, api):
        slots = await free_slots(api)
        old = await book(api, slots[0], name=OTHER_NAME, email=OTHER_EMAIL, registration="OLD1")
        kept = await book(api, slots[1])
        await move_back(sql, stack, old["id"], 40)
        await sql(
            "UPDATE customers SET updated_at = :then WHERE email = :email",
            then=datetime.now(ZONE) - timedelta(days=40),
            email=OTHER_EMAIL,
        )
        worker = Worker(app.state.db, DropFolderMailer(tmp_path), settings, app.state.reservations)
        assert await worker.apply_retention() == 1
        assert await worker.apply_retention() == 0  # a second run finds nothing more
    rows = dict(await sql("SELECT id, customer_name FROM bookings"))
    assert rows == {old["id"]: "(erased)", kept["id"]: NAME}
    assert await tables_holding(sql, stack, OTHER_EMAIL) == []
    assert await tables_holding(sql, stack, OTHER_NAME) == []
    assert await sql("SELECT email FROM customers WHERE email = :e", e=EMAIL) == [(EMAIL,)]
    [(action, subject, actor, detail)] = await sql(
        "SELECT action, subject_hash, actor, detail FROM personal_data_audit"
    )
    assert (action, subject, actor) == ("retention", None, "retention")
    assert "bookings=1" in detail
    assert "customers=1" in detail


async def test_no_retention_period_keeps_everything(stack: Stack, sql: SQL, tmp_path: Path) -> None:
    settings = stack.settings(personal_data_retention_months=0)
    async with running(settings) as (app, api):
        old = await book(api, (await free_slots(api))[0])
        await move_back(sql, stack, old["id"], 4000)
        worker = Worker(app.state.db, DropFolderMailer(tmp_path), settings, app.state.reservations)
        assert await worker.apply_retention() == 0
    assert await sql("SELECT customer_name FROM bookings") == [(NAME,)]


async def test_exports_and_erasures_are_rate_limited(stack: Stack) -> None:
    settings = stack.settings(rate_limit_exempt="", rate_limit_personal_data="3/minute")
    async with running(settings) as (_, api):
        answers = [
            (await api.get(CUSTOMER, headers=ADMIN)).status_code,
            (await api.delete(CUSTOMER, headers=ADMIN)).status_code,
            (await api.get(CUSTOMER, headers=ADMIN)).status_code,
        ]
        assert answers == [404, 404, 404]
        limited = await api.delete(CUSTOMER, headers=ADMIN)
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_customers_data_needs_the_admin_token(api: httpx.AsyncClient, method: str) -> None:
    answer = await api.request(method, CUSTOMER, headers={"Authorization": "Bearer wrong"})
    assert answer.status_code == 403


async def test_the_search_sees_every_table(stack: Stack, sql: SQL) -> None:
    """The erasure test's search is only as good as its list of columns: it must include the
    tables this code added and the ones it did not write itself."""
    tables = {table for table, _ in await text_columns(sql, stack)}
    assert {"bookings", "customers", "outbox", "waitlist_entries", "idempotency_keys"} <= tables
    assert {"personal_data_audit", "calendar_feeds", "alembic_version"} <= tables
