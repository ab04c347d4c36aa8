"""The calendar keeps itself: a 90-day walk with the clock given (extended daily, across both
2027 clock changes and bank holidays in `closed`), several extenders at once creating nothing
twice, two server processes seeing one apply at once, and applies racing 100 bookings."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter, defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.db import Database, create_engine
from garagebook.garage.apply import apply_in, extend_now
from garagebook.garage.calendar import extend_calendar
from garagebook.garage.demo import demo_document
from garagebook.garage.document import parse_json, to_json
from garagebook.schema import slots
from tests.support.api import booking_body, free_slots
from tests.support.processes import ServerProcess
from tests.support.stack import ADMIN_TOKEN, Stack

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LONDON = ZoneInfo("Europe/London")
BANK_HOLIDAYS = [date(2027, 5, 3), date(2027, 12, 27)]


def open_hours(day: date) -> list[int]:
    """The demo garage's week, written out independently of the generator."""
    if day.weekday() == 6 or day in BANK_HOLIDAYS:
        return []
    return list(range(8, 17))


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
@pytest.mark.parametrize("first", [date(2027, 3, 1), date(2027, 10, 1)])
async def test_a_90_day_walk_keeps_the_calendar_exactly_inside_the_hours(
    stack: Stack, first: date
) -> None:
    data = to_json(demo_document())
    data["closed"] = [d.isoformat() for d in BANK_HOLIDAYS]
    document = parse_json(data)
    horizon = document.garage.book_ahead_days
    engine = create_async_engine(stack.database_url)
    try:
        start = datetime.combine(first, time(6, 30), tzinfo=LONDON)
        async with engine.begin() as conn:
            await apply_in(conn, document, actor="walk", now=start)
        for offset in range(90):
            today = first + timedelta(days=offset)
            now = datetime.combine(today, time(6, 30), tzinfo=LONDON)
            async with engine.begin() as conn:
                await extend_calendar(conn, document, now)
                rows = (
                    await conn.execute(
                        select(slots.c.bay_id, slots.c.starts_at, slots.c.ends_at).where(
                            slots.c.starts_at >= now,
                            slots.c.starts_at < now + timedelta(days=horizon + 1),
                        )
                    )
                ).all()
            by_day: dict[date, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
            for row in rows:
                begins = row.starts_at.astimezone(LONDON)
                assert row.ends_at - row.starts_at == timedelta(hours=1)
                assert begins.minute == 0
                by_day[begins.date()][row.bay_id].append(begins.hour)
            for ahead in range(horizon + 1):
                day = today + timedelta(days=ahead)
                expected = open_hours(day)
                bays = by_day.get(day, {})
                if not expected:
                    assert not bays, day
                    continue
                assert len(bays) == 3, day
                for hours in bays.values():
                    assert sorted(hours) == expected, (today, day)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_concurrent_extenders_create_nothing_twice(stack: Stack, sql: Any) -> None:
    await sql("DELETE FROM slots")
    databases = [Database(create_engine(stack.settings())) for _ in range(6)]
    try:
        added = await asyncio.gather(*(extend_now(db) for db in databases))
    finally:
        for db in databases:
            await db.dispose()
    [(count, distinct)] = await sql(
        "SELECT count(*), count(DISTINCT (bay_id, starts_at)) FROM slots"
    )
    assert count == distinct == sum(added)
    assert sorted(added)[-1] == count  # one of them made them all; the others found them
    document = demo_document()
    today = datetime.now(LONDON).date()
    expected = sum(
        len(open_hours(today + timedelta(days=n)))
        for n in range(document.garage.book_ahead_days + 1)
    )
    assert count <= 3 * expected
    assert count >= 3 * (expected - 9)  # today's hours already gone are not made


def every_day(document: dict[str, Any], *ranges: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    changed["hours"] = {day: list(ranges) for day in days}
    return changed


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_two_server_processes_see_one_apply_at_once(stack: Stack, start_server: Any) -> None:
    one: ServerProcess = start_server(stack.env())
    two: ServerProcess = start_server(stack.env())
    async with (
        httpx.AsyncClient(base_url=one.url, timeout=30) as first,
        httpx.AsyncClient(base_url=two.url, timeout=30) as second,
    ):
        late = next(
            s
            for s in await free_slots(second)
            if datetime.fromisoformat(s["starts_at"]).astimezone(LONDON).hour == 16
        )
        # The second process plans (and caches) a booking of that time through a hold.
        hold = await second.post("/api/holds", json={"slot_id": late["id"], "service_id": 1})
        assert hold.status_code == 201, hold.text
        assert (await second.delete(f"/api/holds/{hold.json()['hold_token']}")).is_success
        document = (await first.get("/api/admin/garage", headers=AUTH)).json()
        put = await first.put(
            "/api/admin/garage", json=every_day(document, "08:00-12:00"), headers=AUTH
        )
        assert put.status_code == 200, put.text
        hours = {
            datetime.fromisoformat(s["starts_at"]).astimezone(LONDON).hour
            for s in await free_slots(second)
        }
        assert hours <= set(range(8, 12))
        refused = await second.post("/api/bookings", json=booking_body(late["id"]))
        assert refused.status_code == 409, refused.text
        assert (await second.get("/api/admin/garage", headers=AUTH)).json()["hours"]["monday"] == [
            "08:00-12:00"
        ]


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_eight_applies_while_100_clients_book_one_slot(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    slot = next(
        s
        for s in await free_slots(api)
        if datetime.fromisoformat(s["starts_at"]).astimezone(LONDON).hour == 9
    )
    demo = to_json(demo_document())
    short = every_day(demo, "08:00-13:00")
    documents = [demo if i % 2 else short for i in range(8)]

    async def apply(document: dict[str, Any]) -> int:
        response = await api.put("/api/admin/garage", json=document, headers=AUTH)
        return response.status_code

    async def book(i: int) -> tuple[int, str]:
        body = booking_body(slot["id"])
        body["customer"] = {**body["customer"], "email": f"racer{i}@example.com"}
        body["vehicle"] = {**body["vehicle"], "registration": f"RC{i:02d} ABC"}
        response = await api.post("/api/bookings", json=body)
        return response.status_code, response.text

    results = await asyncio.gather(*(apply(d) for d in documents), *(book(i) for i in range(100)))
    applies, answers = results[:8], cast(list[tuple[int, str]], results[8:])
    bookings = [status for status, _ in answers]
    refusals = Counter(text for status, text in answers if status != 201)
    assert applies == [200] * 8
    assert bookings.count(201) == 1, refusals
    assert set(bookings) == {201, 409}, refusals
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            live = await conn.scalar(
                text("SELECT count(*) FROM booking_slots WHERE slot_id = :s AND active"),
                {"s": slot["id"]},
            )
    finally:
        await engine.dispose()
    assert live == 1
