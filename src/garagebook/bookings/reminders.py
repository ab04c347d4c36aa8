"""Reminder mails: one outbox job per booking and time, due REMINDER_HOURS_BEFORE hours of
wall-clock time before the appointment, written in the same transaction that books or moves it.

"24 hours before" is counted on the garage's clock, not in elapsed seconds: a 09:00 appointment
is reminded at 09:00 the day before, also when the clocks change in between (then 23 or 25
real hours). The job names the booking and its `sequence`; when it comes due the handler sends
only if the booking is still confirmed at that very time, so a moved booking is reminded of its
new time only (the move wrote a new job) and a cancelled one not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from garagebook.config import Settings
from garagebook.jobs.handlers import JobContext, booking_id_of, handles
from garagebook.jobs.kinds import BOOKING_REMINDER
from garagebook.jobs.mail import DeliveryFailed
from garagebook.jobs.messages import REMINDER, compose, load_booking
from garagebook.jobs.queue import DONE, SKIPPED, Job

REMINDER_KIND = BOOKING_REMINDER


def reminder_due(starts_at: datetime, settings: Settings) -> datetime | None:
    """When the reminder for an appointment at `starts_at` is due (UTC), or None when
    reminders are off. A due time that falls in the spring-forward gap is read as the
    clock before the change (zoneinfo's fold=0), i.e. one hour later on the new clock."""
    if settings.reminder_hours_before == 0:
        return None
    zone = settings.timezone
    wall_clock = starts_at.astimezone(zone).replace(tzinfo=None)
    due = wall_clock - timedelta(hours=settings.reminder_hours_before)
    return due.replace(tzinfo=zone).astimezone(UTC)


def reminder_at(starts_at: datetime, settings: Settings, now: datetime) -> datetime | None:
    """The due time of the reminder a booking (or move) made `now` writes, or None. A booking
    made less than REMINDER_HOURS_BEFORE ahead gets none: the confirmation it has just received
    says it all."""
    due = reminder_due(starts_at, settings)
    return due if due is not None and due > now else None


@handles(REMINDER_KIND)
async def booking_reminder(job: Job, context: JobContext, now: datetime) -> str:
    async with context.db.read() as conn:
        booking = await load_booking(conn, booking_id_of(job))
    if booking is None:
        raise DeliveryFailed("the booking does not exist", permanent=True)
    if context.settings.is_placeholder_address(booking.customer_email):
        return SKIPPED  # a walk-in without an address
    if booking.status != "confirmed" or booking.sequence != job.payload.get("sequence", 0):
        return SKIPPED  # cancelled, done, or moved since: the move has its own reminder
    if booking.starts_at <= now:
        return SKIPPED  # the worker was down past the appointment: too late to remind
    await context.mailer.send(compose(booking, REMINDER, context.settings, now))
    return DONE
