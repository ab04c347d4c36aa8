"""MOT reminders: `garagebook remind-mot` (daily; the embedded default runs it in-process) queues
one `mot_reminder` job per vehicle whose MOT expires within MOT_REMINDER_DAYS, once per expiry
date; the job mails the owner a link to the earliest free MOT time on or before that date.

Which vehicles: an expiry from today (the garage's date) to today + MOT_REMINDER_DAYS. An
expiry already in the past gets no reminder: the point is to book before it runs out, and an
old certificate's date recorded late must not set off mail.

Once per expiry: the run sets `mot_reminded_for = mot_expires_on` and queues a job only for
the rows that statement changed, all in one transaction. Two runs at once cannot both change a
row (PostgreSQL re-checks the condition on the row the other run updated; SQLite runs one
writer at a time), so each expiry is queued once. A new expiry date is reminded again.

Whose date, and to whom (issue 18, finding 8: anyone can book with any registration):
- the car's record (`vehicles.mot_expires_on`: entered by staff, or set by a completed MOT)
  is reminded to the customer of the car's latest *completed* booking (staff saw that person
  bring the car), or, if it has none, of its latest booking;
- a date a customer gave through their manage link is kept on their booking and reminded to
  that customer only, the same way once per date (`bookings.mot_reminded_for`), and only while
  the car has no date on its record: staff data wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.config import Settings
from garagebook.db import Database, create_engine
from garagebook.jobs.handlers import JobContext, handles
from garagebook.jobs.kinds import MOT_REMINDER
from garagebook.jobs.mail import DeliveryFailed
from garagebook.jobs.messages import build_mail
from garagebook.jobs.queue import DONE, SKIPPED, Job, enqueue
from garagebook.schema import bookings, services, vehicles
from garagebook.slots.service import Slot, list_slots, local_day_bounds
from garagebook.timeutil import utcnow

KIND = MOT_REMINDER
_SEARCH_STEP = timedelta(days=7)  # the free-time search reads a week of slots at a time


async def queue_mot_reminders(
    conn: AsyncConnection, settings: Settings, now: datetime
) -> list[tuple[str, date]]:
    """Mark and queue every vehicle due a reminder; returns (registration, expiry) of each."""
    today = now.astimezone(settings.timezone).date()
    last = today + timedelta(days=settings.mot_reminder_days)
    due = (
        await conn.execute(
            update(vehicles)
            .where(
                vehicles.c.mot_expires_on >= today,
                vehicles.c.mot_expires_on <= last,
                vehicles.c.mot_reminded_for.is_distinct_from(vehicles.c.mot_expires_on),
            )
            .values(mot_reminded_for=vehicles.c.mot_expires_on)
            .returning(vehicles.c.registration, vehicles.c.mot_expires_on)
        )
    ).all()
    staff_dated = select(vehicles.c.registration).where(vehicles.c.mot_expires_on.is_not(None))
    customers_due = (
        await conn.execute(
            update(bookings)
            .where(
                bookings.c.mot_expires_on >= today,
                bookings.c.mot_expires_on <= last,
                bookings.c.mot_reminded_for.is_distinct_from(bookings.c.mot_expires_on),
                bookings.c.vehicle_registration.not_in(staff_dated),
            )
            .values(mot_reminded_for=bookings.c.mot_expires_on)
            .returning(bookings.c.id, bookings.c.vehicle_registration, bookings.c.mot_expires_on)
        )
    ).all()
    payloads = [
        {"registration": registration, "expires_on": expires.isoformat()}
        for registration, expires in due
    ] + [
        {"registration": registration, "expires_on": expires.isoformat(), "booking_id": booking}
        for booking, registration, expires in customers_due
    ]
    await enqueue(conn, KIND, *payloads, now=now)  # one statement for all of them
    return [(registration, expires) for registration, expires in due] + [
        (registration, expires) for _, registration, expires in customers_due
    ]


async def run_remind_mot(settings: Settings) -> int:
    """`garagebook remind-mot`: one run in its own transaction; how many reminders it queued."""
    db = Database(create_engine(settings))
    try:
        async with db.transaction() as conn:
            queued = await queue_mot_reminders(conn, settings, utcnow())
    finally:
        await db.dispose()
    return len(queued)


async def earliest_free_start(
    conn: AsyncConnection,
    service_id: int,
    now: datetime,
    last_day: date,
    settings: Settings,
) -> Slot | None:
    """The first start from now to the end of `last_day` (local) where the whole service fits
    and nothing is booked, or None. The booking path still decides when someone books it."""
    zone = settings.timezone
    _, end = local_day_bounds(last_day, zone)
    start = now
    while start < end:
        until = min(start + _SEARCH_STEP, end)
        listed = await list_slots(
            conn, start=start, end=until, now=now, zone=zone, service_id=service_id
        )
        found = next((a.slot for a in listed if a.available), None)
        if found is not None:
            return found
        start = until
    return None


def _payload(job: Job) -> tuple[str, date]:
    registration, expires = job.payload.get("registration"), job.payload.get("expires_on")
    try:
        if not isinstance(registration, str) or not isinstance(expires, str):
            raise ValueError("missing")
        return registration, date.fromisoformat(expires)
    except ValueError:
        raise DeliveryFailed("the payload names no vehicle and expiry", permanent=True) from None


def long_date(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


@handles(KIND)
async def mot_reminder(job: Job, context: JobContext, now: datetime) -> str:
    settings = context.settings
    registration, expires_on = _payload(job)
    customer_booking = job.payload.get("booking_id")
    owner: Any  # a row: the customer's name and address
    async with context.db.read() as conn:
        current = await conn.scalar(
            select(vehicles.c.mot_expires_on).where(vehicles.c.registration == registration)
        )
        if isinstance(customer_booking, str):
            # A customer's own date, for that customer; not once staff recorded the car's.
            owner = (
                await conn.execute(
                    select(
                        bookings.c.customer_name,
                        bookings.c.customer_email,
                        bookings.c.mot_expires_on,
                    ).where(bookings.c.id == customer_booking)
                )
            ).first()
            if owner is None or owner.mot_expires_on != expires_on or current is not None:
                return SKIPPED
        else:
            if current != expires_on:
                return SKIPPED  # a new expiry was recorded since: it gets its own reminder
            # The owner: the customer of the car's latest completed booking (staff saw them
            # with it), else of its latest booking.
            owner = (
                await conn.execute(
                    select(bookings.c.customer_name, bookings.c.customer_email)
                    .where(bookings.c.vehicle_registration == registration)
                    .order_by(
                        bookings.c.completed_at.is_(None),
                        bookings.c.completed_at.desc(),
                        bookings.c.created_at.desc(),
                        bookings.c.id,
                    )
                    .limit(1)
                )
            ).first()
        if owner is None or settings.is_placeholder_address(owner.customer_email):
            return SKIPPED  # nobody to write to (a walk-in without an address)
        service = (
            await conn.execute(
                select(services.c.id, services.c.name).where(
                    services.c.name == settings.mot_service_name
                )
            )
        ).first()
        if service is None:
            raise DeliveryFailed(
                f"no service is named {settings.mot_service_name!r} (MOT_SERVICE_NAME)",
                permanent=True,
            )
        slot = await earliest_free_start(conn, service.id, now, expires_on, settings)
    mail = MotMail(
        owner.customer_name, owner.customer_email, registration, expires_on, service.id, slot
    )
    await context.mailer.send(compose_mot_reminder(mail, service.name, settings, now))
    return DONE


@dataclass(frozen=True)
class MotMail:
    """What an MOT reminder says: read when it is sent, so the free time is current."""

    customer_name: str
    customer_email: str
    registration: str
    expires_on: date
    service_id: int
    slot: Slot | None  # the earliest free MOT time on or before the expiry, if any


def compose_mot_reminder(
    mail: MotMail, service_name: str, settings: Settings, now: datetime
) -> EmailMessage:
    zone = settings.timezone
    query = f"service={mail.service_id}"
    starts = None
    if mail.slot is not None:
        query += f"&slot={mail.slot.id}"
        starts = mail.slot.starts_at.astimezone(zone)
    customer_name = " ".join(mail.customer_name.split())  # header values are one line
    context = {
        "garage_name": settings.garage_name,
        "customer_name": customer_name,
        "registration": mail.registration,
        "service": service_name,
        "expires": long_date(mail.expires_on),
        "slot_date": long_date(starts.date()) if starts else None,
        "slot_time": f"{starts:%H:%M}" if starts else None,
        "zone_name": starts.tzname() if starts else None,
        "book_url": f"{settings.public_url}/?{query}",
    }
    compact = "".join(mail.registration.split())
    return build_mail(
        to=Address(display_name=customer_name, addr_spec=mail.customer_email),
        subject=f"MOT due: {mail.registration} by {context['expires']}",
        template="mot_reminder",
        context=context,
        # Once per vehicle and expiry: a repeated send is the same message.
        message_id=f"<mot-{compact}-{mail.expires_on.isoformat()}@{settings.mail_sender.domain}>",
        settings=settings,
        now=now,
    )
