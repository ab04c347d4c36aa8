""" "A time may have freed up on this day" (the booking core's event, slots/events.py: a
cancel, a move, a new slot, a technician freed by a reassignment or a withdrawn absence; and
the waitlist's own: a join, a leave, an offer running out),
answered in the same transaction with an outbox job that runs the waitlist's matching
(`waitlist_match`).

One statement, and only when someone is waiting for that day, so the booking paths pay a
single insert-select and the queue does not fill with jobs that have nothing to do.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import exists
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.jobs.kinds import WAITLIST_MATCH
from garagebook.jobs.queue import enqueue
from garagebook.schema import waitlist_entries
from garagebook.slots.events import on_time_freed

MATCH_KIND = WAITLIST_MATCH


@on_time_freed
async def queue_match(
    conn: AsyncConnection, day: date, now: datetime, run_at: datetime | None = None
) -> None:
    someone_waiting = exists().where(
        waitlist_entries.c.day == day, waitlist_entries.c.status == "waiting"
    )
    payload = {"day": day.isoformat(), "reference": f"waitlist {day}"}
    await enqueue(conn, MATCH_KIND, payload, now=now, run_at=run_at, only_if=someone_waiting)
