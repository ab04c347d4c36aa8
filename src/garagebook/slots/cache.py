"""What customers are offered, per (service, local day), kept while PostgreSQL still holds the
very row versions it was worked out from (issue 17).

Why: a day's availability reads a few hundred rows (bay slots and their claims, technicians'
slots, claims and days) and works them through in Python; that, not the database, is what a
busy booking page pays for. Asking PostgreSQL whether those rows changed is one small query.

How it stays true in every process, with no help from any writer: each answer first reads a
fingerprint of each day — per table, the count of the rows the computation reads (the service,
the bays, the technicians; the day's slots, the technicians' slots that day, their days) and
the sum of a 64-bit hash of each one's xmin; and of claims, which the computation reads only
as "this slot is taken", the count and hash sum of the slots that have an active one (an
index answers that without reading the claims). PostgreSQL writes every insert and update as a
new row version stamped (xmin) with the writing transaction's id, and a transaction's writes
become visible together when it commits: so a change committed after a fingerprint was read
either adds a row version with an id that no row seen then carries, or only removes rows (the
count), or changes which slots are taken. Whoever made it — another server process, a worker's
job, an apply of the setup, psql — the fingerprint changes (but for a 64-bit hash collision,
or transaction ids wrapping around, 2^32 of them later). A cached day is served only while the
fingerprint read for this answer equals the one read before it was computed. It is computed
after its fingerprint is read, so it is never older than that fingerprint: a change in between
makes the next answer miss, never a stale one. The clock (the minimum notice, starts already
gone) is applied when serving, never kept. Availability is a read: the booking's own statement
still decides, so even a wrong answer is a time offered that answers 409, never a double
booking.

Reading fingerprints costs PostgreSQL about 1 ms a day (every slot of the day and its claim);
most of it is skipped while nothing at all has been written. The statement reads its own
snapshot (`pg_current_snapshot()`: the newest completed transaction, and those still running),
and a day last found unchanged at that very snapshot is not read again. Two equal snapshots
see the same committed transactions, so the same rows: any commit (or rollback) of a
transaction that wrote, in any database of the server, makes the next snapshot differ, and the
days are read again. While customers only look, answers cost a snapshot; a booking anywhere
puts every day back to its fingerprint.

SQLite has no row versions to read, so there it always computes (the embedded default: one
process, a database in the same process)."""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.errors import ServiceNotFound
from garagebook.garage.rules import notice_minutes
from garagebook.schema import services
from garagebook.slots.service import Availability, by_local_day, list_slots, local_day_bounds
from garagebook.timeutil import to_local_iso

# Per table, the count and xmin hash sum of the rows a day's computation reads. The day's
# bounds come as arrays; the slots read reach past its end by the service's length, as
# list_slots reads them. Claims: whether each slot has an active one (its partial unique index).
_FINGERPRINTS = text(
    """
WITH snap AS MATERIALIZED (
    SELECT pg_current_snapshot()::text AS snapshot  -- this statement's own snapshot
), service AS (
    SELECT duration_minutes, mode FROM services WHERE id = :service_id AND active
), day AS (
    SELECT r.i, r.starts, r.ends + make_interval(mins => (SELECT duration_minutes FROM service))
           AS until,
        -- a day last found unchanged at this very snapshot is not read again (One-Time Filter)
        r.known IS DISTINCT FROM (SELECT snapshot FROM snap) AS read
    FROM unnest(CAST(:i AS int[]), CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[]),
                CAST(:known AS text[]))
         AS r(i, starts, ends, known)
), setup AS (
    SELECT count(*) AS n, coalesce(sum(hashtextextended(xmin::text, 0)), 0) AS h FROM (
        SELECT xmin FROM services WHERE id = :service_id
        UNION ALL SELECT xmin FROM bays
        UNION ALL SELECT xmin FROM technicians) x
)
SELECT d.i, bay.slots, bay.slots_n, bay.claims, bay.claims_n,
    staff.slots, staff.slots_n, staff.claims, staff.claims_n, staff_days.days, staff_days.days_n,
    (SELECT h FROM setup) AS setup, (SELECT n FROM setup) AS setup_n, d.read,
    (SELECT snapshot FROM snap) AS snapshot,
    (SELECT duration_minutes FROM service) AS duration_minutes,
    (SELECT mode FROM service) AS mode,
    (SELECT min_notice_minutes FROM garage WHERE id = 1) AS notice_minutes
FROM day d
CROSS JOIN LATERAL (
    SELECT sum(hashtextextended(x.xmin::text, 0)) AS slots, count(*) AS slots_n,
        sum(hashint4extended(x.id, 0)) FILTER (WHERE x.taken) AS claims,
        count(*) FILTER (WHERE x.taken) AS claims_n
    FROM (
        SELECT s.id, s.xmin, (SELECT 1 FROM booking_slots c
                              WHERE c.slot_id = s.id AND c.active) IS NOT NULL AS taken
        FROM slots s WHERE d.read AND s.starts_at >= d.starts AND s.starts_at < d.until
        OFFSET 0  -- kept whole: each slot's claim looked up once (by the index), not per
                  -- aggregate, nor by hashing every claim there is
    ) x
) bay
CROSS JOIN LATERAL (
    SELECT sum(hashtextextended(x.xmin::text, 0)) AS slots, count(*) AS slots_n,
        sum(hashint4extended(x.id, 0)) FILTER (WHERE x.taken) AS claims,
        count(*) FILTER (WHERE x.taken) AS claims_n
    FROM (
        SELECT t.id, t.xmin, (SELECT 1 FROM technician_claims c
                              WHERE c.technician_slot_id = t.id AND c.active) IS NOT NULL
            AS taken
        FROM technician_slots t
        WHERE d.read AND t.starts_at >= d.starts AND t.starts_at < d.until
        OFFSET 0
    ) x
) staff
CROSS JOIN LATERAL (
    SELECT sum(hashtextextended(t.xmin::text, 0)) AS days, count(*) AS days_n
    FROM technician_days t
    WHERE d.read AND t.technician_id IN (SELECT id FROM technicians)
      AND t.day >= CAST(d.starts AT TIME ZONE :zone AS date)
      AND t.day <= CAST(d.until AT TIME ZONE :zone AS date)
) staff_days
ORDER BY d.i
"""
)

