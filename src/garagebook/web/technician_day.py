"""The technician side of the staff day (issue 15): each technician's bookings, the hours left
per skill, the bookings flagged for reassignment (the technician is absent that day,
retired or lacks the service's skill, or the booking has none while the garage lists
technicians), and the day's drop-offs, which staff may place on another technician or on a bay
for a time of the day. Shown by
the day view (web/staff.py); the forms are in web/technicians.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.garage.rules import can
from garagebook.schema import (
    absences,
    bays,
    booking_slots,
    bookings,
    services,
    slots,
    technician_days,
    technicians,
)
from garagebook.slots.service import local_day_bounds


@dataclass
class DayBooking:
    id: str
    reference: str
    label: str  # "10:00–11:00"
    service: str
    registration: str
    bay: str
    bay_id: int
    technician_id: int | None
    skill: str
    needs: str
    why: str = ""  # why it is flagged; "" when it is not


@dataclass
class DayDropOff:
    """A car left for the day: it takes `minutes` of its technician's day and no bay."""

    id: str
    reference: str
    service: str
    registration: str
    customer: str
    technician: str  # "" when it has none
    minutes: int
    why: str = ""  # why it needs placing elsewhere, as for a flagged booking
    # The other technicians who may take it: active, qualified and not absent that day.
    others: list[tuple[int, str]] = field(default_factory=list)
    placed: str = ""  # "Bay 2, 10:00–14:00" once staff placed it on a bay; "" before
    # For the "On a bay" form: the bays that can do it, and the times its labour fits between
    # the drop-off window and collection (ISO instant, "10:00").
    bays: list[tuple[int, str]] = field(default_factory=list)
    times: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class TechnicianColumn:
    id: int
    name: str
    skills: list[str]
    active: bool
    absent: bool
    minutes_left: int
    bookings: list[DayBooking] = field(default_factory=list)


@dataclass
class TechnicianDay:
    technicians: list[TechnicianColumn]
    hours_left: list[tuple[str, str]]  # (skill, "5 h 30 min")
    flagged: list[DayBooking]
    # For the reassign forms: who and which bay may take each flagged booking.
    choices: dict[str, tuple[list[tuple[int, str]], list[tuple[int, str]]]]
    drop_offs: list[DayDropOff] = field(default_factory=list)


def hours_and_minutes(minutes: int) -> str:
    hours, rest = divmod(max(minutes, 0), 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} h" if hours else f"{rest} min"


