"""Absences (issue 15): a technician away for a day or a range of the garage's local days.

Entering one closes the technician's slots in those days and marks their days absent, in the
caller's transaction: from its commit on, the booking path finds no open slot of theirs and its
guarded counter (`WHERE NOT absent`) refuses their day, so nothing new is booked on them. On
PostgreSQL a booking claims the technician's slots `FOR SHARE`, so closing them waits for a
booking in flight and the booking made first is kept. Bookings already made are never cancelled
or dropped: they are returned, to be reassigned (technicians/reassign.py) by staff.

Withdrawing reopens what the setup document says the technician works, except days another
active absence of theirs still covers. When the calendar of the setup document offers
`sync_technician_days` (garage/calendar.py) that does the recomputing; until then `_close_days`
and `_reopen_days` here make the same updates for the days concerned.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.errors import AbsenceNotFound, AbsenceWithdrawn, TechnicianNotFound
from garagebook.garage.apply import current_document
from garagebook.garage.document import GarageDocument, Hours
from garagebook.schema import absences, bookings, technician_days, technician_slots, technicians
from garagebook.slots.service import local_day_bounds

Sync = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Absence:
    id: int
    technician_id: int
    first_day: date
    last_day: date
    reason: str | None
    entered_by: str
    created_at: datetime
    withdrawn_at: datetime | None

    @property
    def active(self) -> bool:
        return self.withdrawn_at is None

    def days(self) -> list[date]:
        return [
            self.first_day + timedelta(days=n)
            for n in range((self.last_day - self.first_day).days + 1)
        ]

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "technician_id": self.technician_id,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "reason": self.reason,
            "entered_by": self.entered_by,
            "created_at": self.created_at.isoformat(),
            "active": self.active,
            "withdrawn_at": self.withdrawn_at.isoformat() if self.withdrawn_at else None,
        }


@dataclass(frozen=True)
class Entered:
    """An absence and the ids of the technician's confirmed bookings in it (to reassign)."""

    absence: Absence
    flagged: list[str]


def calendar_sync() -> Sync | None:
    """The setup calendar's `sync_technician_days`, once it exists (Part A of issue 15)."""
    module = importlib.import_module("garagebook.garage.calendar")
    found: Sync | None = getattr(module, "sync_technician_days", None)
    return found


async def enter_absence(
    conn: AsyncConnection,
    technician_id: int,
    first_day: date,
    last_day: date,
    reason: str | None,
    entered_by: str,
    now: datetime,
    *,
    zone: ZoneInfo,
) -> Entered:
    """Record the absence, close the technician's time in those days and return their
    confirmed bookings there, soonest first: flagged, never cancelled. In the caller's
    transaction."""
    if await conn.scalar(select(technicians.c.id).where(technicians.c.id == technician_id)) is None:
        raise TechnicianNotFound(technician_id=technician_id)
    row = (
        await conn.execute(
            absences.insert()
            .values(
                technician_id=technician_id,
                first_day=first_day,
                last_day=last_day,
                reason=reason,
                entered_by=entered_by[:100],
                created_at=now,
            )
            .returning(*absences.c)
        )
    ).one()
    absence = _absence(row)
    sync = calendar_sync()
    if sync is not None:
        await sync(conn, await current_document(conn), now, technician_id=technician_id)
    else:
        await _close_days(conn, technician_id, absence.days(), zone)
    return Entered(absence, await flagged_in(conn, technician_id, first_day, last_day, zone))


async def withdraw_absence(
    conn: AsyncConnection, absence_id: int, now: datetime, *, zone: ZoneInfo
) -> Absence:
    """Withdraw: the technician works those days again as the document has them, except the
    days another active absence of theirs still covers. Bookings flagged stay where staff put
    them. AbsenceWithdrawn the second time."""
    row = (
        await conn.execute(
            update(absences)
            .where(absences.c.id == absence_id, absences.c.withdrawn_at.is_(None))
            .values(withdrawn_at=now)
            .returning(*absences.c)
        )
    ).first()
    if row is None:
        exists = await conn.scalar(select(absences.c.id).where(absences.c.id == absence_id))
        raise AbsenceNotFound() if exists is None else AbsenceWithdrawn()
    absence = _absence(row)
    sync = calendar_sync()
    if sync is not None:
        await sync(conn, await current_document(conn), now, technician_id=absence.technician_id)
        return absence
    still = await absent_days(conn, absence.technician_id, absence.first_day, absence.last_day)
    free = [day for day in absence.days() if day not in still]
    await _reopen_days(conn, absence.technician_id, free, await current_document(conn))
    return absence


