"""The technician side of a timed booking (issue 15): which technicians may take it, and the
claim on one of them that the database decides.

A timed booking takes a bay and a technician for its whole time. Both are decided the same
way, by the database, in the booking's one transaction: the technician's slots (created by the
calendar for the hours they work, closed by an absence) are claimed in `technician_claims`,
where a partial unique index allows one active claim per slot, exactly as `booking_slots`
does for bays; and the booking's minutes are added to the technician's day, a counter the
`UPDATE … WHERE booked + mine <= working AND NOT absent` guards and a CHECK constraint backs.
Unique claims and a checked counter are the two constraints SQLite and PostgreSQL both have,
so one guarantee holds on both (an exclusion constraint would be PostgreSQL's alone).

Which technician: the customer picks a time, never a technician. Of the qualified ones (active,
with the service's skill), the one with the fewest skills goes first, then the lowest id: so an
oil change goes to a general technician while one is free, and the only MOT tester is kept
for MOTs. Bays are picked the same way (fewest capabilities first, bookings/service.py).

A garage whose document lists no technicians does not plan by them: its bookings take none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.db import insert_ignoring_conflicts
from garagebook.garage.rules import can
from garagebook.reservations import Key, technician_key
from garagebook.schema import (
    bookings,
    technician_claims,
    technician_days,
    technician_slots,
    technicians,
)


@dataclass(frozen=True)
class TechnicianChoice:
    """A qualified technician for a booking's times, and the reservation keys of those times."""

    technician_id: int
    keys: tuple[Key, ...]


@dataclass(frozen=True)
class Technicians:
    """Who may take a booking of a service at given times, best first. `needed` false: the
    garage lists no active technician, and bookings take none."""

    needed: bool
    choices: tuple[TechnicianChoice, ...]


NOT_PLANNED = Technicians(needed=False, choices=())


async def able(conn: AsyncConnection, skill: str) -> list[int] | None:
    """The active technicians with `skill`, best first (fewest skills, then lowest id); None
    when the garage lists no active technician at all (then bookings take none)."""
    staff = (
        await conn.execute(
            select(technicians.c.id, technicians.c.skills).where(technicians.c.active)
        )
    ).all()
    if not staff:
        return None
    return _best_first((row.id, row.skills) for row in staff if can(row.skills, skill))


def _best_first(staff: Iterable[tuple[int, str]]) -> list[int]:
    """Technicians' ids, fewest skills first, then lowest id."""
    return [tid for _, tid in sorted((len(skills.split(",")), tid) for tid, skills in staff)]


def qualified(
    staff: Iterable[tuple[int, str]],
    working: Sequence[set[int]],
    skill: str,
    starts: Sequence[datetime],
) -> Technicians:
    """Of the active technicians (`staff`: id and skills), those with `skill` who have a slot at
    every one of `starts` (`working`: at each start, whose slots are there), best first.
    Whether those slots are open and free is the booking's statement to decide. The booking's
    plan reads both with its slots (slots/service.py), in its one statement."""
    at_every = set.intersection(*working) if working else set()
    ids = _best_first(
        (tid, skills) for tid, skills in staff if tid in at_every and can(skills, skill)
    )
    return Technicians(
        needed=True,
        choices=tuple(
            TechnicianChoice(tid, tuple(technician_key(tid, start) for start in starts))
            for tid in ids
        ),
    )


class TechnicianTaken(Exception):
    """The database refused this technician (a slot taken or closed, the day full or absent,
    the skill gone): the booking rolls back, and the next qualified technician may be tried."""


async def claim(
    conn: AsyncConnection,
    booking_id: str,
    technician_id: int,
    skill: str,
    starts: Sequence[datetime],
    day: date,
    minutes: int,
) -> None:
    """Claim `technician_id`'s slots at `starts` (none for a drop-off) and `minutes` of their
    `day` for the booking, in the caller's transaction (SQLite's booking, every move);
    TechnicianTaken if refused. PostgreSQL's booking does the same in its one statement
    (bookings/sql.py)."""
    skills = await conn.scalar(
        select(technicians.c.skills).where(technicians.c.id == technician_id, technicians.c.active)
    )
    if skills is None or not can(skills, skill):
        raise TechnicianTaken()
    if starts:
        await claim_slots(conn, booking_id, technician_id, starts)
    counted = await conn.execute(
        update(technician_days)
        .where(
            technician_days.c.technician_id == technician_id,
            technician_days.c.day == day,
            ~technician_days.c.absent,
            technician_days.c.minutes_booked + minutes <= technician_days.c.minutes_working,
        )
        .values(minutes_booked=technician_days.c.minutes_booked + minutes)
    )
    if counted.rowcount != 1:
        raise TechnicianTaken()