Fingerprint = tuple[Any, ...]


# A start of GET /api/availability's answer, and its JSON object {"starts_at", "ends_at", "free"}.
Start = tuple[datetime, bytes]


@dataclass(frozen=True)
class _Day:
    fingerprint: Fingerprint | None  # None: not read (the day was unchanged at `unchanged_at`)
    listed: list[Availability]  # computed with no clock: `available` before the notice
    unchanged_at: str  # a snapshot at which the day was as `listed` says
    # `listed` as GET /api/availability answers it, with no clock: worked out and written as
    # JSON once per computed day, not on every answer (a fifth of the request's time was that).
    starts: tuple[Start, ...]


def _starts(listed: list[Availability], duration: timedelta, zone: ZoneInfo) -> tuple[Start, ...]:
    """Each start where a capable bay and (where the garage lists technicians) a qualified
    technician are both free for the whole service, with how many such bookings could start
    then: the free bays, or the free technicians if fewer (any capable bay goes with any
    qualified technician)."""
    bays = Counter(a.slot.starts_at for a in listed if a.available)
    staffed = {a.slot.starts_at: a.technicians_free for a in listed}
    return tuple(
        (
            start,
            orjson.dumps(
                {
                    "starts_at": to_local_iso(start, zone),
                    "ends_at": to_local_iso(start + duration, zone),
                    "free": bays[start]
                    if staffed[start] is None
                    else min(bays[start], staffed[start] or 0),
                }
            ),
        )
        for start in sorted(bays)
    )


@dataclass(frozen=True)
class _Read:
    """One fingerprint read's answer: its snapshot, each day's fingerprint (None: not read,
    the day being cached as unchanged at that very snapshot), the service's length and mode
    (None: no such active service) and the garage's minimum notice."""

    snapshot: str
    prints: dict[date, Fingerprint | None]
    duration_minutes: int | None
    mode: str | None
    notice_minutes: int


@dataclass(frozen=True)
class Offered:
    """A service's days as customers are offered them (each day's slots as `list_slots` lists
    them online), and the service read with them: its mode and length."""

    mode: str
    duration: timedelta
    days: dict[date, list[Availability]]


@dataclass(frozen=True)
class OfferedStarts:
    """A day's starts of a service as GET /api/availability answers them (JSON objects, the
    starts already gone at that moment left out), and the service's mode."""

    mode: str
    starts: list[bytes]


class _Gone(Exception):
    """The answer reading for a batch was cancelled: the others read again."""


@dataclass
class _Batch:
    """The days of the answers one read is for, and what it found."""

    days: set[date]
    done: asyncio.Future[_Read]


Fetch = Callable[[list[date]], Awaitable[_Read]]


