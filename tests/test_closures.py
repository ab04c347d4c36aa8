"""Closed times are closures, not bookings (issue 14), on both stacks: the admin API, every
booking path refused a closed time (with and without the reservation keys: the database
decides), reopening frees it (and is a freed time for the waitlist), `close_day`, and the
migration of the placeholder bookings that closures used to be. The race of a closure against
bookings, with its control, is in tests/test_closures_race.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa
import time_machine
from alembic import command
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from garagebook.app import create_app
from garagebook.cli import alembic_config
from garagebook.closures.service import close_day
from garagebook.db import Database, create_engine
from garagebook.schema import UTCDateTime
from garagebook.timeutil import utcnow
from garagebook.waitlist import service as waitlist
from garagebook.web.day import load_day
from tests.support.api import booking_body, free_slots
from tests.support.stack import ADMIN_TOKEN, Stack, in_thread, run_sync
from tests.test_constraint import insert_booking
from tests.test_waitlist import CLOCK, SUNDAY, ReservationsDown, join, open_slot
from tests.test_web_pages import add_staff, csrf_of, sign_in

SQL = Callable[..., Awaitable[list[Any]]]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def close(
    api: httpx.AsyncClient, first: dict[str, Any], last: dict[str, Any] | None = None, **extra: Any
) -> httpx.Response:
    """Close the time from `first`'s start to `last`'s end (default: `first` alone)."""
    body = {
        "bay_id": first["bay_id"],
        "starts_at": first["starts_at"],
        "ends_at": (last or first)["ends_at"],
        **extra,
    }
    return await api.post("/api/admin/closures", json=body, headers=ADMIN)


async def day_slots(api: httpx.AsyncClient, day: str) -> list[dict[str, Any]]:
    response = await api.get("/api/slots", params={"date": day, "limit": 1000})
    assert response.status_code == 200
    return list(response.json())


def later_day(slots: list[dict[str, Any]], days_ahead: int = 2) -> str:
    """A day at least `days_ahead` days off, so no slot of it is past or about to be."""
    days = sorted({s["starts_at"][:10] for s in slots})
    return days[days_ahead]


async def test_the_admin_api_closes_lists_and_reopens_a_time(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    slot = (await free_slots(api))[0]
    day = slot["starts_at"][:10]
    closed = await close(api, slot, reason="ramp inspection")
    assert closed.status_code == 201, closed.text
    closure = closed.json()
    assert closure["slot_ids"] == [slot["id"]]
    assert (closure["bay_id"], closure["starts_at"], closure["ends_at"]) == (
        slot["bay_id"],
        slot["starts_at"],
        slot["ends_at"],
    )
    assert (closure["reason"], closure["closed_by"], closure["active"]) == (
        "ramp inspection",
        "admin",
        True,
    )
    listed = await api.get("/api/admin/closures", params={"from": day, "to": day}, headers=ADMIN)
    assert listed.json() == [closure]
    shown = next(s for s in await day_slots(api, day) if s["id"] == slot["id"])
    assert shown["available"] is False
    refused = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "slot_unavailable"
    # No customer, no booking, no job: nothing to mail, nothing to count.
    assert await sql("SELECT count(*) FROM bookings") == [(0,)]
    assert await sql("SELECT count(*) FROM customers") == [(0,)]
    assert await sql("SELECT count(*) FROM outbox") == [(0,)]

    reopened = await api.delete(f"/api/admin/closures/{closure['id']}", headers=ADMIN)
    assert reopened.status_code == 200, reopened.text
    assert reopened.json()["active"] is False
    assert reopened.json()["reopened_by"] == "admin"
    booked = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert booked.status_code == 201, booked.text
    again = await api.delete(f"/api/admin/closures/{closure['id']}", headers=ADMIN)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "closure_reopened"
    unknown = await api.delete("/api/admin/closures/999999", headers=ADMIN)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "closure_not_found"
    listed = await api.get("/api/admin/closures", params={"from": day}, headers=ADMIN)
    assert [(c["id"], c["active"]) for c in listed.json()] == [(closure["id"], False)]


async def test_closing_a_booked_or_held_time_closes_nothing(
    api: httpx.AsyncClient, sql: SQL, lose_reservations: Callable[[], Awaitable[None]]
) -> None:
    slots = await free_slots(api)
    day = later_day(slots)
    on_bay = [s for s in await day_slots(api, day) if s["bay_id"] == 1][:4]
    first, second, third, fourth = on_bay
    assert (await api.post("/api/bookings", json=booking_body(third["id"]))).status_code == 201

    taken = await close(api, first, third)
    assert taken.status_code == 409
    assert taken.json()["error"]["rejected_by"] == "reservation"  # the booking's keys
    await lose_reservations()
    taken = await close(api, first, third)
    assert taken.status_code == 409
    assert taken.json()["error"]["rejected_by"] == "database"  # the index, on its own
    assert await sql("SELECT count(*) FROM closures") == [(0,)]
    assert await sql("SELECT count(*) FROM booking_slots WHERE closure_id IS NOT NULL") == [(0,)]

    hold = await api.post("/api/holds", json={"slot_id": fourth["id"], "service_id": 1})
    assert hold.status_code == 201, hold.text
    held = await close(api, fourth)
    assert held.status_code == 409
    assert held.json()["error"]["rejected_by"] == "reservation"

    # The free part closes: every slot the time overlaps, also one only partly covered.
    start = datetime.fromisoformat(first["starts_at"])
    closed = await api.post(
        "/api/admin/closures",
        json={
            "bay_id": 1,
            "starts_at": first["starts_at"],
            "ends_at": (start + timedelta(minutes=61)).isoformat(),
        },
        headers=ADMIN,
    )
    assert closed.status_code == 201, closed.text
    assert closed.json()["slot_ids"] == [first["id"], second["id"]]


async def test_bad_closures_are_refused_with_a_clear_answer(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    body = {"bay_id": slot["bay_id"], "starts_at": slot["starts_at"], "ends_at": slot["ends_at"]}
    no_token = await api.post("/api/admin/closures", json=body)
    assert no_token.status_code == 401
    assert (await api.get("/api/admin/closures")).status_code == 401
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**body, "ends_at": slot["starts_at"]}, 422, "validation_error"),
        ({**body, "bay_id": 999}, 404, "bay_not_found"),
        ({**body, "colour": "red"}, 422, "validation_error"),
        ({**body, "reason": "x" * 201}, 422, "validation_error"),
        (
            {**body, "starts_at": "2031-01-05T03:00:00+00:00", "ends_at": "2031-01-05T04:00:00Z"},
            422,
            "nothing_to_close",
        ),
        (
            {**body, "starts_at": "2031-01-05T03:00:00+00:00", "ends_at": "2031-03-05T04:00:00Z"},
            422,
            "validation_error",
        ),
    ]
    for sent, status, code in cases:
        answer = await api.post("/api/admin/closures", json=sent, headers=ADMIN)
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), sent
    for query in ({"from": "9999-12-31"}, {"from": "2027-01-02", "to": "2027-01-01"}):
        listed = await api.get("/api/admin/closures", params=query, headers=ADMIN)
        assert listed.status_code == 422, (query, listed.text)
    assert (await api.delete("/api/admin/closures/0", headers=ADMIN)).status_code == 422


async def test_a_closed_time_is_refused_to_bookings_holds_and_moves_with_or_without_its_keys(
    api: httpx.AsyncClient, app: FastAPI, sql: SQL, lose_reservations: Callable[[], Awaitable[None]]
) -> None:
    slots = await free_slots(api, service_id=1)
    day = later_day(slots)
    closed_slot, booked_slot = [s for s in slots if s["starts_at"][:10] == day][:2]
    booking = (await api.post("/api/bookings", json=booking_body(booked_slot["id"]))).json()
    assert (await close(api, closed_slot, reason="<b>ramp</b> check")).status_code == 201
    await add_staff(app)
    assert (await sign_in(api)).status_code == 303
    csrf = csrf_of((await api.get("/staff", params={"date": day})).text)

    for layer in ("reservation", "database"):
        if layer == "database":
            await lose_reservations()  # Redis restarted empty: the index alone decides
        answers = {
            "booking": await api.post("/api/bookings", json=booking_body(closed_slot["id"])),
            "hold": await api.post(
                "/api/holds", json={"slot_id": closed_slot["id"], "service_id": 1}
            ),
            "move": await api.post(
                f"/api/manage/{booking['cancel_token']}/reschedule",
                json={"slot_id": closed_slot["id"]},
            ),
        }
        for path, answer in answers.items():
            assert answer.status_code == 409, (layer, path, answer.text)
            assert answer.json()["error"]["rejected_by"] == layer, (path, answer.text)
        staff_move = await api.post(
            f"/staff/bookings/{booking['id']}/move",
            data={"date": day, "csrf_token": csrf, "slot_id": str(closed_slot["id"])},
        )
        assert staff_move.headers["location"] == f"/staff?date={day}&error=taken", layer
    assert await sql("SELECT slot_id, status FROM bookings") == [(booked_slot["id"], "confirmed")]
    # The staff grid shows the closure as closed, with Reopen, and the booking as a booking.
    grid = (await api.get("/staff/grid", params={"date": day})).text
    assert grid.count('<td class="closed"') == 1
    assert f'id="reopen-{closed_slot["id"]}"' in grid
    assert '<div class="reason">&lt;b&gt;ramp&lt;/b&gt; check</div>' in grid
    assert f'data-booking="{booking["reference"]}"' in grid


async def test_a_closed_time_is_offered_to_no_one_and_reopening_it_is_a_freed_time(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    settings = stack.settings()
    db = Database(create_engine(settings))
    try:
        with time_machine.travel(CLOCK, tick=True):
            slot_id = await open_slot(api, 9)
            [slot] = [s for s in await day_slots(api, SUNDAY.isoformat()) if s["id"] == slot_id]
            closure = (await close(api, slot)).json()
            await join(api, "first@example.com")
            offered = await waitlist.match_day(db, ReservationsDown(), settings, SUNDAY, utcnow())
            assert offered == []
            matching = "SELECT count(*) FROM outbox WHERE kind = 'waitlist_match'"
            [(before,)] = await sql(matching)
            reopened = await api.delete(f"/api/admin/closures/{closure['id']}", headers=ADMIN)
            assert reopened.status_code == 200
            assert await sql(matching) == [(before + 1,)]  # the reopening queued a matching
            offered = await waitlist.match_day(db, ReservationsDown(), settings, SUNDAY, utcnow())
            assert [o.slot_ids for o in offered] == [(slot_id,)]
    finally:
        await db.dispose()


async def test_close_day_closes_every_free_slot_and_returns_the_bookings_it_left(
    stack: Stack, api: httpx.AsyncClient, app: FastAPI, sql: SQL
) -> None:
    settings = stack.settings()
    day = later_day(await free_slots(api), days_ahead=3)
    slots = await day_slots(api, day)
    bays = sorted({s["bay_id"] for s in slots})
    middle = [s for s in slots if s["bay_id"] == bays[0]][1]  # a booking with free time around
    booking = (await api.post("/api/bookings", json=booking_body(middle["id"]))).json()

    async with app.state.db.transaction() as conn:
        done = await close_day(
            conn, date.fromisoformat(day), settings.timezone, by="setup", reason="Christmas"
        )
    assert len(done.closure_ids) == len(bays)
    assert done.booked == [
        {"id": booking["id"], "reference": booking["reference"], "starts_at": booking["starts_at"]}
    ]
    assert [s for s in await day_slots(api, day) if s["available"]] == []
    assert await sql("SELECT status FROM bookings") == [("confirmed",)]
    free = next(s for s in slots if s["id"] != middle["id"])
    assert (await api.post("/api/bookings", json=booking_body(free["id"]))).status_code == 409
    async with app.state.db.read() as conn:
        grid = await load_day(conn, date.fromisoformat(day), settings.timezone, utcnow())
    closed = [c.item for r in grid.rows for c in r.cells if c is not None and c.item is not None]
    # Bay 1 is closed before and after its booking (two runs), the other bays all day.
    assert sum(1 for i in closed if i.kind == "closed") == len(bays) + 1
    assert grid.bookings == 1
    assert {i.reason for i in closed if i.kind == "closed"} == {"Christmas"}

    async with app.state.db.transaction() as conn:
        again = await close_day(conn, date.fromisoformat(day), settings.timezone, by="setup")
    assert again.closure_ids == []  # closed already: nothing made twice
    assert again.booked == done.booked
    assert await sql("SELECT count(*) FROM closures") == [(len(bays),)]


# --- the migration of the placeholder bookings closures used to be ----------------------------

BEFORE = "0010_staff_session_version"
PLACEHOLDER = """
INSERT INTO bookings (id, reference, slot_id, service_id, customer_email, customer_name,
    vehicle_registration, notes, status, starts_at, ends_at, created_at, cancelled_at)
