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
  the plan read the first time a slot and service are asked for); Redis 2 (reserve with a
  short lease, then confirm: the booked keys get the whole TTL, and a hold's other slots are
  released in the same call).
  turned away by the reservation layer: database 0, Redis 1.
  turned away by the database: database 3 (BEGIN, statement, ROLLBACK); Redis 2 (reserve,
  release). An Idempotency-Key adds one read (the replay check); a replay reads the booking as
  it is now (two more reads).
  The caps on live bookings per customer are counted inside that one statement (SQLite: one
  more SELECT in the transaction), so they add no round trip on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.bookings import idempotency
from garagebook.bookings.holds import slots_of, technician_keys_of, technician_of
from garagebook.bookings.reminders import reminder_at
from garagebook.bookings.schemas import BookingIn, CustomerIn
from garagebook.bookings.sql import BOOK_POSTGRES
from garagebook.config import Settings
from garagebook.db import Database, insert_ignoring_conflicts, upsert
from garagebook.errors import (
    BookingLimitReached,
    BookingNotFound,
    IdempotencyKeyReused,
    IdempotentBookingClosed,
    InvalidRequest,
    ServiceDoesNotFit,
    SlotInPast,
    SlotUnavailable,
    WrongBay,
    closed_because,
)
from garagebook.garage.rules import Rules, StalePlan, read_rules, refuse
from garagebook.jobs.kinds import BOOKING_CANCELLED, BOOKING_CONFIRMED, BOOKING_REMINDER
from garagebook.jobs.queue import encode_payload, enqueue
from garagebook.reservations import Key, Outcome, ReservationStore, lease_ms
from garagebook.schema import (
    booking_slots,
    bookings,
    customers,
    idempotency_keys,
    services,
    slots,
    vehicles,
)
from garagebook.slots.events import time_freed
from garagebook.slots.service import Plan, PlanCache, local_day_bounds, slots_starting
from garagebook.technicians.claims import TechnicianChoice, TechnicianTaken
from garagebook.technicians.claims import claim as claim_technician
from garagebook.technicians.claims import release as release_technician
from garagebook.technicians.drop_offs import DropOffPlan, plan_drop_off, refuse_unbookable
from garagebook.technicians.free import minutes_left
from garagebook.timeutil import to_local_iso, utcnow
from garagebook.webhooks.events import (
    BOOKING_CANCELLED as HOOK_CANCELLED,
)
from garagebook.webhooks.events import (
    BOOKING_CREATED as HOOK_CREATED,
)
from garagebook.webhooks.events import enqueue_event, event_tail

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
    *,
    staff: bool = False,
) -> BookingResult:
    """`within` runs in the booking's transaction once the booking is written (given its id),
    for a caller whose own write must stand or fall with it (a waitlist offer taken up).

    `staff`: booked by the garage (staff pages, the admin token). Only then may the customer be
    the garage's own placeholder (a walk-in without an address), are the caps on live bookings
    not applied, the minimum notice not applied, and do the make and
    model replace the car's record.

    A plan cached before the service's minutes or the setup changed is refused by the
    database (StalePlan): it is planned again once from the database and booked with that."""
    try:
        return await _book(
            db, reservations, plans, settings, request, idempotency_key, within, staff=staff
        )
    except StalePlan:
        plans.forget_all()  # the setup changed: every plan may be stale
    try:
        return await _book(
            db, reservations, plans, settings, request, idempotency_key, within, staff=staff
        )
    except StalePlan:  # changed again in between: let the customer try again
        raise SlotUnavailable("database", "That service just changed; please try again.") from None


@dataclass(frozen=True)
class _Attempt:
    """One way to book the request: a bay's plan (or a drop-off's day) and, where the garage
    lists technicians, one of them. Tried best first (technicians/claims.py says which)."""

    plan: Plan | DropOffPlan
    technician: TechnicianChoice | None

    @property
    def keys(self) -> list[Key]:
        technician = self.technician.keys if self.technician is not None else ()
        return [*self.plan.slot_ids, *technician]