class _Reads:
    """One service's fingerprint reads, shared by the answers waiting for them.

    An answer never takes a read that started before it arrived (that read may predate a
    booking its customer has already been told of): while one is in flight, newcomers wait for
    the next, which the first of them makes, on its own connection, for all of their days once
    the one in flight has ended. Alone, an answer reads at once; under load one read serves
    many. An answer cancelled while it reads for others leaves them to read again."""

    def __init__(self) -> None:
        self._running: _Batch | None = None
        self._waiting: _Batch | None = None

    @property
    def idle(self) -> bool:
        return self._running is None and self._waiting is None

    async def read(self, days: list[date], fetch: Fetch) -> _Read:
        while True:
            batch = self._waiting
            if batch is not None:  # its read has not started: it will see what we have seen
                batch.days.update(days)
                try:
                    return await asyncio.shield(batch.done)
                except _Gone:
                    continue
            batch = _Batch(set(days), asyncio.get_running_loop().create_future())
            if self._running is not None:
                self._waiting = batch
                try:
                    await asyncio.wait([self._running.done])  # its answer or error: not ours
                except asyncio.CancelledError:
                    if self._waiting is batch:
                        self._waiting = None
                    batch.done.set_exception(_Gone())
                    batch.done.exception()  # retrieved: waiters, if any, read again
                    raise
                if self._waiting is batch:
                    self._waiting = None
            self._running = batch
            return await self._lead(batch, fetch)

    async def _lead(self, batch: _Batch, fetch: Fetch) -> _Read:
        try:
            found = await fetch(sorted(batch.days))
        except asyncio.CancelledError:
            batch.done.set_exception(_Gone())
            batch.done.exception()
            raise
        except Exception as error:
            batch.done.set_exception(error)
            batch.done.exception()
            raise
        finally:
            if self._running is batch:
                self._running = None
        batch.done.set_result(found)
        return found


