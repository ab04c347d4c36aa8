"""What the setup document decides at booking time, read from the database at that moment.

Nothing cached may decide: another process may have applied a new document a millisecond ago.
So every write that claims slots (a booking, a move, a hold's check) reads these rules inside
its own transaction or statement: the service still offered with the minutes the plan was
made with, a bay that `can` what it needs, every claimed slot still open, and the minimum
notice (online only: staff and the admin token are exempt). On PostgreSQL the booking's one
statement computes the same values itself (bookings/sql.py) and `refuse` names the reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.errors import BayNotFound, ServiceNotFound, SlotTooSoon, SlotUnavailable, WrongBay
from garagebook.schema import bays, garage, services, slots


class StalePlan(Exception):
    """The service's minutes, or the setup (which says who the technicians are), changed since
    the plan was cached: plan again (once)."""


@dataclass(frozen=True)
class Rules:
    minutes: int | None  # the service's minutes now; None when it is retired or unknown
    bay_can: bool  # the start slot's bay can what the service needs
    notice_minutes: int
    open_slots: int  # how many of the claimed slots are open
    version: int | None = None  # the setup document's version now


def can(capabilities: str, needs: str) -> bool:
    return needs in capabilities.split(",")


async def require_capable_bay(conn: AsyncConnection, bay_id: int, needs: str) -> None:
    """BayNotFound for a bay that does not exist; WrongBay for one retired or that cannot do
    what a service `needs` (a booking given to a bay, a drop-off placed on one)."""
    capabilities = await conn.scalar(
        select(bays.c.capabilities).where(bays.c.id == bay_id, bays.c.active)
    )
    if capabilities is None:
        if await conn.scalar(select(bays.c.id).where(bays.c.id == bay_id)) is None:
            raise BayNotFound(bay_id=bay_id)
        raise WrongBay()
    if not can(capabilities, needs):
        raise WrongBay()


async def notice_minutes(conn: AsyncConnection) -> int:
    found = await conn.scalar(select(garage.c.min_notice_minutes).where(garage.c.id == 1))
    return int(found or 0)


async def read_rules(conn: AsyncConnection, service_id: int, slot_ids: Sequence[int]) -> Rules:
    """The rules for claiming `slot_ids` (the first is the start) for `service_id`: one query.
    No slots: a drop-off, which takes no bay (any bay `can` it)."""
    service = select(services.c.duration_minutes, services.c.needs).where(
        services.c.id == service_id, services.c.active
    )
    bay = (
        select(bays.c.capabilities)
        .join(slots, slots.c.bay_id == bays.c.id)
        .where(slots.c.id == (slot_ids[0] if slot_ids else None), bays.c.active)
    )
    open_count = (
        select(func.count()).select_from(slots).where(slots.c.id.in_(slot_ids), slots.c.open)
    )
    row = (
        await conn.execute(
            select(
                service.with_only_columns(services.c.duration_minutes).scalar_subquery(),
                service.with_only_columns(services.c.needs).scalar_subquery(),
                bay.scalar_subquery(),
                open_count.scalar_subquery(),
                select(garage.c.min_notice_minutes).where(garage.c.id == 1).scalar_subquery(),
                select(garage.c.version).where(garage.c.id == 1).scalar_subquery(),
            )
        )
    ).one()
    minutes, needs, capabilities, opened, notice, version = row
    return Rules(
        minutes,
        not slot_ids
        or bool(needs is not None and capabilities is not None and can(capabilities, needs)),
        int(notice or 0),
        int(opened),
        version,
    )


def refuse(
    rules: Rules,
    *,
    plan_minutes: int,
    starts_at: datetime,
    now: datetime,
    online: bool,
    claimed: int | None = None,
    plan_version: int | None = None,
    check_version: bool = False,
) -> None:
    """Raise the reason these rules refuse the claim; `claimed` (the slots to claim) also
    checks they are all open; `check_version`, that the plan was made under this setup
    (`plan_version`; None: no document applied yet). Returns when the rules allow it."""
    if rules.minutes is None:
        raise ServiceNotFound()
    if rules.minutes != plan_minutes:
        raise StalePlan()
    if check_version and rules.version != plan_version:
        raise StalePlan()
    if not rules.bay_can:
        raise WrongBay()
    if online and starts_at < now + timedelta(minutes=rules.notice_minutes):
        raise SlotTooSoon(rules.notice_minutes)
    if claimed is not None and rules.open_slots != claimed:
        raise SlotUnavailable("database", "That time is no longer offered.")
