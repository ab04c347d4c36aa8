"""Slots: which slots a service covers, what is free, and creating slots without overlap."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, String, and_, bindparam, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.db import Database
from garagebook.errors import (
    BayNotFound,
    InvalidRequest,
    ServiceNotFound,
    SlotNotFound,
    SlotOverlaps,
    WrongBay,
)
from garagebook.garage.rules import can, notice_minutes
from garagebook.schema import (
    bays,
    booking_slots,
    garage,
    services,
    slots,
    technician_slots,
    technicians,
)
from garagebook.slots.events import time_freed
from garagebook.technicians.claims import NOT_PLANNED, Technicians, qualified
from garagebook.technicians.free import free_starts
from garagebook.timeutil import utcnow

# A service covers at most this many back-to-back slots (8 hours of 15-minute slots).
MAX_SLOTS_PER_SERVICE = 32


@dataclass(frozen=True)
class Slot:
    id: int
    bay_id: int
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class Plan:
    """The slots a booking of `service_id` starting at `start` would claim.
    `slot_ids` is empty when the service does not fit there."""

    start: Slot
    service_id: int
    duration: timedelta
    slot_ids: tuple[int, ...]
    # Who may take it (issue 15), best first, and what the plan was made from: the service's
    # skill and the setup's version (a new document may list other technicians: StalePlan).
    technicians: Technicians = NOT_PLANNED
    skill: str = "general"
    garage_version: int | None = None  # None: no setup document applied yet

    @property
    def fits(self) -> bool:
        return bool(self.slot_ids)

    @property
    def starts(self) -> tuple[datetime, ...]:
        """The start of every slot it claims: the times a technician is taken for."""
        step = (self.ends_at - self.start.starts_at) / len(self.slot_ids)
        return tuple(self.start.starts_at + step * i for i in range(len(self.slot_ids)))

    @property
    def ends_at(self) -> datetime:
        return self.start.starts_at + self.duration

    # What every booking's write reads, a drop-off's plan (technicians/drop_offs.py) too.
    @property
    def starts_at(self) -> datetime:
        return self.start.starts_at

    @property
    def slot_id(self) -> int:
        return self.start.id

    @property
    def bay_id(self) -> int:
        return self.start.bay_id

    @property
    def minutes(self) -> int:
        return int(self.duration.total_seconds() // 60)

    @property
    def technician_minutes(self) -> int:
        """A timed booking takes its technician for its whole time, so that much of their day."""
        return self.minutes


def cover(
    start: Slot, following: list[Slot], duration: timedelta, zone: ZoneInfo
) -> tuple[int, ...]:
    """Ids of the slots from `start` that cover `duration` back to back on one bay and one local
    day, or () when they do not. `following` is the bay's slots from `start` on, in order."""
    covered = [start]
    day = start.starts_at.astimezone(zone).date()
    for slot in following:
        if covered[-1].ends_at - start.starts_at >= duration:
            break
        if slot.starts_at != covered[-1].ends_at or slot.starts_at.astimezone(zone).date() != day:
            return ()
        covered.append(slot)
    if covered[-1].ends_at - start.starts_at < duration:
        return ()
    return tuple(slot.id for slot in covered)


