"""The cancellation waitlist.

A customer who finds no free time for a service on a day joins that day's list. Whenever a
time may have freed up on that day (a cancel, a move, a new slot, an offer running out: see
triggers.py), the `waitlist_match` job runs `match_day`, which, in one transaction:

1. ends the day's offers whose time ran out (the entry `lapsed`; its hold is released);
2. walks the people still waiting, first come first served, and gives each the earliest free
   time their service can be booked at, if any (a bay that can do it and, where the garage
   lists technicians, a qualified one free then): a hold (the reservation layer, like a
   customer's hold on the booking page, the technician's keys with the bay's, for
   WAITLIST_HOLD_MINUTES), an open offer row, the offer mail and the job that ends the offer
   when its time runs out.

A drop-off service has no waitlist: an offer holds a time, and a drop-off day's minutes are
the database's to give (technicians/drop_offs.py).

Never two people for one time: matching is serialized (an advisory lock on PostgreSQL; SQLite's
write transaction is exclusive), times under an open offer count as taken, and the partial
unique indexes on `waitlist_offers` (one open offer per start slot, one per entry) are the
final word, as the booking indexes are for bookings. Accepting goes through the booking path
itself (`bookings.service.book` with the offer's hold token), and marks the offer accepted in
the booking's own transaction, so an offer is accepted exactly when its booking exists.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.bookings.holds import HeldKeys, held_keys, hold_first_free
from garagebook.bookings.schemas import BookingIn, CustomerIn, VehicleIn
from garagebook.bookings.service import BookingResult, book, hash_token, refuse_placeholders
from garagebook.config import Settings
from garagebook.db import Database, insert_ignoring_conflicts
from garagebook.errors import (
    DomainError,
    InvalidRequest,
    OfferAlreadyBooked,
    OfferGone,
    OfferNotFound,
    ServiceNotFound,
    SlotUnavailable,
    WaitlistEntryNotFound,
)
from garagebook.jobs.kinds import WAITLIST_OFFER_EXPIRED, WAITLIST_OFFERED
from garagebook.jobs.queue import enqueue
from garagebook.manage_links import is_signed_link, offer_id_of
from garagebook.reservations import Key, ReservationStore
from garagebook.schema import bays, services, slots, waitlist_entries, waitlist_offers
from garagebook.slots.service import (
    MAX_SLOTS_PER_SERVICE,
    Plan,
    PlanCache,
    Slot,
    cover,
    list_slots,
    local_day_bounds,
    plan_booking,
)
from garagebook.technicians.free import technician_free
from garagebook.timeutil import to_local_iso, utcnow
from garagebook.waitlist.schemas import WaitlistIn
from garagebook.waitlist.triggers import queue_match

WAITING, OFFERED, BOOKED, LAPSED, LEFT = "waiting", "offered", "booked", "lapsed", "left"
OPEN, ACCEPTED, EXPIRED, LOST = "open", "accepted", "expired", "lost"
OFFERED_KIND = WAITLIST_OFFERED
EXPIRY_KIND = WAITLIST_OFFER_EXPIRED
JOIN_DAYS_AHEAD = 90
# pg_advisory_xact_lock key: "garagebook waitlist" (any constant shared by every process).
_MATCH_LOCK = 0x6761726167657761


# --- joining and leaving ---------------------------------------------------------------------


async def join(db: Database, settings: Settings, request: WaitlistIn) -> dict[str, Any]:
    refuse_placeholders(request.customer, settings)  # its offer would book as the public does
    now = utcnow()
    today = now.astimezone(settings.timezone).date()
    if not today <= request.day <= today + timedelta(days=JOIN_DAYS_AHEAD):
        raise InvalidRequest(f"day must be between today and {JOIN_DAYS_AHEAD} days ahead.")
    leave_token = secrets.token_urlsafe(24)
    async with db.transaction() as conn:
        mode = await conn.scalar(select(services.c.mode).where(services.c.id == request.service_id))
        if mode is None:
            raise ServiceNotFound(service_id=request.service_id)
        if mode == "drop_off":  # offers hold times; a drop-off day's minutes are not held
            raise InvalidRequest(
                "There is no waitlist for a drop-off service: choose another day.",
                fields=[{"field": "service_id", "problem": "the service is booked by the day"}],
            )
        entry_id = await conn.scalar(
            insert_ignoring_conflicts(conn, waitlist_entries)
            .values(
                service_id=request.service_id,
                day=request.day,
                customer_email=request.customer.email,
                customer_name=request.customer.name,
                customer_phone=request.customer.phone,
                vehicle_registration=request.vehicle.registration,
                status=WAITING,
                created_at=now,
                leave_token_hash=hash_token(leave_token),
            )
            .returning(waitlist_entries.c.id)
        )
        if entry_id is None:
            raise InvalidRequest(
                "You are already on the waitlist for that service on that day.",
                already_waiting=True,
            )
        # A time may be free already (freed while the customer typed): let matching look.
        await queue_match(conn, request.day, now)
        ahead = await conn.scalar(
            select(func.count()).where(
                waitlist_entries.c.day == request.day,
                waitlist_entries.c.status.in_((WAITING, OFFERED)),
                waitlist_entries.c.id < entry_id,
            )
        )
    return {
        "id": entry_id,
        "service_id": request.service_id,
        "day": request.day.isoformat(),
        "status": WAITING,
        "position": int(ahead or 0) + 1,
        "leave_token": leave_token,
    }


async def leave(db: Database, reservations: ReservationStore, leave_token: str) -> None:
    """Off the list; an open offer ends with it and passes on at once."""
    now = utcnow()
    released: list[tuple[list[Key], str]] = []
    async with db.transaction() as conn:
        entry = (
            await conn.execute(
                update(waitlist_entries)
                .where(
                    waitlist_entries.c.leave_token_hash == hash_token(leave_token),
                    waitlist_entries.c.status.in_((WAITING, OFFERED)),
                )
                .values(status=LEFT)
                .returning(waitlist_entries.c.id, waitlist_entries.c.day)
            )
        ).first()
        if entry is None:
            raise WaitlistEntryNotFound()
        offers = await conn.execute(
            update(waitlist_offers)
            .where(waitlist_offers.c.entry_id == entry.id, waitlist_offers.c.status == OPEN)
            .values(status=EXPIRED, decided_at=now)
            .returning(waitlist_offers.c.hold_token)
        )
        released = [(await held_keys(conn, token), token) for token in offers.scalars()]
        if released:
            await queue_match(conn, entry.day, now)
    for keys, token in released:
        await reservations.release(keys, token)


# --- matching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offered:
    offer_id: int
    entry_id: int
    slot_ids: tuple[int, ...]


async def match_day(
    db: Database, reservations: ReservationStore, settings: Settings, day: date, now: datetime
) -> list[Offered]:
    """End the day's stale offers, then offer free times to the people waiting, in order."""
    hold = timedelta(minutes=settings.waitlist_hold_minutes)
    taken_keys: list[tuple[list[Key], str]] = []
    try:
        async with db.transaction() as conn:
            await _serialize(conn)
            for token in await _end_stale_offers(conn, day, now):
                await reservations.release(await held_keys(conn, token), token)
            waiting = (
                await conn.execute(
                    select(waitlist_entries.c.id, waitlist_entries.c.service_id)
                    .where(waitlist_entries.c.day == day, waitlist_entries.c.status == WAITING)
                    .order_by(waitlist_entries.c.id)
                )
            ).all()
            if not waiting:
                return []
            # Only times that start after the hold would end: an offer must be takeable.
            free = await _FreeTimes.load(conn, day, now + hold, settings)
            made: list[Offered] = []
            for entry in waiting:
                offered = await _offer_first_fit(
                    conn, reservations, settings, entry.id, entry.service_id, free, now
                )
                if offered is not None:
                    taken_keys.append((offered[1].keys, offered[1].token))
                    made.append(offered[0])
            if free.held_elsewhere:
                # A time was held by a customer mid-booking. If they give up, the hold just
                # expires (nothing frees it), so look again once any such hold has run out.
                later = now + timedelta(seconds=settings.hold_ttl_seconds + 1)
                await queue_match(conn, day, now, run_at=later)
            return made
    except BaseException:
        for keys, token in taken_keys:  # rolled back: the holds must not outlive the offers
            await reservations.release(keys, token)
        raise


