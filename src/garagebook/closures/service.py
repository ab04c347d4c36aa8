"""Closing and reopening times, under the same guarantee as bookings.

A closure claims every slot it closes in `booking_slots` (`closure_id` set, `booking_id` NULL),
written with `ON CONFLICT DO NOTHING` against uq_booking_slots_slot_id_active, the index every
booking's claims go against. So whichever of a closure and a booking of the same slot commits
first wins, the other finds its claim refused and rolls back, and nothing else has to
remember closures: free-time listings, holds, waitlist offers and moves all read the same
active claims. Reopening deactivates the claims: the time is free at once.

Like a booking, `close` first takes the slots' reservation keys (a booked or held slot is
refused there, fast) and keeps them for the reservation TTL after the commit, so requests for
a closed time are turned away without touching the database; correctness rests on the index.
`close_day` runs inside its caller's transaction (the setup document's closed days), so it
takes no keys: the database still refuses every booking of those times.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.config import Settings
from garagebook.db import Database, insert_ignoring_conflicts
from garagebook.errors import (
    BayNotFound,
    ClosureNotFound,
    ClosureReopened,
    NothingToClose,
    SlotNotFound,
    SlotUnavailable,
)
from garagebook.reservations import Outcome, ReservationStore, lease_ms
from garagebook.schema import bays, booking_slots, bookings, closures, slots
from garagebook.slots.events import time_freed
from garagebook.slots.service import local_day_bounds
from garagebook.timeutil import to_local_iso, utcnow


@dataclass(frozen=True)
class Closure:
    id: int
    bay_id: int
    starts_at: datetime
    ends_at: datetime
    reason: str | None
    closed_by: str
    created_at: datetime
    reopened_at: datetime | None
    reopened_by: str | None
    slot_ids: tuple[int, ...]

    @property
    def active(self) -> bool:
        return self.reopened_at is None

    def json(self, zone: ZoneInfo) -> dict[str, Any]:
        return {
            "id": self.id,
            "bay_id": self.bay_id,
            "starts_at": to_local_iso(self.starts_at, zone),
            "ends_at": to_local_iso(self.ends_at, zone),
            "reason": self.reason,
            "closed_by": self.closed_by,
            "created_at": to_local_iso(self.created_at, zone),
            "active": self.active,
            "reopened_at": to_local_iso(self.reopened_at, zone) if self.reopened_at else None,
            "reopened_by": self.reopened_by,
            "slot_ids": list(self.slot_ids),
        }


async def close(
    db: Database,
    reservations: ReservationStore,
    settings: Settings,
    bay_id: int,
    starts_at: datetime,
    ends_at: datetime,
    *,
    by: str,
    reason: str | None = None,
) -> Closure:
    """Close every future slot of `bay_id` that overlaps [starts_at, ends_at): all of them or
    none. SlotUnavailable (409) when any of them is booked or held; NothingToClose when there
    is no such slot."""
    now = utcnow()
    async with db.read() as conn:
        if await conn.scalar(select(bays.c.id).where(bays.c.id == bay_id)) is None:
            raise BayNotFound(bay_id=bay_id)
        slot_ids = tuple(
            (
                await conn.scalars(
                    select(slots.c.id)
                    .where(
                        slots.c.bay_id == bay_id,
                        slots.c.starts_at < ends_at,
                        slots.c.ends_at > starts_at,
                        slots.c.starts_at > now,
                    )
                    .order_by(slots.c.starts_at)
                )
            ).all()
        )
    if not slot_ids:
        raise NothingToClose()
    token = f"closure:{secrets.token_hex(16)}"
    if await reservations.reserve(slot_ids, token, lease_ms(settings)) is Outcome.CONFLICT:
        raise SlotUnavailable("reservation")
    try:
        async with db.transaction() as conn:
            closure_id = await _insert_closure(conn, bay_id, starts_at, ends_at, by, reason, now)
            if len(await _claim(conn, closure_id, slot_ids)) != len(slot_ids):
                raise SlotUnavailable("database")  # rolls the closure back too
    except BaseException:
        await reservations.release(slot_ids, token)
        raise
    await reservations.confirm(slot_ids, token, settings.reservation_ttl_seconds * 1000)
    return Closure(closure_id, bay_id, starts_at, ends_at, reason, by, now, None, None, slot_ids)


async def close_slot(
    db: Database,
    reservations: ReservationStore,
    settings: Settings,
    slot_id: int,
    *,
    by: str,
    reason: str | None = None,
) -> Closure:
    """Close one slot (the staff grid's Close button): its own time on its own bay."""
    async with db.read() as conn:
        slot = (
            await conn.execute(
                select(slots.c.bay_id, slots.c.starts_at, slots.c.ends_at).where(
                    slots.c.id == slot_id
                )
            )
        ).first()
    if slot is None:
        raise SlotNotFound(slot_id=slot_id)
    return await close(
        db, reservations, settings, slot.bay_id, slot.starts_at, slot.ends_at, by=by, reason=reason
    )


async def reopen(
    db: Database, reservations: ReservationStore, settings: Settings, closure_id: int, *, by: str
) -> Closure:
    """End the closure's claims in one transaction (a freed time for the waitlist of each day
    it covered), then drop its slots' reservation keys: the time is bookable at once."""
    now = utcnow()
    async with db.transaction() as conn:
        row = (
            await conn.execute(
                update(closures)
                .where(closures.c.id == closure_id, closures.c.reopened_at.is_(None))
                .values(reopened_at=now, reopened_by=by)
                .returning(*closures.c)
            )
        ).first()
        if row is None:
            exists = await conn.scalar(select(closures.c.id).where(closures.c.id == closure_id))
            raise ClosureNotFound() if exists is None else ClosureReopened()
        freed = (
            (
                await conn.execute(
                    update(booking_slots)
                    .where(booking_slots.c.closure_id == closure_id, booking_slots.c.active)
                    .values(active=False)
                    .returning(booking_slots.c.slot_id)
                )
            )
            .scalars()
            .all()
        )
        days = await conn.scalars(select(slots.c.starts_at).where(slots.c.id.in_(freed)))
        for day in sorted({moment.astimezone(settings.timezone).date() for moment in days}):
            await time_freed(conn, day, now)
        slot_ids = await _claimed(conn, closure_id)
    await reservations.forget(freed)
    return _closure(row, slot_ids)


@dataclass(frozen=True)
class ClosedDay:
    """What `close_day` did: the closures it made (one per bay with a free slot) and the
    bookings it left where they were, as `{"id", "reference", "starts_at"}`."""

    closure_ids: list[int] = field(default_factory=list)
    booked: list[dict[str, Any]] = field(default_factory=list)


async def close_day(
    conn: AsyncConnection,
    day: date,
    zone: ZoneInfo,
    *,
    by: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> ClosedDay:
    """Close every free future slot of the local `day` on every bay, in the caller's
    transaction. Booked slots are skipped and their bookings returned (a closed day never
    cancels a booking); slots already closed are skipped too, so closing a day twice makes
    nothing the second time. A booking racing this loses or wins slot by slot, by the index."""
    now = now or utcnow()
    start, end = local_day_bounds(day, zone)
    rows = (
        await conn.execute(
            select(slots.c.id, slots.c.bay_id)
            .where(slots.c.starts_at >= start, slots.c.starts_at < end, slots.c.starts_at > now)
            .order_by(slots.c.bay_id, slots.c.starts_at)
        )
    ).all()
    by_bay: dict[int, list[int]] = {}
    for r in rows:
        by_bay.setdefault(r.bay_id, []).append(r.id)
    result = ClosedDay()
    skipped: list[int] = []
    for bay_id, slot_ids in by_bay.items():
        closure_id = await _insert_closure(conn, bay_id, start, end, by, reason, now)
        claimed = set(await _claim(conn, closure_id, slot_ids))
        skipped += [s for s in slot_ids if s not in claimed]
        if claimed:
            result.closure_ids.append(closure_id)
        else:
            await conn.execute(delete(closures).where(closures.c.id == closure_id))
    if skipped:
        booked = await conn.execute(
            select(bookings.c.id, bookings.c.reference, bookings.c.starts_at)
            .distinct()
            .join(booking_slots, booking_slots.c.booking_id == bookings.c.id)
            .where(booking_slots.c.slot_id.in_(skipped), booking_slots.c.active)
            .order_by(bookings.c.starts_at)
        )
        result.booked.extend(
            {"id": b.id, "reference": b.reference, "starts_at": to_local_iso(b.starts_at, zone)}
            for b in booked
        )
    return result


async def list_closures(conn: AsyncConnection, start: datetime, end: datetime) -> list[Closure]:
    """Closures overlapping [start, end), active or reopened, soonest first."""
    rows = (
        await conn.execute(
            select(closures)
            .where(closures.c.starts_at < end, closures.c.ends_at > start)
            .order_by(closures.c.starts_at, closures.c.id)
        )
    ).all()
    claims = await conn.execute(
        select(booking_slots.c.closure_id, booking_slots.c.slot_id)
        .join(slots, slots.c.id == booking_slots.c.slot_id)
        .where(booking_slots.c.closure_id.in_([r.id for r in rows]))
        .order_by(slots.c.starts_at)
    )
    slot_ids: dict[int, list[int]] = {}
    for c in claims:
        slot_ids.setdefault(c.closure_id, []).append(c.slot_id)
    return [_closure(r, slot_ids.get(r.id, [])) for r in rows]


async def closed_slots(conn: AsyncConnection, start: datetime, end: datetime) -> dict[int, int]:
    """The slots starting in [start, end) that an active closure holds: slot id → closure id."""
    rows = await conn.execute(
        select(booking_slots.c.slot_id, booking_slots.c.closure_id)
        .join(slots, slots.c.id == booking_slots.c.slot_id)
        .where(
            booking_slots.c.active,
            booking_slots.c.closure_id.is_not(None),
            slots.c.starts_at >= start,
            slots.c.starts_at < end,
        )
    )
    return {r.slot_id: r.closure_id for r in rows}


async def _insert_closure(
    conn: AsyncConnection,
    bay_id: int,
    starts_at: datetime,
    ends_at: datetime,
    by: str,
    reason: str | None,
    now: datetime,
) -> int:
    closure_id = await conn.scalar(
        closures.insert()
        .values(
            bay_id=bay_id,
            starts_at=starts_at,
            ends_at=ends_at,
            reason=reason,
            closed_by=by[:100],
            created_at=now,
        )
        .returning(closures.c.id)
    )
    assert closure_id is not None  # INSERT … RETURNING always returns the row
    return int(closure_id)


async def _claim(conn: AsyncConnection, closure_id: int, slot_ids: Sequence[int]) -> list[int]:
    """The slots claimed: those with an active claim already (a booking's, a closure's) are
    refused by uq_booking_slots_slot_id_active and left out."""
    claimed = await conn.scalars(
        insert_ignoring_conflicts(conn, booking_slots)
        .values([{"closure_id": closure_id, "slot_id": s, "active": True} for s in slot_ids])
        .returning(booking_slots.c.slot_id)
    )
    return list(claimed.all())


async def _claimed(conn: AsyncConnection, closure_id: int) -> list[int]:
    return list(
        (
            await conn.scalars(
                select(booking_slots.c.slot_id)
                .join(slots, slots.c.id == booking_slots.c.slot_id)
                .where(booking_slots.c.closure_id == closure_id)
                .order_by(slots.c.starts_at)
            )
        ).all()
    )


def _closure(row: Any, slot_ids: Sequence[int]) -> Closure:
    return Closure(
        row.id,
        row.bay_id,
        row.starts_at,
        row.ends_at,
        row.reason,
        row.closed_by,
        row.created_at,
        row.reopened_at,
        row.reopened_by,
        tuple(slot_ids),
    )
