"""Drop-offs (issue 15): a car left for the day takes `labour_minutes` of one qualified
technician's day and no bay time. The technician's day counter decides, on both stacks: no
technician's booked minutes in a day past the minutes they work, whatever mix of timed
bookings and drop-offs fills it.

The garage is the demo garage with technicians added through its setup document, a
[drop_off] window of 08:00-09:30 with collection from 16:30, and a drop-off service (a full
service left for the day: 240 labour minutes)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import garagebook.bookings.service as service_module
import garagebook.technicians.claims as claims_module
from garagebook.app import create_app
from garagebook.bookings.sql import BOOK_POSTGRES
from tests.support.api import booking_body
from tests.support.control import database_without
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.support.technicians import (
    LABOUR,
    LONDON,
    OIL,
    a_day,
    add_drop_off_service,
    add_technicians,
    drop_off,
)
from tests.test_concurrency import dead_redis_url


async def day_counts(url: str, day: date) -> dict[int, tuple[int, int, int]]:
    """Per technician: (minutes booked by the counter, minutes its live bookings took,
    minutes working) on `day`."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT d.technician_id, d.minutes_booked, d.minutes_working,"
                        " (SELECT coalesce(sum(b.technician_minutes), 0) FROM bookings b"
                        "  WHERE b.technician_id = d.technician_id AND b.status <> 'cancelled'"
                        "  AND b.starts_at >= :start AND b.starts_at < :end)"
                        " FROM technician_days d WHERE d.day = :day"
                    ),
                    {
                        "day": day,
                        "start": _local_midnight(day),
                        "end": _local_midnight(day + timedelta(days=1)),
                    },
                )
            ).all()
            return {r[0]: (int(r[1]), int(r[3]), int(r[2])) for r in rows}
    finally:
        await engine.dispose()


async def working(url: str, minutes: int) -> None:
    """Every technician day counts `minutes` working minutes (the counter under test)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE technician_days SET minutes_working = :m"), {"m": minutes}
            )
    finally:
        await engine.dispose()


def _local_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=LONDON)


def at(day: date, hour: int, minute: int = 0) -> str:
    return datetime.combine(day, time(hour, minute), tzinfo=LONDON).isoformat()


async def hours_of(api: httpx.AsyncClient, day: date) -> list[dict[str, Any]]:
    """The first bay's free slots on `day`, soonest first."""
    listed = (
        await api.get("/api/slots", params={"available": "true", "date": day.isoformat()})
    ).json()
    return sorted(
        (s for s in listed if s["bay_id"] == listed[0]["bay_id"]), key=lambda s: s["starts_at"]
    )


