"""What each kind of job does. A handler is the edge of its job: it opens the short reads and
transactions it needs, then sends with no transaction open (a slow mail server must not hold
a database lock). Its answer is `done` or `skipped`; it raises `DeliveryFailed` when sending
failed.

Kinds are registered in HANDLERS, next to the code they belong to: booking mails here,
reminders in `bookings/reminders.py`, waitlist offers in `waitlist/`, MOT reminders in
`vehicles/`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from garagebook.config import Settings
from garagebook.db import Database
from garagebook.jobs.kinds import BOOKING_CANCELLED, BOOKING_CONFIRMED, BOOKING_RESCHEDULED
from garagebook.jobs.mail import DeliveryFailed, Mailer
from garagebook.jobs.messages import CANCELLED, CONFIRMED, RESCHEDULED, compose, load_booking
from garagebook.jobs.queue import DONE, SKIPPED, Job
from garagebook.reservations import ReservationStore
from garagebook.slots.service import PlanCache


@dataclass(frozen=True)
class JobContext:
    """What a job may use: the worker's own database engine, the mailer, and the same
    reservation layer and plan cache as the API (a waitlist offer takes a hold)."""

    db: Database
    mailer: Mailer
    settings: Settings
    reservations: ReservationStore
    plans: PlanCache


Handler = Callable[[Job, JobContext, datetime], Awaitable[str]]
HANDLERS: dict[str, Handler] = {}


def handles(kind: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[kind] = handler
        return handler

    return register


async def run_job(job: Job, context: JobContext, now: datetime) -> str:
    handler = HANDLERS.get(job.kind)
    if handler is None:
        raise DeliveryFailed(f"unknown job kind {job.kind!r}", permanent=True)
    return await handler(job, context, now)


def booking_id_of(job: Job) -> str:
    booking_id = job.payload.get("booking_id")
    if not isinstance(booking_id, str):
        raise DeliveryFailed("the job's payload names no booking", permanent=True)
    return booking_id


async def _booking_mail(job: Job, context: JobContext, now: datetime, event: str) -> str:
    async with context.db.read() as conn:
        booking = await load_booking(conn, booking_id_of(job))
    if booking is None:
        raise DeliveryFailed("the booking does not exist", permanent=True)
    if context.settings.is_placeholder_address(booking.customer_email):
        return SKIPPED  # a walk-in without an address: nobody to tell
    if event in (CONFIRMED, RESCHEDULED) and booking.status == "cancelled":
        # Cancelled before its confirmation went out: a confirmation now would be stale and
        # wrong. The cancellation has its own job, which sends the cancellation mail.
        return SKIPPED
    await context.mailer.send(compose(booking, event, context.settings, now))
    return DONE


@handles(BOOKING_CONFIRMED)
async def booking_confirmed(job: Job, context: JobContext, now: datetime) -> str:
    return await _booking_mail(job, context, now, CONFIRMED)


@handles(BOOKING_CANCELLED)
async def booking_cancelled(job: Job, context: JobContext, now: datetime) -> str:
    return await _booking_mail(job, context, now, CANCELLED)


@handles(BOOKING_RESCHEDULED)
async def booking_rescheduled(job: Job, context: JobContext, now: datetime) -> str:
    return await _booking_mail(job, context, now, RESCHEDULED)
