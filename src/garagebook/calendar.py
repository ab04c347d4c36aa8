"""Bookings as iCalendar: one booking's file (the manage page's "Add to calendar" link and the
booking mails' attachment) and the staff's calendar feeds (`feeds/`), in the garage's time
zone with its VTIMEZONE, so a calendar shows the local time the customer booked, across DST.

Both are built here from plain values, by `booking_event`: the UID never changes and SEQUENCE
is the booking's `sequence` (moves so far), so a calendar that imported an entry from a mail
and sees it again in a feed updates the one entry instead of adding another.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from icalendar import Calendar, Event

from garagebook.config import Settings
from garagebook.timeutil import utcnow


def event_uid(settings: Settings, reference: str) -> str:
    return f"{reference}@{settings.mail_sender.domain}"


def booking_event(
    settings: Settings,
    *,
    reference: str,
    starts_at: datetime,
    ends_at: datetime,
    cancelled: bool,
    sequence: int,
    summary: str,
    location: str,
    description: str | None,
    stamp: datetime,
) -> Event:
    """One booking (or closed time) as a VEVENT, its times in the garage's zone."""
    zone = settings.timezone
    event = Event()
    event.add("uid", event_uid(settings, reference))
    event.add("sequence", sequence)
    event.add("dtstamp", stamp)
    event.add("dtstart", starts_at.astimezone(zone))
    event.add("dtend", ends_at.astimezone(zone))
    event.add("summary", summary)
    event.add("location", location)
    if description is not None:
        event.add("description", description)
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    return event


def calendar_bytes(events: Iterable[Event], *, method: str, name: str | None = None) -> bytes:
    """A VCALENDAR around `events`, with the VTIMEZONE of every zone they use."""
    calendar = Calendar()
    calendar.add("prodid", "-//garagebook//booking//EN")
    calendar.add("version", "2.0")
    calendar.add("method", method)
    if name is not None:
        calendar.add("x-wr-calname", name)  # the name Google, Apple and Outlook show
    for event in events:
        calendar.add_component(event)
    calendar.add_missing_timezones()
    ical: bytes = calendar.to_ical()
    return ical


def booking_ics(
    settings: Settings,
    *,
    reference: str,
    service: str,
    bay: str | None,  # None: a drop-off, which takes no bay
    starts_at: datetime,
    ends_at: datetime,
    status: str,
    sequence: int,
    registration: str,
    manage_url: str | None,
    stamp: datetime | None = None,
) -> bytes:
    """The customer's .ics bytes. A cancelled booking is `METHOD:CANCEL` / `STATUS:CANCELLED`,
    which removes the entry from calendars that imported it. `stamp` (DTSTAMP) defaults to
    now."""
    cancelled = status == "cancelled"
    description = f"Booking reference {reference}. Vehicle {registration}."
    if manage_url is not None:
        description += f" To move or cancel: {manage_url}"
    event = booking_event(
        settings,
        reference=reference,
        starts_at=starts_at,
        ends_at=ends_at,
        cancelled=cancelled,
        sequence=sequence,
        summary=f"{service} at {settings.garage_name}",
        location=f"{settings.garage_name}, {bay}" if bay else settings.garage_name,
        description=description,
        stamp=stamp or utcnow(),
    )
    return calendar_bytes([event], method="CANCEL" if cancelled else "PUBLISH")


def ics_filename(reference: str) -> str:
    return f"booking-{reference}.ics"
