"""Logging that keeps secrets and personal data out: booking ids in paths are capabilities
(whoever has one can read the booking), so access-log lines show them redacted."""

from __future__ import annotations

import logging
import re

_BOOKING_PATH = re.compile(r"(/api/bookings/)[^/\s\"?]+")


class RedactBookingIds(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                _BOOKING_PATH.sub(r"\1…", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        record.msg = _BOOKING_PATH.sub(r"\1…", str(record.msg))
        return True


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("uvicorn.access").addFilter(RedactBookingIds())
    # These log statements with their parameters (names, emails, phones) at DEBUG: never ours.
    for chatty in ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