async def _attempts(
    db: Database,
    plans: PlanCache,
    settings: Settings,
    request: BookingIn,
    now: datetime,
    *,
    staff: bool,
) -> list[_Attempt]:
    if request.day is not None:
        async with db.read() as conn:
            drop_off = await plan_drop_off(conn, request.service_id, request.day)
        refuse_unbookable(drop_off, now, staff)
        return [_Attempt(drop_off, TechnicianChoice(tid, ())) for tid in drop_off.technician_ids]
    if request.slot_id is not None:
        starts = [request.slot_id]
    else:
        assert request.starts_at is not None  # BookingIn has one of the two
        async with db.read() as conn:
            starts = await slots_starting(conn, request.starts_at, request.service_id)
        if not starts:
            raise SlotUnavailable("database", "Nothing can start at that time.")
    found: list[Plan] = []
    for slot_id in starts:
        try:
            plan = await plans.get(db, slot_id, request.service_id)
        except WrongBay:
            if request.slot_id is not None:
                raise
            continue  # another bay at that time may do it
        found.append(plan)
    if not found:
        raise WrongBay()
    if found[0].start.starts_at <= now:
        raise SlotInPast(slot_id=found[0].start.id)
    fitting = [plan for plan in found if plan.fits]
    if not fitting:
        raise ServiceDoesNotFit()
    attempts = [
        _Attempt(plan, choice)
        for plan in fitting
        for choice in (plan.technicians.choices if plan.technicians.needed else (None,))
    ]
    if not attempts:
        raise SlotUnavailable("database", "No technician who can do it works at that time.")
    return attempts


async def _book(
    db: Database,
    reservations: ReservationStore,
    plans: PlanCache,
    settings: Settings,
    request: BookingIn,
    idempotency_key: str | None,
    within: Callable[[AsyncConnection, str], Awaitable[None]] | None,
    *,
    staff: bool,
) -> BookingResult:
    if not staff:
        refuse_placeholders(request.customer, settings)
    fingerprint = _fingerprint(request) if idempotency_key is not None else ""
    if idempotency_key is not None:
        async with db.read() as conn:
            replay = await _find_replay(conn, settings, idempotency_key, fingerprint)
        if replay is not None:
            return replay

    now = utcnow()
    attempts = await _attempts(db, plans, settings, request, now, staff=staff)
    held = technician_of(request.hold_token or "")
    if held is not None:  # the hold keeps this technician: theirs first (a stable sort)
        attempts.sort(key=lambda a: a.technician is None or a.technician.technician_id != held)
    # Layer 1. The key's value is the request's token, and a key holding our own token counts
    # as free: so a hold's keys are accepted for its holder, and a retry with the same
    # Idempotency-Key and body (same token) passes its own first attempt's keys and goes on to
    # the database, which knows whether that attempt committed. Anyone else: 409.
    token = request.hold_token or (
        f"idem:{fingerprint[:32]}:{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}"
        if idempotency_key is not None
        else secrets.token_hex(16)
    )
    technician_refused = False
    while attempts:
        # Only a lease while the request runs: were it to die with its process, its keys must
        # not keep the slots from anyone for the whole TTL. `confirm` gives the booking's keys
        # the TTL. The first attempt whose keys are all free is taken, in one round trip.
        outcome, index = (
            await reservations.reserve_first(
                [attempt.keys for attempt in attempts], token, lease_ms(settings)
            )
            if attempts[0].keys
            else (Outcome.SKIPPED, 0)  # a drop-off: minutes, which the database counts
        )
        if outcome is Outcome.CONFLICT:
            raise SlotUnavailable("reservation")
        attempt = attempts[index]
        try:
            return await _commit(
                db,
                reservations,
                settings,
                request,
                attempt,
                token,
                now,
                fingerprint,
                idempotency_key,
                within,
                staff=staff,
            )
        except TechnicianTaken:
            # The database refused this technician: the next one who can, on any bay.
            taken = attempt.technician
            assert taken is not None
            technician_refused = True
            attempts = [
                a
                for a in attempts[index + 1 :]
                if a.technician is None or a.technician.technician_id != taken.technician_id
            ]
            if isinstance(attempt.plan, DropOffPlan) and attempts:
                # Refused for minutes: read who still has them before another transaction,
                # so a burst on a full day costs each loser one write, not one per technician.
                attempts = await _still_free(db, attempts, attempt.plan)
        except SlotUnavailable as exc:
            if exc.data.get("rejected_by") != "database" or request.slot_id is not None:
                raise
            # That bay's slots were taken or closed: the next bay, if the time was any bay's.
            attempts = [a for a in attempts[index + 1 :] if a.plan.slot_id != attempt.plan.slot_id]
            if not attempts:
                raise
    if technician_refused:
        raise SlotUnavailable("database", "No technician who can do it is free then.")
    raise SlotUnavailable("database")


