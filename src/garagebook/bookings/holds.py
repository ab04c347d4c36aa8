"""Holds: the reservation layer's TTL put to work for people. A customer who picks a time gets
its slots' reservation keys under a hold token while they type their details; a booking that
carries the token is accepted on those keys, anyone else is turned away.

A hold is never the guarantee. With Redis gone a hold is granted without keys (best effort)
and the database's unique indexes still decide when the booking is made.

The token names its slots (`h_<32 random chars>_<slot>-<slot>`), so releasing it needs no
lookup table; the random part makes it unguessable, and the keys hold the whole token, so a
token edited to name other slots matches nothing.

Where the garage lists technicians, a hold keeps one too (issue 15): the first qualified
technician whose times are free in the reservation layer and in the database, their keys
taken with the bay's under the same token, which then ends `.t<technician id>`. The booking
that carries it tries that technician first (bookings/service.py).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.bookings.schemas import HOLD_TOKEN_PATTERN
from garagebook.config import Settings
from garagebook.db import Database
from garagebook.errors import ServiceDoesNotFit, SlotInPast, SlotUnavailable
from garagebook.garage.rules import StalePlan, read_rules, refuse
from garagebook.reservations import Key, Outcome, ReservationStore, technician_key
from garagebook.schema import booking_slots, slots
from garagebook.slots.service import Plan, PlanCache
from garagebook.technicians.free import technician_free
from garagebook.timeutil import utcnow

_RANDOM_CHARS = 32
_HOLD_TOKEN = re.compile(HOLD_TOKEN_PATTERN)


@dataclass(frozen=True)
class Hold:
    token: str
    expires_at: datetime
    slot_ids: tuple[int, ...]


def new_hold_token(slot_ids: tuple[int, ...], technician_id: int | None = None) -> str:
    random_part = secrets.token_urlsafe(24)  # 32 characters
    technician = "" if technician_id is None else f".t{technician_id}"
    return f"h_{random_part}_{'-'.join(str(s) for s in slot_ids)}{technician}"


def slots_of(token: str) -> tuple[int, ...]:
    """The slot ids a well-formed token names; () for anything else."""
    if not _HOLD_TOKEN.fullmatch(token):
        return ()
    named = token[3 + _RANDOM_CHARS :].split(".t")[0]
    return tuple(int(part) for part in named.split("-"))


def technician_of(token: str) -> int | None:
    """The technician a well-formed token keeps, if it keeps one."""
    if not _HOLD_TOKEN.fullmatch(token) or ".t" not in token[3 + _RANDOM_CHARS :]:
        return None
    return int(token.rsplit(".t", 1)[1])


def technician_keys_of(token: str, starts: Sequence[datetime]) -> list[Key]:
    """The reservation keys a token keeps of its technician at `starts` (its slots' starts)."""
    technician = technician_of(token)
    return [] if technician is None else [technician_key(technician, s) for s in starts]


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

    async def free_in_database(technician: int | None) -> bool:
        return await _free_in_database(db, plan, service_id, technician, now, settings)

    try:
        held = await hold_first_free(
            reservations, plan, settings.hold_ttl_seconds * 1000, free_in_database
        )
    except StalePlan:
        plans.forget(slot_id, service_id)
        raise SlotUnavailable("database", "That service just changed; please try again.") from None
    return Hold(held.token, now + timedelta(seconds=settings.hold_ttl_seconds), plan.slot_ids)


@dataclass(frozen=True)
class HeldKeys:
    token: str
    keys: list[Key]  # the bay's slots and the technician's times, all under `token`


async def hold_first_free(
    reservations: ReservationStore,
    plan: Plan,
    ttl_ms: int,
    free_in_database: Callable[[int | None], Awaitable[bool]],
) -> HeldKeys:
    """The plan's bay slots, and the first of its technicians (best first) whose times are
    free in the reservation layer and then, asked `free_in_database`, in the database: their
    keys taken together under one token. A customer's hold, and a waitlist offer's.

    SlotUnavailable when none is: by the reservation layer when someone else holds every
    choice (they may let go: worth another look later), else by the database. What
    `free_in_database` raises is raised, the keys let go first."""
    choices = plan.technicians.choices if plan.technicians.needed else (None,)
    if not choices:
        raise SlotUnavailable("database", "No technician who can do it works at that time.")
    conflicts = 0
    for choice in choices:
        technician = None if choice is None else choice.technician_id
        token = new_hold_token(plan.slot_ids, technician)
        keys = [*plan.slot_ids, *(choice.keys if choice is not None else ())]
        if await reservations.reserve(keys, token, ttl_ms) is Outcome.CONFLICT:
            conflicts += 1
            continue  # the bay or this technician: the next technician, if any
        try:
            free = await free_in_database(technician)
        except Exception:
            await reservations.release(keys, token)
            raise
        if free:
            return HeldKeys(token, keys)
        # This technician is booked then (their keys had expired): the next.
        await reservations.release(keys, token)
    if conflicts == len(choices):
        raise SlotUnavailable("reservation", "Someone else is booking that time right now.")
    raise SlotUnavailable("database", "No technician who can do it is free then.")


async def _free_in_database(
    db: Database,
    plan: Plan,
    service_id: int,
    technician: int | None,
    now: datetime,
    settings: Settings,
) -> bool:
    """The keys of a booking made minutes ago may have expired: the database knows. So does
    it know the setup's rules now (garage/rules.py): a hold is for customers, notice applies.
    Raises the rules' refusal (or SlotUnavailable: the bay's slots are booked); False when only
    the technician is taken."""
    async with db.read() as conn:
        booked = await conn.scalar(
            select(booking_slots.c.slot_id)
            .where(booking_slots.c.slot_id.in_(plan.slot_ids), booking_slots.c.active)
            .limit(1)
        )
        rules = await read_rules(conn, service_id, plan.slot_ids)
        day = plan.starts_at.astimezone(settings.timezone).date()
        free = technician is None or await technician_free(
            conn, technician, plan.starts, day, plan.technician_minutes
        )
    if booked is not None:
        raise SlotUnavailable("database")
    refuse(
        rules,
        plan_minutes=plan.minutes,
        starts_at=plan.starts_at,
        now=now,
        online=True,
        claimed=len(plan.slot_ids),
    )
    return free


async def held_keys(conn: AsyncConnection, token: str) -> list[Key]:
    """Every key a hold token keeps: its slots, and its technician's at their starts."""
    slot_ids = slots_of(token)
    starts: Sequence[datetime] = ()
    if slot_ids and technician_of(token) is not None:
        starts = (
            await conn.scalars(
                select(slots.c.starts_at)
                .where(slots.c.id.in_(slot_ids))
                .order_by(slots.c.starts_at)
            )
        ).all()
    return [*slot_ids, *technician_keys_of(token, starts)]


async def release_hold(db: Database, reservations: ReservationStore, token: str) -> None:
    """Let the held slots (and technician) go at once (compare-and-delete: only keys still
    holding `token`)."""
    if not slots_of(token):
        return
    async with db.read() as conn:
        keys = await held_keys(conn, token)
    await reservations.release(keys, token)
