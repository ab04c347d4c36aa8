"""What each kind of job does. A handler is the edge of its job: it opens the short read it
needs, then sends with no transaction open (a slow mail server must not hold a database
lock). Its answer is `done` or `skipped`; it raises `DeliveryFailed` when sending failed."""

from __future__ import annotations

from datetime import datetime

from garagebook.config import Settings
from garagebook.db import Database
from garagebook.jobs.mail import DeliveryFailed, Mailer
from garagebook.jobs.messages import CANCELLED, CONFIRMED, RESCHEDULED, compose, load_booking
from garagebook.jobs.queue import DONE, SKIPPED, Job

EVENTS = {
    "booking_confirmed": CONFIRMED,
    "booking_cancelled": CANCELLED,
    "booking_rescheduled": RESCHEDULED,
}


async def run_job(job: Job, db: Database, mailer: Mailer, settings: Settings, now: datetime) -> str:
    event = EVENTS.get(job.kind)
    if event is None:
        raise DeliveryFailed(f"unknown job kind {job.kind!r}", permanent=True)
    booking_id = job.payload.get("booking_id")
    if not isinstance(booking_id, str):
        raise DeliveryFailed("the job's payload names no booking", permanent=True)

    async with db.read() as conn:
        booking = await load_booking(conn, booking_id)
    if booking is None:
        raise DeliveryFailed("the booking does not exist", permanent=True)
    if event in (CONFIRMED, RESCHEDULED) and booking.status == "cancelled":
        # Cancelled before its confirmation went out: a confirmation now would be stale and
        # wrong. The cancellation has its own job, which sends the cancellation mail.
        return SKIPPED
    await mailer.send(compose(booking, event, settings, now))
    return DONE