async def test_a_drop_off_day_is_offered_booked_and_given_back(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()

    offered = (await api.get("/api/availability", params={"service_id": service})).json()
    assert {
        "day": day.isoformat(),
        "drop_off_from": at(day, 8),
        "drop_off_until": at(day, 9, 30),
        "collect_from": at(day, 16, 30),
        "free": 2,  # Sam's 540 minutes: two of 240
    } in offered
    one_day = await api.get(
        "/api/availability", params={"service_id": service, "date": day.isoformat()}
    )
    assert [d["day"] for d in one_day.json()] == [day.isoformat()]

    booked = await api.post("/api/bookings", json=drop_off(service, day))
    assert booked.status_code == 201, booked.text
    shown = booked.json()
    assert shown["slot_id"] is None
    assert shown["slot_ids"] == []
    assert shown["bay_id"] is None
    assert shown["technician_id"] == ids["Sam"]
    assert shown["starts_at"] == at(day, 8)  # the window opens
    assert shown["ends_at"] == at(day, 16, 30)  # collection
    assert (await day_counts(stack.database_url, day))[ids["Sam"]][:2] == (LABOUR, LABOUR)
    token = {"Authorization": f"Bearer {shown['cancel_token']}"}
    assert (await api.get(f"/api/bookings/{shown['id']}", headers=token)).json() == {
        k: v for k, v in shown.items() if k != "cancel_token"
    }

    cancelled = await api.post(f"/api/bookings/{shown['id']}/cancel", headers=token)
    assert cancelled.status_code == 200, cancelled.text
    assert (await day_counts(stack.database_url, day))[ids["Sam"]][:2] == (0, 0)


async def test_a_technicians_day_takes_no_more_than_they_work(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """Sam works 540 minutes: two 240-minute drop-offs fit, a third does not, and the 60
    minutes left take one timed oil change, not two."""
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    for i in range(2):
        made = await api.post("/api/bookings", json=drop_off(service, day, i))
        assert made.status_code == 201, made.text
    third = await api.post("/api/bookings", json=drop_off(service, day, 2))
    assert third.status_code == 409, third.text
    assert third.json()["error"]["code"] == "slot_unavailable"
    listed = (await api.get("/api/availability", params={"service_id": service})).json()
    assert day.isoformat() not in [d["day"] for d in listed]

    hours = await hours_of(api, day)
    oil = await api.post("/api/bookings", json=_timed(hours[0]["id"], 3))
    assert oil.status_code == 201, oil.text
    second_oil = await api.post("/api/bookings", json=_timed(hours[1]["id"], 4))
    assert second_oil.status_code == 409, second_oil.text  # a free bay, a full technician
    assert (await day_counts(stack.database_url, day))[ids["Sam"]] == (540, 540, 540)


def _timed(slot_id: int, i: int) -> dict[str, Any]:
    return booking_body(
        slot_id,
        OIL,
        customer={"name": f"Customer {i}", "email": f"customer{i}@example.com"},
        vehicle={"registration": f"TM{i:02d} OPS"},
    )


async def _race(api: httpx.AsyncClient, service: int, day: date) -> Counter[int]:
    answers = await asyncio.gather(
        *(api.post("/api/bookings", json=drop_off(service, day, i)) for i in range(50))
    )
    return Counter(a.status_code for a in answers)


async def test_fifty_drop_offs_race_for_eight_hours_and_exactly_eight_win(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """One technician with 8 hours that day, 1-hour drop-off jobs, 50 at once: exactly 8
    booked, and the counter equals their minutes."""
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url, labour_minutes=60)
    await working(stack.database_url, 480)
    day = a_day()
    assert await _race(api, service, day) == {201: 8, 409: 42}
    assert (await day_counts(stack.database_url, day))[ids["Sam"]] == (480, 480, 480)


async def test_control_without_the_days_guard_the_same_race_books_past_the_hours(
    stack: Stack, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control of the race above: the same 50 against a database whose technician_days
    has no CHECK, and a booking write whose counter UPDATE has no `booked + mine <= working`
    (SQLite: technicians/claims.py; PostgreSQL: its line in bookings/sql.py). More than 8
    get through and Sam's day is booked past his hours: so the guard is what held above."""
    url = await database_without(stack, request, tmp_path)
    await add_technicians(url, ("Sam", "general"))
    service = await add_drop_off_service(url, labour_minutes=60)
    await _without_the_check(url)
    await working(url, 480)
    without_the_guard(monkeypatch)
    app = create_app(stack.settings(database_url=url, redis_url=dead_redis_url()))
    day = a_day()
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as client,
    ):
        outcome = await _race(client, service, day)
    assert outcome[201] > 8, outcome
    booked, taken, hours = next(iter((await day_counts(url, day)).values()))
    assert booked == taken > hours == 480


def without_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """The technician day counter's UPDATE without `booked + mine <= working`: its line in
    PostgreSQL's one booking statement, and technicians/claims.py's claim (SQLite's booking,
    and every move and reassignment on both)."""
    guard = (
        "      AND d.minutes_booked + CAST(:technician_minutes AS integer) <= d.minutes_working\n"
    )
    assert guard in BOOK_POSTGRES
    monkeypatch.setattr(service_module, "_BOOK_POSTGRES", text(BOOK_POSTGRES.replace(guard, "")))
    monkeypatch.setattr(service_module, "claim_technician", _unguarded_claim)
    monkeypatch.setattr(claims_module, "claim", _unguarded_claim)


async def _unguarded_claim(
    conn: AsyncConnection,
    booking_id: str,
    technician_id: int,
    skill: str,
    starts: Any,
    day: date,
    minutes: int,
) -> None:
    """technicians/claims.py's claim of a drop-off's minutes without its guard."""
    await conn.execute(
        text(
            "UPDATE technician_days SET minutes_booked = minutes_booked + :m"
            " WHERE technician_id = :t AND day = :d"
        ),
        {"m": minutes, "t": technician_id, "d": day},
    )


async def _without_the_check(url: str) -> None:
    """technician_days without ck_technician_days_within_hours (SQLite: the table rebuilt)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text(
                        "ALTER TABLE technician_days"
                        " DROP CONSTRAINT ck_technician_days_within_hours"
                    )
                )
                return
            for statement in (
                "CREATE TABLE days_copy (technician_id INTEGER NOT NULL, day DATE NOT NULL,"
                " minutes_working INTEGER NOT NULL, minutes_booked INTEGER NOT NULL DEFAULT 0,"
                " absent BOOLEAN NOT NULL DEFAULT 0, PRIMARY KEY (technician_id, day))",
                "INSERT INTO days_copy SELECT technician_id, day, minutes_working,"
                " minutes_booked, absent FROM technician_days",
                "DROP TABLE technician_days",
                "ALTER TABLE days_copy RENAME TO technician_days",
            ):
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def test_a_drop_off_is_booked_by_day_and_a_timed_service_by_time(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    slot = (await hours_of(api, day))[0]
    by_time = await api.post("/api/bookings", json=booking_body(slot["id"], service))
    assert by_time.status_code == 422, by_time.text
    by_day = await api.post("/api/bookings", json=drop_off(OIL, day))
    assert by_day.status_code == 422, by_day.text
    both = {**drop_off(service, day), "slot_id": slot["id"]}
    assert (await api.post("/api/bookings", json=both)).status_code == 422
    no_date = await api.get("/api/availability", params={"service_id": OIL})
    assert no_date.status_code == 422, no_date.text


async def test_staff_place_a_drop_off_on_another_technician(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    ids = await add_technicians(stack.database_url, ("Sam", "general"), ("Ali", "general"))
    service = await add_drop_off_service(stack.database_url)
    await working(stack.database_url, 300)
    day = a_day()
    first = (await api.post("/api/bookings", json=drop_off(service, day, 1))).json()
    other = ids["Ali"] if first["technician_id"] == ids["Sam"] else ids["Sam"]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    moved = await api.post(
        f"/api/admin/bookings/{first['id']}/reassign",
        json={"technician_id": other},
        headers=admin,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["technician_id"] == other
    assert moved.json()["bay_id"] is None
    counts = await day_counts(stack.database_url, day)
    assert counts[other] == (LABOUR, LABOUR, 300)
    assert counts[first["technician_id"]] == (0, 0, 300)
    # The other is now full: a second drop-off goes to the first, and a move onto the full
    # one is refused, leaving the booking where it was.
    second = (await api.post("/api/bookings", json=drop_off(service, day, 2))).json()
    assert second["technician_id"] == first["technician_id"]
    refused = await api.post(
        f"/api/admin/bookings/{second['id']}/reassign",
        json={"technician_id": other},
        headers=admin,
    )
    assert refused.status_code == 409, refused.text
    assert await day_counts(stack.database_url, day) == counts | {
        first["technician_id"]: (LABOUR, LABOUR, 300)
    }


async def test_a_retried_drop_off_is_booked_once(stack: Stack, api: httpx.AsyncClient) -> None:
    """The same Idempotency-Key and body, sent twice at once and once more after: one
    booking, its minutes counted once, every answer the same booking."""
    ids = await add_technicians(stack.database_url, ("Sam", "general"), ("Ali", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    key = {"Idempotency-Key": "drop-off-retry-1"}
    body = drop_off(service, day, 7)
    answers = await asyncio.gather(
        *(api.post("/api/bookings", json=body, headers=key) for _ in range(2))
    )
    again = await api.post("/api/bookings", json=body, headers=key)
    assert [a.status_code for a in (*answers, again)] == [201, 201, 201], [a.text for a in answers]
    assert len({a.json()["id"] for a in (*answers, again)}) == 1
    counts = await day_counts(stack.database_url, day)
    assert sorted(counts[t][:2] for t in ids.values()) == [(0, 0), (LABOUR, LABOUR)]


async def test_a_drop_off_is_not_moved_to_a_time(stack: Stack, api: httpx.AsyncClient) -> None:
    await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    booked = (await api.post("/api/bookings", json=drop_off(service, day))).json()
    slot = (await hours_of(api, day))[0]
    token = {"Authorization": f"Bearer {booked['cancel_token']}"}
    moved = await api.post(
        f"/api/bookings/{booked['id']}/reschedule", json={"slot_id": slot["id"]}, headers=token
    )
    assert moved.status_code == 422, moved.text
    kept = (await api.get(f"/api/bookings/{booked['id']}", headers=token)).json()
    assert kept["status"] == "confirmed"
    assert kept["starts_at"] == booked["starts_at"]


async def test_a_drop_off_takes_no_hold_token(api: httpx.AsyncClient) -> None:
    body = {**drop_off(1, a_day()), "hold_token": f"h_{'a' * 32}_7"}
    refused = await api.post("/api/bookings", json=body)
    assert refused.status_code == 422, refused.text
    assert "hold_token" in refused.text


async def test_there_is_no_waitlist_for_a_drop_off_service(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """A waitlist offer holds a time; a drop-off has none (its day's minutes are the database's
    to decide). Joining used to be accepted, and matching would then offer a bay's time for a
    service that is booked by the day. The page offers no waitlist for a full day either."""
    await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    joined = await api.post(
        "/api/waitlist",
        json={
            "service_id": service,
            "day": a_day().isoformat(),
            "customer": {"name": "Waiting", "email": "waiting@example.com"},
            "vehicle": {"registration": "ab12cde"},
        },
    )
    assert joined.status_code == 422, joined.text
    assert joined.json()["error"]["fields"] == [
        {"field": "service_id", "problem": "the service is booked by the day"}
    ]
    page = await api.get("/waitlist/join", params={"service": service, "day": a_day().isoformat()})
    assert page.status_code == 404
    assert "No waitlist for a drop-off" in page.text