async def _still_free(db: Database, attempts: list[_Attempt], plan: DropOffPlan) -> list[_Attempt]:
    """The drop-off attempts whose technician has the plan's minutes left now (a read: the
    write still decides)."""
    ids = [a.technician.technician_id for a in attempts if a.technician is not None]
    async with db.read() as conn:
        left = await minutes_left(conn, ids, plan.day, plan.day)
    return [
        a
        for a in attempts
        if a.technician is not None
        and left.get((a.technician.technician_id, plan.day), 0) >= plan.technician_minutes
    ]


async def _commit(
    db: Database,
    reservations: ReservationStore,
    settings: Settings,
    request: BookingIn,
    attempt: _Attempt,
    token: str,
    now: datetime,
    fingerprint: str,
    idempotency_key: str | None,
    within: Callable[[AsyncConnection, str], Awaitable[None]] | None,
    *,
    staff: bool,
) -> BookingResult:
    """Layers 2 and 3 for one attempt whose keys we took (or that the layer skipped)."""
    plan = attempt.plan
    cancel_token = secrets.token_urlsafe(24)
    row = _booking_row(request, plan, now, cancel_token)
    if attempt.technician is not None:
        row["technician_id"] = attempt.technician.technician_id
        row["technician_minutes"] = plan.technician_minutes
    reminder = reminder_at(plan.starts_at, settings, now)
    shown = booking_json(row, plan.bay_id, plan.slot_ids, settings)
    body = orjson.dumps({**shown, "cancel_token": cancel_token})
    key = (
        None
        if idempotency_key is None
        else IdempotencyRecord(
            idempotency.key_digest(idempotency_key),
            fingerprint,
            orjson.dumps(shown).decode(),  # the answer without the token
            idempotency.seal(cancel_token, idempotency_key),
            idempotency.expired_before(settings, now),
        )
    )
    caps = None if staff else Caps.of(settings, plan.starts_at)
    day = plan.starts_at.astimezone(settings.timezone).date()
    try:
        # Layers 2 and 3.
        async with db.transaction() as conn:
            await _write_booking(conn, row, plan, key, reminder, caps, staff, day)
            if within is not None:
                await within(conn, row["id"])
        # Committed: its keys now turn others away fast for the whole TTL. The hold ends with
        # the booking: slots it held that were not booked go free, in the same round trip.
        hold = request.hold_token or ""
        others: list[Key] = [s for s in slots_of(hold) if s not in plan.slot_ids]
        others += [k for k in technician_keys_of(hold, plan.starts) if k not in attempt.keys]
        if attempt.keys or others:
            await reservations.confirm(
                attempt.keys, token, settings.reservation_ttl_seconds * 1000, release=others
            )
        return BookingResult(body, replayed=False)
    except BaseException as exc:
        # Whatever went wrong, our keys must not keep the slots from anyone for a full TTL.
        # Released even when the reservation call failed: a timed-out call may still have
        # set them. (Compare-and-delete on our own token: nobody else's key is touched.)
        # A customer's hold survives a failure that was not about the slot, for a retry.
        if attempt.keys and (
            request.hold_token is None or isinstance(exc, SlotUnavailable | TechnicianTaken)
        ):
            await reservations.release(attempt.keys, token)
        if idempotency_key is not None and isinstance(
            exc, SlotUnavailable | TechnicianTaken | _KeyTaken
        ):
            # Lost to a concurrent request carrying the same key? Then answer as it did.
            async with db.read() as conn:
                replay = await _find_replay(conn, settings, idempotency_key, fingerprint)
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
    """What the booking's transaction stores for its Idempotency-Key (bookings/idempotency.py)."""

    digest: str  # the key's SHA-256: the key itself is not stored
    fingerprint: str
    response_body: str  # without the manage token
    token_sealed: str  # the manage token, sealed with the key
    expired_before: datetime  # a record with this key older than this is replaced


