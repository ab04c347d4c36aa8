"""A booking change's webhook events, written to the outbox in the change's transaction.

One event (one id, stable across retries and replays: receivers de-duplicate on it) becomes one
`webhook_delivery` job per enabled subscription that wants it, so each receiver is retried,
timed out and buried on its own: a slow or dead receiver never holds back another.

The job's payload names things only (ids, the type, when it happened and the booking's
`sequence` then); the worker reads the booking when it sends, so the outbox holds no personal
data (as for the mails). It is written by one INSERT … SELECT over `webhooks`: no round trip
to find the subscriptions first, and none at all on the booking path, where bookings/sql.py
inlines the same insert as a CTE (`POSTGRES_CTE`).

What it costs: a scan of `webhooks` (a handful of rows) per change, and one outbox row per
subscribed receiver (each also fires the outbox's NOTIFY trigger on PostgreSQL).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, cast, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.jobs.kinds import WEBHOOK_DELIVERY
from garagebook.jobs.queue import NEW_JOB_COLUMNS, PENDING, encode_payload
from garagebook.schema import UTCDateTime, outbox, webhooks

BOOKING_CREATED = "booking.created"
BOOKING_CANCELLED = "booking.cancelled"
BOOKING_RESCHEDULED = "booking.rescheduled"
BOOKING_COMPLETED = "booking.completed"
EVENTS = (BOOKING_CREATED, BOOKING_CANCELLED, BOOKING_RESCHEDULED, BOOKING_COMPLETED)

# A payload is `{"webhook_id":<id>,` + the event's own keys: the id comes from the row of
# `webhooks` the insert selects, the rest (`event_tail`) is one bound parameter.
PAYLOAD_HEAD = '{"webhook_id":'


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(12)}"


def event_tail(event_type: str, booking: Mapping[str, Any], now: datetime) -> str:
    """The payload after its webhook id: `"event_id":…,"type":…,…}`. `created_at` is when the
    change was made (its transaction's clock, microseconds, UTC) and `sequence` the booking's
    count of moves then: what a receiver orders one booking's events by."""
    event = {
        "event_id": new_event_id(),
        "type": event_type,
        "booking_id": booking["id"],
        "reference": booking["reference"],
        "sequence": booking.get("sequence") or 0,
        "created_at": now.isoformat(),
    }
    return encode_payload(event)[1:]


def wants(event_type: str) -> ColumnElement[bool]:
    """Enabled subscriptions whose comma-separated `events` name this one."""
    listed = literal(",") + webhooks.c.events + literal(",")
    return webhooks.c.enabled.is_(True) & listed.contains(f",{event_type},", autoescape=True)


async def enqueue_event(
    conn: AsyncConnection, event_type: str, booking: Mapping[str, Any], now: datetime
) -> None:
    """One statement on the caller's connection: a job per subscription that wants it, none
    when there are none."""
    payload = literal(PAYLOAD_HEAD) + cast(webhooks.c.id, String) + literal(",")
    values: dict[str, ColumnElement[Any]] = {
        "kind": literal(WEBHOOK_DELIVERY),
        "payload": payload + literal(event_tail(event_type, booking, now)),
        "status": literal(PENDING),
        "attempts": literal(0),
        "run_at": literal(now, UTCDateTime),
        "created_at": literal(now, UTCDateTime),
    }
    source = select(*(values[column] for column in NEW_JOB_COLUMNS)).where(wants(event_type))
    await conn.execute(outbox.insert().from_select(list(NEW_JOB_COLUMNS), source))


# The same insert inside the booking's one PostgreSQL statement (bookings/sql.py), after its
# `booking` CTE: nothing is written unless the booking went in. Constants only; the tail is
# the bound parameter :webhook_tail.
_CTE_VALUES = {
    "kind": f"'{WEBHOOK_DELIVERY}'",
    "payload": (
        f"'{PAYLOAD_HEAD}' || CAST(webhooks.id AS text) || ',' || CAST(:webhook_tail AS text)"
    ),
    "status": f"'{PENDING}'",
    "attempts": "0",
    "run_at": "CAST(:created_at AS timestamptz)",
    "created_at": "CAST(:created_at AS timestamptz)",
}
POSTGRES_CTE = f"""
    INSERT INTO outbox ({", ".join(NEW_JOB_COLUMNS)})
    SELECT {", ".join(_CTE_VALUES[column] for column in NEW_JOB_COLUMNS)}
    FROM booking CROSS JOIN webhooks
    WHERE webhooks.enabled AND strpos(',' || webhooks.events || ',', ',{BOOKING_CREATED},') > 0
"""  # noqa: S608 (constants only, see above)
