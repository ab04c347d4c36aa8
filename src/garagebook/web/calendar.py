"""The "Add to calendar" file: one iCalendar event in the garage's time zone, with its
VTIMEZONE, so a calendar shows the local time the customer booked, across DST changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from icalendar import Calendar, Event

from garagebook.config import Settings
from garagebook.timeutil import utcnow


def booking_calendar(booking: dict[str, Any], settings: Settings, manage_url: str) -> bytes:
    zone = settings.timezone
    calendar = Calendar()
    calendar.add("prodid", "-//garagebook//booking//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    event = Event()
    # Stable per booking: re-importing the file updates the entry instead of adding another.
    event.add("uid", f"{booking['reference']}@{settings.mail_sender.domain}")
    event.add("dtstamp", utcnow())
    event.add("dtstart", datetime.fromisoformat(booking["starts_at"]).astimezone(zone))
    event.add("dtend", datetime.fromisoformat(booking["ends_at"]).astimezone(zone))
    event.add("summary", f"{booking['service_name']} at {settings.garage_name}")
    event.add("location", f"{settings.garage_name}, {booking['bay_name']}")
    event.add(
        "description",
        f"Booking reference {booking['reference']}. "
        f"Vehicle {booking['vehicle']['registration']}. To cancel: {manage_url}",
    )
    event.add("status", "CANCELLED" if booking["status"] == "cancelled" else "CONFIRMED")
    calendar.add_component(event)
    calendar.add_missing_timezones()
    ical: bytes = calendar.to_ical()
    return ical
