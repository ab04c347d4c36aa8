"""What a booking request may contain. Strict: JSON types must match, unknown fields are
refused, and text is checked for what the database or a mail would choke on."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

from garagebook.fields import Id, IsoDate

_PHONE = re.compile(r"^\+?[0-9][0-9 ()\-]{5,24}$")
_REGISTRATION = re.compile(r"^[A-Z0-9]{1,8}( [A-Z0-9]{1,8})?$")
_UK_CURRENT = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z]{3}")


def _printable(value: str, *, allow_newlines: bool = False) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode") from None
    allowed = {"\n", "\t", "\r"} if allow_newlines else set()
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs") and char not in allowed:
            raise ValueError("text must not contain control characters")
    return value


def _one_line(value: str) -> str:
    return _printable(value)


def _multi_line(value: str) -> str:
    return _printable(value, allow_newlines=True)


# RFC 2047 encoded words ("=?charset?q?...?=") decode to anything, CR/LF included, and Python
# before 3.11.10 / 3.12.5 (CVE-2024-6923) writes such a name into a mail header unchecked; Unicode
# line and paragraph separators split lines too. Refused in every field that reaches a header.
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _header_safe(value: str) -> str:
    if _ENCODED_WORD.search(value):
        raise ValueError("text must not contain '=?…?=' (an encoded mail header word)")
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI for char in value):
        raise ValueError("text must not contain control characters or line separators")
    return value


def _phone(value: str) -> str:
    if not _PHONE.match(value):
        raise ValueError("phone must be digits, spaces, brackets or dashes, optionally after '+'")
    return value


def normalise_registration(value: str) -> str:
    """Upper case, single spaces; a current-style UK plate gets its space (ab12cde → AB12 CDE),
    as book.js does in the browser, so one car is one vehicle row."""
    normalised = " ".join(value.upper().split())
    compact = normalised.replace(" ", "")
    if _UK_CURRENT.fullmatch(compact):
        return f"{compact[:4]} {compact[4:]}"
    return normalised


def _registration(value: str) -> str:
    normalised = normalise_registration(value)
    if not _REGISTRATION.match(normalised):
        raise ValueError("registration must be letters and digits, e.g. 'AB12 CDE'")
    return normalised


def _lowercase_email(value: str) -> str:
    return value.lower()


# h_<random>_<slot ids>[.t<technician id>]: see bookings/holds.py.
HOLD_TOKEN_PATTERN = r"^h_[A-Za-z0-9_-]{32}_[0-9]{1,10}(-[0-9]{1,10}){0,31}(\.t[0-9]{1,10})?$"  # noqa: S105
OneLine = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_one_line)
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CustomerIn(_Strict):
    name: Annotated[OneLine, Field(max_length=100), AfterValidator(_header_safe)]
    email: Annotated[
        EmailStr,
        Field(max_length=254),
        AfterValidator(_header_safe),
        AfterValidator(_lowercase_email),
    ]
    phone: Annotated[OneLine, Field(max_length=32), AfterValidator(_phone)] | None = None


class VehicleIn(_Strict):
    registration: Annotated[OneLine, Field(max_length=16), AfterValidator(_registration)]
    make: Annotated[OneLine, Field(max_length=50)] | None = None
    model: Annotated[OneLine, Field(max_length=50)] | None = None


class BookingIn(_Strict):
    """A time is `slot_id` (a bay's slot) or `starts_at` (any bay: the server picks the bay
    and, where the garage lists technicians, the technician); a drop-off service is booked
    by `day` instead (the server picks a technician with the minutes left that day)."""

    slot_id: Id | None = None
    starts_at: AwareDatetime | None = None
    day: IsoDate | None = None
    service_id: Id
    customer: CustomerIn
    vehicle: VehicleIn
    hold_token: Annotated[str, StringConstraints(pattern=HOLD_TOKEN_PATTERN)] | None = None
    notes: (
        Annotated[
            str,
            StringConstraints(strip_whitespace=True, max_length=1000),
            AfterValidator(_multi_line),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _one_time(self) -> BookingIn:
        given = [self.slot_id, self.starts_at, self.day].count(None)
        if given != 2:
            raise ValueError(
                "give the time as slot_id or as starts_at, or a drop-off's day: one of them"
            )
        if self.day is not None and self.hold_token is not None:
            raise ValueError("a drop-off's day is not held: send it without hold_token")
        return self


class HoldIn(_Strict):
    slot_id: Id
    service_id: Id


IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
