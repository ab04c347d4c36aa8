"""The booking path, top to bottom. Three layers stand between a request and a double booking:

1. the reservation layer (`reservations.py`): the first request for a slot takes its keys,
   every other request is turned away at once, without touching the database;
2. one database transaction writing booking, claims, customer, vehicle, outbox row and
   idempotency record: all or nothing;
3. the partial unique indexes on `bookings(slot_id)` and `booking_slots(slot_id)`: the final
   word. Our inserts say `ON CONFLICT DO NOTHING`, so a lost race is "no row came back",
   rolled back and answered 409, never an exception and never a 500.

Correctness rests on layer 3 alone; layers 1 and 2 make it fast and tidy.

Round trips (PostgreSQL + Redis; counted by tests/test_round_trips.py):
  successful booking: database 3 = BEGIN, the one statement of bookings/sql.py, COMMIT (plus
  the plan read the first time a slot and service are asked for); Redis 1 (reserve).
  turned away by the reservation layer: database 0, Redis 1.
  turned away by the database: database 3 (BEGIN, statement, ROLLBACK); Redis 2 (reserve,
  release). An Idempotency-Key adds one read (the replay check).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.bookings.holds import slots_of
from garagebook.bookings.reminders import reminder_at
from garagebook.bookings.schemas import BookingIn
from garagebook.bookings.sql import BOOK_POSTGRES
from garagebook.config import Settings
from garagebook.db import Database, insert_ignoring_conflicts, upsert
from garagebook.errors import (
    BookingNotFound,
    IdempotencyKeyReused,
    ServiceDoesNotFit,
    SlotInPast,
    SlotUnavailable,
    closed_because,
)
from garagebook.jobs.kinds import BOOKING_CANCELLED, BOOKING_CONFIRMED, BOOKING_REMINDER
from garagebook.jobs.queue import encode_payload, enqueue
from garagebook.reservations import Outcome, ReservationStore
from garagebook.schema import (
    booking_slots,
    bookings,
    customers,
    idempotency_keys,
    slots,
    vehicles,
)
from garagebook.slots.events import time_freed
from garagebook.slots.service import Plan, PlanCache
from garagebook.timeutil import to_local_iso, utcnow

# Crockford's base32: no I, L, O or U, so a reference read over the phone is unambiguous.
_REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_booking_id() -> str:
    """128 random bits: the id is what `GET /api/bookings/{id}` needs, so it must be unguessable."""
    return secrets.token_urlsafe(16)


def new_reference() -> str:
    """Short, for people: 8 characters of base32 (40 random bits), e.g. `A1-7KQ2M9`."""
    chars = "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(8))
    return f"{chars[:2]}-{chars[2:]}"


@dataclass(frozen=True)
class BookingResult:
    body: bytes  # the JSON response, exactly as sent (and replayed for an Idempotency-Key)
    replayed: bool


async def book(
    db: Database,
    reservations: ReservationStore,
    plans: PlanCache,
    settings: Settings,
    request: BookingIn,
    idempotency_key: str | None,
    within: Callable[[AsyncConnection, str], Awaitable[None]] | None = None,
) -> BookingResult:
    """`within` runs in the booking's transaction once the booking is written (given its id),
    for a caller whose own write must stand or fall with it (a waitlist offer taken up)."""
    fingerprint = _fingerprint(request) if idempotency_key is not None else ""
    if idempotency_key is not None:
        async with db.read() as conn:
            replay = await _find_replay(conn, idempotency_key, fingerprint)
        if replay is not None:
            return replay

    now = utcnow()
    plan = await plans.get(db, request.slot_id, request.service_id)
    if plan.start.starts_at <= now:
        raise SlotInPast(slot_id=request.slot_id)
    if not plan.fits:
        raise ServiceDoesNotFit()

    # Layer 1. The key's value is the request's token, and a key holding our own token counts
    # as free: so a hold's keys are accepted for its holder, and a retry with the same
    # Idempotency-Key and body (same token) passes its own first attempt's keys and goes on to
    # the database, which knows whether that attempt committed. Anyone else: 409.
    token = request.hold_token or (
        f"idem:{fingerprint[:32]}:{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}"
        if idempotency_key is not None
        else secrets.token_hex(16)
    )
    outcome = await reservations.reserve(
        plan.slot_ids, token, settings.reservation_ttl_seconds * 1000
    )
    if outcome is Outcome.CONFLICT:
        raise SlotUnavailable("reservation")

    cancel_token = secrets.token_urlsafe(24)
    row = _booking_row(request, plan, now, cancel_token)
    reminder = reminder_at(plan.start.starts_at, settings, now)
    body = orjson.dumps(booking_json(row, plan.start.bay_id, plan.slot_ids, settings, cancel_token))
    key = None if idempotency_key is None else IdempotencyRecord(idempotency_key, fingerprint)
    try:
        # Layers 2 and 3.
        async with db.transaction() as conn:
            await _write_booking(conn, row, plan.slot_ids, body, key, reminder)
            if within is not None:
                await within(conn, row["id"])
        if request.hold_token:
            # The hold ends with the booking: slots it held that were not booked go free.
            others = [s for s in slots_of(request.hold_token) if s not in plan.slot_ids]
            if others:
                await reservations.release(others, request.hold_token)
        return BookingResult(body, replayed=False)
    except BaseException as exc:
        # Whatever went wrong, our keys must not keep the slots from anyone for a full TTL.
        # Released even when the reservation call failed: a timed-out call may still have
        # set them. (Compare-and-delete on our own token: nobody else's key is touched.)
        # A customer's hold survives a failure that was not about the slot, for a retry.
        if request.hold_token is None or isinstance(exc, SlotUnavailable):
            await reservations.release(plan.slot_ids, token)
        if idempotency_key is not None and isinstance(exc, SlotUnavailable | _KeyTaken):
            # Lost to a concurrent request carrying the same key? Then answer as it did.
            async with db.read() as conn:
                replay = await _find_replay(conn, idempotency_key, fingerprint)
            if replay is not None:
                return replay
            if isinstance(exc, _KeyTaken):
                raise IdempotencyKeyReused() from None
        raise


def _fingerprint(request: BookingIn) -> str:
    canonical = orjson.dumps(request.model_dump(), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class IdempotencyRecord:
    key: str
    fingerprint: str


class _KeyTaken(Exception):
    """The Idempotency-Key was committed by a concurrent request while ours ran."""


def hash_token(token: str) -> str:
    """Tokens are kept hashed: a copy of the database does not let anyone cancel a booking."""
    return hashlib.sha256(token.encode()).hexdigest()


def _booking_row(
    request: BookingIn, plan: Plan, now: datetime, cancel_token: str
) -> dict[str, Any]:
    customer, vehicle = request.customer, request.vehicle
    return {
        "id": new_booking_id(),
        "reference": new_reference(),
        "slot_id": plan.start.id,
        "service_id": plan.service_id,
        "customer_email": customer.email,
        "customer_name": customer.name,
        "customer_phone": customer.phone,
        "vehicle_registration": vehicle.registration,
        "vehicle_make": vehicle.make,
        "vehicle_model": vehicle.model,
        "notes": request.notes,
        "status": "confirmed",
        "starts_at": plan.start.starts_at,
        "ends_at": plan.ends_at,
        "created_at": now,
        "cancelled_at": None,
        "cancel_token_hash": hash_token(cancel_token),
    }


async def _write_booking(
    conn: AsyncConnection,
    row: dict[str, Any],
    slot_ids: tuple[int, ...],
    body: bytes,
    key: IdempotencyRecord | None,
    reminder: datetime | None,
) -> None:
    """Raises SlotUnavailable when the database refuses a slot, _KeyTaken when the
    Idempotency-Key is already recorded; the caller's transaction then rolls back."""
    if conn.dialect.name == "postgresql":
        await _write_booking_postgres(conn, row, slot_ids, body, key, reminder)
        return
    # The start slot, against uq_bookings_slot_id_not_cancelled. A concurrent writer of the same
    # slot makes this wait for its commit, then come back empty.
    inserted = await conn.scalar(
        insert_ignoring_conflicts(conn, bookings).values(row).returning(bookings.c.id)
    )
    if inserted is None:
        raise SlotUnavailable("database")
    # Every covered slot, against uq_booking_slots_slot_id_active.
    claimed = (
        await conn.scalars(
            insert_ignoring_conflicts(conn, booking_slots)
            .values([{"booking_id": row["id"], "slot_id": s, "active": True} for s in slot_ids])
            .returning(booking_slots.c.slot_id)
        )
    ).all()
    if len(claimed) != len(slot_ids):
        raise SlotUnavailable("database")  # rolls back the booking row too
    now = row["created_at"]
    await conn.execute(
        upsert(conn, customers, "email", ["name", "phone", "updated_at"]).values(
            email=row["customer_email"],
            name=row["customer_name"],
            phone=row["customer_phone"],
            updated_at=now,
        )
    )
    await conn.execute(
        upsert(conn, vehicles, "registration", ["make", "model", "updated_at"]).values(
            registration=row["vehicle_registration"],
            make=row["vehicle_make"],
            model=row["vehicle_model"],
            updated_at=now,
        )
    )
    await enqueue(conn, BOOKING_CONFIRMED, job_payload(row), now=now)
    if reminder is not None:
        await enqueue(conn, BOOKING_REMINDER, job_payload(row), now=now, run_at=reminder)
    if key is not None:
        stored = await conn.scalar(
            insert_ignoring_conflicts(conn, idempotency_keys)
            .values(
                key=key.key,
                request_hash=key.fingerprint,
                booking_id=row["id"],
                response_body=body.decode(),
                created_at=now,
            )
            .returning(idempotency_keys.c.key)
        )
        if stored is None:
            raise _KeyTaken()


