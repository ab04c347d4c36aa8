"""The calendar the setup document makes: which slots exist and which are offered.

`day_times` is a pure function of the document and a local date, so the 90-day walk across
clock changes is tested without a database. `extend_calendar` (the worker, daily and at start;
apply too) only adds slots: inserts ignore conflicts on uq_slots_bay_id_starts_at, so several
workers at once create nothing twice. `sync_calendar` (apply only) also opens and closes future
slots to follow the document: closing is a flag, never a delete, because a slot a booking
claims must stay for it (the booking is then "outside the hours", listed by `outside_hours`).

Technicians (issue 15) get the same: their `technician_slots` on the garage's grid for the hours
they work, and one `technician_days` counter per working day. Their open flag and working
minutes follow the document and the absences table (`sync_technician_days`), and a day's
working minutes never drop below its booked minutes: a setup change never invalidates a
booking (the booking is listed by `outside_hours` instead)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Table, and_, case, delete, exists, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.db import insert_ignoring_conflicts
from garagebook.garage.document import GarageDocument, Hours, Technician, parse_json
from garagebook.schema import (
    absences,
    bays,
    booking_slots,
    bookings,
    garage,
    services,
    slots,
    technician_claims,
    technician_days,
    technician_slots,
    technicians,
    waitlist_offers,
)

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
    return _times_in(document, document.hours, day)


def technician_times(
    document: GarageDocument, technician: Technician, day: date
) -> list[tuple[datetime, datetime]]:
    """A technician's slots that day: the garage's grid inside their hours (or the garage's);
    the document's closed days are off for everyone."""
    return _times_in(document, technician.week(document), day)


def _times_in(document: GarageDocument, week: Hours, day: date) -> list[tuple[datetime, datetime]]:
    if day in document.closed:
        return []
    zone, step = document.zone, document.garage.slot_minutes
    result = []
    for start, end in week.ranges(day.weekday()):
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
    added = await _extend_technicians(conn, document, now)
    first, last = horizon(document, now)
    times = [t for t in wanted(document, first, last) if t[0] > now]
    bay_ids = await _active_bays(conn)
    if not times or not bay_ids:
        return added
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
    for chunk in _chunks(rows):
        # One multi-row INSERT per chunk: its rowcount is what went in (executemany's is not).
        result = await conn.execute(insert_ignoring_conflicts(conn, slots).values(chunk))
        added += result.rowcount
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
    await sync_technician_days(conn, document, now)


async def _set_open(
    conn: AsyncConnection, ids: Sequence[int], value: bool, table: Table = slots
) -> None:
    for chunk in _chunks(list(ids)):
        await conn.execute(update(table).where(table.c.id.in_(chunk)).values(open=value))


# Technicians' time --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What the document says about one technician row over the horizon."""

    times: set[tuple[datetime, datetime]]  # their slots
    minutes: dict[date, int]  # working minutes per local day (days off absent)


async def _technician_rows(
    conn: AsyncConnection, technician_id: int | None
) -> list[tuple[int, str, bool]]:
    query = select(technicians.c.id, technicians.c.name, technicians.c.active)
    if technician_id is not None:
        query = query.where(technicians.c.id == technician_id)
    return [(r.id, r.name, r.active) for r in await conn.execute(query)]


def _plans(
    document: GarageDocument, rows: list[tuple[int, str, bool]], now: datetime
) -> dict[int, _Plan]:
    """Each technician row's wanted time; a retired one (in the table or the document), or one
    the document leaves out, works nothing."""
    first, last = horizon(document, now)
    listed = {t.name: t for t in document.technicians if t.active}
    plans: dict[int, _Plan] = {}
    for row_id, name, active in rows:
        technician = listed.get(name) if active else None
        plan = _Plan(set(), {})
        day = first
        while technician is not None and day <= last:
            times = technician_times(document, technician, day)
            if times:
                plan.times.update(times)
                plan.minutes[day] = len(times) * document.garage.slot_minutes
            day += timedelta(days=1)
        plans[row_id] = plan
    return plans


async def _absent_days(
    conn: AsyncConnection, ids: Sequence[int], first: date
) -> dict[int, list[tuple[date, date]]]:
    """The active absences (not withdrawn) reaching `first` or later, per technician."""
    found: dict[int, list[tuple[date, date]]] = {}
    for chunk in _chunks(list(ids)):
        for r in await conn.execute(
            select(absences.c.technician_id, absences.c.first_day, absences.c.last_day).where(
                absences.c.technician_id.in_(chunk),
                absences.c.withdrawn_at.is_(None),
                absences.c.last_day >= first,
            )
        ):
            found.setdefault(r.technician_id, []).append((r.first_day, r.last_day))
    return found


def _covered(spans: dict[int, list[tuple[date, date]]], technician_id: int, day: date) -> bool:
    return any(a <= day <= b for a, b in spans.get(technician_id, []))


async def _extend_technicians(
    conn: AsyncConnection,
    document: GarageDocument,
    now: datetime,
    technician_id: int | None = None,
) -> int:
    """Add the technician slots and days the horizon lacks; returns the slots added. Inserts
    ignore conflicts (uq_technician_slots_technician_id_starts_at, the days' primary key), so
    extenders at once create nothing twice."""
    if not document.technicians:
        return 0
    rows = [r for r in await _technician_rows(conn, technician_id) if r[2]]
    plans = _plans(document, rows, now)
    today = now.astimezone(document.zone).date()
    spans = await _absent_days(conn, list(plans), today)
    zone = document.zone
    slot_rows = [
        {
            "technician_id": tid,
            "starts_at": begins,
            "ends_at": ends,
            "open": not _covered(spans, tid, begins.astimezone(zone).date()),
        }
        for tid, plan in plans.items()
        for begins, ends in sorted(plan.times)
        if begins > now
    ]
    day_rows = [
        {
            "technician_id": tid,
            "day": day,
            "minutes_working": minutes,
            "minutes_booked": 0,
            "absent": _covered(spans, tid, day),
        }
        for tid, plan in plans.items()
        for day, minutes in sorted(plan.minutes.items())
    ]
    if slot_rows:
        existing = {
            (r.technician_id, r.starts_at)
            for r in await conn.execute(
                select(technician_slots.c.technician_id, technician_slots.c.starts_at).where(
                    technician_slots.c.starts_at > now
                )
            )
        }
        slot_rows = [r for r in slot_rows if (r["technician_id"], r["starts_at"]) not in existing]
    if day_rows:
        have = {
            (r.technician_id, r.day)
            for r in await conn.execute(
                select(technician_days.c.technician_id, technician_days.c.day).where(
                    technician_days.c.day >= today
                )
            )
        }
        day_rows = [r for r in day_rows if (r["technician_id"], r["day"]) not in have]
    added = 0
    for chunk in _chunks(slot_rows):
        result = await conn.execute(insert_ignoring_conflicts(conn, technician_slots).values(chunk))
        added += result.rowcount
    for chunk in _chunks(day_rows):
        await conn.execute(insert_ignoring_conflicts(conn, technician_days).values(chunk))
    return added


async def sync_technician_days(
    conn: AsyncConnection,
    document: GarageDocument,
    now: datetime,
    technician_id: int | None = None,
) -> None:
    """Make technicians' future follow the document and the absences table (all of them, or
    one): missing slots and days are added; a future slot is open exactly when the document
    says they work then, they are active and no active absence covers that local day; a
    future day's `absent` says the same of the day, and its `minutes_working` is the minutes
    they work, but never below the minutes already booked (computed in the UPDATE itself, so
    a booking committing meanwhile cannot be left past the CHECK). The absences code calls
    this after writing an absence, in its own transaction."""
    await lock_setup(conn)
    await _extend_technicians(conn, document, now, technician_id)
    rows = await _technician_rows(conn, technician_id)
    if not rows:
        return
    plans = _plans(document, rows, now)
    today = now.astimezone(document.zone).date()
    spans = await _absent_days(conn, list(plans), today)
    zone = document.zone
    to_open: list[int] = []
    to_close: list[int] = []
    for chunk in _chunks(list(plans)):
        for r in await conn.execute(
            select(
                technician_slots.c.id,
                technician_slots.c.technician_id,
                technician_slots.c.starts_at,
                technician_slots.c.ends_at,
                technician_slots.c.open,
            ).where(technician_slots.c.technician_id.in_(chunk), technician_slots.c.starts_at > now)
        ):
            should = (r.starts_at, r.ends_at) in plans[r.technician_id].times and not _covered(
                spans, r.technician_id, r.starts_at.astimezone(zone).date()
            )
            if should and not r.open:
                to_open.append(r.id)
            elif not should and r.open:
                to_close.append(r.id)
    await _set_open(conn, to_open, True, technician_slots)
    await _set_open(conn, to_close, False, technician_slots)
    for chunk in _chunks(list(plans)):
        days = (
            await conn.execute(
                select(technician_days).where(
                    technician_days.c.technician_id.in_(chunk), technician_days.c.day >= today
                )
            )
        ).all()
        for r in days:
            working = plans[r.technician_id].minutes.get(r.day, 0)
            absent = _covered(spans, r.technician_id, r.day)
            if r.minutes_working == max(working, r.minutes_booked) and r.absent == absent:
                continue
            booked = technician_days.c.minutes_booked
            await conn.execute(
                update(technician_days)
                .where(
                    technician_days.c.technician_id == r.technician_id,
                    technician_days.c.day == r.day,
                )
                .values(
                    minutes_working=case((booked > working, booked), else_=working),
                    absent=absent,
                )
            )


async def _regrid(conn: AsyncConnection, document: GarageDocument, now: datetime) -> None:
    referenced = or_(
        exists().where(booking_slots.c.slot_id == slots.c.id),
        exists().where(bookings.c.slot_id == slots.c.id),
        exists().where(waitlist_offers.c.slot_id == slots.c.id),
    )
    await conn.execute(delete(slots).where(slots.c.starts_at > now, ~referenced))
    await conn.execute(
        delete(technician_slots).where(
            technician_slots.c.starts_at > now,
            ~exists().where(technician_claims.c.technician_slot_id == technician_slots.c.id),
        )
    )
    step = document.garage.slot_minutes
    for row in (
        await conn.execute(
            select(technician_slots.c.id, technician_slots.c.starts_at).where(
                technician_slots.c.starts_at > now
            )
        )
    ).all():
        local = row.starts_at.astimezone(document.zone)
        if (local.hour * 60 + local.minute) % step == 0:
            await conn.execute(
                update(technician_slots)
                .where(technician_slots.c.id == row.id)
                .values(ends_at=row.starts_at + document.slot_length)
            )
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


@dataclass(frozen=True)
class OutsideHours:
    id: str
    reference: str
    starts_at: datetime
    # Why: the bay's slot is no longer offered ("outside the hours"), or the booking's
    # technician no longer works then (retired, absent, hours shortened, skill removed).
    reason: str = "outside the hours"


async def outside_hours(conn: AsyncConnection, now: datetime) -> list[OutsideHours]:
    """Future confirmed bookings the document no longer covers: a claimed bay slot it no
    longer offers (outside the hours, a closed day, a retired bay), or a technician who no
    longer works then. Kept and confirmed, for staff to move, reassign or keep; each once,
    with its first reason."""
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
    found = {r.id: OutsideHours(r.id, r.reference, r.starts_at) for r in rows}
    for item in await _technician_outside(conn, now):
        found.setdefault(item.id, item)
    return sorted(found.values(), key=lambda b: (b.starts_at, b.id))


async def _technician_outside(conn: AsyncConnection, now: datetime) -> list[OutsideHours]:
    closed_claim = exists().where(
        and_(
            technician_claims.c.booking_id == bookings.c.id,
            technician_claims.c.active,
            technician_claims.c.technician_slot_id == technician_slots.c.id,
            ~technician_slots.c.open,
        )
    )
    rows = await conn.execute(
        select(
            bookings.c.id,
            bookings.c.reference,
            bookings.c.starts_at,
            bookings.c.technician_id,
            technicians.c.name,
            technicians.c.active,
            technicians.c.skills,
            services.c.skill,
            closed_claim.label("closed_claim"),
        )
        .join(technicians, technicians.c.id == bookings.c.technician_id)
        .join(services, services.c.id == bookings.c.service_id)
        .where(bookings.c.status == "confirmed", bookings.c.starts_at > now)
    )
    result: list[OutsideHours] = []
    candidates = rows.all()
    if not candidates:
        return result
    absent = {
        (d.technician_id, d.day)
        for d in await conn.execute(
            select(technician_days.c.technician_id, technician_days.c.day).where(
                technician_days.c.absent, technician_days.c.day >= now.date() - timedelta(days=1)
            )
        )
    }
    document = await _stored_document(conn)
    zone = ZoneInfo("UTC") if document is None else document.zone
    listed = {} if document is None else {t.name: t for t in document.technicians}
    for r in candidates:
        # A drop-off claims no technician slots: its day is what the technician must work.
        day = r.starts_at.astimezone(zone).date()
        planned = listed.get(r.name)
        works_that_day = (
            document is None or planned is None or bool(technician_times(document, planned, day))
        )
        if not r.active:
            reason = "technician retired"
        elif r.skill not in r.skills.split(","):
            reason = f"technician lacks the skill {r.skill!r}"
        elif (r.technician_id, day) in absent:
            reason = "technician absent"
        elif r.closed_claim or not works_that_day:
            reason = "technician not working then"
        else:
            continue
        result.append(OutsideHours(r.id, r.reference, r.starts_at, reason))
    return result


async def _stored_document(conn: AsyncConnection) -> GarageDocument | None:
    """The document in force (its local days are the technicians' days)."""
    raw = await conn.scalar(select(garage.c.document).where(garage.c.id == 1))
    return None if raw is None else parse_json(json.loads(raw))
