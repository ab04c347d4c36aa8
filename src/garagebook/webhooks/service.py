"""Subscriptions, the delivery log and replays: what the admin API and the staff settings page
both call. Each function owns its one short transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update

from garagebook.config import Settings
from garagebook.db import Database
from garagebook.errors import WebhookDeliveryNotFound, WebhookNotFound, WebhookUrlRefused
from garagebook.jobs.kinds import WEBHOOK_DELIVERY
from garagebook.jobs.queue import enqueue
from garagebook.schema import webhook_deliveries, webhooks
from garagebook.timeutil import to_local_iso, utcnow
from garagebook.webhooks import sealing, targets

DELIVERIES_SHOWN = 100


def _events_text(events: Sequence[str]) -> str:
    return ",".join(dict.fromkeys(events))  # in the order given, each once


def _shown(row: Any, settings: Settings) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": row.events.split(","),
        "enabled": row.enabled,
        "created_at": to_local_iso(row.created_at, settings.timezone),
    }


async def create(
    db: Database, settings: Settings, url: str, events: Sequence[str], enabled: bool = True
) -> dict[str, Any]:
    """A new subscription with a new secret, which is in this answer and never again."""
    try:
        await targets.resolve(url, settings)
    except targets.UrlRefused as exc:
        raise WebhookUrlRefused(str(exc)) from None
    secret = sealing.new_secret()
    async with db.transaction() as conn:
        row = (
            await conn.execute(
                insert(webhooks)
                .values(
                    url=url,
                    events=_events_text(events),
                    secret_sealed=sealing.seal(secret, settings),
                    enabled=enabled,
                    created_at=utcnow(),
                )
                .returning(*webhooks.c)
            )
        ).one()
    return {**_shown(row, settings), "secret": secret}


async def list_all(db: Database, settings: Settings) -> list[dict[str, Any]]:
    async with db.read() as conn:
        rows = await conn.execute(select(webhooks).order_by(webhooks.c.id))
        return [_shown(row, settings) for row in rows]


async def get(db: Database, settings: Settings, webhook_id: int) -> dict[str, Any]:
    async with db.read() as conn:
        row = (await conn.execute(select(webhooks).where(webhooks.c.id == webhook_id))).first()
    if row is None:
        raise WebhookNotFound(webhook_id=webhook_id)
    return _shown(row, settings)


async def set_enabled(
    db: Database, settings: Settings, webhook_id: int, enabled: bool
) -> dict[str, Any]:
    """A disabled subscription gets no new events, and its queued ones are skipped."""
    async with db.transaction() as conn:
        row = (
            await conn.execute(
                update(webhooks)
                .where(webhooks.c.id == webhook_id)
                .values(enabled=enabled)
                .returning(*webhooks.c)
            )
        ).first()
    if row is None:
        raise WebhookNotFound(webhook_id=webhook_id)
    return _shown(row, settings)


async def remove(db: Database, webhook_id: int) -> None:
    """The subscription and its log go; its queued jobs find it gone and are skipped."""
    async with db.transaction() as conn:
        await conn.execute(
            delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
        )
        gone = await conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
    if gone.rowcount == 0:
        raise WebhookNotFound(webhook_id=webhook_id)


def _delivery(row: Any, settings: Settings) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "event": row.event_type,
        "attempt": row.attempt,
        "status": row.outcome,  # delivered, failed, refused
        "status_code": row.status_code,  # the receiver's answer; None if there was none
        "error": row.error,
        "duration_ms": row.duration_ms,
        "created_at": to_local_iso(row.created_at, settings.timezone),
    }


async def deliveries(
    db: Database, settings: Settings, webhook_id: int, limit: int = DELIVERIES_SHOWN
) -> list[dict[str, Any]]:
    """The latest attempts first."""
    await get(db, settings, webhook_id)
    async with db.read() as conn:
        rows = await conn.execute(
            select(webhook_deliveries)
            .where(webhook_deliveries.c.webhook_id == webhook_id)
            .order_by(webhook_deliveries.c.id.desc())
            .limit(limit)
        )
        return [_delivery(row, settings) for row in rows]


async def replay(db: Database, webhook_id: int, delivery_id: int) -> dict[str, Any]:
    """Queue the logged event again for this subscription: the same event id (a receiver that
    has it already de-duplicates), the booking as it is now, fresh attempts."""
    async with db.transaction() as conn:
        payload = await conn.scalar(
            select(webhook_deliveries.c.payload).where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.webhook_id == webhook_id,
            )
        )
        if payload is None:
            raise WebhookDeliveryNotFound(webhook_id=webhook_id, delivery_id=delivery_id)
        event = orjson.loads(payload)
        await enqueue(conn, WEBHOOK_DELIVERY, event, now=utcnow())  # its trigger wakes workers
    return {"event_id": event["event_id"], "replayed": delivery_id}