def _plan_statement() -> Select[Any]:
    """The start slot and the bay's slots after it, with the service's duration: one query.
    Built once: constructing a statement costs more than running it.

    The start slot's bay and time are scalar subqueries, not a self-join, so the database
    knows them before it scans and walks uq_slots_bay_id_starts_at from there (a join made
    PostgreSQL's generic plan walk every slot of every bay: 300 ms at 700k slots). The bay's
    capabilities are read for the start slot's bay, once, not for each row (a subquery per row
    was most of the statement's time in PostgreSQL: 32 scans of `bays`)."""
    first = slots.alias("first")
    start = select(first).where(first.c.id == bindparam("slot_id"))
    start_bay = start.with_only_columns(first.c.bay_id).scalar_subquery()
    service = select(services.c.duration_minutes).where(
        services.c.id == bindparam("service_id"), services.c.active
    )
    return (
        select(
            slots.c.id,
            slots.c.bay_id,
            slots.c.starts_at,
            slots.c.ends_at,
            service.scalar_subquery().label("duration_minutes"),
            service.with_only_columns(services.c.needs).scalar_subquery().label("needs"),
            service.with_only_columns(services.c.skill).scalar_subquery().label("skill"),
            service.with_only_columns(services.c.mode).scalar_subquery().label("mode"),
            select(garage.c.version).where(garage.c.id == 1).scalar_subquery().label("version"),
            # The active technicians, "id:skills;…" (None: the garage lists none), once; and at
            # each slot's time, whose slots are there, "id,…": planning a technician booking
            # costs no second read (it did: 23–24 % of the pgbench ceiling against 28 %).
            select(
                func.aggregate_strings(
                    cast(technicians.c.id, String) + ":" + technicians.c.skills, ";"
                )
            )
            .where(technicians.c.active)
            .scalar_subquery()
            .label("staff"),
            select(func.aggregate_strings(cast(technician_slots.c.technician_id, String), ","))
            .where(technician_slots.c.starts_at == slots.c.starts_at)
            .scalar_subquery()
            .label("working"),
            select(bays.c.capabilities)
            .where(bays.c.id == start_bay, bays.c.active)
            .scalar_subquery()
            .label("capabilities"),
        )
        .where(
            slots.c.bay_id == start_bay,
            slots.c.starts_at >= start.with_only_columns(first.c.starts_at).scalar_subquery(),
        )
        .order_by(slots.c.starts_at)
        .limit(MAX_SLOTS_PER_SERVICE)
    )


_PLAN = _plan_statement()


async def plan_booking(
    conn: AsyncConnection, slot_id: int, service_id: int, zone: ZoneInfo
) -> Plan:
    rows = (await conn.execute(_PLAN, {"slot_id": slot_id, "service_id": service_id})).all()
    if not rows:
        raise SlotNotFound(slot_id=slot_id)
    if rows[0].duration_minutes is None:
        raise ServiceNotFound(service_id=service_id)
    if rows[0].mode == "drop_off":
        raise InvalidRequest(
            "That service is a drop-off: it is booked for a day (give day), not a time.",
            fields=[{"field": "day", "problem": "the service is booked by the day"}],
        )
    if rows[0].capabilities is None or not can(rows[0].capabilities, rows[0].needs):
        raise WrongBay()
    run = [Slot(r.id, r.bay_id, r.starts_at, r.ends_at) for r in rows]
    length = timedelta(minutes=rows[0].duration_minutes)
    covered = cover(run[0], run[1:], length, zone)
    plan = Plan(
        run[0],
        service_id,
        length,
        covered,
        skill=rows[0].skill,
        garage_version=rows[0].version,
    )
    if not covered or rows[0].staff is None:
        return plan
    staff = [
        (int(tid), skills)
        for tid, _, skills in (t.partition(":") for t in rows[0].staff.split(";"))
    ]
    working = [
        {int(tid) for tid in (r.working or "").split(",") if tid} for r in rows[: len(covered)]
    ]
    return replace(plan, technicians=qualified(staff, working, plan.skill, plan.starts))


class PlanCache:
    """Plans that fit, by (slot, service), so a request turned away by the reservation layer
    never touches the database.

    A plan is only a guess at which slots to claim, never a decision: an apply of the setup
    document in any process may since have closed a slot, retired the service or bay, changed
    the service's minutes or the minimum notice. The write that books re-reads all of that in
    its own statement (bookings/sql.py; SQLite: garage/rules.py in its transaction): it claims
    only open slots and refuses a retired service, a bay that cannot do it, a start inside the
    notice, and minutes other than the plan's (StalePlan: `forget` and plan again). A stale
    plan can so cost a retry, never a wrong booking. Slots keep their id, bay and start once
    created (a new slot length re-grids only slots with no claim, and only with no future
    bookings). Plans that do not fit are not kept, since a slot added later can make them fit.
    Concurrent misses for one key share a single database read.
    """

    def __init__(self, zone: ZoneInfo, size: int = 50_000) -> None:
        self._zone = zone
        self._size = size
        self._plans: OrderedDict[tuple[int, int], Plan] = OrderedDict()
        self._loading: dict[tuple[int, int], asyncio.Task[Plan]] = {}

    async def get(self, db: Database, slot_id: int, service_id: int) -> Plan:
        key = (slot_id, service_id)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(self._load(db, slot_id, service_id))
            self._loading[key] = loading
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(loading)

    def forget(self, slot_id: int, service_id: int) -> None:
        self._plans.pop((slot_id, service_id), None)

    def forget_all(self) -> None:
        """The setup changed (a StalePlan): any plan may name technicians it no longer has."""
        self._plans.clear()

    async def _load(self, db: Database, slot_id: int, service_id: int) -> Plan:
        async with db.read() as conn:
            plan = await plan_booking(conn, slot_id, service_id, self._zone)
        if plan.fits:
            self._plans[(slot_id, service_id)] = plan
            if len(self._plans) > self._size:
                self._plans.popitem(last=False)
        return plan


