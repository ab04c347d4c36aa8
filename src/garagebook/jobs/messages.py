"""Booking mails: the booking as a mail needs it, rendered with the Jinja2 templates in
`templates/` into a plain-text and an HTML part.

The Message-ID is derived from the booking reference and the event, never random: delivery
is at least once, and a repeated send must be the same message, which mail clients (and the
drop folder) then show once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.calendar import booking_ics, ics_filename
from garagebook.config import Settings
from garagebook.garage_info import garage_info
from garagebook.manage_links import manage_url
from garagebook.schema import bays, bookings, services, slots

CONFIRMED = "confirmed"
CANCELLED = "cancelled"
RESCHEDULED = "rescheduled"
REMINDER = "reminder"

_templates = Environment(
    loader=PackageLoader("garagebook.jobs", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default=False),
    undefined=StrictUndefined,  # a missing detail is a bug, not a blank in a customer's mail
    keep_trailing_newline=True,
)

_SUBJECTS = {
    CONFIRMED: "Booking confirmed: {service}, {date} at {start_time} ({reference})",
    CANCELLED: "Booking cancelled: {service}, {date} at {start_time} ({reference})",
    RESCHEDULED: "Booking moved: {service}, now {date} at {start_time} ({reference})",
    REMINDER: "Reminder: {service} {date} at {start_time} ({reference})",
}


@dataclass(frozen=True)
class BookingMail:
    """What a booking mail shows. Read when the mail is sent (the job carries no personal
    data), so it reflects the booking as it is then."""

    booking_id: str
    reference: str
    status: str
    customer_name: str
    customer_email: str
    vehicle_registration: str
    service: str
    bay: str | None  # None: a drop-off
    starts_at: datetime
    ends_at: datetime  # a drop-off's: when the car can be collected
    sequence: int  # how many times it was moved
    drop_off: bool = False  # left for the day: starts_at opens the drop-off window


async def load_booking(conn: AsyncConnection, booking_id: str) -> BookingMail | None:
    row = (
        await conn.execute(
            select(
                bookings.c.id.label("booking_id"),
                bookings.c.reference,
                bookings.c.status,
                bookings.c.customer_name,
                bookings.c.customer_email,
                bookings.c.vehicle_registration,
                services.c.name.label("service"),
                bays.c.name.label("bay"),
                bookings.c.starts_at,
                bookings.c.ends_at,
                bookings.c.sequence,
                bookings.c.slot_id,
            )
            .select_from(
                bookings.join(services, services.c.id == bookings.c.service_id)
                .outerjoin(slots, slots.c.id == bookings.c.slot_id)  # none: a drop-off
                .outerjoin(bays, bays.c.id == slots.c.bay_id)
            )
            .where(bookings.c.id == booking_id)
        )
    ).first()
    if row is None:
        return None
    values = dict(row._mapping)
    drop_off = values.pop("slot_id") is None  # no slot: a drop-off
    return BookingMail(**values, drop_off=drop_off)


def message_id(reference: str, event: str, domain: str) -> str:
    return f"<{reference}.{event}@{domain}>"


def one_line(text: str) -> str:
    """Header values may not span lines; names are shown, never trusted."""
    return " ".join(text.split())


def local_times(starts_at: datetime, ends_at: datetime, zone: ZoneInfo) -> dict[str, str]:
    """Wall-clock time at the garage, with the zone's name of the day (GMT or BST), so
    09:00 is 09:00 on either side of a clock change."""
    start, end = starts_at.astimezone(zone), ends_at.astimezone(zone)
    times = {
        "date": f"{start:%A} {start.day} {start:%B %Y}",
        "start_time": f"{start:%H:%M}",
        "end_time": f"{end:%H:%M}",
        "zone_name": start.tzname() or str(zone),
    }
    when = "{date}, {start_time}–{end_time} ({zone_name})".format(**times)
    return {**times, "when": when}


def drop_off_when(starts_at: datetime, ends_at: datetime, zone: ZoneInfo) -> str:
    """A drop-off's "When": the day its window opens, and collection (its `ends_at`)."""
    times = local_times(starts_at, ends_at, zone)
    return "Drop off {date} from {start_time}; collect from {end_time}".format(**times)


