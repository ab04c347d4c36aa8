"""The calendar the setup document makes: which slots exist and which are offered.

`day_times` is a pure function of the document and a local date, so the 90-day walk across
clock changes is tested without a database. `extend_calendar` (the worker, daily and at start;
apply too) only adds slots: inserts ignore conflicts on uq_slots_bay_id_starts_at, so several
workers at once create nothing twice. `sync_calendar` (apply only) also opens and closes future
slots to follow the document: closing is a flag, never a delete, because a slot a booking
claims must stay for it (the booking is then "outside the hours", listed by `outside_hours`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import and_, delete, exists, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.db import insert_ignoring_conflicts
from garagebook.garage.document import GarageDocument
from garagebook.schema import bays, booking_slots, bookings, slots, waitlist_offers

T = TypeVar("T")
# pg_advisory_xact_lock's key for "the garage's setup" (any constant unique to this use).
_SETUP_LOCK = 7_140_001
_CHUNK = 500  # ids per IN (…): well inside SQLite's and asyncpg's parameter limits


async def lock_setup(conn: AsyncConnection) -> None:
    """Serialise the writers of the setup and its calendar (applies, extenders) until the
    transaction ends: an extender must not add slots from a document an apply is replacing.
    PostgreSQL: an advisory transaction lock; SQLite's write transaction is exclusive already."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SETUP_LOCK})


def _wall(day: date, minutes: int, zone: ZoneInfo) -> datetime | None:
    """The instant a local wall time (minutes after midnight, 1440 = the next midnight) happens
    on `day`, or None when the clock skips it."""
    if minutes >= 24 * 60:
        day, minutes = day + timedelta(days=1), minutes - 24 * 60
    moment = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=zone)
    if moment.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != moment.replace(tzinfo=None):
        return None  # inside a spring-forward gap
    return moment.astimezone(UTC)


def day_times(document: GarageDocument, day: date) -> list[tuple[datetime, datetime]]:
    """The slot grid inside the day's opening ranges, as UTC instants; [] on a closed day.
    Steps local wall time, so 08:00 stays 08:00 across clock changes; a slot whose wall times
    the clock skips or repeats (it would not last `slot_minutes`) is left out."""
    if day in document.closed:
        return []
    zone, step = document.zone, document.garage.slot_minutes
    result = []
    for start, end in document.hours.ranges(day.weekday()):
        first = start.hour * 60 + start.minute
        last = 24 * 60 if end is None else end.hour * 60 + end.minute
        for minute in range(first, last - step + 1, step):
            begins, ends = _wall(day, minute, zone), _wall(day, minute + step, zone)
            if begins is not None and ends is not None and ends - begins == document.slot_length:
                result.append((begins, ends))
    return result


def horizon(document: GarageDocument, now: datetime) -> tuple[date, date]:
    """The local days the calendar offers: today through `book_ahead_days` ahead."""
    today = now.astimezone(document.zone).date()
    return today, today + timedelta(days=document.garage.book_ahead_days)


def wanted(document: GarageDocument, first: date, last: date) -> list[tuple[datetime, datetime]]:
    times: list[tuple[datetime, datetime]] = []
    day = first
    while day <= last:
        times.extend(day_times(document, day))
        day += timedelta(days=1)
    return times


async def _active_bays(conn: AsyncConnection) -> list[int]:
    return list((await conn.scalars(select(bays.c.id).where(bays.c.active))).all())


