"""Moving a booking to another time, under the same three layers as a new booking.

One transaction: the booking row is locked (a racing cancel or reschedule of the same
booking waits for it), the new slots are claimed against the same partial unique index as
any booking (`ON CONFLICT DO NOTHING`: a lost race is a count, rolled back as a 409 with the
old time still booked), the old claims are deleted, the row is updated (same id, reference and
cancel token; `sequence` + 1 for the calendar), and the `booking_rescheduled` job and the new
time's reminder are written.
The new slots' reservation keys are taken first, like a booking's; the old slots' keys are
dropped after the commit so they are bookable at once. Where the garage lists technicians the
old technician's times are given back and the new times claimed from the first qualified
technician the database allows (technicians/claims.py); a move takes no reservation keys for
technicians: for them the database alone decides.

A drop-off moves to another day (`move_drop_off`): its minutes go back to the old day and are
taken from a qualified technician's new day under the same guarded counter as a booking's
(`booked + mine <= working AND NOT absent`, and the CHECK behind it), in one transaction.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.bookings.reminders import reminder_at
from garagebook.bookings.service import booking_json, claimed_slots, job_payload
from garagebook.config import Settings
from garagebook.db import Database, insert_ignoring_conflicts
from garagebook.errors import (
    BookingNotFound,
    InvalidRequest,
    ServiceDoesNotFit,
    SlotInPast,
    SlotUnavailable,
    closed_because,
)
from garagebook.garage.rules import read_rules, refuse
from garagebook.jobs.kinds import BOOKING_REMINDER, BOOKING_RESCHEDULED
from garagebook.jobs.queue import enqueue
from garagebook.reservations import Key, Outcome, ReservationStore, lease_ms
from garagebook.schema import booking_slots, bookings
from garagebook.slots.events import time_freed
from garagebook.slots.service import PlanCache
from garagebook.technicians.claims import (
    TechnicianChoice,
    Technicians,
    TechnicianTaken,
    claim_first,
)
from garagebook.technicians.claims import release as release_technician
from garagebook.technicians.drop_offs import plan_drop_off, refuse_unbookable, unplace
from garagebook.timeutil import utcnow
from garagebook.webhooks.events import BOOKING_RESCHEDULED as HOOK_RESCHEDULED
from garagebook.webhooks.events import enqueue_event


async def reschedule(
    db: Database,
    reservations: ReservationStore,
    plans: PlanCache,
    settings: Settings,
    booking_id: str,
    new_slot_id: int,
    *,
    online: bool = True,
) -> dict[str, Any]:
    """`online`: moved by the customer (the minimum notice applies); staff and the admin token
    move without it. The setup's rules are read in the move's transaction (garage/rules.py)."""
    async with db.read() as conn:
        current = (
            await conn.execute(
                select(bookings.c.service_id, bookings.c.status, bookings.c.starts_at).where(
                    bookings.c.id == booking_id
                )
            )
        ).first()
        if current is None:
            raise BookingNotFound()
        if current.status != "confirmed":
            raise closed_because(current.status)
        old_slots, _ = await claimed_slots(conn, booking_id)
    now = utcnow()
    plan = await plans.get(db, new_slot_id, current.service_id)
    if plan.start.starts_at <= now:
        raise SlotInPast(slot_id=new_slot_id)
    if not plan.fits:
        raise ServiceDoesNotFit()
    new_slots = [s for s in plan.slot_ids if s not in old_slots]  # the rest are ours already

    token = secrets.token_hex(16)
    if new_slots:
        outcome = await reservations.reserve(new_slots, token, lease_ms(settings))
        if outcome is Outcome.CONFLICT:
            raise SlotUnavailable("reservation")
    try:
        async with db.transaction() as conn:
            refuse(
                await read_rules(conn, current.service_id, plan.slot_ids),
                plan_minutes=int(plan.duration.total_seconds() // 60),
                starts_at=plan.start.starts_at,
                now=now,
                online=online,
                claimed=len(plan.slot_ids),
            )
            moved = await _move(conn, booking_id, plan.slot_ids, new_slots, plan, now)
            # The technician: the old times given back, the new ones claimed by whoever can.
            zone = settings.timezone
            freed_keys = await release_technician(
                conn, booking_id, current.starts_at.astimezone(zone).date(), moving=True
            )
            try:
                moved["technician_id"] = await claim_first(
                    conn,
                    booking_id,
                    plan.technicians,
                    plan.skill,
                    plan.starts,
                    plan.start.starts_at.astimezone(zone).date(),
                    int(plan.duration.total_seconds() // 60),
                )
            except TechnicianTaken:
                raise SlotUnavailable(
                    "database", "No technician who can do it is free then."
                ) from None
            # The old time is free: someone on that day's waitlist may want it.
            await time_freed(conn, current.starts_at.astimezone(settings.timezone).date(), now)
            # The reminder for the new time; the old time's job finds the sequence changed.
            reminder = reminder_at(plan.start.starts_at, settings, now)
            if reminder is not None:
                await enqueue(conn, BOOKING_REMINDER, job_payload(moved), now=now, run_at=reminder)
    except BaseException:
        if new_slots:
            await reservations.release(new_slots, token)
        raise
    if new_slots:  # committed: the new slots' keys get the whole TTL (see bookings.book)
        await reservations.confirm(new_slots, token, settings.reservation_ttl_seconds * 1000)
    freed: list[Key] = [s for s in old_slots if s not in plan.slot_ids]
    freed += freed_keys
    if freed:
        await reservations.forget(freed)
    return booking_json(moved, plan.start.bay_id, plan.slot_ids, settings)


async def _lock_confirmed(conn: AsyncConnection, booking_id: str) -> None:
    """Lock the booking row and check it is still confirmed, inside the move's transaction: a
    cancel that committed since the first read wins, and one that comes later waits for us."""
    locked = (
        await conn.execute(
            select(bookings.c.status).where(bookings.c.id == booking_id).with_for_update()
        )
    ).first()
    if locked is None:
        raise BookingNotFound()
    if locked.status != "confirmed":
        raise closed_because(locked.status)


async def _move(
    conn: AsyncConnection,
    booking_id: str,
    slot_ids: tuple[int, ...],
    new_slots: list[int],
    plan: Any,
    now: Any,
) -> dict[str, Any]:
    await _lock_confirmed(conn, booking_id)
    if new_slots:
        claimed = (
            await conn.scalars(
                insert_ignoring_conflicts(conn, booking_slots)
                .values(
                    [{"booking_id": booking_id, "slot_id": s, "active": True} for s in new_slots]
                )
                .returning(booking_slots.c.slot_id)
            )
        ).all()
        if len(claimed) != len(new_slots):
            raise SlotUnavailable("database")  # rolls back: the old time stays booked
    await conn.execute(
        delete(booking_slots).where(
            booking_slots.c.booking_id == booking_id, booking_slots.c.slot_id.not_in(slot_ids)
        )
    )
    return await _record_move(
        conn,
        booking_id,
        now,
        slot_id=plan.start.id,
        starts_at=plan.start.starts_at,
        ends_at=plan.ends_at,
    )


async def _record_move(
    conn: AsyncConnection, booking_id: str, now: datetime, **values: Any
) -> dict[str, Any]:
    """The booking row at its new time (`sequence` + 1, for calendars), and what a move tells:
    the rescheduled mail's job and the webhook event, in the move's transaction."""
    row = (
        await conn.execute(
            update(bookings)
            .where(bookings.c.id == booking_id)
            .values(**values, sequence=bookings.c.sequence + 1)
            .returning(*bookings.c)
        )
    ).one()
    moved = row._asdict()
    await enqueue(conn, BOOKING_RESCHEDULED, job_payload(moved), now=now)
    await enqueue_event(conn, HOOK_RESCHEDULED, moved, now)
    return moved


async def move_drop_off(
    db: Database, settings: Settings, booking_id: str, day: date, *, online: bool = True
) -> dict[str, Any]:
    """Move a drop-off to local `day`, all or nothing; the booking as the API shows it.

    Its technician's minutes leave the old day, and the new day's are claimed from the
    qualified technicians with the minutes left (the one it had first, then fewest skills),
    each under the guarded counter: refused, the transaction rolls back and the booking keeps
    its day. The plan is read inside the transaction (the booking row locked first), so a
    racing cancel, move or booking of the last minutes is decided by the counter, not by a
    read made earlier. `online`: the customer, who may not move a drop-off once its window
    has opened, nor to a day inside the minimum notice; staff may (until collection)."""
    now = utcnow()
    async with db.transaction() as conn:
        await _lock_confirmed(conn, booking_id)
        current = (
            await conn.execute(
                select(
                    bookings.c.service_id,
                    bookings.c.slot_id,
                    bookings.c.starts_at,
                    bookings.c.technician_id,
                ).where(bookings.c.id == booking_id)
            )
        ).one()
        if current.slot_id is not None:
            raise InvalidRequest(
                "That booking is for a time: move it to a slot_id, not to a day.",
                fields=[{"field": "day", "problem": "the booking is for a time, not a day"}],
            )
        zone = settings.timezone
        old_day = current.starts_at.astimezone(zone).date()
        if online and current.starts_at <= now:
            raise SlotUnavailable(
                "database", "That day's drop-off window has opened: please call the garage."
            )
        if day == old_day:  # nothing to move
            row = (await conn.execute(select(bookings).where(bookings.c.id == booking_id))).one()
            return booking_json(row._asdict(), None, [], settings)
        plan = await plan_drop_off(conn, current.service_id, day)
        refuse_unbookable(plan, now, staff=not online)
        # The notice and the service still offered. Not the plan's minutes: the plan was read
        # in this transaction, and a setup change committed between its reads and these is
        # no reason to refuse (the counter takes the plan's labour minutes either way).
        rules = await read_rules(conn, current.service_id, ())
        refuse(
            rules,
            plan_minutes=rules.minutes or 0,
            starts_at=plan.starts_at,
            now=now,
            online=online,
        )
        await unplace(conn, booking_id)  # its bay on the old day, if staff had placed it
        await release_technician(conn, booking_id, old_day, moving=True)
        keeps_theirs = sorted(plan.technician_ids, key=lambda tid: tid != current.technician_id)
        found = Technicians(
            needed=True, choices=tuple(TechnicianChoice(tid, ()) for tid in keeps_theirs)
        )
        try:
            await claim_first(conn, booking_id, found, plan.skill, (), day, plan.technician_minutes)
        except TechnicianTaken:
            raise SlotUnavailable(
                "database", "No technician who can do it has that much time left that day."
            ) from None
        moved = await _record_move(
            conn,
            booking_id,
            now,
            starts_at=plan.starts_at,
            ends_at=plan.ends_at,
            technician_minutes=plan.technician_minutes,
        )
        await time_freed(conn, old_day, now)  # the old day has room again: its waitlist
        reminder = reminder_at(plan.starts_at, settings, now)
        if reminder is not None:
            await enqueue(conn, BOOKING_REMINDER, job_payload(moved), now=now, run_at=reminder)
    return booking_json(moved, None, [], settings)
