"""Drop-offs (issue 15): a car left for the day takes `labour_minutes` of one qualified
technician's day, and no bay time.

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

from dataclasses import dataclass, replace
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.errors import InvalidRequest, ServiceNotFound, SlotUnavailable
from garagebook.garage.apply import current_document
from garagebook.garage.document import GarageDocument
from garagebook.reservations import Key
from garagebook.schema import garage, services
from garagebook.technicians.claims import able
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