SELECT :id, :id, s.id, 1, :email, :name, :registration, :notes, CAST(:status AS VARCHAR(16)),
    s.starts_at, s.ends_at, s.starts_at,
    CASE WHEN CAST(:status AS VARCHAR(16)) = 'cancelled' THEN s.starts_at END
FROM slots s WHERE s.id = :slot
"""


@pytest.fixture
async def old_database(stack: Stack, tmp_path: Any) -> AsyncIterator[str]:
    """A database of this stack's kind migrated only up to the revision before closures."""
    if not stack.is_postgres:
        url = f"sqlite+aiosqlite:///{tmp_path / 'before-closures.db'}"
        in_thread(command.upgrade, alembic_config(url), BEFORE)
        yield url
        return
    base = stack.database_url.rsplit("/", 1)[0]
    name = f"garagebook_closures_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        engine = create_async_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(sql))
        await engine.dispose()

    await admin(f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}"
    in_thread(command.upgrade, alembic_config(url), BEFORE)
    yield url
    run_sync(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _garage_before_closures(conn: AsyncConnection, zone: ZoneInfo) -> None:
    """The demo garage as the schema before closures held it: a service, three bays and a
    week of hourly slots (the setup document's tables come with a later migration)."""
    when = (sa.column("starts_at", UTCDateTime), sa.column("ends_at", UTCDateTime))
    await conn.execute(
        sa.table("services", *map(sa.column, ("name", "duration_minutes", "price_pence")))
        .insert()
        .values(name="MOT", duration_minutes=60, price_pence=5485)
    )
    bay_table = sa.table("bays", sa.column("id"), sa.column("name"))
    await conn.execute(bay_table.insert(), [{"name": f"Bay {n}"} for n in (1, 2, 3)])
    bay_ids = (await conn.scalars(sa.select(bay_table.c.id))).all()
    today = utcnow().astimezone(zone).date()
    starts = [
        datetime.combine(today + timedelta(days=day), time(hour), zone)
        for day in range(1, 8)
        for hour in range(8, 17)
    ]
    await conn.execute(
        sa.table("slots", sa.column("bay_id"), *when).insert(),
        [
            {"bay_id": bay, "starts_at": start, "ends_at": start + timedelta(hours=1)}
            for bay in bay_ids
            for start in starts
        ],
    )


async def test_the_migration_turns_placeholder_bookings_into_closures(
    stack: Stack, old_database: str
) -> None:
    url = old_database
    settings = stack.settings(database_url=url)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await _garage_before_closures(conn, settings.timezone)
        closed, reopened, real = [
            row[0]
            for row in await conn.execute(
                text("SELECT id FROM slots WHERE starts_at > :now ORDER BY starts_at, bay_id"),
                {"now": utcnow() + timedelta(days=2)},
            )
        ][:3]
        rows = [
            ("closed-1", closed, "confirmed", "closed-slot@garage.example", "Closed by staff"),
            ("closed-2", reopened, "cancelled", "closed-slot@garage.example", "Closed by staff"),
            ("real-1", real, "confirmed", "ada@example.com", "Ada Lovelace"),
        ]
        for booking_id, slot, status, email, name in rows:
            placeholder = name == "Closed by staff"
            await conn.execute(
                text(PLACEHOLDER),
                {
                    "id": booking_id,
                    "slot": slot,
                    "status": status,
                    "email": email,
                    "name": name,
                    "registration": "CLOSED" if placeholder else "AB12 CDE",
                    "notes": "Closed by sam" if placeholder else None,
                },
            )
            await conn.execute(
                text("INSERT INTO booking_slots (booking_id, slot_id, active) VALUES (:b, :s, :a)"),
                {"b": booking_id, "s": slot, "a": status != "cancelled"},
            )
            await conn.execute(
                text(
                    "INSERT INTO outbox (kind, payload, status, attempts, run_at, created_at)"
                    " SELECT 'booking_confirmed', :payload, 'skipped', 1, created_at, created_at"
                    " FROM bookings WHERE id = :id"
                ),
                {
                    "id": booking_id,
                    "payload": f'{{"booking_id":"{booking_id}","reference":"{booking_id}"}}',
                },
            )
        for email, name in (
            ("closed-slot@garage.example", "Closed by staff"),
            ("ada@example.com", "Ada"),
        ):
            await conn.execute(
                text(
                    "INSERT INTO customers (email, name, updated_at)"
                    " VALUES (:email, :name, CURRENT_TIMESTAMP)"
                ),
                {"email": email, "name": name},
            )
        for registration in ("CLOSED", "AB12 CDE"):
            await conn.execute(
                text(
                    "INSERT INTO vehicles (registration, updated_at) VALUES (:r, CURRENT_TIMESTAMP)"
                ),
                {"r": registration},
            )
    await engine.dispose()

    in_thread(command.upgrade, alembic_config(url), "head")

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:

            async def rows_of(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in await conn.execute(text(sql))]

            closures = await rows_of(
                "SELECT c.id, s.id, c.closed_by, c.reopened_at IS NULL FROM closures c"
                " JOIN slots s ON s.bay_id = c.bay_id AND s.starts_at = c.starts_at ORDER BY c.id"
            )
            assert [c[1:] for c in closures] == [(closed, "sam", True), (reopened, "sam", False)]
            assert await rows_of(
                "SELECT booking_id, closure_id, slot_id, active FROM booking_slots ORDER BY slot_id"
            ) == sorted(
                [
                    (None, closures[0][0], closed, True),
                    (None, closures[1][0], reopened, False),
                    ("real-1", None, real, True),
                ],
                key=lambda r: r[2],
            )
            assert await rows_of("SELECT id FROM bookings") == [("real-1",)]
            assert await rows_of("SELECT payload FROM outbox") == [
                ('{"booking_id":"real-1","reference":"real-1"}',)
            ]
            assert await rows_of("SELECT email FROM customers") == [("ada@example.com",)]
            assert await rows_of("SELECT registration FROM vehicles") == [("AB12 CDE",)]
    finally:
        await engine.dispose()

    # And the app on the migrated database: the closed time stays closed until reopened.
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as api,
    ):
        assert (await api.post("/api/bookings", json=booking_body(closed))).status_code == 409
        assert (await api.post("/api/bookings", json=booking_body(reopened))).status_code == 201
        listed = (await api.get("/api/admin/closures", headers=ADMIN)).json()
        assert [(c["slot_ids"], c["active"]) for c in listed] == [
            ([closed], True),
            ([reopened], False),
        ]
        reopening = await api.delete(f"/api/admin/closures/{listed[0]['id']}", headers=ADMIN)
        assert reopening.status_code == 200
        assert (await api.post("/api/bookings", json=booking_body(closed))).status_code == 201


