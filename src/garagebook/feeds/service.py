"""Calendar feeds: create, list, revoke, and the feed itself.

The token is the only key (calendar apps cannot send a header), so it is 256 random bits and
only its SHA-256 is stored: a copy of the database opens no feed. Unknown and revoked tokens
are the same 404.

What a feed shows of a booking: service, vehicle registration, reference and bay — what the
workshop plans by — and never the customer's e-mail or phone, nor their name: a feed is
copied into another company's calendar service and its URL is easily shared, and the
reference finds the customer in garagebook in one step. Closed times show as "Closed".
Cancelled bookings are left out (calendar apps drop an event that leaves the feed); bookings
are shown from the start of the garage's today, so today's earlier ones stay visible.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, time
from typing import Any

from icalendar import Event
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.calendar import booking_event, calendar_bytes
from garagebook.config import Settings
from garagebook.errors import BayNotFound, FeedNotFound
from garagebook.schema import bays, bookings, calendar_feeds, closures, services, slots

FEED_LIMIT = 5000  # events in one feed: months of a busy garage; calendar apps cap lower


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def feed_path(token: str) -> str:
    return f"/calendar/{token}.ics"


def _feed_json(row: Any, bay_name: str | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "label": row.label,
        "bay_id": row.bay_id,
        "bay": bay_name,  # None: the whole garage
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


_FEED_COLUMNS = (calendar_feeds, bays.c.name.label("bay_name"))


def _feeds_query() -> Any:
    return select(*_FEED_COLUMNS).select_from(
        calendar_feeds.outerjoin(bays, bays.c.id == calendar_feeds.c.bay_id)
    )


async def create_feed(
    conn: AsyncConnection,
    settings: Settings,
    *,
    label: str,
    bay_id: int | None,
    created_by: str,
    now: datetime,
) -> dict[str, Any]:
    """A new feed and its URL, which carries the token: shown this once, never again."""
    if (
        bay_id is not None
        and await conn.scalar(select(bays.c.id).where(bays.c.id == bay_id)) is None
    ):
        raise BayNotFound(bay_id=bay_id)
    token = secrets.token_urlsafe(32)
    feed_id = await conn.scalar(
        calendar_feeds.insert()
        .values(
            token_hash=hash_token(token),
            label=label,
            bay_id=bay_id,
            created_by=created_by,
            created_at=now,
        )
        .returning(calendar_feeds.c.id)
    )
    feed = await get_feed(conn, int(feed_id))
    return {**feed, "token": token, "url": settings.public_url + feed_path(token)}


async def get_feed(conn: AsyncConnection, feed_id: int) -> dict[str, Any]:
    row = (await conn.execute(_feeds_query().where(calendar_feeds.c.id == feed_id))).first()
    if row is None:
        raise FeedNotFound()
    return _feed_json(row, row.bay_name)


async def list_feeds(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = (await conn.execute(_feeds_query().order_by(calendar_feeds.c.id))).all()
    return [_feed_json(row, row.bay_name) for row in rows]


async def revoke_feed(conn: AsyncConnection, feed_id: int, now: datetime) -> dict[str, Any]:
    """Revoked at once for every calendar that subscribed; revoking twice keeps the first time."""
    await conn.execute(
        update(calendar_feeds)
        .where(calendar_feeds.c.id == feed_id, calendar_feeds.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return await get_feed(conn, feed_id)


async def feed_ics(conn: AsyncConnection, settings: Settings, token: str, now: datetime) -> bytes:
    """The feed behind `token`: FeedNotFound when there is none or it was revoked."""
    feed = (
        await conn.execute(
            _feeds_query().where(
                calendar_feeds.c.token_hash == hash_token(token),
                calendar_feeds.c.revoked_at.is_(None),
            )
        )
    ).first()
    if feed is None:
        raise FeedNotFound()
    zone = settings.timezone
    since = datetime.combine(now.astimezone(zone).date(), time(), zone)
    query = (
        select(
            bookings.c.reference,
            bookings.c.starts_at,
            bookings.c.ends_at,
            bookings.c.sequence,
            bookings.c.vehicle_registration,
            services.c.name.label("service"),
            bays.c.name.label("bay"),
        )
        .select_from(
            bookings.outerjoin(slots, slots.c.id == bookings.c.slot_id)  # none: a drop-off
            .outerjoin(bays, bays.c.id == slots.c.bay_id)
            .join(services, services.c.id == bookings.c.service_id)
        )
        .where(bookings.c.status != "cancelled", bookings.c.ends_at > since)
        .order_by(bookings.c.starts_at, bookings.c.id)
        .limit(FEED_LIMIT)
    )
    if feed.bay_id is not None:
        query = query.where(slots.c.bay_id == feed.bay_id)
    rows = (await conn.execute(query)).all()
    closed = (
        select(closures.c.id, closures.c.starts_at, closures.c.ends_at, bays.c.name.label("bay"))
        .select_from(closures.join(bays, bays.c.id == closures.c.bay_id))
        .where(closures.c.reopened_at.is_(None), closures.c.ends_at > since)
        .order_by(closures.c.starts_at, closures.c.id)
        .limit(FEED_LIMIT)
    )
    if feed.bay_id is not None:
        closed = closed.where(closures.c.bay_id == feed.bay_id)
    events = [_event(settings, row, now) for row in rows]
    events += [_closed_event(settings, row, now) for row in await conn.execute(closed)]
    name = f"{settings.garage_name}: {feed.label}"
    return calendar_bytes(events, method="PUBLISH", name=name)


def _event(settings: Settings, row: Any, now: datetime) -> Event:
    return booking_event(
        settings,
        reference=row.reference,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        cancelled=False,
        sequence=row.sequence,
        summary=f"{row.service} · {row.vehicle_registration}",
        location=f"{settings.garage_name}, {row.bay}" if row.bay else settings.garage_name,
        description=f"Booking {row.reference}: {row.service}, vehicle {row.vehicle_registration}.",
        stamp=now,
    )


def _closed_event(settings: Settings, row: Any, now: datetime) -> Event:
    """A closed time (closures/): no customer; its UID is the closure's, stable while it holds."""
    return booking_event(
        settings,
        reference=f"closure-{row.id}",
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        cancelled=False,
        sequence=0,
        summary=f"Closed · {row.bay}",
        location=f"{settings.garage_name}, {row.bay}",
        description=None,
        stamp=now,
    )