async def list_absences(conn: AsyncConnection, first: date, last: date) -> list[Absence]:
    """Absences overlapping the local days `first` to `last`, active and withdrawn."""
    rows = await conn.execute(
        select(absences)
        .where(absences.c.first_day <= last, absences.c.last_day >= first)
        .order_by(absences.c.first_day, absences.c.id)
    )
    return [_absence(r) for r in rows]


async def absent_days(
    conn: AsyncConnection, technician_id: int, first: date, last: date
) -> set[date]:
    """The days in [first, last] an active absence of the technician covers."""
    rows = await conn.execute(
        select(absences.c.first_day, absences.c.last_day).where(
            absences.c.technician_id == technician_id,
            absences.c.withdrawn_at.is_(None),
            absences.c.first_day <= last,
            absences.c.last_day >= first,
        )
    )
    days: set[date] = set()
    for r in rows:
        day = max(r.first_day, first)
        while day <= min(r.last_day, last):
            days.add(day)
            day += timedelta(days=1)
    return days


async def flagged_in(
    conn: AsyncConnection, technician_id: int, first: date, last: date, zone: ZoneInfo
) -> list[str]:
    """The technician's confirmed bookings starting in the local days `first` to `last`."""
    start, _ = local_day_bounds(first, zone)
    _, end = local_day_bounds(last, zone)
    found = await conn.scalars(
        select(bookings.c.id)
        .where(
            bookings.c.technician_id == technician_id,
            bookings.c.status == "confirmed",
            bookings.c.starts_at >= start,
            bookings.c.starts_at < end,
        )
        .order_by(bookings.c.starts_at, bookings.c.id)
    )
    return list(found.all())


async def _close_days(
    conn: AsyncConnection, technician_id: int, days: list[date], zone: ZoneInfo
) -> None:
    """Mark the technician's days absent (the rows that exist) and close their slots in
    those local days: what `sync_technician_days` does for an absence, until it exists."""
    await conn.execute(
        update(technician_days)
        .where(technician_days.c.technician_id == technician_id, technician_days.c.day.in_(days))
        .values(absent=True)
    )
    start, _ = local_day_bounds(min(days), zone)
    _, end = local_day_bounds(max(days), zone)
    await conn.execute(
        update(technician_slots)
        .where(
            technician_slots.c.technician_id == technician_id,
            technician_slots.c.starts_at >= start,
            technician_slots.c.starts_at < end,
        )
        .values(open=False)
    )


async def _reopen_days(
    conn: AsyncConnection, technician_id: int, days: list[date], document: GarageDocument
) -> None:
    """Undo `_close_days` for `days`: the day rows are present again, and the slots open that
    lie in the technician's hours (theirs, else the garage's) on a day the garage is open. A
    retired technician's slots stay closed."""
    if not days:
        return
    person = (
        await conn.execute(
            select(technicians.c.hours, technicians.c.active).where(
                technicians.c.id == technician_id
            )
        )
    ).one()
    await conn.execute(
        update(technician_days)
        .where(technician_days.c.technician_id == technician_id, technician_days.c.day.in_(days))
        .values(absent=False)
    )
    if not person.active:
        return
    hours = Hours.model_validate(json.loads(person.hours)) if person.hours else document.hours
    zone = document.zone
    for day in days:
        if day in document.closed:
            continue
        start, end = local_day_bounds(day, zone)
        for begins, ends in hours.ranges(day.weekday()):
            low = datetime.combine(day, begins, tzinfo=zone)
            high = end if ends is None else datetime.combine(day, ends, tzinfo=zone)
            await conn.execute(
                update(technician_slots)
                .where(
                    and_(
                        technician_slots.c.technician_id == technician_id,
                        technician_slots.c.starts_at >= max(low, start),
                        technician_slots.c.ends_at <= min(high, end),
                    )
                )
                .values(open=True)
            )


def _absence(row: Any) -> Absence:
    return Absence(
        row.id,
        row.technician_id,
        row.first_day,
        row.last_day,
        row.reason,
        row.entered_by,
        row.created_at,
        row.withdrawn_at,
    )