@dataclass(frozen=True)
class Caps:
    """The caps on live bookings one customer may make online (config.py); 0 = none."""

    per_email: int
    per_registration: int
    per_email_per_day: int
    day_start: datetime  # the local day of the booking, for the per-day cap
    day_end: datetime

    @classmethod
    def of(cls, settings: Settings, starts_at: datetime) -> Caps | None:
        """None when every cap is off: then nothing is counted or locked."""
        if not (
            settings.max_live_bookings_per_email
            or settings.max_live_bookings_per_registration
            or settings.max_bookings_per_email_per_day
        ):
            return None
        day = starts_at.astimezone(settings.timezone).date()
        day_start, day_end = local_day_bounds(day, settings.timezone)
        return cls(
            settings.max_live_bookings_per_email,
            settings.max_live_bookings_per_registration,
            settings.max_bookings_per_email_per_day,
            day_start,
            day_end,
        )

    def maximum(self, limit: str) -> int:
        return {
            "email": self.per_email,
            "registration": self.per_registration,
            "email_day": self.per_email_per_day,
        }[limit]


def refuse_placeholders(customer: CustomerIn, settings: Settings) -> None:
    """Issue 18, finding 10: a walk-in without an address carries the garage's own
    placeholder address, which no mail goes to; the public may not use it."""
    if settings.is_placeholder_address(customer.email):
        field = {"field": "customer.email", "problem": "this address is the garage's own"}
        raise InvalidRequest(
            f"The request is not valid: {field['field']}: {field['problem']}", fields=[field]
        )


class _KeyTaken(Exception):
    """The Idempotency-Key was committed by a concurrent request while ours ran."""


def hash_token(token: str) -> str:
    """Tokens are kept hashed: a copy of the database does not let anyone cancel a booking."""
    return hashlib.sha256(token.encode()).hexdigest()


def _booking_row(
    request: BookingIn, plan: Plan | DropOffPlan, now: datetime, cancel_token: str
) -> dict[str, Any]:
    """The booking's row; the technician is the attempt's (`_commit`)."""
    customer, vehicle = request.customer, request.vehicle
    return {
        "id": new_booking_id(),
        "reference": new_reference(),
        "slot_id": plan.slot_id,
        "service_id": plan.service_id,
        "customer_email": customer.email,
        "customer_name": customer.name,
        "customer_phone": customer.phone,
        "vehicle_registration": vehicle.registration,
        "vehicle_make": vehicle.make,
        "vehicle_model": vehicle.model,
        "notes": request.notes,
        "status": "confirmed",
        "starts_at": plan.starts_at,
        "ends_at": plan.ends_at,
        "created_at": now,
        "cancelled_at": None,
        "cancel_token_hash": hash_token(cancel_token),
        "technician_id": None,
        "technician_minutes": None,
    }


