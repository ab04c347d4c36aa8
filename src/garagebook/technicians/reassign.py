"""Reassigning a booking to another technician or bay (issue 15): a move under the guarantee.

Staff reassign the bookings an absence or a setup change flagged, and place drop-offs on a
technician, or on a bay for a time of their day (technicians/drop_offs.py `place`). The
booking keeps its time (a drop-off, its day); what changes is who holds it. In one
transaction the booking row is locked, its old claims go and the new ones are claimed the way
a booking claims them: the new technician's open slots at the same times (a drop-off has none)
against uq_technician_claims_technician_slot_id_active (`FOR SHARE` on PostgreSQL, so an
absence closing them waits), their day's minutes under the guarded counter (`WHERE NOT absent
AND booked + mine <= working`), and the new bay's open slots against
uq_booking_slots_slot_id_active. Anything refused raises, the transaction rolls back and the
booking is exactly as it was: a reassignment racing a new booking for the same technician's
slot is decided by the index, never by a read made earlier.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.bookings.service import booking_json
from garagebook.config import Settings
from garagebook.db import Database, insert_ignoring_conflicts
from garagebook.errors import (
    BookingNotFound,
    InvalidRequest,
    SlotUnavailable,
    TechnicianNotFound,
    TechnicianUnavailable,
    closed_because,
)
from garagebook.garage.rules import can, require_capable_bay
from garagebook.reservations import Key, ReservationStore
from garagebook.schema import booking_slots, bookings, services, slots, technicians
from garagebook.slots.events import time_freed
from garagebook.technicians.claims import TechnicianTaken, claim, release
from garagebook.technicians.drop_offs import place, unplace
from garagebook.timeutil import utcnow


async def reassign(
    db: Database,
    reservations: ReservationStore,
    settings: Settings,
    booking_id: str,
    *,
    technician_id: int | None = None,
    bay_id: int | None = None,
    starts_at: datetime | None = None,
) -> dict[str, Any]:
    """Give the booking to `technician_id` and/or `bay_id` at the same time, all or nothing;
    the booking as the API shows it. A drop-off is placed on `bay_id` from `starts_at` (both
    given) for its labour minutes. Then drop the reservation keys of what it left."""
    if technician_id is None and bay_id is None:
        raise InvalidRequest("Give technician_id, bay_id or both.")
    freed: list[Key] = []
    async with db.transaction() as conn:
        booking = await _lock_confirmed(conn, booking_id)
        service = (
            await conn.execute(
                select(services.c.skill, services.c.needs).where(
                    services.c.id == booking.service_id
                )
            )
        ).one()
        drop_off = booking.slot_id is None
        if drop_off and (bay_id is None) != (starts_at is None):
            raise InvalidRequest("To place a drop-off on a bay, give bay_id and starts_at.")
        if not drop_off and starts_at is not None:
            raise InvalidRequest(
                "A timed booking keeps its time here: reschedule it to move it to another."
            )
        if starts_at is not None:  # a drop-off to place: off its old bay and time first
            freed += await unplace(conn, booking_id)
        held = (
            await conn.execute(
                select(slots.c.id, slots.c.bay_id, slots.c.starts_at)
                .join(booking_slots, booking_slots.c.slot_id == slots.c.id)
                .where(booking_slots.c.booking_id == booking_id, booking_slots.c.active)
                .order_by(slots.c.starts_at)
            )
        ).all()
        starts = [r.starts_at for r in held]
        moved = False
        if technician_id is not None and technician_id != booking.technician_id:
            freed += await _to_technician(
                conn, booking, technician_id, service.skill, starts, settings
            )
            booking = await _lock_confirmed(conn, booking_id)
            moved = True
        if starts_at is not None and bay_id is not None:
            await place(conn, booking, bay_id, starts_at, service.needs)
            moved = True
        elif bay_id is not None and bay_id != held[0].bay_id:
            freed += await _to_bay(conn, booking_id, bay_id, service.needs, list(held))
            moved = True
        if moved:  # the old technician or bay is free then: the day's waitlist may have a time
            day = booking.starts_at.astimezone(settings.timezone).date()
            await time_freed(conn, day, utcnow())
        row = (await conn.execute(select(bookings).where(bookings.c.id == booking_id))).one()
        now_slots = (
            await conn.execute(
                select(slots.c.id, slots.c.bay_id)
                .join(booking_slots, booking_slots.c.slot_id == slots.c.id)
                .where(booking_slots.c.booking_id == booking_id, booking_slots.c.active)
                .order_by(slots.c.starts_at)
            )
        ).all()
    await reservations.forget(freed)
    bay = now_slots[0].bay_id if now_slots else None  # a drop-off holds none until placed
    shown = booking_json(row._asdict(), bay, [r.id for r in now_slots], settings)
    shown["technician_id"] = row.technician_id
    return shown


async def _lock_confirmed(conn: AsyncConnection, booking_id: str) -> Any:
    """The booking row, locked for the transaction (a racing cancel or move waits, or wins
    first); BookingClosed unless it is still confirmed."""
    row = (
        await conn.execute(
            select(
                bookings.c.id,
                bookings.c.status,
                bookings.c.service_id,
                bookings.c.technician_id,
                bookings.c.starts_at,
                bookings.c.ends_at,
                bookings.c.slot_id,
                bookings.c.technician_minutes,
            )
            .where(bookings.c.id == booking_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        raise BookingNotFound()
    if row.status != "confirmed":
        raise closed_because(row.status)
    return row


async def _to_technician(
    conn: AsyncConnection,
    booking: Any,
    technician_id: int,
    skill: str,
    starts: list[datetime],
    settings: Settings,
) -> list[Key]:
    """Move the booking's technician claims and minutes; the old technician's keys to drop."""
    person = (
        await conn.execute(
            select(technicians.c.skills, technicians.c.active).where(
                technicians.c.id == technician_id
            )
        )
    ).first()
    if person is None:
        raise TechnicianNotFound(technician_id=technician_id)
    if not person.active or not can(person.skills, skill):
        raise TechnicianUnavailable(
            f"That technician is retired or lacks the skill this service needs ({skill})."
        )
    day = booking.starts_at.astimezone(settings.timezone).date()
    minutes = (
        booking.technician_minutes
        if booking.technician_minutes is not None
        else int((booking.ends_at - booking.starts_at).total_seconds() // 60)
    )
    # The old claims are deleted, not kept inactive: a booking claims a slot once
    # (uq_technician_claims_booking_id_technician_slot_id), and it may come back to them.
    old_keys = await release(conn, booking.id, day, moving=True)
    try:
        await claim(conn, booking.id, technician_id, skill, starts, day, minutes)
    except TechnicianTaken:
        raise TechnicianUnavailable(
            "That technician is not free for the whole time: a slot is taken or closed, or "
            "their day is absent or has no minutes left."
        ) from None
    await conn.execute(
        update(bookings)
        .where(bookings.c.id == booking.id)
        .values(technician_id=technician_id, technician_minutes=minutes)
    )
    return old_keys


async def _to_bay(
    conn: AsyncConnection, booking_id: str, bay_id: int, needs: str, held: list[Any]
) -> list[Key]:
    """Move the booking's bay claims to `bay_id`'s open slots at the same times; the old bay
    slot ids, whose reservation keys go after the commit."""
    await require_capable_bay(conn, bay_id, needs)
    wanted = select(slots.c.id).where(
        slots.c.bay_id == bay_id,
        slots.c.starts_at.in_([r.starts_at for r in held]),
        slots.c.open,
    )
    if conn.dialect.name == "postgresql":
        wanted = wanted.with_for_update(read=True)  # a regrid or close waits for us
    new_slots = list((await conn.scalars(wanted.order_by(slots.c.starts_at))).all())
    if len(new_slots) != len(held):
        raise SlotUnavailable(
            "database", "That bay has no open slot at some of the booking's time."
        )
    old = [r.id for r in held]
    await conn.execute(
        update(booking_slots)
        .where(booking_slots.c.booking_id == booking_id, booking_slots.c.active)
        .values(active=False)
    )
    await conn.execute(  # a claim of the same slot by this booking from an earlier move
        delete(booking_slots).where(
            booking_slots.c.booking_id == booking_id,
            booking_slots.c.slot_id.in_(new_slots),
            ~booking_slots.c.active,
        )
    )
    claimed = (
        await conn.scalars(
            insert_ignoring_conflicts(conn, booking_slots)
            .values([{"booking_id": booking_id, "slot_id": s, "active": True} for s in new_slots])
            .returning(booking_slots.c.slot_id)
        )
    ).all()
    if len(claimed) != len(new_slots):
        raise SlotUnavailable("database")  # rolls back: the booking keeps its bay
    try:
        async with conn.begin_nested():
            await conn.execute(
                update(bookings).where(bookings.c.id == booking_id).values(slot_id=new_slots[0])
            )
    except IntegrityError:  # uq_bookings_slot_id_not_cancelled: another booking starts there
        raise SlotUnavailable("database") from None
    return list(old)
