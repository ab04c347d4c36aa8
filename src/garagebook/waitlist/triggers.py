""" "A time may have freed up on this day": written by a cancel, a move or a new slot, in its
own transaction, as an outbox job that runs the waitlist's matching (`waitlist_match`).

One statement, and only when someone is waiting for that day, so the booking paths pay a
single insert-select and the queue does not fill with jobs that have nothing to do.
"""

from __future__ import annotations

from datetime import date, datetime

import orjson
from sqlalchemy import exists, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.schema import outbox, waitlist_entries

MATCH_KIND = "waitlist_match"


async def time_freed(
    conn: AsyncConnection, day: date, now: datetime, run_at: datetime | None = None
) -> None:
    payload = orjson.dumps({"day": day.isoformat(), "reference": f"waitlist {day}"}).decode()
    someone_waiting = exists().where(
        waitlist_entries.c.day == day, waitlist_entries.c.status == "waiting"
    )
    await conn.execute(
        outbox.insert().from_select(
            ["kind", "payload", "status", "attempts", "run_at", "created_at"],
            select(
                literal(MATCH_KIND),
                literal(payload),
                literal("pending"),
                literal(0),
                literal(run_at or now, outbox.c.run_at.type),
                literal(now, outbox.c.created_at.type),
            ).where(someone_waiting),
        )
    )
