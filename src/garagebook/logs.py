"""Logs: one JSON object per line, one line per request (request id, method, path, status,
duration), and never a customer's e-mail, phone or name, nor a token. Booking ids and the
tokens of cancel links and holds are capabilities (whoever has one can act on the booking),
so they are cut out of logged paths."""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

from starlette.types import Scope

# /api/bookings/<id>, /api/manage/<token>, /api/holds/<token>, /manage/<token>, a vehicle's
# registration (/api/vehicles/<reg>, /staff/vehicles/<reg>: it points to a person), a
# customer's address (/api/admin/customers/<email>), a calendar feed's token
# (/calendar/<token>.ics), and any other long token-looking path segment (the waitlist's
# offer and leave tokens).
_SECRET_SEGMENT = re.compile(
    r"(?<=/)(?:(?<=bookings/)|(?<=manage/)|(?<=holds/)|(?<=vehicles/)|(?<=customers/)"
    r"|(?<=calendar/))[^/?#\s]+"
)
_TOKEN_LIKE = re.compile(r"(?<=/)[A-Za-z0-9_-]{20,}(?=[/?#]|$)")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

log = logging.getLogger("garagebook.request")


def redact_path(path: str) -> str:
    return _TOKEN_LIKE.sub("…", _SECRET_SEGMENT.sub("…", path))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_request(scope: Scope, request_id: str, status: int, seconds: float) -> None:
    if log.isEnabledFor(logging.INFO):
        fields = {
            "request_id": request_id,
            "method": scope["method"],
            "path": redact_path(scope["path"]),
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        }
        log.info("request", extra={"fields": fields})


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID if it is sane, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
            break
    return secrets.token_hex(8)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Ours replaces uvicorn's access log; these others log statements with their parameters
    # (names, emails, phones) at DEBUG: never ours.
    for chatty in (
        "uvicorn.access",
        "aiosqlite",
        "sqlalchemy.engine",
        "sqlalchemy.pool",
        "asyncpg",
    ):
        logging.getLogger(chatty).setLevel(logging.WARNING)