async def _serialize(conn: AsyncConnection) -> None:
    """One matcher at a time, until this transaction ends (SQLite's BEGIN IMMEDIATE already
    made the transaction exclusive)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_MATCH_LOCK)))


async def _end_stale_offers(conn: AsyncConnection, day: date, now: datetime) -> list[str]:
    """End the day's offers that ran out (their people lapse); their hold tokens, to let go."""
    of_the_day = select(waitlist_entries.c.id).where(waitlist_entries.c.day == day)
    ended = (
        await conn.execute(
            update(waitlist_offers)
            .where(
                waitlist_offers.c.status == OPEN,
                waitlist_offers.c.expires_at <= now,
                waitlist_offers.c.entry_id.in_(of_the_day.scalar_subquery()),
            )
            .values(status=EXPIRED, decided_at=now)
            .returning(waitlist_offers.c.entry_id, waitlist_offers.c.hold_token)
        )
    ).all()
    if ended:
        await conn.execute(
            update(waitlist_entries)
            .where(
                waitlist_entries.c.id.in_([e.entry_id for e in ended]),
                waitlist_entries.c.status == OFFERED,
            )
            .values(status=LAPSED)
        )
    return [e.hold_token for e in ended]


@dataclass
class _FreeTimes:
    """The day's slots, which of them are free (not booked, not under an open offer), and the
    services' durations: enough to find where a service fits, in memory."""

    ordered: list[Slot]
    by_bay: dict[int, list[Slot]]
    free: set[int]
    durations: dict[int, timedelta]
    zone: Any
    bounds: tuple[datetime, datetime]  # the day, in UTC
    not_before: datetime
    held_elsewhere: bool = False  # a fitting time was held in the reservation layer by another
    _bookable: dict[int, set[int]] = field(default_factory=dict)

    @classmethod
    async def load(
        cls, conn: AsyncConnection, day: date, not_before: datetime, settings: Settings
    ) -> _FreeTimes:
        zone = settings.timezone
        start, end = local_day_bounds(day, zone)
        listed = await list_slots(
            conn, start=start, end=end, now=not_before, zone=zone, service_id=None
        )
        offered = await conn.scalars(
            select(waitlist_offers.c.slot_ids)
            .select_from(waitlist_offers.join(slots, slots.c.id == waitlist_offers.c.slot_id))
            .where(
                waitlist_offers.c.status == OPEN,
                slots.c.starts_at >= start,
                slots.c.starts_at < end,
            )
        )
        held = {s for text in offered for s in _slot_ids(text)}
        by_bay: dict[int, list[Slot]] = defaultdict(list)
        for availability in listed:
            by_bay[availability.slot.bay_id].append(availability.slot)
        durations = {
            r.id: timedelta(minutes=r.duration_minutes)
            for r in await conn.execute(select(services.c.id, services.c.duration_minutes))
        }
        return cls(
            ordered=[a.slot for a in listed],
            by_bay=by_bay,
            free={a.slot.id for a in listed if a.available} - held,
            durations=durations,
            zone=zone,
            bounds=(start, end),
            not_before=not_before,
        )

    async def bookable(self, conn: AsyncConnection, service_id: int) -> set[int]:
        """The starts availability offers the service at (a bay that can do it, a qualified
        technician free): only those are worth a hold. Read once per service."""
        if service_id not in self._bookable:
            listed = await list_slots(
                conn,
                start=self.bounds[0],
                end=self.bounds[1],
                now=self.not_before,
                zone=self.zone,
                service_id=service_id,
            )
            self._bookable[service_id] = {a.slot.id for a in listed if a.available}
        return self._bookable[service_id]

    def fits(self, service_id: int) -> list[tuple[Slot, tuple[int, ...]]]:
        """Every start where the service fits on free slots, earliest first."""
        duration = self.durations.get(service_id)
        if duration is None:
            return []
        found = []
        for slot in self.ordered:
            if slot.id not in self.free:
                continue
            bay_slots = self.by_bay[slot.bay_id]
            at = bay_slots.index(slot)
            covered = cover(
                slot, bay_slots[at + 1 : at + MAX_SLOTS_PER_SERVICE], duration, self.zone
            )
            if covered and self.free.issuperset(covered):
                found.append((slot, covered))
        return found


