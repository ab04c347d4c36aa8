"""Holds: the reservation layer's TTL put to work for people. A customer who picks a time gets
its slots' reservation keys under a hold token while they type their details; a booking that
carries the token is accepted on those keys, anyone else is turned away.

A hold is never the guarantee. With Redis gone a hold is granted without keys (best effort)
and the database's unique indexes still decide when the booking is made.

The token names its slots (`h_<32 random chars>_<slot>-<slot>`), so releasing it needs no
lookup table; the random part makes it unguessable, and the keys hold the whole token, so a
token edited to name other slots matches nothing.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from garagebook.bookings.schemas import HOLD_TOKEN_PATTERN
from garagebook.config import Settings
from garagebook.db import Database
from garagebook.errors import DomainError, ServiceDoesNotFit, SlotInPast, SlotUnavailable
from garagebook.garage.rules import StalePlan, read_rules, refuse
from garagebook.reservations import Outcome, ReservationStore
from garagebook.schema import booking_slots
from garagebook.slots.service import PlanCache
from garagebook.timeutil import utcnow

_RANDOM_CHARS = 32
_HOLD_TOKEN = re.compile(HOLD_TOKEN_PATTERN)


@dataclass(frozen=True)
class Hold:
    token: str
    expires_at: datetime
    slot_ids: tuple[int, ...]


def new_hold_token(slot_ids: tuple[int, ...]) -> str:
    random_part = secrets.token_urlsafe(24)  # 32 characters
    return f"h_{random_part}_{'-'.join(str(s) for s in slot_ids)}"


def slots_of(token: str) -> tuple[int, ...]:
    """The slot ids a well-formed token names; () for anything else."""
    if not _HOLD_TOKEN.fullmatch(token):
        return ()
    return tuple(int(part) for part in token[3 + _RANDOM_CHARS :].split("-"))


async def create_hold(
    db: Database,
    reservations: ReservationStore,
    plans: PlanCache,
    settings: Settings,
    slot_id: int,
    service_id: int,
) -> Hold:
    now = utcnow()
    plan = await plans.get(db, slot_id, service_id)
    if plan.start.starts_at <= now:
        raise SlotInPast(slot_id=slot_id)
    if not plan.fits:
        raise ServiceDoesNotFit()
    token = new_hold_token(plan.slot_ids)
    outcome = await reservations.reserve(plan.slot_ids, token, settings.hold_ttl_seconds * 1000)
    if outcome is Outcome.CONFLICT:
        raise SlotUnavailable("reservation", "Someone else is booking that time right now.")
    # The keys of a booking made minutes ago may have expired: the database knows. So does
    # it know the setup's rules now (garage/rules.py): a hold is for customers, notice applies.
    async with db.read() as conn:
        booked = await conn.scalar(
            select(booking_slots.c.slot_id)
            .where(booking_slots.c.slot_id.in_(plan.slot_ids), booking_slots.c.active)
            .limit(1)
        )
        rules = await read_rules(conn, service_id, plan.slot_ids)
    try:
        if booked is not None:
            raise SlotUnavailable("database")
        refuse(
            rules,
            plan_minutes=int(plan.duration.total_seconds() // 60),
            starts_at=plan.start.starts_at,
            now=now,
            online=True,
            claimed=len(plan.slot_ids),
        )
    except (DomainError, StalePlan) as refused:
        await reservations.release(plan.slot_ids, token)
        if isinstance(refused, StalePlan):
            plans.forget(slot_id, service_id)
            raise SlotUnavailable(
                "database", "That service just changed; please try again."
            ) from None
        raise
    return Hold(token, now + timedelta(seconds=settings.hold_ttl_seconds), plan.slot_ids)


async def release_hold(reservations: ReservationStore, token: str) -> None:
    """Let the held slots go at once (compare-and-delete: only keys still holding `token`)."""
    slot_ids = slots_of(token)
    if slot_ids:
        await reservations.release(slot_ids, token)
