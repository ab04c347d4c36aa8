"""Time in one place: UTC inside, the garage's zone at the edges."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_local_iso(moment: datetime, zone: ZoneInfo) -> str:
    """ISO 8601 with the garage's offset, e.g. 2026-03-30T09:00:00+01:00."""
    return moment.astimezone(zone).isoformat()