async def load_technician_day(
    conn: AsyncConnection, day: date, zone: ZoneInfo
) -> TechnicianDay | None:
    """The technician side of a day; None for a garage that lists no active technician and
    has no booking on one that day (its day view stays as it was)."""
    start, end = local_day_bounds(day, zone)
    people = (await conn.execute(select(technicians).order_by(technicians.c.name))).all()
    day_rows = {
        r.technician_id: r
        for r in await conn.execute(select(technician_days).where(technician_days.c.day == day))
    }
    away = {
        r.technician_id
        for r in await conn.execute(
            select(absences.c.technician_id).where(
                absences.c.withdrawn_at.is_(None),
                absences.c.first_day <= day,
                absences.c.last_day >= day,
            )
        )
    }
    first_slot = (
        select(booking_slots.c.booking_id, slots.c.bay_id)
        .join(slots, slots.c.id == booking_slots.c.slot_id)
        .where(booking_slots.c.active)
        .subquery()
    )
    rows = (
        await conn.execute(
            select(
                bookings.c.id,
                bookings.c.reference,
                bookings.c.starts_at,
                bookings.c.ends_at,
                bookings.c.vehicle_registration,
                bookings.c.technician_id,
                services.c.name.label("service"),
                services.c.skill,
                services.c.needs,
                bays.c.id.label("bay_id"),
                bays.c.name.label("bay"),
            )
            .join(services, services.c.id == bookings.c.service_id)
            .join(first_slot, first_slot.c.booking_id == bookings.c.id)
            .join(bays, bays.c.id == first_slot.c.bay_id)
            .where(
                bookings.c.slot_id.is_not(None),  # a drop-off placed on a bay: under Drop-offs
                bookings.c.status == "confirmed",
                bookings.c.starts_at >= start,
                bookings.c.starts_at < end,
            )
            .distinct()
            .order_by(bookings.c.starts_at, bays.c.name)
        )
    ).all()
    active = [p for p in people if p.active]
    if not active and not any(r.technician_id is not None for r in rows):
        return None
    by_id = {p.id: p for p in people}

    def absent(tid: int) -> bool:
        row = day_rows.get(tid)
        return tid in away or bool(row is not None and row.absent)

    columns = {
        p.id: TechnicianColumn(
            p.id,
            p.name,
            p.skills.split(","),
            p.active,
            absent(p.id),
            0
            if absent(p.id) or p.id not in day_rows
            else day_rows[p.id].minutes_working - day_rows[p.id].minutes_booked,
        )
        for p in people
    }
    flagged: list[DayBooking] = []
    for r in rows:
        booking = DayBooking(
            r.id,
            r.reference,
            _span(r.starts_at, r.ends_at, zone),
            r.service,
            r.vehicle_registration,
            r.bay,
            r.bay_id,
            r.technician_id,
            r.skill,
            r.needs,
        )
        person = by_id.get(r.technician_id) if r.technician_id is not None else None
        booking.why = _why(person, r.skill, absent)
        if person is not None:
            columns[person.id].bookings.append(booking)
        if booking.why:
            flagged.append(booking)
    skills = sorted({s for p in active for s in p.skills.split(",")})
    hours_left = [
        (
            skill,
            hours_and_minutes(
                sum(
                    columns[p.id].minutes_left
                    for p in active
                    if skill in p.skills.split(",") and not absent(p.id)
                )
            ),
        )
        for skill in skills
    ]
    bay_rows = (
        await conn.execute(
            select(bays.c.id, bays.c.name, bays.c.capabilities)
            .where(bays.c.active)
            .order_by(bays.c.name)
        )
    ).all()
    choices = {
        b.id: (
            [(p.id, p.name) for p in active if can(p.skills, b.skill) and not absent(p.id)],
            [(bay.id, bay.name) for bay in bay_rows if can(bay.capabilities, b.needs)],
        )
        for b in flagged
    }
    drop_offs = []
    placements = await _placements(conn, start, end)
    starts = (
        await conn.scalars(
            select(slots.c.starts_at)
            .where(slots.c.starts_at >= start, slots.c.starts_at < end, slots.c.open)
            .distinct()
            .order_by(slots.c.starts_at)
        )
    ).all()
    bay_names = {bay.id: bay.name for bay in bay_rows}
    for d in await conn.execute(
        select(
            bookings.c.id,
            bookings.c.reference,
            bookings.c.vehicle_registration,
            bookings.c.customer_name,
            bookings.c.technician_id,
            bookings.c.technician_minutes,
            bookings.c.starts_at,
            bookings.c.ends_at,
            services.c.name.label("service"),
            services.c.skill,
            services.c.needs,
        )
        .join(services, services.c.id == bookings.c.service_id)
        .where(
            bookings.c.slot_id.is_(None),  # no slot: a drop-off
            bookings.c.status == "confirmed",
            bookings.c.starts_at >= start,
            bookings.c.starts_at < end,
        )
        .order_by(bookings.c.reference)
    ):
        person = by_id.get(d.technician_id) if d.technician_id is not None else None
        drop_offs.append(
            DayDropOff(
                d.id,
                d.reference,
                d.service,
                d.vehicle_registration,
                d.customer_name,
                person.name if person is not None else "",
                int(d.technician_minutes or 0),
                _why(person, d.skill, absent),
                [
                    (p.id, p.name)
                    for p in active
                    if p.id != d.technician_id and can(p.skills, d.skill) and not absent(p.id)
                ],
                _placed(placements.get(d.id), bay_names, zone),
                [(bay.id, bay.name) for bay in bay_rows if can(bay.capabilities, d.needs)],
                [
                    (moment.astimezone(zone).isoformat(), f"{moment.astimezone(zone):%H:%M}")
                    for moment in starts
                    if d.starts_at <= moment
                    and moment + timedelta(minutes=int(d.technician_minutes or 0)) <= d.ends_at
                ],
            )
        )
        placed = placements.get(d.id)
        if person is not None and placed is not None:  # worked on then: in their column too
            bay_id, works_from, works_until = placed
            columns[person.id].bookings.append(
                DayBooking(
                    d.id,
                    d.reference,
                    _span(works_from, works_until, zone),
                    d.service,
                    d.vehicle_registration,
                    bay_names.get(bay_id, f"Bay {bay_id}"),
                    bay_id,
                    d.technician_id,
                    d.skill,
                    d.needs,
                )
            )
    for column in columns.values():
        column.bookings.sort(key=lambda b: b.label)  # "HH:MM–HH:MM": in the day's order
    return TechnicianDay(
        [columns[p.id] for p in people if p.active or columns[p.id].bookings],
        hours_left,
        flagged,
        choices,
        drop_offs,
    )


async def _placements(
    conn: AsyncConnection, start: datetime, end: datetime
) -> dict[str, tuple[int, datetime, datetime]]:
    """The day's drop-offs placed on a bay: booking id → (bay, work starts, work ends)."""
    rows = await conn.execute(
        select(
            booking_slots.c.booking_id,
            func.min(slots.c.bay_id).label("bay_id"),
            func.min(slots.c.starts_at).label("starts_at"),
            func.max(slots.c.ends_at).label("ends_at"),
        )
        .join(slots, slots.c.id == booking_slots.c.slot_id)
        .join(bookings, bookings.c.id == booking_slots.c.booking_id)
        .where(
            booking_slots.c.active,
            bookings.c.slot_id.is_(None),
            slots.c.starts_at >= start,
            slots.c.starts_at < end,
        )
        .group_by(booking_slots.c.booking_id)
    )
    return {r.booking_id: (r.bay_id, r.starts_at, r.ends_at) for r in rows}


def _placed(
    placement: tuple[int, datetime, datetime] | None, bay_names: dict[int, str], zone: ZoneInfo
) -> str:
    if placement is None:
        return ""
    bay_id, starts_at, ends_at = placement
    return f"{bay_names.get(bay_id, f'Bay {bay_id}')}, {_span(starts_at, ends_at, zone)}"


def _span(starts_at: datetime, ends_at: datetime, zone: ZoneInfo) -> str:
    """ "10:00–14:00", in the garage's local time."""
    return f"{starts_at.astimezone(zone):%H:%M}–{ends_at.astimezone(zone):%H:%M}"


def _why(person: Any, skill: str, absent: Callable[[int], bool]) -> str:
    """Why a booking needs another technician; "" when its own can take it."""
    if person is None:
        return "No technician: the garage lists technicians now."
    if not person.active:
        return f"{person.name} is retired."
    if not can(person.skills, skill):
        return f"{person.name} lacks the skill it needs ({skill})."
    if absent(person.id):
        return f"{person.name} is absent that day."
    return ""
