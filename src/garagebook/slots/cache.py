"""What customers are offered, per (service, local day), kept while PostgreSQL still holds the
very row versions it was worked out from (issue 17).

Why: a day's availability reads a few hundred rows (bay slots and their claims, technicians'
slots, claims and days) and works them through in Python; that, not the database, is what a
busy booking page pays for. Asking PostgreSQL whether those rows changed is one small query.

How it stays true in every process, with no help from any writer: each answer first reads a
fingerprint of each day — per table, the sum of a hash of every row version's (ctid, xmin)
over the rows the computation reads (the service, the bays, the technicians; the day's slots
and their active claims, the technicians' slots that day and their active claims, their days).
PostgreSQL writes every insert and update as a new row version, at a new ctid and with the
writing transaction's id as xmin, and a delete takes one away, so any committed change to
those rows changes the fingerprint, whoever made it: a booking in another server process, a
worker's job, an apply of the setup, psql. A cached day is served only while the fingerprint
read for this answer equals the one read before it was computed. It is computed after its
fingerprint is read, so it is never older than that fingerprint: a change in between makes the
next answer miss, never a stale one. The clock (the minimum notice, starts already gone) is
applied when serving, never kept. A fingerprint is a 64-bit hash sum: two different row sets
could in principle give the same one; availability is a read, and the booking's own statement
still decides, so the worst case is a time offered that then answers 409.

SQLite has no row versions to read, so there it always computes (the embedded default: one
process, a database in the same process)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.errors import ServiceNotFound
from garagebook.garage.rules import notice_minutes
from garagebook.slots.service import Availability, list_slots, local_day_bounds

# Per table, the hash sum of the row versions a day's computation reads. ranges: the local
# day's bounds; the slots read reach past its end by the service's length (list_slots).
_FINGERPRINTS = text(
    """
WITH service AS (
    SELECT duration_minutes FROM services WHERE id = :service_id AND active
), day AS (
    SELECT r.i, r.starts, r.ends + make_interval(mins => (SELECT duration_minutes FROM service))
           AS until
    FROM unnest(CAST(:i AS int[]), CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]))
         AS r(i, starts, ends)
), setup AS (
    SELECT coalesce(sum(hashtextextended(ctid::text, xmin::text::bigint)), 0) AS h FROM (
        SELECT ctid, xmin FROM services WHERE id = :service_id
        UNION ALL SELECT ctid, xmin FROM bays
        UNION ALL SELECT ctid, xmin FROM technicians) x
)
SELECT d.i, bay.slots, bay.claims, staff.slots, staff.claims, staff_days.days,
    (SELECT h FROM setup) AS setup,
    (SELECT duration_minutes FROM service) AS duration_minutes,
    (SELECT min_notice_minutes FROM garage WHERE id = 1) AS notice_minutes