async def test_the_database_refuses_a_closure_claim_on_a_booked_slot_and_ownerless_claims(
    stack: Stack,
) -> None:
    """Layer 3 on its own, whatever code writes the claims: a slot's active claim is a
    booking's or a closure's, never both, and every claim has exactly one owner."""
    await insert_booking(stack, "booked", "confirmed")  # claims nothing yet: its row only
    engine = create_async_engine(stack.database_url)
    claim = text(
        "INSERT INTO booking_slots (booking_id, closure_id, slot_id, active)"
        " VALUES (:booking, :closure, :slot, :active)"
    )
    try:
        async with engine.begin() as conn:
            first, last = (await conn.execute(text("SELECT min(id), max(id) FROM slots"))).one()
            await conn.execute(
                text(
                    "INSERT INTO closures (id, bay_id, starts_at, ends_at, closed_by, created_at)"
                    " SELECT 1, bay_id, starts_at, ends_at, 'sam', starts_at FROM slots"
                    " WHERE id = :slot"
                ),
                {"slot": first},
            )
            await conn.execute(
                claim, {"booking": "booked", "closure": None, "slot": first, "active": True}
            )
            # A reopened closure's claim does not count.
            await conn.execute(
                claim, {"booking": None, "closure": 1, "slot": first, "active": False}
            )
        refused = [
            {"booking": None, "closure": 1, "slot": first, "active": True},  # the index
            {"booking": "booked", "closure": 1, "slot": last, "active": False},  # two owners
            {"booking": None, "closure": None, "slot": last, "active": False},  # none
        ]
        for values in refused:
            with pytest.raises(IntegrityError):
                async with engine.begin() as conn:
                    await conn.execute(claim, values)
    finally:
        await engine.dispose()