async def _write_booking(
    conn: AsyncConnection,
    row: dict[str, Any],
    plan: Plan | DropOffPlan,
    key: IdempotencyRecord | None,
    reminder: datetime | None,
    caps: Caps | None,
    staff: bool,
    day: date,
) -> None:
    """Raises SlotUnavailable when the database refuses a slot, TechnicianTaken when it
    refuses the technician, BookingLimitReached when a cap is reached, _KeyTaken when the
    Idempotency-Key is already recorded, the setup's reasons (garage/rules.py) when it no
    longer allows the booking; the caller's transaction then rolls back. `day`: the booking's
    local day, whose minutes a technician gives."""
    slot_ids = plan.slot_ids
    if conn.dialect.name == "postgresql":
        await _write_booking_postgres(conn, row, plan, key, reminder, caps, staff, day)
        return
    # The setup's rules, read now (the write transaction holds the lock).
    refuse(
        await read_rules(conn, plan.service_id, slot_ids),
        plan_minutes=plan.minutes,
        starts_at=plan.starts_at,
        now=row["created_at"],
        online=not staff,
        claimed=len(slot_ids),
        plan_version=plan.garage_version,
        check_version=True,
    )
    # The caps: SQLite's write transaction (BEGIN IMMEDIATE) is exclusive, so this count is
    # made under the lock no other booking can pass until we commit.
    if caps is not None:
        refused = await _cap_reached(conn, row, caps)
        if refused is not None:
            raise BookingLimitReached(refused, caps.maximum(refused))
    # The start slot, against uq_bookings_slot_id_not_cancelled. A concurrent writer of the same
    # slot makes this wait for its commit, then come back empty.
    price = select(services.c.price_pence).where(services.c.id == plan.service_id)
    inserted = await conn.scalar(
        insert_ignoring_conflicts(conn, bookings)
        .values({**row, "price_pence": price.scalar_subquery()})
        .returning(bookings.c.id)
    )
    if inserted is None:
        raise SlotUnavailable("database")
    # Every covered slot, against uq_booking_slots_slot_id_active (a drop-off has none).
    if slot_ids:
        claimed = (
            await conn.scalars(
                insert_ignoring_conflicts(conn, booking_slots)
                .values([{"booking_id": row["id"], "slot_id": s, "active": True} for s in slot_ids])
                .returning(booking_slots.c.slot_id)
            )
        ).all()
        if len(claimed) != len(slot_ids):
            raise SlotUnavailable("database")  # rolls back the booking row too
    if row["technician_id"] is not None:  # against uq_technician_claims_… and the day's count
        await claim_technician(
            conn,
            row["id"],
            row["technician_id"],
            plan.skill,
            plan.starts,
            day,
            plan.technician_minutes,
        )
    now = row["created_at"]
    await conn.execute(
        upsert(conn, customers, "email", ["name", "phone", "updated_at"]).values(
            email=row["customer_email"],
            name=row["customer_name"],
            phone=row["customer_phone"],
            updated_at=now,
        )
    )
    vehicle = sqlite.insert(vehicles).values(
        registration=row["vehicle_registration"],
        make=row["vehicle_make"],
        model=row["vehicle_model"],
        updated_at=now,
    )
    # Staff data wins: a public booking only fills in what the car's record lacks.
    mine, theirs = (vehicle.excluded, vehicles.c) if staff else (vehicles.c, vehicle.excluded)
    await conn.execute(
        vehicle.on_conflict_do_update(
            index_elements=["registration"],
            set_={
                "make": func.coalesce(mine.make, theirs.make),
                "model": func.coalesce(mine.model, theirs.model),
                "updated_at": vehicle.excluded.updated_at,
            },
        )
    )
    await enqueue(conn, BOOKING_CONFIRMED, job_payload(row), now=now)
    if reminder is not None:
        await enqueue(conn, BOOKING_REMINDER, job_payload(row), now=now, run_at=reminder)
    await enqueue_event(conn, HOOK_CREATED, row, now)
    if key is not None:
        record = sqlite.insert(idempotency_keys).values(
            key=key.digest,
            request_hash=key.fingerprint,
            booking_id=row["id"],
            response_body=key.response_body,
            created_at=now,
            token_sealed=key.token_sealed,
        )
        stored = await conn.scalar(
            record.on_conflict_do_update(
                index_elements=["key"],
                set_={
                    name: record.excluded[name]
                    for name in (
                        "request_hash",
                        "booking_id",
                        "response_body",
                        "created_at",
                        "token_sealed",
                    )
                },
                where=idempotency_keys.c.created_at < key.expired_before,
            ).returning(idempotency_keys.c.key)
        )
        if stored is None:
            raise _KeyTaken()


async def _cap_reached(conn: AsyncConnection, row: dict[str, Any], caps: Caps) -> str | None:
    """Which cap this booking would pass (the same counts as garagebook_booking_cap on
    PostgreSQL), in one statement."""
    live = and_(bookings.c.status == "confirmed", bookings.c.ends_at > row["created_at"])
    mine = bookings.c.customer_email == row["customer_email"]

    def count(*where: Any) -> Any:
        return select(func.count()).select_from(bookings).where(*where).scalar_subquery()

    counts = (
        await conn.execute(
            select(
                count(mine, live),
                count(bookings.c.vehicle_registration == row["vehicle_registration"], live),
                count(
                    mine,
                    bookings.c.status == "confirmed",
                    bookings.c.starts_at >= caps.day_start,
                    bookings.c.starts_at < caps.day_end,
                ),
            )
        )
    ).one()
    for limit, found in zip(("email", "registration", "email_day"), counts, strict=True):
        if caps.maximum(limit) > 0 and found >= caps.maximum(limit):
            return limit
    return None


_BOOK_POSTGRES = text(BOOK_POSTGRES)


