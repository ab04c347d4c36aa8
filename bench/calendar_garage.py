"""A garage with a calendar of a given length and fill, for the calendar scenarios of issue 17
(`python -m bench.run --only calendar`) and for profiling against it:

    python -m bench.calendar_garage --ahead 365 --fill 0.7 --history 365 --database garagebook_prof

The setup is the real example document (examples/technicians-garage.toml) applied through
garagebook's own apply path, dated from the real now, so "the next free times" start today.
The calendar's rows (times from garagebook's calendar functions, checked by the apply) and the
bookings are laid in bulk SQL, the bookings as the booking statement would leave them:
thousands of HTTP bookings would take minutes and measure nothing of interest. The year-long
garage takes 12-15 s on this (2-core, shared) machine.
"""

# ruff: noqa: S608  (its SQL is built from its own constants; every value is a bound parameter)

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import tomllib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from garagebook.cli import migrate_database
from garagebook.db import Database
from garagebook.garage.apply import apply_document
from garagebook.garage.calendar import (
    day_times,
    horizon,
    lock_setup,
    technician_times,
    wanted,
)
from garagebook.garage.document import GarageDocument, parse_json
from garagebook.timeutil import utcnow

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "examples" / "technicians-garage.toml"
PG_BASE = os.environ.get("BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
# The service the fill books: timed, one 30-minute slot, skill and bay "general".
FILL_SERVICE = "oil-change"
# Only these names may be dropped and made afresh: the bench never touches another database.
OWN_DATABASE = re.compile(r"garagebook_(bench|prof)\w*")


async def fresh_database(name: str) -> str:
    """The database `name` dropped, created and migrated; its URL. Only the bench's own names
    (OWN_DATABASE): a typo must not drop someone's data."""
    if not OWN_DATABASE.fullmatch(name):
        raise ValueError(f"{name!r}: the bench makes only garagebook_bench* / garagebook_prof*")
    admin = create_async_engine(f"{PG_BASE}/postgres", isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    url = f"{PG_BASE}/{name}"
    await asyncio.to_thread(migrate_database, url)
    return url


async def drop_database(name: str) -> None:
    """Drop one of the bench's own databases (after a run without --keep)."""
    if not OWN_DATABASE.fullmatch(name):
        raise ValueError(f"{name!r} is not one of the bench's databases")
    admin = create_async_engine(f"{PG_BASE}/postgres", isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


def example_document(ahead_days: int, *, min_notice_minutes: int = 0) -> GarageDocument:
    """The example technicians garage with its booking horizon and notice replaced: the rest
    (bays, technicians, hours, closed days, services, time zone) is the file's, validated by
    garagebook's own parser."""
    data = tomllib.loads(DOCUMENT.read_text(encoding="utf-8"))
    data["garage"]["book_ahead_days"] = ahead_days
    data["garage"]["min_notice_minutes"] = min_notice_minutes
    return parse_json(data)


def longest_timed_service(document: GarageDocument) -> str:
    """The key of the document's longest timed service (the request that must fit most slots)."""
    timed = [s for s in document.services if s.mode == "timed" and s.active]
    return max(timed, key=lambda s: s.minutes).key


def open_days(document: GarageDocument, first: date, count: int) -> list[date]:
    """The local days among `count` from `first` on which the garage has slots at all
    (garagebook's own calendar function: Sundays and closed days drop out)."""
    days = (first + timedelta(days=i) for i in range(count))
    return [day for day in days if day_times(document, day)]


async def build_garage(
    url: str, *, ahead_days: int, fill: float, history_days: int
) -> dict[str, Any]:
    """On the fresh database at `url`: the example garage applied with `ahead_days` of calendar
    from now and `history_days` of past calendar, and `fill` of the bay slots (future and past
    alike) booked in bulk SQL. Returns what it built and how long each part took.

    garagebook's apply lays a year's calendar row by row through SQLAlchemy (11-25 s here,
    mostly compiling its multi-row INSERTs), so the bench applies the document first with a
    one-day horizon (services, bays, technicians), lays the calendar itself in a few bulk
    INSERTs from garagebook's own calendar functions (`wanted`, `technician_times`), then
    applies the document with `ahead_days`: that apply finds every row it wants in place and
    syncs the open flags and working minutes to the document. `apply_added` and `closed` in
    the result say it had nothing to add and closed nothing: the bench laid what apply lays."""
    started = time.perf_counter()
    document = example_document(ahead_days)
    engine = create_async_engine(url)
    db = Database(engine)
    try:
        await apply_document(db, example_document(1), actor="bench")
        now = utcnow()
        since = now - timedelta(days=history_days)
        async with db.transaction() as conn:
            await lock_setup(conn)
            await lay_calendar(conn, document, since, horizon(document, now)[1])
            before = await calendar_rows(conn)
        laid = time.perf_counter()
        await apply_document(db, document, actor="bench")
        async with db.read() as conn:
            after = await calendar_rows(conn)
        applied = time.perf_counter()
        async with db.transaction() as conn:
            booked = await book_share(conn, document, fill, now, since)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            # What autovacuum leaves a database that has lived with its rows: statistics and
            # the visibility map (index-only scans), not a bulk load's freshly written pages.
            await conn.execute(text("VACUUM ANALYZE"))
            counts = await count_garage(conn, now, document.garage.timezone)
    finally:
        await db.dispose()
    done = time.perf_counter()
    return {
        "ahead_days": ahead_days,
        "history_days": history_days,
        "fill": fill,
        "service_booked": FILL_SERVICE,
        **counts,
        "booked_now": booked,
        "apply_added": after[0] - before[0],
        "closed": after[1],
        "seconds": {
            "calendar": round(laid - started, 2),
            "apply": round(applied - laid, 2),
            "fill": round(done - applied, 2),
            "total": round(done - started, 2),
        },
    }


async def lay_calendar(
    conn: AsyncConnection, document: GarageDocument, since: datetime, last: date
) -> None:
    """The bay slots, technician slots and technician days the document makes for the local
    days from `since` to `last` (slots starting after `since` only), on the active bays and
    technicians already in the database: the times come from garagebook's calendar functions,
    only the INSERTs are the bench's (one per table, arrays unnested)."""
    zone = document.zone
    first = since.astimezone(zone).date()
    times = [t for t in wanted(document, first, last) if t[0] > since]
    bay_ids = list((await conn.scalars(text("SELECT id FROM bays WHERE active"))).all())
    await conn.execute(
        text(
            "INSERT INTO slots (bay_id, starts_at, ends_at)"
            " SELECT b, t.s, t.e FROM unnest(CAST(:bays AS integer[])) b,"
            "  unnest(CAST(:starts AS timestamptz[]), CAST(:ends AS timestamptz[])) t(s, e)"
            " ORDER BY t.s, b ON CONFLICT DO NOTHING"
        ),
        {"bays": bay_ids, "starts": [t[0] for t in times], "ends": [t[1] for t in times]},
    )
    rows = (await conn.execute(text("SELECT id, name FROM technicians WHERE active"))).all()
    ids = {r.name: r.id for r in rows}
    slot_rows: tuple[list[int], list[datetime], list[datetime]] = ([], [], [])
    day_rows: tuple[list[int], list[date], list[int]] = ([], [], [])
    for technician in document.technicians:
        if not technician.active or technician.name not in ids:
            continue
        day = first
        while day <= last:
            theirs = technician_times(document, technician, day)
            if theirs:
                day_rows[0].append(ids[technician.name])
                day_rows[1].append(day)
                day_rows[2].append(len(theirs) * document.garage.slot_minutes)
            for begins, ends in theirs:
                if begins > since:
                    slot_rows[0].append(ids[technician.name])
                    slot_rows[1].append(begins)
                    slot_rows[2].append(ends)
            day += timedelta(days=1)
    await conn.execute(
        text(
            "INSERT INTO technician_slots (technician_id, starts_at, ends_at)"
            " SELECT * FROM unnest(CAST(:ids AS integer[]), CAST(:starts AS timestamptz[]),"
            "  CAST(:ends AS timestamptz[])) ORDER BY 2, 1 ON CONFLICT DO NOTHING"
        ),
        {"ids": slot_rows[0], "starts": slot_rows[1], "ends": slot_rows[2]},
    )
    await conn.execute(
        text(
            "INSERT INTO technician_days (technician_id, day, minutes_working)"
            " SELECT * FROM unnest(CAST(:ids AS integer[]), CAST(:days AS date[]),"
            "  CAST(:minutes AS integer[])) ON CONFLICT DO NOTHING"
        ),
        {"ids": day_rows[0], "days": day_rows[1], "minutes": day_rows[2]},
    )


async def calendar_rows(conn: AsyncConnection) -> tuple[int, int]:
    """Bay and technician slots in all, and how many of them are closed."""
    row = (
        await conn.execute(
            text(
                "SELECT (SELECT count(*) FROM slots) + (SELECT count(*) FROM technician_slots),"
                " (SELECT count(*) FROM slots WHERE NOT open)"
                " + (SELECT count(*) FROM technician_slots WHERE NOT open)"
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def book_share(
    conn: AsyncConnection, document: GarageDocument, fill: float, now: datetime, since: datetime
) -> int:
    """Book `fill` of the open bay slots from `since` on (of the future ones and of the past ones
    each) with FILL_SERVICE, as the booking statement leaves a booking: the row (past ones
    `completed`), its active bay claim, an active claim on a qualified, working technician's
    free slot at that time, and the minutes on that technician's day. The k-th booking at a
    time takes the k-th of that time's technicians in a hashed order, so no technician is in
    two bookings at once, load spreads over them, and a time with fewer technicians than
    picked slots books only as many as there are technicians."""
    if fill <= 0:
        return 0
    zone = document.garage.timezone
    params = {"fill": fill, "now": now, "since": since, "service": FILL_SERVICE, "zone": zone}
    await conn.execute(text("SELECT setseed(0.17)"))  # the same garage every run
    await conn.execute(
        text(
            "INSERT INTO customers (email, name, updated_at)"
            " VALUES ('calendar@example.com', 'Calendar Fill', now())"
        )
    )
    await conn.execute(
        text("INSERT INTO vehicles (registration, updated_at) VALUES ('CA11 BEN', now())")
    )
    # The bay slots to book: `fill` of each side of now, drawn at random.
    await conn.execute(
        text(
            "CREATE TEMP TABLE pick ON COMMIT DROP AS"
            " WITH bookable AS ("
            "  SELECT s.id, s.starts_at, s.ends_at, s.bay_id, s.starts_at > :now AS future,"
            "   row_number() OVER (PARTITION BY s.starts_at > :now ORDER BY random()) AS r,"
            "   count(*) OVER (PARTITION BY s.starts_at > :now) AS n"
            "  FROM slots s JOIN bays b ON b.id = s.bay_id AND b.active, services sv"
            "  WHERE sv.key = :service AND s.open AND s.starts_at >= :since"
            "   AND s.ends_at - s.starts_at = sv.duration_minutes * interval '1 minute'"
            "   AND position(',' || sv.needs || ',' IN ',' || b.capabilities || ',') > 0"
            "   AND NOT EXISTS (SELECT 1 FROM booking_slots c WHERE c.slot_id = s.id AND c.active))"
            " SELECT id AS slot_id, starts_at, ends_at, future,"
            "  row_number() OVER (PARTITION BY starts_at ORDER BY bay_id) AS k"
            " FROM bookable WHERE r <= round(n * CAST(:fill AS float))"
        ),
        params,
    )
    # Each time's free technician slots of working, qualified technicians, numbered k = 1…
    await conn.execute(
        text(
            "CREATE TEMP TABLE crew ON COMMIT DROP AS"
            " SELECT ts.id AS technician_slot_id, ts.technician_id, ts.starts_at,"
            "  row_number() OVER (PARTITION BY ts.starts_at"
            "   ORDER BY md5(ts.technician_id || '/' || ts.starts_at)) AS k"
            " FROM technician_slots ts"
            " JOIN technicians t ON t.id = ts.technician_id AND t.active"
            " JOIN services sv ON sv.key = :service"
            "  AND position(',' || sv.skill || ',' IN ',' || t.skills || ',') > 0"
            " JOIN technician_days d ON d.technician_id = ts.technician_id"
            f"  AND d.day = CAST(ts.starts_at AT TIME ZONE '{zone}' AS date) AND NOT d.absent"
            " WHERE ts.open AND ts.starts_at >= :since"
            "  AND ts.starts_at IN (SELECT starts_at FROM pick)"
            "  AND NOT EXISTS (SELECT 1 FROM technician_claims c"
            "   WHERE c.technician_slot_id = ts.id AND c.active)"
        ),
        {"service": FILL_SERVICE, "since": since},
    )
    booked = await conn.execute(
        text(
            "INSERT INTO bookings (id, reference, slot_id, service_id, customer_email,"
            " customer_name, vehicle_registration, status, starts_at, ends_at, created_at,"
            " completed_at, cancel_token_hash, price_pence, technician_id, technician_minutes)"
            " SELECT 'cal' || p.slot_id, 'C' || p.slot_id, p.slot_id, sv.id,"
            "  'calendar@example.com', 'Calendar Fill', 'CA11 BEN',"
            "  CASE WHEN p.future THEN 'confirmed' ELSE 'completed' END,"
            "  p.starts_at, p.ends_at, LEAST(now(), p.starts_at - interval '7 days'),"
            "  CASE WHEN p.future THEN NULL ELSE p.ends_at END,"
            "  md5('calendar/' || p.slot_id), sv.price_pence, c.technician_id, sv.duration_minutes"
            " FROM pick p JOIN crew c ON c.starts_at = p.starts_at AND c.k = p.k,"
            "  services sv WHERE sv.key = :service"
        ),
        {"service": FILL_SERVICE},
    )
    await conn.execute(
        text(
            "INSERT INTO booking_slots (booking_id, slot_id, active)"
            " SELECT id, slot_id, true FROM bookings WHERE id LIKE 'cal%'"
        )
    )
    await conn.execute(
        text(
            "INSERT INTO technician_claims (booking_id, technician_slot_id, active)"
            " SELECT b.id, ts.id, true FROM bookings b JOIN technician_slots ts"
            "  ON ts.technician_id = b.technician_id AND ts.starts_at = b.starts_at"
            " WHERE b.id LIKE 'cal%'"
        )
    )
    # Each technician day's counter is the sum of its bookings (the CHECK keeps it in hours).
    await conn.execute(
        text(
            "UPDATE technician_days d SET minutes_booked = c.minutes FROM"
            f" (SELECT technician_id, CAST(starts_at AT TIME ZONE '{zone}' AS date) AS day,"
            "  sum(technician_minutes) AS minutes FROM bookings"
            "  WHERE status <> 'cancelled' AND technician_id IS NOT NULL GROUP BY 1, 2) c"
            " WHERE d.technician_id = c.technician_id AND d.day = c.day"
        )
    )
    return int(booked.rowcount)


async def count_garage(conn: AsyncConnection, now: datetime, zone: str) -> dict[str, Any]:
    """What the garage holds, and the checks that it holds together: every booking with its
    bay claim and technician claim, every technician day's counter equal to its bookings."""
    row = (
        await conn.execute(
            text(
                "SELECT"
                " (SELECT count(*) FROM slots WHERE starts_at > :now),"
                " (SELECT count(*) FROM slots WHERE starts_at <= :now),"
                " (SELECT count(*) FROM bookings WHERE starts_at > :now),"
                " (SELECT count(*) FROM bookings WHERE starts_at <= :now),"
                " (SELECT count(*) FROM technician_slots),"
                " (SELECT count(*) FROM technician_days),"
                " (SELECT count(*) FROM booking_slots WHERE active),"
                " (SELECT count(*) FROM technician_claims WHERE active),"
                " (SELECT count(*) FROM technician_days d LEFT JOIN"
                "   (SELECT technician_id, CAST(starts_at AT TIME ZONE :zone AS date) AS day,"
                "    sum(technician_minutes) AS minutes FROM bookings"
                "    WHERE status <> 'cancelled' AND technician_id IS NOT NULL GROUP BY 1, 2) b"
                "   USING (technician_id, day) WHERE d.minutes_booked <> coalesce(b.minutes, 0)),"
                " (SELECT min(starts_at) FROM slots), (SELECT max(starts_at) FROM slots)"
            ),
            {"now": now, "zone": zone},
        )
    ).one()
    future_slots, past_slots, future_booked, past_booked = (int(v) for v in row[:4])
    bookings = future_booked + past_booked
    assert int(row[6]) == bookings, "every booking claims its bay slot"
    assert int(row[7]) == bookings, "every booking claims its technician's slot"
    assert int(row[8]) == 0, "every technician day's counter equals its bookings"
    return {
        "slots": future_slots + past_slots,
        "slots_future": future_slots,
        "slots_past": past_slots,
        "bookings": bookings,
        "bookings_future": future_booked,
        "bookings_past": past_booked,
        "share_future": future_booked / future_slots if future_slots else 0.0,
        "share_past": past_booked / past_slots if past_slots else 0.0,
        "technician_slots": int(row[4]),
        "technician_days": int(row[5]),
        "first_slot": row[9].isoformat() if row[9] else None,
        "last_slot": row[10].isoformat() if row[10] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ahead", type=int, default=365, help="days of calendar from today")
    parser.add_argument("--fill", type=float, default=0.7, help="share of the slots booked")
    parser.add_argument("--history", type=int, default=365, help="days of past calendar")
    parser.add_argument(
        "--database",
        required=True,
        help="garagebook_bench* or garagebook_prof*: dropped, made afresh",
    )
    args = parser.parse_args()

    async def run() -> dict[str, Any]:
        url = await fresh_database(args.database)
        return await build_garage(
            url, ahead_days=args.ahead, fill=args.fill, history_days=args.history
        )

    built = asyncio.run(run())
    for key, value in built.items():
        print(f"{key}: {value}")
    print(f"DATABASE_URL={PG_BASE}/{args.database}", file=sys.stderr)


if __name__ == "__main__":
    main()
