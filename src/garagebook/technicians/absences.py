"""Absences (issue 15): a technician away for a day or a range of the garage's local days.

Entering one closes the technician's slots in those days and marks their days absent, in the
caller's transaction: from its commit on, the booking path finds no open slot of theirs and its
guarded counter (`WHERE NOT absent`) refuses their day, so nothing new is booked on them. On
PostgreSQL a booking claims the technician's slots `FOR SHARE`, so closing them waits for a
booking in flight and the booking made first is kept. Bookings already made are never cancelled
or dropped: they are returned, to be reassigned (technicians/reassign.py) by staff.

Withdrawing reopens what the setup document says the technician works, except days another
active absence of theirs still covers. Both are the calendar's `sync_technician_days`
(garage/calendar.py), which recomputes a technician's future from the document and the
absences table: one place decides what is open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.errors import AbsenceNotFound, AbsenceWithdrawn, TechnicianNotFound
from garagebook.garage.apply import current_document
from garagebook.garage.calendar import sync_technician_days
from garagebook.schema import absences, bookings, technicians
from garagebook.slots.events import time_freed
from garagebook.slots.service import local_day_bounds


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
    await sync_technician_days(conn, await current_document(conn), now, technician_id)
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
    await sync_technician_days(conn, await current_document(conn), now, absence.technician_id)
    today = now.astimezone(zone).date()
    day = max(absence.first_day, today)
    while day <= absence.last_day:  # they work again: times may be free for the waitlist
        await time_freed(conn, day, now)
        day += timedelta(days=1)
    return absence


async def list_absences(conn: AsyncConnection, first: date, last: date) -> list[Absence]:
    """Absences overlapping the local days `first` to `last`, active and withdrawn."""
    rows = await conn.execute(
        select(absences)
        .where(absences.c.first_day <= last, absences.c.last_day >= first)
        .order_by(absences.c.first_day, absences.c.id)
    )
    return [_absence(r) for r in rows]


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