async def slots_starting(conn: AsyncConnection, starts_at: datetime, service_id: int) -> list[int]:
    """The open slots starting at `starts_at` on active bays that can do the service, the bay
    with the fewest capabilities first (then the lowest id): an oil change takes a general bay
    while one is free, and keeps the MOT bay for MOTs."""
    needs = await conn.scalar(
        select(services.c.needs).where(services.c.id == service_id, services.c.active)
    )
    if needs is None:
        raise ServiceNotFound(service_id=service_id)
    rows = (
        await conn.execute(
            select(slots.c.id, bays.c.id.label("bay_id"), bays.c.capabilities)
            .join(bays, bays.c.id == slots.c.bay_id)
            .where(slots.c.starts_at == starts_at, slots.c.open, bays.c.active)
        )
    ).all()
    able = [r for r in rows if can(r.capabilities, needs)]
    able.sort(key=lambda r: (len(r.capabilities.split(",")), r.bay_id))
    return [r.id for r in able]


@dataclass(frozen=True)
class Availability:
    slot: Slot
    available: bool
    # How many qualified technicians are free for the service from this start; None where the
    # garage lists none (or no service was given). Availability's `free` reads it.
    technicians_free: int | None = None


async def list_slots(
    conn: AsyncConnection,
    *,
    start: datetime,
    end: datetime,
    now: datetime | None,
    zone: ZoneInfo,
    service_id: int | None,
    own_slots: Collection[int] = (),
    online: bool = True,
    own_booking: str | None = None,
) -> list[Availability]:
    """Slots starting in [start, end), soonest first. A slot is available when it is open (the
    setup document offers it), in the future (online: past the minimum notice) and free; with
    a service, when it is on a bay that can do the service and the whole service fits from it
    on open, free slots. Closed slots are listed only while a booking holds them (staff see
    it). Where the garage lists technicians, a service's start also needs a qualified one free
    for its whole time (technicians/free.py). (A read: the booking's statement still decides.)
    `own_slots` count as free: a booking being moved may overlap its own current time (and
    `own_booking`'s technician claims). `online` false: staff, no notice. `now` None: no start
    is too soon (the availability cache keeps what does not change with the clock)."""
    duration: timedelta | None = None
    needs: str | None = None
    staffed: dict[datetime, int] | None = None  # start → free technicians; None: none needed
    if service_id is not None:
        service = (
            await conn.execute(
                select(services.c.duration_minutes, services.c.needs, services.c.skill).where(
                    services.c.id == service_id, services.c.active
                )
            )
        ).first()
        if service is None:
            raise ServiceNotFound(service_id=service_id)
        duration, needs = timedelta(minutes=service.duration_minutes), service.needs
        staffed = await free_starts(
            conn, service.skill, start, end, duration, zone, own_booking=own_booking
        )
    not_before = now
    if now is not None and online:
        not_before = now + timedelta(minutes=await notice_minutes(conn))
    capable = {
        r.id
        for r in await conn.execute(select(bays.c.id, bays.c.capabilities).where(bays.c.active))
        if needs is None or can(r.capabilities, needs)
    }
    # Fetch past `end` so a service starting late in the window can see the slots it covers.
    fetch_until = end + duration if duration is not None else end
    rows = (
        await conn.execute(
            select(
                slots.c.id,
                slots.c.bay_id,
                slots.c.starts_at,
                slots.c.ends_at,
                slots.c.open,
                booking_slots.c.slot_id.is_not(None).label("taken"),
            )
            .select_from(
                slots.outerjoin(
                    booking_slots,
                    and_(booking_slots.c.slot_id == slots.c.id, booking_slots.c.active),
                )
            )
            .where(slots.c.starts_at >= start, slots.c.starts_at < fetch_until)
            .order_by(slots.c.starts_at, slots.c.bay_id)
        )
    ).all()
    rows = [r for r in rows if r.open or r.taken]
    taken = {r.id for r in rows if r.taken or not r.open}.difference(own_slots)
    by_bay: dict[int, list[Slot]] = defaultdict(list)
    listed: list[Slot] = []
    for r in rows:
        slot = Slot(r.id, r.bay_id, r.starts_at, r.ends_at)
        by_bay[slot.bay_id].append(slot)
        if slot.starts_at < end:
            listed.append(slot)
    position = {slot.id: i for bay_slots in by_bay.values() for i, slot in enumerate(bay_slots)}

    def available(slot: Slot) -> bool:
        too_soon = not_before is not None and slot.starts_at <= not_before
        if too_soon or slot.id in taken or slot.bay_id not in capable:
            return False
        if duration is None:
            return True
        if staffed is not None and slot.starts_at not in staffed:
            return False
        bay_slots = by_bay[slot.bay_id]
        following = bay_slots[position[slot.id] + 1 : position[slot.id] + MAX_SLOTS_PER_SERVICE]
        covered = cover(slot, following, duration, zone)
        return bool(covered) and not taken.intersection(covered)

    return [
        Availability(
            slot,
            available(slot),
            None if staffed is None else staffed.get(slot.starts_at, 0),
        )
        for slot in listed
    ]


