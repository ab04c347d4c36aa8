"""The `webhook_delivery` job: one event to one receiver.

The delivery is `POST url` with `{"id", "type", "created_at", "data": {"booking": …}}` and the
`Garagebook-Signature` header (sealing.signature). `data.booking` is the booking as the API
shows it *when the delivery is sent* (the outbox keeps no personal data, so a retry or a replay
shows the booking as it is then), with its `sequence` and `completed_at`.

Ordering: deliveries run concurrently and are retried independently, so two events of one
booking can arrive out of order. Each carries what a receiver needs to order them: the event's
`created_at` (the time of the change's transaction, UTC, microseconds) and `id`; and
`data.booking.sequence`, which counts the booking's moves (as the calendar's SEQUENCE). A
receiver keeps, per booking, the `created_at` of the newest event it applied and ignores older
ones; since every delivery shows the booking as of its sending, ignoring an older event loses
nothing.

Failure: no answer within WEBHOOK_TIMEOUT_SECONDS, a refused connection or a non-2xx answer
is a failed attempt, retried by the outbox with backoff and jitter (JOB_RETRY_*), dead after
JOB_MAX_ATTEMPTS (the defaults retry for more than an hour and a half); a refused address is
dead at once. Every attempt is logged in `webhook_deliveries`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import httpx
import orjson
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.bookings.service import booking_json, claimed_slots
from garagebook.config import Settings
from garagebook.jobs.handlers import JobContext, handles
from garagebook.jobs.kinds import WEBHOOK_DELIVERY
from garagebook.jobs.mail import DeliveryFailed
from garagebook.jobs.queue import DONE, SKIPPED, Job, encode_payload
from garagebook.schema import bookings, webhook_deliveries, webhooks
from garagebook.timeutil import to_local_iso, utcnow
from garagebook.webhooks import sealing, targets

DELIVERED = "delivered"
FAILED = "failed"
REFUSED = "refused"
SIGNATURE_HEADER = "Garagebook-Signature"
_EVENT_KEYS = ("webhook_id", "event_id", "type", "booking_id", "created_at")


def _event(job: Job) -> dict[str, Any]:
    missing = [key for key in _EVENT_KEYS if key not in job.payload]
    if missing:
        raise DeliveryFailed(f"the job's payload lacks {', '.join(missing)}", permanent=True)
    return job.payload


async def _booking(conn: AsyncConnection, settings: Settings, booking_id: str) -> Any:
    row = (await conn.execute(select(bookings).where(bookings.c.id == booking_id))).first()
    if row is None:
        return None
    slot_ids, bay_id = await claimed_slots(conn, booking_id)
    shown = booking_json(row._asdict(), bay_id, slot_ids, settings)
    completed = to_local_iso(row.completed_at, settings.timezone) if row.completed_at else None
    return {**shown, "sequence": row.sequence, "completed_at": completed}


def body(event: dict[str, Any], booking: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": event["event_id"],
            "type": event["type"],
            "created_at": event["created_at"],
            "data": {"booking": booking},
        }
    )


async def post(target: targets.Target, content: bytes, secret: str, seconds: float) -> int:
    """POST to the checked address, the name in Host and TLS; the answer's status code. No
    proxy from the environment (it would connect elsewhere than we checked), no redirects,
    the answer's body is not read."""
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": "garagebook-webhooks",
        SIGNATURE_HEADER: sealing.signature(secret, int(time.time()), content),
    }
    extensions = {"sni_hostname": target.host} if target.tls else {}
    async with (
        asyncio.timeout(seconds),
        httpx.AsyncClient(timeout=seconds, trust_env=False, follow_redirects=False) as client,
        client.stream(
            "POST", target.url, content=content, headers=headers, extensions=extensions
        ) as response,
    ):
        return response.status_code


async def _log(
    context: JobContext,
    job: Job,
    event: dict[str, Any],
    outcome: str,
    started: float,
    *,
    status_code: int | None = None,
    error: str | None = None,
) -> None:
    async with context.db.transaction() as conn:
        await conn.execute(
            insert(webhook_deliveries).values(
                webhook_id=event["webhook_id"],
                job_id=job.id,
                event_id=str(event["event_id"])[:64],
                event_type=str(event["type"])[:32],
                payload=encode_payload(event),
                attempt=job.attempts,
                outcome=outcome,
                status_code=status_code,
                error=error[:1000] if error else None,
                duration_ms=round((time.monotonic() - started) * 1000),
                created_at=utcnow(),
            )
        )


@handles(WEBHOOK_DELIVERY)
async def deliver(job: Job, context: JobContext, now: datetime) -> str:
    event = _event(job)
    settings = context.settings
    started = time.monotonic()
    async with context.db.read() as conn:
        hook = (
            await conn.execute(select(webhooks).where(webhooks.c.id == event["webhook_id"]))
        ).first()
        booking = await _booking(conn, settings, str(event["booking_id"])) if hook else None
    if hook is None or not hook.enabled:
        return SKIPPED  # removed or disabled since: nobody wants it any more
    if booking is None:
        raise DeliveryFailed("the booking does not exist", permanent=True)
    if booking["customer"]["email"] == settings.closed_slot_email:
        return SKIPPED  # a time staff closed (a placeholder booking), not a customer's booking
    try:
        secret = sealing.unseal(hook.secret_sealed, settings)
    except sealing.SecretUnreadable:
        error = "the signing secret cannot be unsealed: WEBHOOK_SECRET_KEY differs from its maker's"
        await _log(context, job, event, FAILED, started, error=error)
        raise DeliveryFailed(error, permanent=True) from None
    try:
        target = await targets.resolve(hook.url, settings)
    except targets.UrlRefused as exc:
        await _log(context, job, event, REFUSED, started, error=str(exc))
        raise DeliveryFailed(f"not sent: {exc}", permanent=True) from None
    try:
        status = await post(target, body(event, booking), secret, settings.webhook_timeout_seconds)
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        error = _describe(exc, settings)
        await _log(context, job, event, FAILED, started, error=error)
        raise DeliveryFailed(error) from None
    if not 200 <= status < 300:
        await _log(context, job, event, FAILED, started, status_code=status)
        raise DeliveryFailed(f"the receiver answered {status}")
    await _log(context, job, event, DELIVERED, started, status_code=status)
    return DONE


def _describe(error: BaseException, settings: Settings) -> str:
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return f"no answer within {settings.webhook_timeout_seconds:g}s"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
