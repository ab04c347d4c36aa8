"""A booking as an iCalendar file: one event in the garage's time zone, with its VTIMEZONE, so
a calendar shows the local time the customer booked, across DST changes.

Shared by the manage page's "Add to calendar" link and the booking mails' attachment, so it
is built from plain values. The UID never changes and SEQUENCE is the booking's `sequence`
(moves so far): a calendar that imported the entry once updates it instead of adding another.
"""

from __future__ import annotations

from datetime import datetime

from icalendar import Calendar, Event

from garagebook.config import Settings
from garagebook.timeutil import utcnow


def booking_ics(
    settings: Settings,
    *,
    reference: str,
    service: str,
    bay: str,
    starts_at: datetime,
    ends_at: datetime,
    status: str,
    sequence: int,
    registration: str,
    manage_url: str | None,
    stamp: datetime | None = None,
) -> bytes:
    """The .ics bytes. A cancelled booking is `METHOD:CANCEL` / `STATUS:CANCELLED`, which
    removes the entry from calendars that imported it. `stamp` (DTSTAMP) defaults to now."""
    zone = settings.timezone
    cancelled = status == "cancelled"
    calendar = Calendar()
    calendar.add("prodid", "-//garagebook//booking//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if cancelled else "PUBLISH")
    event = Event()
    event.add("uid", f"{reference}@{settings.mail_sender.domain}")
    event.add("sequence", sequence)
    event.add("dtstamp", stamp or utcnow())
    event.add("dtstart", starts_at.astimezone(zone))
    event.add("dtend", ends_at.astimezone(zone))
    event.add("summary", f"{service} at {settings.garage_name}")
    event.add("location", f"{settings.garage_name}, {bay}")
    description = f"Booking reference {reference}. Vehicle {registration}."
    if manage_url is not None:
        description += f" To move or cancel: {manage_url}"
    event.add("description", description)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    calendar.add_component(event)
    calendar.add_missing_timezones()
    ical: bytes = calendar.to_ical()
    return ical


def ics_filename(reference: str) -> str:
    return f"booking-{reference}.ics"