async def _offer_first_fit(
    conn: AsyncConnection,
    reservations: ReservationStore,
    settings: Settings,
    entry_id: int,
    service_id: int,
    free: _FreeTimes,
    now: datetime,
) -> tuple[Offered, HeldKeys] | None:
    """The earliest free time the service can be booked at, held and offered. A time is
    bookable as a booking would plan it: a bay that can do the service and, where the garage
    lists technicians, a qualified one free then, whom the hold keeps too (the offer's
    booking takes them), so an offer is never for a time nobody could do."""
    hold = timedelta(minutes=settings.waitlist_hold_minutes)
    try:
        bookable = await free.bookable(conn, service_id)
    except DomainError:  # the service is gone
        return None
    for start, covered in free.fits(service_id):
        if start.id not in bookable:
            continue
        try:
            plan = await plan_booking(conn, start.id, service_id, settings.timezone)
            if plan.slot_ids != covered:  # the setup changed since the day was read
                continue
            day = plan.starts_at.astimezone(settings.timezone).date()
            held = await _hold(conn, reservations, plan, day, hold)
        except SlotUnavailable as refused:
            if refused.data["rejected_by"] == "reservation":
                free.held_elsewhere = True  # someone is booking or holding it right now
            continue
        except DomainError:  # not a bay for this service, or the service changed
            continue
        # Never shown to anyone: the mail links to a signed offer id (manage_links), so no job
        # or row holds a usable token; the column's unique hash only keeps its old meaning.
        link_token = secrets.token_urlsafe(24)
        offer_id = await conn.scalar(
            insert_ignoring_conflicts(conn, waitlist_offers)
            .values(
                entry_id=entry_id,
                slot_id=start.id,
                slot_ids=",".join(str(s) for s in covered),
                hold_token=held.token,
                token_hash=hash_token(link_token),
                status=OPEN,
                created_at=now,
                expires_at=now + hold,
            )
            .returning(waitlist_offers.c.id)
        )
        if offer_id is None:  # the unique indexes said no: never two open offers for a time
            await reservations.release(held.keys, held.token)
            free.free.difference_update(covered)
            continue
        await conn.execute(
            update(waitlist_entries).where(waitlist_entries.c.id == entry_id).values(status=OFFERED)
        )
        reference = f"waitlist offer {offer_id}"
        mail = {"offer_id": offer_id, "reference": reference}  # the mail signs its own link
        await enqueue(conn, OFFERED_KIND, mail, now=now)
        expiry = {"offer_id": offer_id, "day": day.isoformat(), "reference": reference}
        await enqueue(conn, EXPIRY_KIND, expiry, now=now, run_at=now + hold)
        free.free.difference_update(covered)
        return Offered(offer_id, entry_id, covered), held
    return None


