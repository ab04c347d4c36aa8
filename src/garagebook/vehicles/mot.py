"""The MOT's date rules: which expiry dates we accept, and the expiry after a test."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict

from garagebook.errors import InvalidRequest
from garagebook.fields import IsoDate

# A new car's first MOT is due three years after registration; anything later is a typo.
_FURTHEST_AHEAD = timedelta(days=3 * 366)
# Recording an expiry that passed long ago helps nobody (and no reminder is sent for it).
_FURTHEST_BACK = timedelta(days=366)


class MotIn(BaseModel):
    """`{"expires_on": "YYYY-MM-DD"}`: the date on the MOT certificate (the last valid day)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    expires_on: IsoDate


def check_expiry(expires_on: date, today: date) -> None:
    """Refuse dates no certificate can carry: more than a year past or three years ahead."""
    if not today - _FURTHEST_BACK <= expires_on <= today + _FURTHEST_AHEAD:
        raise InvalidRequest(
            "The request is not valid: expires_on: an MOT expiry must be within a year before "
            "and three years after today.",
            fields=[{"field": "expires_on", "problem": "out of range"}],
        )


def add_months(day: date, months: int) -> date:
    """Calendar months, the day clamped to the month's end (31 March − 1 month = 28/29 Feb)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def next_mot_expiry(test_date: date, current: date | None) -> date:
    """The expiry after a pass on `test_date`. The UK rule: a test at most a month minus a day
    before the current expiry keeps the renewal date (the new certificate runs a year from the
    old expiry); any other test runs a year from the test."""
    if current is not None and add_months(current, -1) < test_date <= current:
        return add_months(current, 12)
    return add_months(test_date, 12)