async def slots_listing(
    conn: AsyncConnection,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    available: bool | None,
    limit: int,
) -> list[Availability]:
    """`list_slots` without a service, as `GET /api/slots` lists them: the first `limit` slots
    starting in [start, end), soonest first, only `available` ones (or only unavailable ones,
    or all with None). Without a service a slot's availability is its own row (open, unclaimed,
    past the notice, on an active bay), so the database filters and stops at `limit`: what it
    reads grows with how far ahead the free times are, not with the calendar's length."""
    taken = booking_slots.c.slot_id.is_not(None)
    free = and_(
        slots.c.open,
        ~taken,
        slots.c.starts_at > now + timedelta(minutes=await notice_minutes(conn)),
        bays.c.active,
    )
    query = (
        select(slots.c.id, slots.c.bay_id, slots.c.starts_at, slots.c.ends_at, free.label("free"))
        .select_from(
            slots.join(bays, bays.c.id == slots.c.bay_id).outerjoin(
                booking_slots, and_(booking_slots.c.slot_id == slots.c.id, booking_slots.c.active)
            )
        )
        .where(slots.c.starts_at >= start, slots.c.starts_at < end, slots.c.open | taken)
        .order_by(slots.c.starts_at, slots.c.bay_id)
        .limit(limit)
    )
    if available is not None:
        query = query.where(free if available else ~free)
    return [
        Availability(Slot(r.id, r.bay_id, r.starts_at, r.ends_at), bool(r.free))
        for r in await conn.execute(query)
    ]


def by_local_day(listed: list[Availability], zone: ZoneInfo) -> dict[date, list[Availability]]:
    """`listed` grouped by the local day each slot starts on, in order."""
    grouped: dict[date, list[Availability]] = defaultdict(list)
    for a in listed:
        grouped[a.slot.starts_at.astimezone(zone).date()].append(a)
    return grouped


def local_day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC instants a local day starts and ends (23 or 25 hours across DST changes)."""
    start = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return start, end


async def create_slot(
    conn: AsyncConnection, bay_id: int, starts_at: datetime, ends_at: datetime, zone: ZoneInfo
) -> Slot:
    """Insert a slot unless it overlaps one on the same bay. The check runs under a lock on the
    bay row (PostgreSQL; SQLite's write transaction is exclusive), so two concurrent creations
    cannot both pass it. A new slot is a freed time for that day's waitlist."""
    bay = await conn.scalar(select(bays.c.id).where(bays.c.id == bay_id).with_for_update())
    if bay is None:
        raise BayNotFound(bay_id=bay_id)
    overlapping = await conn.scalar(
        select(slots.c.id)
        .where(slots.c.bay_id == bay_id, slots.c.starts_at < ends_at, slots.c.ends_at > starts_at)
        .limit(1)
    )
    if overlapping is not None:
        raise SlotOverlaps(slot_id=overlapping)
    slot_id = await conn.scalar(
        slots.insert()
        .values(bay_id=bay_id, starts_at=starts_at, ends_at=ends_at)
        .returning(slots.c.id)
    )
    assert slot_id is not None  # INSERT … RETURNING always returns the row
    await time_freed(conn, starts_at.astimezone(zone).date(), utcnow())
    return Slot(slot_id, bay_id, starts_at, ends_at)