async def extend_calendar(conn: AsyncConnection, document: GarageDocument, now: datetime) -> int:
    """Add the slots the horizon lacks on every active bay; returns how many were added.
    The caller holds `lock_setup`; conflicts on uq_slots_bay_id_starts_at are ignored anyway
    (a slot staff added by hand at that time)."""
    first, last = horizon(document, now)
    times = [t for t in wanted(document, first, last) if t[0] > now]
    bay_ids = await _active_bays(conn)
    if not times or not bay_ids:
        return 0
    existing = {
        (r.bay_id, r.starts_at)
        for r in await conn.execute(
            select(slots.c.bay_id, slots.c.starts_at).where(
                slots.c.starts_at >= times[0][0], slots.c.starts_at <= times[-1][0]
            )
        )
    }
    rows = [
        {"bay_id": bay_id, "starts_at": begins, "ends_at": ends}
        for bay_id in bay_ids
        for begins, ends in times
        if (bay_id, begins) not in existing
    ]
    added = 0
    for chunk in _chunks(rows):
        result = await conn.execute(insert_ignoring_conflicts(conn, slots), chunk)
        added += max(result.rowcount, 0)
    return added


@dataclass(frozen=True)
class _Future:
    id: int
    bay_id: int
    starts_at: datetime
    ends_at: datetime
    open: bool


async def sync_calendar(
    conn: AsyncConnection, document: GarageDocument, now: datetime, *, regrid: bool = False
) -> None:
    """Make the future follow the document: slots it wants are added and open, every other
    future slot is closed. `regrid` (a new slot length, refused while future bookings exist):
    future slots nothing refers to are deleted first, the rest take the new length where they
    sit on the new grid, so the new grid's slots can be added."""
    if regrid:
        await _regrid(conn, document, now)
    await extend_calendar(conn, document, now)
    first, last = horizon(document, now)
    active = set(await _active_bays(conn))
    grid = set(wanted(document, first, last))
    future = [
        _Future(r.id, r.bay_id, r.starts_at, r.ends_at, r.open)
        for r in await conn.execute(
            select(
                slots.c.id, slots.c.bay_id, slots.c.starts_at, slots.c.ends_at, slots.c.open
            ).where(slots.c.starts_at > now)
        )
    ]
    should = {s.id: s.bay_id in active and (s.starts_at, s.ends_at) in grid for s in future}
    await _set_open(conn, [s.id for s in future if should[s.id] and not s.open], True)
    await _set_open(conn, [s.id for s in future if not should[s.id] and s.open], False)


async def _set_open(conn: AsyncConnection, ids: Sequence[int], value: bool) -> None:
    for chunk in _chunks(list(ids)):
        await conn.execute(update(slots).where(slots.c.id.in_(chunk)).values(open=value))


async def _regrid(conn: AsyncConnection, document: GarageDocument, now: datetime) -> None:
    referenced = or_(
        exists().where(booking_slots.c.slot_id == slots.c.id),
        exists().where(bookings.c.slot_id == slots.c.id),
        exists().where(waitlist_offers.c.slot_id == slots.c.id),
    )
    await conn.execute(delete(slots).where(slots.c.starts_at > now, ~referenced))
    step = document.garage.slot_minutes
    kept = (
        await conn.execute(select(slots.c.id, slots.c.starts_at).where(slots.c.starts_at > now))
    ).all()
    zone = document.zone
    for row in kept:
        local = row.starts_at.astimezone(zone)
        if (local.hour * 60 + local.minute) % step == 0:
            await conn.execute(
                update(slots)
                .where(slots.c.id == row.id)
                .values(ends_at=row.starts_at + document.slot_length)
            )


def _chunks(items: list[T]) -> Iterable[list[T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


async def outside_hours(conn: AsyncConnection, now: datetime) -> list[dict[str, object]]:
    """Future confirmed bookings that claim a slot the document no longer offers (outside the
    hours, a closed day, a retired bay): kept and confirmed, for staff to move or keep."""
    closed_claim = exists().where(
        and_(
            booking_slots.c.booking_id == bookings.c.id,
            booking_slots.c.active,
            booking_slots.c.slot_id == slots.c.id,
            ~slots.c.open,
        )
    )
    rows = await conn.execute(
        select(bookings.c.id, bookings.c.reference, bookings.c.starts_at)
        .where(bookings.c.status == "confirmed", bookings.c.starts_at > now, closed_claim)
        .order_by(bookings.c.starts_at)
    )
    return [{"id": r.id, "reference": r.reference, "starts_at": r.starts_at} for r in rows]
