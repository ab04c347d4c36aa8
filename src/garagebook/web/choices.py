"""The days and times a customer can choose: the next days for a service, each bookable or not,
and one button per free start time. The booking page (`web.booking_page`) offers them, and so
does the manage page's "Move to another time" (`web.manage`). A drop-off service is chosen by
day alone (`drop_off_choices`): its window and collection time, never a time to hold."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.closures.service import closed_slots
from garagebook.config import Settings
from garagebook.garage.rules import notice_minutes
from garagebook.slots.cache import AvailabilityCache
from garagebook.slots.service import Availability, by_local_day, list_slots, local_day_bounds
from garagebook.technicians.drop_offs import Window, drop_off_days
from garagebook.web.pages import local_time, long_date

BOOKING_DAYS = 14


@dataclass(frozen=True)
class Day:
    day: date
    label: str
    bookable: bool
    full: bool = False  # the garage is open that day but every time is taken: waitlist
    why: str = ""  # shown on a day that cannot be picked: "Closed", "Full", "No times left"


@dataclass(frozen=True)
class Time:
    slot_id: int
    label: str
    starts_at: str


@dataclass(frozen=True)
class DropOffDay:
    day: date
    label: str  # "Thu 3 Dec"
    times: str  # "drop off 08:00–09:30, collect from 16:30"


def drop_off_times(window: Window, zone: ZoneInfo) -> str:
    """A drop-off day's times as the pages say them, in the garage's local time."""
    return (
        f"drop off {local_time(window.drop_off_from, zone)}–"
        f"{local_time(window.drop_off_until, zone)}, "
        f"collect from {local_time(window.collect_from, zone)}"
    )


async def drop_off_choices(
    conn: AsyncConnection, settings: Settings, service_id: int, now: datetime
) -> list[DropOffDay]:
    """The next BOOKING_DAYS days a drop-off of `service_id` can be booked online, as
    `GET /api/availability` lists them: only days offered (a full or closed day is left out,
    there is no waitlist for a day)."""
    zone = settings.timezone
    today = now.astimezone(zone).date()
    earliest = now + timedelta(minutes=await notice_minutes(conn))
    windows = await drop_off_days(
        conn, service_id, today, today + timedelta(days=BOOKING_DAYS - 1), earliest
    )
    return [
        DropOffDay(w.day, f"{w.day:%a} {w.day.day} {w.day:%b}", drop_off_times(w, zone))
        for w in windows
    ]


def iso_day(value: str | None) -> date | None:
    if not value or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


async def day_choices(
    conn: AsyncConnection,
    settings: Settings,
    service_id: int,
    now: datetime,
    own_slots: list[int] | None = None,
    current_start: datetime | None = None,
    own_booking: str | None = None,
    cache: AvailabilityCache | None = None,
) -> tuple[list[Day], dict[date, list[Availability]]]:
    """The next BOOKING_DAYS days for a service, each bookable or not, and each day's listed
    slots. When moving a booking, its own slots count as free and its current start is no
    choice. `cache`: what every customer sees, kept by the availability cache (not a move)."""
    zone = settings.timezone
    today = now.astimezone(zone).date()
    start, _ = local_day_bounds(today, zone)
    _, end = local_day_bounds(today + timedelta(days=BOOKING_DAYS - 1), zone)
    if cache is not None and not own_slots and own_booking is None and current_start is None:
        by_day = (await cache.days(conn, service_id, today, BOOKING_DAYS, now)).days
    else:
        listed = await list_slots(
            conn,
            start=start,
            end=end,
            now=now,
            zone=zone,
            service_id=service_id,
            own_slots=own_slots or (),
            own_booking=own_booking,
        )
        by_day = by_local_day([a for a in listed if a.slot.starts_at != current_start], zone)
    # Slots staff closed (closures): a day with nothing else is closed, not full, and has no
    # waitlist.
    closed = await closed_slots(conn, start, end)
    days = []
    for offset in range(BOOKING_DAYS):
        d = today + timedelta(days=offset)
        label = f"{d:%a} {d.day} {d:%b}"
        listed = by_day.get(d, [])
        if any(a.available for a in listed):
            days.append(Day(d, label, True))
        elif any(a.slot.starts_at > now and a.slot.id not in closed for a in listed):
            # open, with times the garage has not closed, none free for this service: full
            days.append(Day(d, label, False, full=True, why="Full"))
        elif d == today and listed:
            days.append(Day(d, label, False, why="No times left"))
        else:  # no opening hours that day, or every time closed by staff
            days.append(Day(d, label, False, why="Closed"))
    return days, by_day


def day_label(day: date, settings: Settings) -> str:
    return long_date(
        datetime.combine(day, datetime.min.time(), settings.timezone), settings.timezone
    )


def times_of(
    listed: list[Availability], settings: Settings, prefer: int | None = None
) -> list[Time]:
    """One button per start time of a day's `listed` slots: the first bay free then (customers
    do not choose bays), or the `prefer`red slot when it is free (the one a deep link named)."""
    zone = settings.timezone
    seen: dict[datetime, Time] = {}
    for a in listed:
        if not a.available or (a.slot.starts_at in seen and a.slot.id != prefer):
            continue
        local = a.slot.starts_at.astimezone(zone)
        seen[a.slot.starts_at] = Time(a.slot.id, local.strftime("%H:%M"), local.isoformat())
    return [seen[k] for k in sorted(seen)]