class AvailabilityCache:
    """Per process (app.state.availability): days of one service's availability by fingerprint.
    Only what every customer sees is kept: staff views and a booking being moved (its own
    slots count as free) call `list_slots` themselves."""

    def __init__(
        self,
        zone: ZoneInfo,
        size: int = 2_000,
        *,
        read: Callable[[], AbstractAsyncContextManager[AsyncConnection]] | None = None,
    ) -> None:
        self._zone = zone
        self._size = size
        # Where the fingerprints are read: the answer's own connection, or `read()`'s (the
        # app's: connections that plan the statement once, db.py).
        self._read_on = read
        self._days: OrderedDict[tuple[int, date], _Day] = OrderedDict()
        self._reads: dict[int, _Reads] = {}

    async def days(
        self,
        conn: AsyncConnection,
        service_id: int,
        first: date,
        count: int,
        now: datetime,
        *,
        drop_offs: bool = True,
    ) -> Offered:
        """Each of `count` local days from `first`: its slots as `list_slots` lists them
        online at `now`, soonest first. ServiceNotFound for a retired or unknown service.
        `drop_offs` false: a drop-off service's days are not worked out (none are listed), only
        its mode read — on PostgreSQL in the same one round trip as the fingerprints."""
        wanted = [first + timedelta(days=n) for n in range(count)]
        mode, duration, notice, found = await self._found(
            conn, service_id, wanted, drop_offs=drop_offs, starts=False
        )
        not_before = now + timedelta(minutes=notice)
        return Offered(mode, duration, {day: _at(found[day].listed, not_before) for day in wanted})

    async def starts(
        self, conn: AsyncConnection, service_id: int, day: date, now: datetime
    ) -> OfferedStarts:
        """`day`'s starts of a timed service as GET /api/availability answers them at `now`
        (none for a drop-off service: only its mode is read). ServiceNotFound as `days`."""
        mode, _, notice, found = await self._found(
            conn, service_id, [day], drop_offs=False, starts=True
        )
        not_before = now + timedelta(minutes=notice)
        return OfferedStarts(mode, [row for start, row in found[day].starts if start > not_before])

    async def _found(
        self,
        conn: AsyncConnection,
        service_id: int,
        wanted: list[date],
        *,
        drop_offs: bool,
        starts: bool,
    ) -> tuple[str, timedelta, int, dict[date, _Day]]:
        """The service's mode, length and the garage's notice, and the `wanted` days. `starts`:
        where the days are computed for this answer alone (SQLite), their `starts` are worked
        out only if asked for; days kept in the cache always have them."""
        cached = conn.dialect.name == "postgresql"
        if cached:
            read = await self._read(conn, service_id, wanted)
            mode, minutes, notice = read.mode, read.duration_minutes, read.notice_minutes
        else:
            service = (
                await conn.execute(
                    select(services.c.mode, services.c.duration_minutes).where(
                        services.c.id == service_id, services.c.active
                    )
                )
            ).first()
            mode, minutes = (service.mode, service.duration_minutes) if service else (None, None)
            notice = await notice_minutes(conn)
        if mode is None or minutes is None:
            raise ServiceNotFound(service_id=service_id)
        duration = timedelta(minutes=minutes)
        if mode == "drop_off" and not drop_offs:
            found = {day: _Day(None, [], "", ()) for day in wanted}
        elif cached:
            found = await self._cached(conn, service_id, wanted, read, duration)
        else:
            computed = await self._compute(conn, service_id, wanted)
            found = {
                day: _Day(None, listed, "", _starts(listed, duration, self._zone) if starts else ())
                for day, listed in computed.items()
            }
        return mode, duration, notice, found

    async def _read(self, conn: AsyncConnection, service_id: int, wanted: list[date]) -> _Read:
        """A fingerprint read for `wanted` that started after this call, shared with others."""
        reads = self._reads.setdefault(service_id, _Reads())

        async def fetch(days: list[date]) -> _Read:
            if self._read_on is None:
                return await self._fingerprints(conn, service_id, days)
            async with self._read_on() as own:
                return await self._fingerprints(own, service_id, days)

        try:
            read = await reads.read(wanted, fetch)
        finally:
            if reads.idle:  # kept only while answers share it: any id a client sends is a key
                self._reads.pop(service_id, None)
        return read

    async def _cached(
        self,
        conn: AsyncConnection,
        service_id: int,
        wanted: list[date],
        read: _Read,
        duration: timedelta,
    ) -> dict[date, _Day]:
        """The days, from the cache where their fingerprint in `read` still holds."""
        found: dict[date, _Day] = {}
        missing = []
        for day in wanted:
            key, fingerprint = (service_id, day), read.prints[day]
            kept = self._days.get(key)
            if kept is not None and kept.unchanged_at == read.snapshot:
                found[day] = kept
            elif kept is not None and fingerprint is not None and kept.fingerprint == fingerprint:
                found[day] = self._days[key] = replace(kept, unchanged_at=read.snapshot)
            else:
                missing.append(day)
                continue
            self._days.move_to_end(key)
        if missing:
            computed = await self._compute(conn, service_id, missing)
            for day in missing:
                listed = computed[day]
                found[day] = self._days[(service_id, day)] = _Day(
                    read.prints[day], listed, read.snapshot, _starts(listed, duration, self._zone)
                )
                self._days.move_to_end((service_id, day))
            while len(self._days) > self._size:
                self._days.popitem(last=False)
        return found

    async def _fingerprints(
        self, conn: AsyncConnection, service_id: int, days: list[date]
    ) -> _Read:
        bounds = [local_day_bounds(day, self._zone) for day in days]
        kept = [self._days.get((service_id, day)) for day in days]
        result = await conn.execute(
            _FINGERPRINTS,
            {
                "service_id": service_id,
                "i": list(range(len(days))),
                "starts": [start for start, _ in bounds],
                "ends": [end for _, end in bounds],
                "known": [k.unchanged_at if k else None for k in kept],
                "zone": self._zone.key,
            },
        )
        rows = result.all()
        # Each day's per-table counts and sums (the columns between the day's index and the
        # service's length).
        return _Read(
            rows[0].snapshot,
            {days[row.i]: tuple(row)[1:13] if row.read else None for row in rows},
            rows[0].duration_minutes,
            rows[0].mode,
            int(rows[0].notice_minutes or 0),
        )

    async def _compute(
        self, conn: AsyncConnection, service_id: int, days: list[date]
    ) -> dict[date, list[Availability]]:
        """`days`' availability with no clock, read in one pass from the first to the last."""
        start, _ = local_day_bounds(days[0], self._zone)
        _, end = local_day_bounds(days[-1], self._zone)
        listed = await list_slots(
            conn, start=start, end=end, now=None, zone=self._zone, service_id=service_id
        )
        grouped = by_local_day(listed, self._zone)
        return {day: grouped.get(day, []) for day in days}


def _at(listed: list[Availability], not_before: datetime) -> list[Availability]:
    """What the clock takes away: a start at or before `not_before` is not available."""
    return [
        a if a.slot.starts_at > not_before or not a.available else replace(a, available=False)
        for a in listed
    ]