async def _write_booking_postgres(
    conn: AsyncConnection,
    row: dict[str, Any],
    plan: Plan | DropOffPlan,
    key: IdempotencyRecord | None,
    reminder: datetime | None,
    caps: Caps | None,
    staff: bool,
    day: date,
) -> None:
    """The same writes in one statement (bookings/sql.py): one round trip."""
    slot_ids = plan.slot_ids
    result = (
        await conn.execute(
            _BOOK_POSTGRES,
            {
                "id": row["id"],
                "reference": row["reference"],
                "slot_id": row["slot_id"],
                "slot_ids": list(slot_ids),
                "service_id": row["service_id"],
                "minutes": plan.minutes,
                "technician_minutes": plan.technician_minutes,
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
                "webhook_tail": event_tail(HOOK_CREATED, row, row["created_at"]),
                "staff": staff,
                "technician_id": row["technician_id"],
                "starts": list(plan.starts),
                "day": day,
                "garage_version": plan.garage_version,
                "day_start": caps.day_start if caps else None,
                "day_end": caps.day_end if caps else None,
                "max_email": caps.per_email if caps else None,
                "max_registration": caps.per_registration if caps else None,
                "max_day": caps.per_email_per_day if caps else None,
                "idempotency_key": key.digest if key else None,
                "request_hash": key.fingerprint if key else None,
                "response_body": key.response_body if key else None,
                "token_sealed": key.token_sealed if key else None,
                "expired_before": key.expired_before if key else None,
            },
        )
    ).one()
    if result.refused is not None:
        assert caps is not None  # NULL caps never refuse
        raise BookingLimitReached(result.refused, caps.maximum(result.refused))
    if result.booked == 0:  # the setup's reason, if it was one; else the slot was taken
        refuse(
            Rules(result.minutes, result.bay_can, result.notice, len(slot_ids), result.version),
            plan_minutes=plan.minutes,
            starts_at=plan.starts_at,
            now=row["created_at"],
            online=not staff,
            plan_version=plan.garage_version,
            check_version=True,
        )
    if result.booked == 0 or result.claimed != len(slot_ids):
        raise SlotUnavailable("database")
    if row["technician_id"] is not None and (
        result.technician_claimed != len(slot_ids) or result.technician_counted != 1
    ):
        raise TechnicianTaken()
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


async def _find_replay(
    conn: AsyncConnection, settings: Settings, key: str, fingerprint: str
) -> BookingResult | None:
    """The answer to a retry: the booking as it is now, with its manage token unsealed by the
    key (bookings/idempotency.py); 409 once it is no longer confirmed. An expired record is
    no record."""
    row = (
        await conn.execute(
            select(
                idempotency_keys.c.request_hash,
                idempotency_keys.c.booking_id,
                idempotency_keys.c.token_sealed,
            ).where(
                idempotency_keys.c.key == idempotency.key_digest(key),
                idempotency_keys.c.created_at >= idempotency.expired_before(settings, utcnow()),
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != fingerprint:
        raise IdempotencyKeyReused()
    booking = await get_booking(conn, settings, row.booking_id)
    if booking["status"] != "confirmed":
        raise IdempotentBookingClosed(booking["id"], booking["reference"], booking["status"])
    token = idempotency.unseal(row.token_sealed, key) if row.token_sealed else None
    if token is not None:
        booking["cancel_token"] = token
    return BookingResult(orjson.dumps(booking), replayed=True)


def booking_json(
    row: dict[str, Any],
    bay_id: int | None,
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
        "technician_id": row.get("technician_id"),
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


async def claimed_slots(conn: AsyncConnection, booking_id: str) -> tuple[list[int], int | None]:
    """The booking's slots and their bay; none (and no bay) for a drop-off."""
    rows = (
        await conn.execute(
            select(slots.c.id, slots.c.bay_id)
            .join(booking_slots, booking_slots.c.slot_id == slots.c.id)
            .where(booking_slots.c.booking_id == booking_id)
            .order_by(slots.c.starts_at)
        )
    ).all()
    return [r.id for r in rows], rows[0].bay_id if rows else None


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
        day = cancelled["starts_at"].astimezone(settings.timezone).date()
        technician_keys = await release_technician(conn, booking_id, day)
        await enqueue(conn, BOOKING_CANCELLED, job_payload(cancelled), now=now)
        await enqueue_event(conn, HOOK_CANCELLED, cancelled, now)
        await time_freed(conn, day, now)
    if slot_ids or technician_keys:
        await reservations.forget([*slot_ids, *technician_keys])
    return booking_json(cancelled, bay_id, slot_ids, settings)