FROM day d
CROSS JOIN LATERAL (
    SELECT coalesce(sum(hashtextextended(s.ctid::text, s.xmin::text::bigint)), 0) AS slots,
        coalesce(sum((SELECT hashtextextended(c.ctid::text, c.xmin::text::bigint)
                      FROM booking_slots c WHERE c.slot_id = s.id AND c.active)), 0) AS claims
    FROM slots s WHERE s.starts_at >= d.starts AND s.starts_at < d.until
) bay
CROSS JOIN LATERAL (
    SELECT coalesce(sum(hashtextextended(t.ctid::text, t.xmin::text::bigint)), 0) AS slots,
        coalesce(sum((SELECT hashtextextended(c.ctid::text, c.xmin::text::bigint)
                      FROM technician_claims c
                      WHERE c.technician_slot_id = t.id AND c.active)), 0) AS claims
    FROM technician_slots t WHERE t.starts_at >= d.starts AND t.starts_at < d.until
) staff
CROSS JOIN LATERAL (
    SELECT coalesce(sum(hashtextextended(t.ctid::text, t.xmin::text::bigint)), 0) AS days
    FROM technician_days t
    WHERE t.technician_id IN (SELECT id FROM technicians)
      AND t.day >= CAST(d.starts AT TIME ZONE :zone AS date)
      AND t.day <= CAST(d.until AT TIME ZONE :zone AS date)
) staff_days
ORDER BY d.i
"""
)

Fingerprint = tuple[Any, ...]


@dataclass(frozen=True)
class _Day:
    fingerprint: Fingerprint
    listed: list[Availability]  # computed with no clock: `available` before the notice


class AvailabilityCache:
    """Per process (app.state.availability): days of one service's availability by fingerprint.
    Only what every customer sees is kept: staff views and a booking being moved (its own
    slots count as free) call `list_slots` themselves."""

    def __init__(self, zone: ZoneInfo, size: int = 2_000) -> None:
        self._zone = zone
        self._size = size
        self._days: OrderedDict[tuple[int, date], _Day] = OrderedDict()

    async def days(
        self, conn: AsyncConnection, service_id: int, first: date, count: int, now: datetime
    ) -> dict[date, list[Availability]]:
        """Each of `count` local days from `first`: its slots as `list_slots` lists them
        online at `now`, soonest first. ServiceNotFound for a retired or unknown service."""
        wanted = [first + timedelta(days=n) for n in range(count)]
        if conn.dialect.name != "postgresql":
            found = await self._compute(conn, service_id, wanted)
            notice = await notice_minutes(conn)
        else:
            found, notice = await self._cached(conn, service_id, wanted)
        not_before = now + timedelta(minutes=notice)
        return {day: _at(found[day], not_before) for day in wanted}

    async def _cached(
        self, conn: AsyncConnection, service_id: int, wanted: list[date]
    ) -> tuple[dict[date, list[Availability]], int]:
        """The days, from the cache where their fingerprint still holds; and the notice."""
        bounds = [local_day_bounds(day, self._zone) for day in wanted]
        rows = (
            await conn.execute(
                _FINGERPRINTS,
                {
                    "service_id": service_id,
                    "i": list(range(len(wanted))),
                    "starts": [start for start, _ in bounds],
                    "ends": [end for _, end in bounds],
                    "zone": self._zone.key,
                },
            )
        ).all()
        if rows[0].duration_minutes is None:
            raise ServiceNotFound(service_id=service_id)
        # Each day's per-table sums (the columns between the day's index and the service's).
        prints = {wanted[row.i]: tuple(row)[1:7] for row in rows}
        found: dict[date, list[Availability]] = {}
        missing = []
        for day in wanted:
            kept = self._days.get((service_id, day))
            if kept is not None and kept.fingerprint == prints[day]:
                self._days.move_to_end((service_id, day))
                found[day] = kept.listed
            else:
                missing.append(day)
        if missing:
            computed = await self._compute(conn, service_id, missing)
            for day in missing:
                self._days[(service_id, day)] = _Day(prints[day], computed[day])
                self._days.move_to_end((service_id, day))
            while len(self._days) > self._size:
                self._days.popitem(last=False)
            found.update(computed)
        return found, int(rows[0].notice_minutes or 0)

    async def _compute(
        self, conn: AsyncConnection, service_id: int, days: list[date]
    ) -> dict[date, list[Availability]]:
        """`days`' availability with no clock, read in one pass from the first to the last."""
        start, _ = local_day_bounds(days[0], self._zone)
        _, end = local_day_bounds(days[-1], self._zone)
        listed = await list_slots(
            conn, start=start, end=end, now=None, zone=self._zone, service_id=service_id
        )
        by_day: dict[date, list[Availability]] = {day: [] for day in days}
        for a in listed:
            day = a.slot.starts_at.astimezone(self._zone).date()
            if day in by_day:
                by_day[day].append(a)
        return by_day


def _at(listed: list[Availability], not_before: datetime) -> list[Availability]:
    """What the clock takes away: a start at or before `not_before` is not available."""
    return [
        a if a.slot.starts_at > not_before or not a.available else replace(a, available=False)
        for a in listed
    ]
