"""What customers are told about the garage itself: name, address, phone and opening hours,
on every page and in every mail. The opening hours shown are still the demo garage's
(garage/demo-garage.toml); reading them from the applied setup document is left to do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from garagebook.config import Settings

# The demo garage's week (garage/demo-garage.toml), as shown to customers.
OPENING_HOURS = (time(8), time(17))
OPEN_WEEKDAYS = range(0, 6)  # Monday to Saturday

_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


@dataclass(frozen=True)
class GarageInfo:
    name: str
    address: str
    phone: str
    hours: list[str]  # e.g. ["Monday–Saturday 08:00–17:00", "Sunday closed"]


def opening_hours() -> list[str]:
    """The seed's week as lines: runs of open days with their hours, then the closed days."""
    opens, closes = OPENING_HOURS
    open_days = [d for d in range(7) if d in OPEN_WEEKDAYS]
    lines: list[str] = []
    runs: list[list[int]] = []
    for day in open_days:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    for run in runs:
        days = _WEEKDAYS[run[0]] if len(run) == 1 else f"{_WEEKDAYS[run[0]]}–{_WEEKDAYS[run[-1]]}"
        lines.append(f"{days} {opens:%H:%M}–{closes:%H:%M}")
    closed = [_WEEKDAYS[d] for d in range(7) if d not in OPEN_WEEKDAYS]
    if closed:
        lines.append(", ".join(closed) + " closed")
    return lines


def garage_info(settings: Settings) -> GarageInfo:
    return GarageInfo(
        name=settings.garage_name,
        address=settings.garage_address.strip(),
        phone=settings.garage_phone.strip(),
        hours=opening_hours(),
    )
