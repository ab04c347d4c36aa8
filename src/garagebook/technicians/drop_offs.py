"""Drop-offs (issue 15): a car left for the day takes `labour_minutes` of one qualified
technician's day, and no bay time until staff place it on a bay (below).

A drop-off is booked through the same guarded write as a timed booking (bookings/service.py,
bookings/sql.py), with no slots to claim: what the database decides is the technician's day,
the counter `technician_days` keeps (`minutes_booked + mine <= minutes_working`, not absent,
backed by a CHECK constraint). So no technician's day is booked past their hours, on SQLite
and PostgreSQL alike, whichever mix of timed bookings and drop-offs fills it. The reservation
layer takes no part: its keys are for things one booking holds whole (a slot, a technician's
hour), not for minutes counted down, and the counter's row lock is cheap to queue on.

The booking's `starts_at` is when the drop-off window opens that day and `ends_at` when the
car can be collected. Online, a day is bookable until its window opens (less the minimum
notice); staff may book one until collection time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.db import insert_ignoring_conflicts
from garagebook.errors import (
    InvalidRequest,
    ServiceNotFound,
    SlotUnavailable,
    TechnicianUnavailable,
)
from garagebook.garage.apply import current_document
from garagebook.garage.document import GarageDocument
from garagebook.garage.rules import require_capable_bay
from garagebook.reservations import Key
from garagebook.schema import booking_slots, garage, services, slots
from garagebook.technicians.claims import TechnicianTaken, able, claim_slots, release_slots
from garagebook.technicians.free import minutes_left


@dataclass(frozen=True)
class DropOffPlan:
    """What a drop-off booking takes: the same fields a timed booking's plan has (slots/
    service.py Plan), with no slot, bay or technician hours, and the technician's minutes."""

    service_id: int
    day: date
    starts_at: datetime  # the drop-off window opens
    ends_at: datetime  # the car can be collected
    drop_off_until: datetime  # the window closes
    minutes: int  # the service's minutes when planned (the stale-plan check)
    technician_minutes: int
    skill: str
    garage_version: int | None
    technician_ids: tuple[int, ...]  # with the minutes left that day, best first
    slot_id: None = None
    bay_id: None = None
    slot_ids: tuple[int, ...] = ()
    starts: tuple[datetime, ...] = ()

    @property
    def keys(self) -> tuple[Key, ...]:
        return ()


@dataclass(frozen=True)
class Window:
    """A drop-off day as offered: when to bring the car and when to collect it (UTC), and
    how many more such drop-offs its technicians' minutes left could take."""

    day: date
    drop_off_from: datetime
    drop_off_until: datetime
    collect_from: datetime
    free: int = 0


def window(document: GarageDocument, day: date) -> Window:
    section = document.drop_off
    if section is None:  # the document refuses a drop-off service without one
        raise InvalidRequest("The garage takes no drop-offs.")
    zone = document.zone
    opens, closes = section.window.split("-")
    return Window(
        day,
        _at(day, opens, zone),
        _at(day, closes, zone),
        _at(day, section.collect_from, zone),
    )


def _at(day: date, clock: str, zone: ZoneInfo) -> datetime:
    hours, minutes = clock.split(":")
    return datetime.combine(day, time(int(hours), int(minutes)), tzinfo=zone)


def labour(service: Any) -> int:
    """A service's technician minutes: its `labour_minutes`, else its minutes."""
    minutes = service.labour_minutes
    return int(minutes if minutes is not None else service.duration_minutes)


async def _service(conn: AsyncConnection, service_id: int) -> Any:
    row = (
        await conn.execute(
            select(
                services.c.duration_minutes,
                services.c.labour_minutes,
                services.c.skill,
                services.c.mode,
            ).where(services.c.id == service_id, services.c.active)
        )
    ).first()
    if row is None:
        raise ServiceNotFound(service_id=service_id)
    return row


async def plan_drop_off(conn: AsyncConnection, service_id: int, day: date) -> DropOffPlan:
    """The drop-off of `service_id` on local `day`, with the technicians who may take it.
    Only a guess, like every plan: the booking's write decides."""
    service = await _service(conn, service_id)
    if service.mode != "drop_off":
        raise InvalidRequest(
            "That service is booked for a time: give starts_at (or slot_id), not day.",
            fields=[{"field": "day", "problem": "the service is not a drop-off"}],
        )
    document = await current_document(conn)
    times = window(document, day)
    minutes = labour(service)
    ids = await able(conn, service.skill) or []
    left = await minutes_left(conn, ids, day, day)
    return DropOffPlan(
        service_id=service_id,
        day=day,
        starts_at=times.drop_off_from,
        ends_at=times.collect_from,
        drop_off_until=times.drop_off_until,
        minutes=int(service.duration_minutes),
        technician_minutes=minutes,
        skill=service.skill,
        garage_version=await conn.scalar(select(garage.c.version).where(garage.c.id == 1)),
        technician_ids=tuple(tid for tid in ids if left.get((tid, day), 0) >= minutes),
    )


