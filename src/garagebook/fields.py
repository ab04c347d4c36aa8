"""Field types every request body and query shares, so that what the OpenAPI schema says is
exactly what the server takes (the schemathesis CLI in `make fuzz` holds us to it)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from pydantic import BeforeValidator, Field

DB_INT_MAX = 2**31 - 1
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def integral(value: object) -> object:
    """JSON Schema counts 16950.0 as an integer, and so does the schema's `integer`: an
    integer-valued number is that integer. Anything else (1.5, "1", true) goes on to the strict
    int check and is refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _iso_date(value: object) -> object:
    """`format: date` is RFC 3339's YYYY-MM-DD. Pydantic alone would also read "0" (a Unix
    time: 1970-01-01), and in a query string "2026-12-02T00:00:00"."""
    if not isinstance(value, str):
        return value  # a date from Python code; anything else is refused by the date check
    if not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return date.fromisoformat(value)  # ValueError for 2026-02-30: a 422 like any other


Id = Annotated[int, Field(ge=1, le=DB_INT_MAX), BeforeValidator(integral)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