def compose(booking: BookingMail, event: str, settings: Settings, now: datetime) -> EmailMessage:
    """The complete mail for `event` (`confirmed`, `cancelled`, `rescheduled`) of `booking`."""
    context = booking_context(booking, settings)
    subject = _SUBJECTS[event].format(**context)
    sender = settings.mail_sender
    # A move (and its reminder) is a new message each time; a repeated send is the same message.
    mail_event = f"{event}-{booking.sequence}" if event in (RESCHEDULED, REMINDER) else event
    thread = None if event == CONFIRMED else message_id(booking.reference, CONFIRMED, sender.domain)
    message = build_mail(
        to=Address(display_name=context["customer_name"], addr_spec=booking.customer_email),
        subject=subject,
        template=event,
        context=context,
        message_id=message_id(booking.reference, mail_event, sender.domain),
        settings=settings,
        now=now,
        thread=thread,
        reference=booking.reference,
    )
    if event in _WITH_CALENDAR:
        attach_calendar(message, booking, event, settings, now)
    return message


# The mails that change the customer's calendar entry carry it: same UID, SEQUENCE = moves.
_WITH_CALENDAR = (CONFIRMED, RESCHEDULED, CANCELLED)


def attach_calendar(
    message: EmailMessage, booking: BookingMail, event: str, settings: Settings, now: datetime
) -> None:
    """The booking's .ics (a cancellation's removes the entry), with the same signed manage
    link as the mail's button (none on a cancellation: nothing is left to manage)."""
    status = "cancelled" if event == CANCELLED else booking.status
    link = (
        None if status == "cancelled" else manage_url(settings, booking.booking_id, booking.ends_at)
    )
    body = booking_ics(
        settings,
        reference=booking.reference,
        service=booking.service,
        bay=booking.bay,
        starts_at=booking.starts_at,
        ends_at=booking.ends_at,
        status=status,
        sequence=booking.sequence,
        registration=booking.vehicle_registration,
        manage_url=link,
        stamp=now,
    )
    method = "CANCEL" if status == "cancelled" else "PUBLISH"
    message.add_attachment(
        body,
        maintype="text",
        subtype="calendar",
        params={"method": method},
        filename=ics_filename(booking.reference),
    )


def booking_context(booking: BookingMail, settings: Settings) -> dict[str, Any]:
    """What every booking mail's template may show. The "Manage your booking" link is signed
    here, when the mail is written (`garagebook.manage_links` says why): never an API address,
    which needs a token a mail cannot carry."""
    base = settings.public_url
    return {
        "garage_name": settings.garage_name,
        "customer_name": one_line(booking.customer_name),
        "reference": booking.reference,
        "service": booking.service,
        "bay": booking.bay,
        "drop_off": booking.drop_off,
        "registration": booking.vehicle_registration,
        "public_url": base,
        "manage_url": manage_url(settings, booking.booking_id, booking.ends_at),
        **local_times(booking.starts_at, booking.ends_at, settings.timezone),
        **(
            {"when": drop_off_when(booking.starts_at, booking.ends_at, settings.timezone)}
            if booking.drop_off
            else {}
        ),
    }


def build_mail(
    *,
    to: Address,
    subject: str,
    template: str,
    context: dict[str, Any],
    message_id: str,
    settings: Settings,
    now: datetime,
    thread: str | None = None,
    reference: str | None = None,
) -> EmailMessage:
    """Any garagebook mail: `templates/<template>.txt` and `.html` rendered with `context`
    (plus `subject`), a stable Message-ID, threaded under `thread` when given."""
    message = EmailMessage()
    message["Subject"] = one_line(subject)
    message["From"] = settings.mail_sender
    message["To"] = to
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    if thread is not None:
        message["In-Reply-To"] = thread
        message["References"] = thread
    message["Auto-Submitted"] = "auto-generated"
    if reference is not None:
        message["X-Booking-Reference"] = reference
    context = {"garage": garage_info(settings), **context, "subject": subject}
    # Quoted-printable, not base64: the .eml stays readable in a text editor too.
    text = _templates.get_template(f"{template}.txt").render(context)
    html = _templates.get_template(f"{template}.html").render(context)
    message.set_content(text, cte="quoted-printable")
    message.add_alternative(html, subtype="html", cte="quoted-printable")
    return message
