"""Applying a setup document: stored, reflected into services, bays and the calendar, recorded.

All or nothing: one transaction, under a lock that serialises concurrent applies (PostgreSQL:
a transaction-level advisory lock; SQLite: its write transaction is exclusive already).
Idempotent: a document that says what is stored changes nothing and records nothing.
A change never cancels, moves or deletes a booking: services and bays left out are retired
(`active` false), slots the document no longer offers are closed, and bookings on them are
returned as `outside_hours`. What would silently move future bookings (a new slot length or
time zone) is refused whole, with what to do instead."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Table, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.config import Settings
from garagebook.db import Database
from garagebook.errors import GarageNotSetUp, InvalidGarage, Problem, UnsafeGarageChange
from garagebook.garage.calendar import (
    OutsideHours,
    extend_calendar,
    lock_setup,
    outside_hours,
    sync_calendar,
)
from garagebook.garage.document import WEEKDAYS, GarageDocument, parse_json
from garagebook.schema import bays, bookings, garage, garage_changes, services, technicians
from garagebook.timeutil import utcnow


@dataclass(frozen=True)
class ApplyResult:
    document: GarageDocument
    changes: list[str]  # readable lines; [] when the document was already in force
    outside_hours: list[OutsideHours]


async def current_document(conn: AsyncConnection) -> GarageDocument:
    """The document in force; GarageNotSetUp before the first apply."""
    stored = await _stored(conn)
    if stored is None:
        raise GarageNotSetUp()
    return stored


async def _stored(conn: AsyncConnection) -> GarageDocument | None:
    raw = await conn.scalar(select(garage.c.document).where(garage.c.id == 1))
    return None if raw is None else parse_json(json.loads(raw))


async def apply_document(db: Database, document: GarageDocument, *, actor: str) -> ApplyResult:
    async with db.transaction() as conn:
        return await apply_in(conn, document, actor=actor, now=utcnow())


async def apply_in(
    conn: AsyncConnection, document: GarageDocument, *, actor: str, now: datetime
) -> ApplyResult:
    """The apply inside the caller's transaction (tests and the seed use their own)."""
    await lock_setup(conn)
    old = await _stored(conn)
    if old is not None and old.canonical() == document.canonical():
        return ApplyResult(document, [], await _outside(conn, now))
    regrid = old is not None and old.garage.slot_minutes != document.garage.slot_minutes
    if old is not None:
        await _refuse_unsafe(conn, old, document, now)
    await _refuse_taken_names(conn, document)
    changes = describe_changes(old, document)
    await _reflect_services(conn, document)
    await _reflect_bays(conn, document)
    await _reflect_technicians(conn, document)
    version = await _store(conn, document, now)
    await sync_calendar(conn, document, now, regrid=regrid)
    await conn.execute(
        insert(garage_changes).values(
            version=version, changed_at=now, actor=actor[:100], lines="\n".join(changes)
        )
    )
    return ApplyResult(document, changes, await _outside(conn, now))


async def extend_now(db: Database) -> int:
    """The worker's round: the calendar reaches `book_ahead_days` again (nothing before the
    first apply). Safe in any number of workers at once."""
    async with db.transaction() as conn:
        await lock_setup(conn)
        document = await _stored(conn)
        if document is None:
            return 0
        return await extend_calendar(conn, document, utcnow())


def refuse_other_zone(document: GarageDocument, settings: Settings) -> None:
    """The server shows and reads times in GARAGE_TIMEZONE: a document in another zone would
    lay the calendar in one and show it in the other (a known limit, see README)."""
    if document.garage.timezone != settings.garage_timezone:
        raise InvalidGarage(
            [
                Problem(
                    "garage.timezone",
                    f"this server runs in GARAGE_TIMEZONE={settings.garage_timezone!r}: "
                    "use the same here, or change GARAGE_TIMEZONE",
                )
            ]
        )


async def _outside(conn: AsyncConnection, now: datetime) -> list[OutsideHours]:
    return await outside_hours(conn, now)


async def _refuse_unsafe(
    conn: AsyncConnection, old: GarageDocument, new: GarageDocument, now: datetime
) -> None:
    """A new slot length or time zone re-lays every future time: under future bookings it
    would leave them on a grid that no longer exists, so it waits until there are none."""
    what = [
        f"{name} ({before} → {after})"
        for name, before, after in (
            ("slot_minutes", old.garage.slot_minutes, new.garage.slot_minutes),
            ("timezone", old.garage.timezone, new.garage.timezone),
        )
        if before != after
    ]
    if not what:
        return
    future = await conn.scalar(
        select(exists().where(bookings.c.status == "confirmed", bookings.c.ends_at > now))
    )
    if future:
        raise UnsafeGarageChange(
            f"Cannot change {' and '.join(what)} while future confirmed bookings exist: their "
            "times sit on the current grid. Nothing was changed. Apply the rest of the document "
            "without this change, and make it once the booked days have passed (or after "
            "moving or cancelling those bookings)."
        )


async def _refuse_taken_names(conn: AsyncConnection, document: GarageDocument) -> None:
    """Names stay unique across retired services too (the table says so): a new key with a
    retired (or renamed-from) service's name is a problem to name, not a database error."""
    rows = (await conn.execute(select(services.c.key, services.c.name))).all()
    owner = {r.name: r.key for r in rows}
    problems = [
        Problem(
            f"services[{i}].name",
            f"{s.name!r} is the name of the retired service {owner[s.name]!r}: "
            f"use key {owner[s.name]!r} to bring it back, or another name",
        )
        for i, s in enumerate(document.services)
        if s.name in owner and owner[s.name] != s.key
    ]
    if problems:
        raise InvalidGarage(problems)