async def drop_off_days(
    conn: AsyncConnection, service_id: int, first: date, last: date, earliest: datetime
) -> list[Window]:
    """The days in [first, last] a drop-off of `service_id` can be booked online: some
    qualified technician has its minutes left, and the window opens at `earliest` or later."""
    service = await _service(conn, service_id)
    if service.mode != "drop_off":
        return []
    document = await current_document(conn)
    ids = await able(conn, service.skill) or []
    minutes = labour(service)
    places: dict[date, int] = {}
    for (_, day), free in (await minutes_left(conn, ids, first, last)).items():
        places[day] = places.get(day, 0) + free // minutes
    offered = [replace(window(document, day), free=n) for day, n in sorted(places.items()) if n]
    return [w for w in offered if w.drop_off_from >= earliest]


def refuse_unbookable(plan: DropOffPlan, now: datetime, staff: bool) -> None:
    """Before any write: online, a day whose window has opened is not bookable (the minimum
    notice is the write's to check, as for every booking); for staff, one whose cars are
    being collected. Nor a day no technician has the minutes left for."""
    if (plan.ends_at if staff else plan.starts_at) <= now:
        raise SlotUnavailable(
            "database",
            "That day's cars are already being collected."
            if staff
            else "That day's drop-off window has opened: please call the garage.",
        )
    if not plan.technician_ids:
        raise SlotUnavailable(
            "database", "No technician who can do it has that much time left that day."
        )


# Placing a drop-off on a bay (the staff day view, POST /api/admin/bookings/{id}/reassign with
# bay_id and starts_at): when the car is worked on, and where. The customer's times stay the
# window and collection; the placement claims the bay's slots for the labour minutes from
# `starts_at`, against uq_booking_slots_slot_id_active, and the technician's slots at those
# times, against uq_technician_claims_technician_slot_id_active — the same two indexes that
# keep a timed booking's bay and technician, so a placement racing a booking of that bay or
# that technician's hour is decided by the database. Its minutes are not counted again: they
# were taken from the technician's day when it was booked. The booking's own `slot_id` stays
# NULL (that is what makes it a drop-off); its bay is the bay of its claimed slots.


async def place(
    conn: AsyncConnection,
    booking: Any,
    bay_id: int,
    start: datetime,
    needs: str,
) -> None:
    """Claim `bay_id`'s slots from `start` for the drop-off's labour minutes, and its
    technician's slots at the same times, in the caller's transaction (the booking row locked,
    any earlier placement `unplace`d); SlotUnavailable or TechnicianUnavailable if refused, and
    the caller rolls back."""
    minutes = int(booking.technician_minutes or 0)
    end = start + timedelta(minutes=minutes)
    if start < booking.starts_at or end > booking.ends_at:
        raise InvalidRequest(
            "A drop-off is worked on between its drop-off window and collection.",
            fields=[{"field": "starts_at", "problem": "outside the drop-off's day"}],
        )
    await require_capable_bay(conn, bay_id, needs)
    wanted = select(slots.c.id, slots.c.starts_at, slots.c.ends_at).where(
        slots.c.bay_id == bay_id, slots.c.starts_at >= start, slots.c.starts_at < end, slots.c.open
    )
    if conn.dialect.name == "postgresql":
        wanted = wanted.with_for_update(read=True)  # a regrid or close waits for us
    run = (await conn.execute(wanted.order_by(slots.c.starts_at))).all()
    if not _covers(run, start, end):
        raise SlotUnavailable("database", "That bay has no open slots for the whole time.")
    claimed = (
        await conn.scalars(
            insert_ignoring_conflicts(conn, booking_slots)
            .values([{"booking_id": booking.id, "slot_id": s.id, "active": True} for s in run])
            .returning(booking_slots.c.slot_id)
        )
    ).all()
    if len(claimed) != len(run):
        raise SlotUnavailable("database", "That bay is booked at some of that time.")
    if booking.technician_id is not None:
        try:
            await claim_slots(conn, booking.id, booking.technician_id, [s.starts_at for s in run])
        except TechnicianTaken:
            raise TechnicianUnavailable(
                "Its technician is not free for the whole time: booked, absent or not working."
            ) from None


def _covers(run: Sequence[Any], start: datetime, end: datetime) -> bool:
    """The slots, in order, follow each other from `start` without a gap until `end`."""
    reached = start
    for s in run:
        if s.starts_at != reached:
            return False
        reached = s.ends_at
    return bool(run) and reached >= end


async def unplace(conn: AsyncConnection, booking_id: str) -> list[Key]:
    """Take a drop-off off its bay: its bay slots' and technician slots' claims go (deleted:
    a placement is a plan, and may claim the same slots again); the reservation keys of
    those times, to drop once committed. Its minutes stay on the technician's day."""
    bay_slots = (
        await conn.scalars(
            delete(booking_slots)
            .where(booking_slots.c.booking_id == booking_id)
            .returning(booking_slots.c.slot_id)
        )
    ).all()
    return [*bay_slots, *await release_slots(conn, booking_id, moving=True)]