_BOOK_POSTGRES = text(BOOK_POSTGRES)


async def _write_booking_postgres(
    conn: AsyncConnection,
    row: dict[str, Any],
    slot_ids: tuple[int, ...],
    body: bytes,
    key: IdempotencyRecord | None,
    reminder: datetime | None,
) -> None:
    """The same writes in one statement (bookings/sql.py): one round trip."""
    result = (
        await conn.execute(
            _BOOK_POSTGRES,
            {
                "id": row["id"],
                "reference": row["reference"],
                "slot_id": row["slot_id"],
                "slot_ids": list(slot_ids),
                "service_id": row["service_id"],
                "email": row["customer_email"],
                "name": row["customer_name"],
                "phone": row["customer_phone"],
                "registration": row["vehicle_registration"],
                "make": row["vehicle_make"],
                "model": row["vehicle_model"],
                "notes": row["notes"],
                "starts_at": row["starts_at"],
                "ends_at": row["ends_at"],
                "created_at": row["created_at"],
                "cancel_token_hash": row["cancel_token_hash"],
                "payload": encode_payload(job_payload(row)),
                "reminder_at": reminder,
                "idempotency_key": key.key if key else None,
                "request_hash": key.fingerprint if key else None,
                "response_body": body.decode() if key else None,
            },
        )
    ).one()
    if result.booked == 0 or result.claimed != len(slot_ids):
        raise SlotUnavailable("database")
    if key is not None and result.keyed == 0:
        raise _KeyTaken()


