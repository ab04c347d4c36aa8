"""Technicians in the test garage, put there the way a garage does it: the demo garage's setup
document with `[[technicians]]` added, applied (garage/apply.py), so the calendar lays their
slots and days as it would in production (the demo garage: 08:00-17:00 Europe/London, 60
minutes, no hours of their own). Bookings then take them through the real booking path."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from garagebook.garage.apply import apply_in, current_document
from garagebook.garage.document import parse_json, to_json
from garagebook.schema import services, technicians
from garagebook.timeutil import utcnow
from tests.support.api import booking_body

LONDON = ZoneInfo("Europe/London")
MOT = 1  # the demo garage's services: 60 minutes each
OIL = 2


async def _apply(url: str, change: Any) -> None:
    """Apply the garage's current document as `change(json_document, conn)` leaves it."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            document = to_json(await current_document(conn))
            await change(document, conn)
            await apply_in(conn, parse_json(document), actor="tests", now=utcnow())
    finally:
        await engine.dispose()


async def add_technicians(
    url: str, *people: tuple[str, str], minutes_a_day: int | None = None
) -> dict[str, int]:
    """Technicians (name, "skill,skill") working the garage's hours; the MOT then needs an
    `mot_tester` when one of them is. `minutes_a_day`: their days count that many working
    minutes, fewer than their slots cover (set on the day rows: the counter under test)."""

    async def change(document: dict[str, Any], _conn: AsyncConnection) -> None:
        listed = document.setdefault("technicians", [])
        listed += [{"name": name, "skills": skills.split(",")} for name, skills in people]
        if any("mot_tester" in t["skills"] for t in listed):
            document["services"][MOT - 1]["skill"] = "mot_tester"

    await _apply(url, change)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if minutes_a_day is not None:
                await conn.execute(
                    text("UPDATE technician_days SET minutes_working = :m"), {"m": minutes_a_day}
                )
            rows = await conn.execute(select(technicians.c.name, technicians.c.id))
            return {name: tid for name, tid in rows if name in {n for n, _ in people}}
    finally:
        await engine.dispose()


async def add_technician(url: str, name: str, skills: str = "general") -> int:
    return (await add_technicians(url, (name, skills)))[name]


async def needs_skill(url: str, service_id: int, skill: str) -> None:
    """The service (by id) needs `skill` from now on, through the document."""

    async def change(document: dict[str, Any], conn: AsyncConnection) -> None:
        key = await conn.scalar(select(services.c.key).where(services.c.id == service_id))
        next(s for s in document["services"] if s["key"] == key)["skill"] = skill

    await _apply(url, change)


async def times_on(client: httpx.AsyncClient, days_ahead: int = 2) -> list[list[dict[str, Any]]]:
    """The free times of the day `days_ahead` days off, each as its bays' slots, soonest
    first: far enough ahead that none starts while a test runs."""
    listed = (await client.get("/api/slots", params={"available": "true", "limit": 1000})).json()
    days = sorted({s["starts_at"][:10] for s in listed})
    day = days[days_ahead]
    by_time: dict[str, list[dict[str, Any]]] = {}
    for s in listed:
        if s["starts_at"][:10] == day:
            by_time.setdefault(s["starts_at"], []).append(s)
    return [sorted(by_time[t], key=lambda s: s["bay_id"]) for t in sorted(by_time)]


def body(slot_id: int, service_id: int = OIL, i: int = 0) -> dict[str, Any]:
    return booking_body(
        slot_id,
        service_id,
        customer={"name": f"Customer {i}", "email": f"customer{i}@example.com"},
        vehicle={"registration": f"AB{i % 100:02d} CDE"},
    )


async def book(client: httpx.AsyncClient, slot_id: int, service_id: int = OIL, i: int = 0) -> Any:
    """Book through the API; asserts the 201 and returns the booking."""
    response = await client.post("/api/bookings", json=body(slot_id, service_id, i))
    assert response.status_code == 201, response.text
    return response.json()


# --- drop-offs (a car left for the day) -----------------------------------------------------

LABOUR = 240


async def add_drop_off_service(url: str, labour_minutes: int = LABOUR) -> int:
    """The drop-off service and window, through the document; the new service's id."""

    async def change(document: dict[str, Any], _conn: AsyncConnection) -> None:
        document["drop_off"] = {"window": "08:00-09:30", "collect_from": "16:30"}
        document["services"].append(
            {
                "key": "full-service-left",
                "name": "Full service (left for the day)",
                "minutes": 60,
                "price_pence": 19900,
                "labour_minutes": labour_minutes,
                "mode": "drop_off",
            }
        )

    await _apply(url, change)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT id FROM services WHERE key = 'full-service-left'")
            )
            assert found is not None
            return int(found)
    finally:
        await engine.dispose()


def a_day() -> date:
    """A working day (Monday to Saturday) at least two days off: its window has not opened."""
    day = date.today() + timedelta(days=2)
    while day.weekday() == 6:
        day += timedelta(days=1)
    return day


def drop_off(service_id: int, day: date, i: int = 0) -> dict[str, Any]:
    body = booking_body(
        1,
        service_id,
        customer={"name": f"Customer {i}", "email": f"customer{i}@example.com"},
        vehicle={"registration": f"DR{i % 100:02d} OPS"},
    )
    del body["slot_id"]
    body["day"] = day.isoformat()
    return body