async def _hold(
    conn: AsyncConnection,
    reservations: ReservationStore,
    plan: Plan,
    day: date,
    hold: timedelta,
) -> HeldKeys:
    """A customer's hold (bookings/holds.py), for the person offered the time; the database
    asked in the matching transaction."""

    async def free_in_database(technician: int | None) -> bool:
        return technician is None or await technician_free(
            conn, technician, plan.starts, day, plan.technician_minutes
        )

    hold_ms = int(hold.total_seconds() * 1000)
    return await hold_first_free(reservations, plan, hold_ms, free_in_database)


def _slot_ids(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


# --- the offer, as its link shows it, and taking it up -----------------------------------


@dataclass(frozen=True)
class Offer:
    id: int
    entry_id: int
    status: str
    slot_id: int
    slot_ids: tuple[int, ...]
    hold_token: str
    expires_at: datetime
    starts_at: datetime
    ends_at: datetime
    service_id: int
    service: str
    bay: str
    day: date
    customer_name: str
    customer_email: str
    customer_phone: str | None
    vehicle_registration: str
    booking_id: str | None

    def is_open(self, now: datetime) -> bool:
        return self.status == OPEN and self.expires_at > now

    def as_json(self, settings: Settings, now: datetime) -> dict[str, Any]:
        zone = settings.timezone
        return {
            "status": self.status if self.status != OPEN or self.is_open(now) else EXPIRED,
            "service_id": self.service_id,
            "service": self.service,
            "bay": self.bay,
            "slot_id": self.slot_id,
            "starts_at": to_local_iso(self.starts_at, zone),
            "ends_at": to_local_iso(self.ends_at, zone),
            "expires_at": to_local_iso(self.expires_at, zone),
            "customer": {"name": self.customer_name},
            "vehicle": {"registration": self.vehicle_registration},
        }


async def load_offer(
    conn: AsyncConnection, *, token: str | None = None, offer_id: int | None = None
) -> Offer | None:
    condition = (
        waitlist_offers.c.token_hash == hash_token(token)
        if token is not None
        else waitlist_offers.c.id == offer_id
    )
    row = (
        await conn.execute(
            select(
                waitlist_offers.c.id,
                waitlist_offers.c.entry_id,
                waitlist_offers.c.status,
                waitlist_offers.c.slot_id,
                waitlist_offers.c.slot_ids,
                waitlist_offers.c.hold_token,
                waitlist_offers.c.expires_at,
                slots.c.starts_at,
                waitlist_entries.c.service_id,
                services.c.name.label("service"),
                services.c.duration_minutes,
                bays.c.name.label("bay"),
                waitlist_entries.c.day,
                waitlist_entries.c.customer_name,
                waitlist_entries.c.customer_email,
                waitlist_entries.c.customer_phone,
                waitlist_entries.c.vehicle_registration,
                waitlist_entries.c.booking_id,
            )
            .select_from(
                waitlist_offers.join(
                    waitlist_entries, waitlist_entries.c.id == waitlist_offers.c.entry_id
                )
                .join(slots, slots.c.id == waitlist_offers.c.slot_id)
                .join(bays, bays.c.id == slots.c.bay_id)
                .join(services, services.c.id == waitlist_entries.c.service_id)
            )
            .where(condition)
        )
    ).first()
    if row is None:
        return None
    values = row._asdict()
    minutes = values.pop("duration_minutes")
    values["slot_ids"] = _slot_ids(values["slot_ids"])
    values["ends_at"] = values["starts_at"] + timedelta(minutes=minutes)
    return Offer(**values)


async def offer_for_link(db: Database, token: str, settings: Settings) -> Offer:
    """The offer behind a mail's link: a signed offer id (`manage_links.offer_url`), or the
    plain token of a mail sent before links were signed (stored hashed)."""
    async with db.read() as conn:
        if is_signed_link(token):
            offer_id = offer_id_of(settings, token)
            offer = None if offer_id is None else await load_offer(conn, offer_id=offer_id)
        else:
            offer = await load_offer(conn, token=token)
    if offer is None:
        raise OfferNotFound()
    return offer


async def accept(
    db: Database,
    reservations: ReservationStore,
    plans: PlanCache,
    settings: Settings,
    token: str,
) -> BookingResult:
    """Book the offered time for the person it was offered to: the booking path with the
    offer's hold token, and the offer marked accepted in the booking's transaction (so a
    second click, or a click racing the offer's expiry, books nothing)."""
    offer = await offer_for_link(db, token, settings)
    now = utcnow()
    if offer.status == ACCEPTED:
        raise OfferAlreadyBooked()
    if not offer.is_open(now):
        raise OfferGone()
    request = BookingIn(
        slot_id=offer.slot_id,
        service_id=offer.service_id,
        customer=CustomerIn(
            name=offer.customer_name, email=offer.customer_email, phone=offer.customer_phone
        ),
        vehicle=VehicleIn(registration=offer.vehicle_registration),
        hold_token=offer.hold_token,
    )

    async def take_up(conn: AsyncConnection, booking_id: str) -> None:
        taken = await conn.execute(
            update(waitlist_offers)
            .where(
                waitlist_offers.c.id == offer.id,
                waitlist_offers.c.status == OPEN,
                waitlist_offers.c.expires_at > utcnow(),
            )
            .values(status=ACCEPTED, decided_at=utcnow())
        )
        if taken.rowcount != 1:
            raise OfferGone()  # rolls the booking back
        await conn.execute(
            update(waitlist_entries)
            .where(waitlist_entries.c.id == offer.entry_id)
            .values(status=BOOKED, booking_id=booking_id)
        )

    try:
        return await book(db, reservations, plans, settings, request, None, within=take_up)
    except SlotUnavailable:
        # Booked by someone else after all (the hold is best effort when Redis is down): the
        # person keeps their place and the day is matched again.
        await _offer_lost(db, offer, now)
        raise SlotUnavailable(
            "database", "Sorry: that time was taken after all. You are still on the waitlist."
        ) from None


async def _offer_lost(db: Database, offer: Offer, now: datetime) -> None:
    async with db.transaction() as conn:
        lost = await conn.execute(
            update(waitlist_offers)
            .where(waitlist_offers.c.id == offer.id, waitlist_offers.c.status == OPEN)
            .values(status=LOST, decided_at=now)
        )
        if lost.rowcount == 1:
            await conn.execute(
                update(waitlist_entries)
                .where(
                    waitlist_entries.c.id == offer.entry_id,
                    waitlist_entries.c.status == OFFERED,
                )
                .values(status=WAITING)
            )
            await queue_match(conn, offer.day, now)
