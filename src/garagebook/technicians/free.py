"""When a qualified technician is free (issue 15): what availability offers on top of a free
bay. A read, like the rest of availability: the booking's statement still decides."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.schema import technician_claims, technician_days, technician_slots
from garagebook.technicians.claims import able


async def free_starts(
    conn: AsyncConnection,
    skill: str,
    start: datetime,
    end: datetime,
    duration: timedelta,
    zone: ZoneInfo,
    own_booking: str | None = None,
) -> dict[datetime, int] | None:
    """The starts in [start, end) from which some active technician with `skill` is free for
    `duration` — every one of their slots in it open and unclaimed, their day not absent and
    with at least `duration` of its minutes left — with how many of them are. None: the
    garage lists no technicians (then a free bay is enough). `own_booking`'s claims count as
    free (a booking being moved)."""
    ids = await able(conn, skill)
    if ids is None:
        return None
    if not ids:
        return {}
    claim = and_(
        technician_claims.c.technician_slot_id == technician_slots.c.id,
        technician_claims.c.active,
    )
    if own_booking is not None:
        claim = and_(claim, technician_claims.c.booking_id != own_booking)
    rows = (
        await conn.execute(
            select(
                technician_slots.c.technician_id,
                technician_slots.c.starts_at,
                technician_slots.c.ends_at,
                technician_slots.c.open,
                technician_claims.c.id.is_not(None).label("taken"),
            )
            .select_from(technician_slots.outerjoin(technician_claims, claim))
            .where(
                technician_slots.c.technician_id.in_(ids),
                technician_slots.c.starts_at >= start,
                technician_slots.c.starts_at < end + duration,
            )
        )
    ).all()
    first_day = start.astimezone(zone).date()
    last_day = (end + duration).astimezone(zone).date()
    days = await minutes_left(conn, ids, first_day, last_day)
    free: dict[int, dict[datetime, datetime]] = defaultdict(dict)  # technician: start → end
    for row in rows:
        if row.open and not row.taken:
            free[row.technician_id][row.starts_at] = row.ends_at
    minutes = duration.total_seconds() / 60
    found: dict[datetime, int] = defaultdict(int)
    for technician_id, times in free.items():
        for begins in times:
            if begins >= end or begins < start:
                continue
            day: date = begins.astimezone(zone).date()
            if days.get((technician_id, day), 0) < minutes:
                continue
            reached = begins
            while reached - begins < duration and reached in times:
                reached = times[reached]
            if reached - begins >= duration:
                found[begins] += 1
    return dict(found)


async def minutes_left(
    conn: AsyncConnection, technician_ids: list[int], first: date, last: date
) -> dict[tuple[int, date], int]:
    """Each (technician, day)'s minutes not yet booked, for days they are not absent."""
    if not technician_ids:
        return {}
    rows = await conn.execute(
        select(
            technician_days.c.technician_id,
            technician_days.c.day,
            technician_days.c.minutes_working - technician_days.c.minutes_booked,
        ).where(
            technician_days.c.technician_id.in_(technician_ids),
            technician_days.c.day >= first,
            technician_days.c.day <= last,
            ~technician_days.c.absent,
        )
    )
    return {(tid, day): int(left) for tid, day, left in rows}


async def technician_free(
    conn: AsyncConnection, technician_id: int, starts: Sequence[datetime], day: date, minutes: int
) -> bool:
    """Whether the database has `technician_id` free now: open, unclaimed slots at every one of
    `starts`, and `minutes` left of their `day`, not absent. A read, for a hold: only the
    booking's write decides."""
    free_slots = await conn.scalar(
        select(func.count())
        .select_from(technician_slots)
        .where(
            technician_slots.c.technician_id == technician_id,
            technician_slots.c.starts_at.in_(list(starts)),
            technician_slots.c.open,
            ~select(technician_claims.c.id)
            .where(
                technician_claims.c.technician_slot_id == technician_slots.c.id,
                technician_claims.c.active,
            )
            .exists(),
        )
    )
    left = (await minutes_left(conn, [technician_id], day, day)).get((technician_id, day))
    return free_slots == len(starts) and left is not None and left >= minutes