async def claim_slots(
    conn: AsyncConnection, booking_id: str, technician_id: int, starts: Sequence[datetime]
) -> None:
    """Claim `technician_id`'s open slots at `starts` for the booking (no minutes: the caller
    counts them); TechnicianTaken if one is missing, closed or taken."""
    slot_rows = select(technician_slots.c.id).where(
        technician_slots.c.technician_id == technician_id,
        technician_slots.c.starts_at.in_(list(starts)),
        technician_slots.c.open,
    )
    if conn.dialect.name == "postgresql":
        slot_rows = slot_rows.with_for_update(read=True)  # an absence closing them waits
    slot_ids = (await conn.scalars(slot_rows)).all()
    if len(slot_ids) != len(starts):
        raise TechnicianTaken()
    claimed = (
        await conn.scalars(
            insert_ignoring_conflicts(conn, technician_claims)
            .values(
                [
                    {"booking_id": booking_id, "technician_slot_id": sid, "active": True}
                    for sid in slot_ids
                ]
            )
            .returning(technician_claims.c.technician_slot_id)
        )
    ).all()
    if len(claimed) != len(starts):
        raise TechnicianTaken()


async def release(
    conn: AsyncConnection, booking_id: str, day: date, *, moving: bool = False
) -> list[Key]:
    """Give back a booking's technician (a cancel, or a move before it claims anew): its
    claims go inactive (a move deletes them: it may claim the same slots again, and a slot is
    claimed once per booking) and its minutes leave the technician's `day` (the booking's
    local day). Returns the reservation keys of the times it held, to drop once committed.
    The caller releases a booking once per claim: a cancel of a confirmed booking, a move."""
    booking = (
        await conn.execute(
            select(
                bookings.c.technician_id,
                bookings.c.starts_at,
                bookings.c.ends_at,
                bookings.c.slot_id,
                bookings.c.technician_minutes,
            ).where(bookings.c.id == booking_id)
        )
    ).one()
    if booking.technician_id is None:
        return []
    minutes = (
        booking.technician_minutes
        if booking.technician_minutes is not None
        else int((booking.ends_at - booking.starts_at).total_seconds() // 60)
    )
    keys = await release_slots(conn, booking_id, moving=moving)
    # A timed booking with no claims left was released already; a drop-off's minutes are
    # its claim (its slots, only while it is placed on a bay).
    if keys or booking.slot_id is None:
        await _give_back(conn, booking.technician_id, day, minutes)
    return keys


async def release_slots(conn: AsyncConnection, booking_id: str, *, moving: bool) -> list[Key]:
    """The booking's active technician claims go (inactive, or deleted for a move); the
    reservation keys of the times they held."""
    mine = and_(technician_claims.c.booking_id == booking_id, technician_claims.c.active)
    freed = (
        await conn.execute(
            (
                delete(technician_claims).where(mine)
                if moving
                else update(technician_claims).where(mine).values(active=False)
            ).returning(technician_claims.c.technician_slot_id)
        )
    ).all()
    if not freed:
        return []
    rows = (
        await conn.execute(
            select(technician_slots.c.technician_id, technician_slots.c.starts_at).where(
                technician_slots.c.id.in_([row[0] for row in freed])
            )
        )
    ).all()
    return [technician_key(row.technician_id, row.starts_at) for row in rows]


async def _give_back(conn: AsyncConnection, technician_id: int, day: date, minutes: int) -> None:
    await conn.execute(
        update(technician_days)
        .where(and_(technician_days.c.technician_id == technician_id, technician_days.c.day == day))
        .values(minutes_booked=technician_days.c.minutes_booked - minutes)
    )


async def claim_first(
    conn: AsyncConnection,
    booking_id: str,
    found: Technicians,
    skill: str,
    starts: Sequence[datetime],
    day: date,
    minutes: int,
) -> int | None:
    """A move's technician: the first of `found` the database lets the booking claim, each
    tried in a savepoint; None when the garage lists none. The booking's old technician must be
    `release`d first, so its own times count as free."""
    if not found.needed:
        return None
    for choice in found.choices:
        try:
            async with conn.begin_nested():
                await claim(conn, booking_id, choice.technician_id, skill, starts, day, minutes)
        except TechnicianTaken:
            continue
        await conn.execute(
            update(bookings)
            .where(bookings.c.id == booking_id)
            .values(technician_id=choice.technician_id)
        )
        return choice.technician_id
    raise TechnicianTaken()
