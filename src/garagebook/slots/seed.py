"""The demo garage: 3 bays, four services, one-hour slots Monday–Saturday 08:00–17:00 local
time for the next 14 days. Safe to run again: it only adds what is missing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.db import insert_ignoring_conflicts
from garagebook.schema import bays, services, slots

SERVICES = [
    ("MOT", 60, 5485),
    ("Oil change", 60, 7900),
    ("Interim service", 120, 14900),
    ("Full service", 180, 22900),
]
BAYS = ["Bay 1", "Bay 2", "Bay 3"]
OPENING_HOURS = (time(8), time(17))
OPEN_WEEKDAYS = range(0, 6)  # Monday to Saturday
SLOT_LENGTH = timedelta(hours=1)


@dataclass(frozen=True)
class SeedResult:
    services: int
    bays: int
    slots: int


def opening_slots(first_day: date, days: int, zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    opens, closes = OPENING_HOURS
    result = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        if day.weekday() not in OPEN_WEEKDAYS:
            continue
        start = datetime.combine(day, opens, tzinfo=zone)
        close = datetime.combine(day, closes, tzinfo=zone)
        while start + SLOT_LENGTH <= close:
            result.append((start, start + SLOT_LENGTH))
            start += SLOT_LENGTH
    return result


async def seed_demo_garage(
    conn: AsyncConnection, today: date, zone: ZoneInfo, days: int = 14
) -> SeedResult:
    """Returns how many rows of each kind were added."""
    added_services = 0
    for name, minutes, pence in SERVICES:
        result = await conn.execute(
            insert_ignoring_conflicts(conn, services).values(
                name=name, duration_minutes=minutes, price_pence=pence
            )
        )
        added_services += result.rowcount
    added_bays = 0
    for name in BAYS:
        result = await conn.execute(insert_ignoring_conflicts(conn, bays).values(name=name))
        added_bays += result.rowcount
    bay_ids = (await conn.scalars(select(bays.c.id).where(bays.c.name.in_(BAYS)))).all()
    wanted = opening_slots(today, days, zone)
    first, last = wanted[0][0], wanted[-1][1]
    existing = (
        await conn.execute(
            select(slots.c.bay_id, slots.c.starts_at, slots.c.ends_at).where(
                slots.c.bay_id.in_(bay_ids), slots.c.ends_at > first, slots.c.starts_at < last
            )
        )
    ).all()
    new_rows = [
        {"bay_id": bay_id, "starts_at": start, "ends_at": end}
        for bay_id in bay_ids
        for start, end in wanted
        if not any(e.bay_id == bay_id and e.starts_at < end and e.ends_at > start for e in existing)
    ]
    if new_rows:
        await conn.execute(slots.insert(), new_rows)
    return SeedResult(added_services, added_bays, len(new_rows))