async def _reflect_services(conn: AsyncConnection, document: GarageDocument) -> None:
    wanted = {
        service.key: {
            "name": service.name,
            "description": service.description,
            "duration_minutes": service.minutes,
            "price_pence": service.price_pence,
            "needs": service.needs,
            "active": service.active,
            "skill": service.skill,
            "labour_minutes": service.labour_minutes,
            "mode": service.mode,
        }
        for service in document.services
    }
    await _reflect(conn, services, services.c.key, wanted)


async def _reflect_bays(conn: AsyncConnection, document: GarageDocument) -> None:
    wanted = {
        bay.name: {"capabilities": ",".join(bay.can), "active": bay.active} for bay in document.bays
    }
    await _reflect(conn, bays, bays.c.name, wanted)


async def _reflect_technicians(conn: AsyncConnection, document: GarageDocument) -> None:
    """Matched by name; hours stored as the document's JSON, NULL when they are the garage's."""
    wanted = {
        t.name: {
            "skills": ",".join(t.skills),
            "hours": None if t.hours is None else json.dumps(t.hours.model_dump(), sort_keys=True),
            "active": t.active,
        }
        for t in document.technicians
    }
    await _reflect(conn, technicians, technicians.c.name, wanted)


async def _reflect(
    conn: AsyncConnection, table: Table, key: Column[Any], wanted: dict[str, dict[str, Any]]
) -> None:
    """Rows matched by their natural `key`: added or updated to `wanted`; a row the document
    leaves out is retired (active=false), never deleted — bookings still name it."""
    existing = {getattr(r, key.name): r for r in await conn.execute(select(table))}
    for name, values in wanted.items():
        row = existing.get(name)
        if row is None:
            await conn.execute(insert(table).values({key.name: name, **values}))
        elif any(getattr(row, k) != v for k, v in values.items()):
            await conn.execute(update(table).where(table.c.id == row.id).values(**values))
    retired = [row.id for name, row in existing.items() if name not in wanted and row.active]
    if retired:
        await conn.execute(update(table).where(table.c.id.in_(retired)).values(active=False))


async def _store(conn: AsyncConnection, document: GarageDocument, now: datetime) -> int:
    values = {
        "document": document.canonical(),
        "slot_minutes": document.garage.slot_minutes,
        "min_notice_minutes": document.garage.min_notice_minutes,
        "updated_at": now,
    }
    version = await conn.scalar(
        update(garage)
        .where(garage.c.id == 1)
        .values(version=garage.c.version + 1, **values)
        .returning(garage.c.version)
    )
    if version is None:
        await conn.execute(insert(garage).values(id=1, version=1, **values))
        return 1
    return int(version)


# What changed, as lines people read -----------------------------------------------------


def _ranges(document: GarageDocument, day: str) -> str:
    return ", ".join(getattr(document.hours, day)) or "closed"


def describe_changes(old: GarageDocument | None, new: GarageDocument) -> list[str]:
    if old is None:
        return [
            f"garage set up: {len(new.services)} services, {len(new.bays)} bays, "
            f"{new.garage.slot_minutes}-minute slots"
            + (f", {len(new.technicians)} technicians" if new.technicians else "")
        ]
    lines = [
        f"garage.{key}: {before!r} → {after!r}"
        for key, before in old.garage.model_dump().items()
        if (after := getattr(new.garage, key)) != before
    ]
    lines += [
        f"hours.{day}: {_ranges(old, day)} → {_ranges(new, day)}"
        for day in WEEKDAYS
        if _ranges(old, day) != _ranges(new, day)
    ]
    lines += [f"closed: {d} added" for d in sorted(set(new.closed) - set(old.closed))]
    lines += [f"closed: {d} removed" for d in sorted(set(old.closed) - set(new.closed))]
    lines += _describe_items("service", "key", old.services, new.services)
    lines += _describe_items("bay", "name", old.bays, new.bays)
    lines += _describe_items("technician", "name", old.technicians, new.technicians)
    if old.drop_off != new.drop_off:
        lines.append(f"drop_off: {_drop_off(old)} → {_drop_off(new)}")
    return lines


def _drop_off(document: GarageDocument) -> str:
    section = document.drop_off
    if section is None:
        return "none"
    return f"window {section.window}, collect from {section.collect_from}"


def _readable(field: str, value: Any) -> str:
    """A technician's hours read as the week ("the garage's" when not their own)."""
    if field == "hours":
        if value is None:
            return "the garage's"
        return "; ".join(f"{d} {', '.join(r)}" for d, r in value.items() if r) or "no days"
    return repr(value)


def _describe_items(kind: str, ident: str, old: list[Any], new: list[Any]) -> list[str]:
    before = {getattr(item, ident): item.model_dump() for item in old}
    after = {getattr(item, ident): item.model_dump() for item in new}
    lines = [f"{kind} {name!r} added" for name in after if name not in before]
    lines += [f"{kind} {name!r} retired (left out)" for name in before if name not in after]
    for name, values in after.items():
        if name in before:
            lines += [
                f"{kind} {name!r}: {field} {_readable(field, before[name][field])} → "
                f"{_readable(field, value)}"
                for field, value in values.items()
                if before[name][field] != value
            ]
    return lines


async def history(conn: AsyncConnection, limit: int = 100) -> list[dict[str, Any]]:
    """Recorded changes, newest first: who, when, what (lines)."""
    rows = await conn.execute(
        select(garage_changes).order_by(garage_changes.c.id.desc()).limit(limit)
    )
    return [
        {
            "version": r.version,
            "changed_at": r.changed_at,
            "actor": r.actor,
            "changes": r.lines.split("\n") if r.lines else [],
        }
        for r in rows
    ]
