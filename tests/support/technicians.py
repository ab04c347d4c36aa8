"""Technicians in the test database the way the calendar keeps them (until the setup document
lists them, issue 15 Part A): a slot on the garage's grid for each hour the garage is open
(the demo garage: 08:00-17:00 Europe/London, 60 minutes) and a row per day with the minutes
they work. Bookings then take them through the real booking path (bookings/service.py)."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.schema import services, slots, technician_days, technician_slots, technicians
from tests.support.api import booking_body

LONDON = ZoneInfo("Europe/London")
MOT = 1  # the demo garage's services: 60 minutes each
OIL = 2


def local_day(moment: datetime) -> date:
    return moment.astimezone(LONDON).date()


async def add_technician(url: str, name: str, skills: str = "general") -> int:
    """A technician working every hour the demo garage's first bay has a slot, every day."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE garage SET version = version + 1"))  # a new setup
            hours = (
                await conn.execute(
                    select(slots.c.starts_at, slots.c.ends_at)
                    .where(slots.c.bay_id == select(func.min(slots.c.bay_id)).scalar_subquery())
                    .order_by(slots.c.starts_at)
                )
            ).all()
            tid = await conn.scalar(
                insert(technicians).values(name=name, skills=skills).returning(technicians.c.id)
            )
            assert tid is not None
            await conn.execute(
                insert(technician_slots),
                [{"technician_id": tid, "starts_at": s, "ends_at": e} for s, e in hours],
            )
            per_day = Counter(local_day(s) for s, _ in hours)
            await conn.execute(
                insert(technician_days),
                [
                    {"technician_id": tid, "day": day, "minutes_working": 60 * count}
                    for day, count in per_day.items()
                ],
            )
    finally:
        await engine.dispose()
    return int(tid)


async def needs_skill(url: str, service_id: int, skill: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(services).where(services.c.id == service_id).values(skill=skill)
            )
            await conn.execute(text("UPDATE garage SET version = version + 1"))
    finally:
        await engine.dispose()


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