def job_payload(booking: dict[str, Any]) -> dict[str, Any]:
    """A booking's job names the booking only (id, reference, and which time of it: `sequence`,
    moves so far); the worker reads the personal data when it sends."""
    return {
        "booking_id": booking["id"],
        "reference": booking["reference"],
        "sequence": booking.get("sequence", 0),
    }


async def _find_replay(conn: AsyncConnection, key: str, fingerprint: str) -> BookingResult | None:
    row = (
        await conn.execute(
            select(idempotency_keys.c.request_hash, idempotency_keys.c.response_body).where(
                idempotency_keys.c.key == key
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyKeyReused()
    return BookingResult(row.response_body.encode(), replayed=True)


def booking_json(
    row: dict[str, Any],
    bay_id: int,
    slot_ids: tuple[int, ...] | list[int],
    settings: Settings,
    cancel_token: str | None = None,
) -> dict[str, Any]:
    """The booking as the API shows it. `cancel_token` only in the answer to its creation:
    it is stored hashed and cannot be shown again."""
    zone = settings.timezone
    extra = {"cancel_token": cancel_token} if cancel_token else {}
    return {
        "id": row["id"],
        "reference": row["reference"],
        "status": row["status"],
        "slot_id": row["slot_id"],
        "slot_ids": list(slot_ids),
        "bay_id": bay_id,
        "service_id": row["service_id"],
        "customer": {
            "name": row["customer_name"],
            "email": row["customer_email"],
            "phone": row["customer_phone"],
        },
        "vehicle": {
            "registration": row["vehicle_registration"],
            "make": row["vehicle_make"],
            "model": row["vehicle_model"],
        },
        "notes": row["notes"],
        "starts_at": to_local_iso(row["starts_at"], zone),
        "ends_at": to_local_iso(row["ends_at"], zone),
        "created_at": to_local_iso(row["created_at"], zone),
        "cancelled_at": to_local_iso(row["cancelled_at"], zone) if row["cancelled_at"] else None,
        **extra,
    }


async def get_booking(conn: AsyncConnection, settings: Settings, booking_id: str) -> dict[str, Any]:
    row = (await conn.execute(select(bookings).where(bookings.c.id == booking_id))).first()
    if row is None:
        raise BookingNotFound()
    slot_ids, bay_id = await claimed_slots(conn, booking_id)
    return booking_json(row._asdict(), bay_id, slot_ids, settings)


async def booking_id_for_cancel_token(conn: AsyncConnection, cancel_token: str) -> str:
    booking_id = await conn.scalar(
        select(bookings.c.id).where(bookings.c.cancel_token_hash == hash_token(cancel_token))
    )
    if booking_id is None:
        raise BookingNotFound()
    return str(booking_id)


async def claimed_slots(conn: AsyncConnection, booking_id: str) -> tuple[list[int], int]:
    rows = (
        await conn.execute(
            select(slots.c.id, slots.c.bay_id)
            .join(booking_slots, booking_slots.c.slot_id == slots.c.id)
            .where(booking_slots.c.booking_id == booking_id)
            .order_by(slots.c.starts_at)
        )
    ).all()
    return [r.id for r in rows], rows[0].bay_id


async def cancel(
    db: Database, reservations: ReservationStore, settings: Settings, booking_id: str
) -> dict[str, Any]:
    """Cancel in one transaction (status, claims released, outbox row), then drop the slots'
    reservation keys so the slots are bookable at once."""
    now = utcnow()
    async with db.transaction() as conn:
        row = (
            await conn.execute(
                update(bookings)
                .where(bookings.c.id == booking_id, bookings.c.status == "confirmed")
                .values(status="cancelled", cancelled_at=now)
                .returning(*bookings.c)
            )
        ).first()
        if row is None:
            status = await conn.scalar(select(bookings.c.status).where(bookings.c.id == booking_id))
            raise BookingNotFound() if status is None else closed_because(status)
        await conn.execute(
            update(booking_slots)
            .where(booking_slots.c.booking_id == booking_id)
            .values(active=False)
        )
        slot_ids, bay_id = await claimed_slots(conn, booking_id)
        cancelled = row._asdict()
        await enqueue(conn, BOOKING_CANCELLED, job_payload(cancelled), now=now)
        await time_freed(conn, cancelled["starts_at"].astimezone(settings.timezone).date(), now)
    await reservations.forget(slot_ids)
    return booking_json(cancelled, bay_id, slot_ids, settings)
