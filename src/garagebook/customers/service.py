"""Everything held about one customer (by e-mail address), and erasing it.

What holds a customer's personal data (name, e-mail, phone, notes): `customers`, their
`bookings`, their `waitlist_entries`, the Idempotency-Key records of their bookings (the stored
201 body), and the mails of the drop folder. Outbox payloads name bookings and offers only,
never a person (jobs/queue.py), and stored errors are stripped of addresses (jobs/mail.py).

Erasure keeps the bookings as anonymous rows — the garage's counts, the vehicle's service
history and the slots' claims stay true — with the name replaced by ERASED_NAME, phone and
notes emptied, and the e-mail by a random `erased-…@invalid` address (a customers row of that
address satisfies the foreign key and holds nothing). `.invalid` is a reserved top-level domain:
no mail goes there (`Settings.is_placeholder_address`) and nobody can book with it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.config import Settings
from garagebook.errors import CustomerHasFutureBooking, CustomerNotFound
from garagebook.schema import (
    bays,
    bookings,
    customers,
    idempotency_keys,
    outbox,
    personal_data_audit,
    services,
    slots,
    vehicles,
    waitlist_entries,
    waitlist_offers,
)
from garagebook.timeutil import to_local_iso

ERASED_NAME = "(erased)"
_OPEN_WAITLIST = ("waiting", "offered")


def normalise(email: str) -> str:
    """Addresses are stored lower-cased (bookings/schemas.py); so is what we look up."""
    return email.strip().lower()


def subject_hash(email: str) -> str:
    """Whose data, in the audit: the address's SHA-256, so an erased address does not stay
    behind in its own audit record, while "was X's data exported?" can still be answered by
    whoever knows X."""
    return hashlib.sha256(normalise(email).encode()).hexdigest()


def erased_address() -> str:
    return f"erased-{secrets.token_hex(12)}@invalid"


async def record(
    conn: AsyncConnection,
    action: str,
    *,
    email: str | None,
    actor: str,
    now: datetime,
    detail: str,
) -> None:
    """An audit row, in the transaction of what it records."""
    await conn.execute(
        insert(personal_data_audit).values(
            action=action,
            subject_hash=subject_hash(email) if email is not None else None,
            actor=actor[:100],
            at=now,
            detail=detail,
        )
    )


async def audit_log(conn: AsyncConnection, limit: int = 100) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(
            select(personal_data_audit).order_by(personal_data_audit.c.id.desc()).limit(limit)
        )
    ).all()
    return [
        {
            "id": r.id,
            "action": r.action,
            "subject_hash": r.subject_hash,
            "actor": r.actor,
            "at": r.at.isoformat(),
            "detail": r.detail,
        }
        for r in rows
    ]


# --- export ----------------------------------------------------------------------------------


def _iso(value: datetime | None, settings: Settings) -> str | None:
    return to_local_iso(value, settings.timezone) if value is not None else None


async def export_customer(
    conn: AsyncConnection, settings: Settings, email: str, *, actor: str, now: datetime
) -> dict[str, Any]:
    """Everything held about the customer at `email`, and an audit row saying who asked.
    CustomerNotFound when nothing is."""
    address = normalise(email)
    customer = (await conn.execute(select(customers).where(customers.c.email == address))).first()
    booking_list = await _bookings_of(conn, settings, address)
    entries = await _waitlist_of(conn, settings, address)
    if customer is None and not booking_list and not entries:
        raise CustomerNotFound()
    registrations = sorted(
        {b["vehicle"]["registration"] for b in booking_list}
        | {e["vehicle_registration"] for e in entries}
    )
    vehicle_rows = (
        await conn.execute(select(vehicles).where(vehicles.c.registration.in_(registrations)))
    ).all()
    jobs = await _jobs_about(conn, [b["id"] for b in booking_list], await _offers_of(conn, entries))
    files = mail_files(settings, address)
    await record(
        conn,
        "export",
        email=address,
        actor=actor,
        now=now,
        detail=f"bookings={len(booking_list)} waitlist={len(entries)} mails={len(jobs)}",
    )
    return {
        "email": address,
        "customer": None
        if customer is None
        else {
            "email": customer.email,
            "name": customer.name,
            "phone": customer.phone,
            "updated_at": _iso(customer.updated_at, settings),
        },
        "bookings": booking_list,
        "vehicles": [
            {
                "registration": v.registration,
                "make": v.make,
                "model": v.model,
                "mot_expires_on": v.mot_expires_on.isoformat() if v.mot_expires_on else None,
            }
            for v in vehicle_rows
        ],
        "waitlist_entries": entries,
        "mails": jobs,
        "mail_files": [path.name for path in files],
    }


async def _bookings_of(
    conn: AsyncConnection, settings: Settings, address: str
) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(
            select(bookings, services.c.name.label("service"), bays.c.name.label("bay"))
            .select_from(
                bookings.join(services, services.c.id == bookings.c.service_id)
                .outerjoin(slots, slots.c.id == bookings.c.slot_id)  # none: a drop-off
                .outerjoin(bays, bays.c.id == slots.c.bay_id)
            )
            .where(bookings.c.customer_email == address)
            .order_by(bookings.c.starts_at)
        )
    ).all()
    return [
        {
            "id": r.id,
            "reference": r.reference,
            "status": r.status,
            "service": r.service,
            "bay": r.bay,
            "starts_at": _iso(r.starts_at, settings),
            "ends_at": _iso(r.ends_at, settings),
            "created_at": _iso(r.created_at, settings),
            "cancelled_at": _iso(r.cancelled_at, settings),
            "completed_at": _iso(r.completed_at, settings),
            "customer": {
                "name": r.customer_name,
                "email": r.customer_email,
                "phone": r.customer_phone,
            },
            "vehicle": {
                "registration": r.vehicle_registration,
                "make": r.vehicle_make,
                "model": r.vehicle_model,
                "mot_expires_on": r.mot_expires_on.isoformat() if r.mot_expires_on else None,
            },
            "notes": r.notes,
        }
        for r in rows
    ]


async def _waitlist_of(
    conn: AsyncConnection, settings: Settings, address: str
) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(
            select(waitlist_entries, services.c.name.label("service"))
            .join(services, services.c.id == waitlist_entries.c.service_id)
            .where(waitlist_entries.c.customer_email == address)
            .order_by(waitlist_entries.c.id)
        )
    ).all()
    return [
        {
            "id": r.id,
            "service": r.service,
            "day": r.day.isoformat(),
            "status": r.status,
            "customer_name": r.customer_name,
            "customer_phone": r.customer_phone,
            "vehicle_registration": r.vehicle_registration,
            "booking_id": r.booking_id,
            "created_at": _iso(r.created_at, settings),
        }
        for r in rows
    ]


async def _offers_of(conn: AsyncConnection, entries: list[dict[str, Any]]) -> list[int]:
    if not entries:
        return []
    ids = [e["id"] for e in entries]
    return list(
        await conn.scalars(select(waitlist_offers.c.id).where(waitlist_offers.c.entry_id.in_(ids)))
    )


def _about(booking_ids: list[str], offer_ids: list[int]) -> ColumnElement[bool] | None:
    """Outbox rows about these bookings or offers, by their payload (compact JSON, orjson)."""
    tests = [outbox.c.payload.contains(f'"booking_id":"{i}"') for i in booking_ids]
    for offer in offer_ids:
        tests += [
            outbox.c.payload.contains(f'"offer_id":{offer},'),
            outbox.c.payload.contains(f'"offer_id":{offer}}}'),
        ]
    return or_(*tests) if tests else None


async def _jobs_about(
    conn: AsyncConnection, booking_ids: list[str], offer_ids: list[int]
) -> list[dict[str, Any]]:
    """The mails sent (or to be sent) about them: the outbox jobs of their bookings and offers."""
    about = _about(booking_ids, offer_ids)
    if about is None:
        return []
    rows = (await conn.execute(select(outbox).where(about).order_by(outbox.c.id))).all()
    return [
        {
            "id": r.id,
            "kind": r.kind,
            "status": r.status,
            "attempts": r.attempts,
            "created_at": r.created_at.isoformat(),
            "done_at": r.done_at.isoformat() if r.done_at else None,
        }
        for r in rows
    ]


def mail_files(settings: Settings, address: str) -> list[Path]:
    """Our drop folder's .eml files addressed to (or naming) `address`. SMTP mail left the
    building: it is in the customer's mailbox and the relay's logs, beyond our reach."""
    folder = settings.mail_drop_dir
    if not folder.is_dir():
        return []
    needle = address.encode()
    return sorted(path for path in folder.glob("*.eml") if needle in path.read_bytes().lower())


# --- erasure ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erased:
    bookings: int
    waitlist_entries: int
    idempotency_records: int
    mail_files: int

    def detail(self) -> str:
        return (
            f"bookings={self.bookings} waitlist={self.waitlist_entries} "
            f"idempotency={self.idempotency_records} mail_files={self.mail_files}"
        )


async def erase_customer(
    conn: AsyncConnection, settings: Settings, email: str, *, actor: str, now: datetime
) -> Erased:
    """Erase the customer's personal data everywhere we hold it, in one transaction (the mail
    files go after it commits: `remove_mail_files`). Refused while a confirmed booking of theirs
    is still to come or under way, or a waitlist offer to them is open."""
    address = normalise(email)
    rows = (
        await conn.execute(
            select(
                bookings.c.id,
                bookings.c.reference,
                bookings.c.status,
                bookings.c.starts_at,
                bookings.c.ends_at,
            )
            .where(bookings.c.customer_email == address)
            .order_by(bookings.c.starts_at)
        )
    ).all()
    _refuse_if_to_come(rows, settings, now)
    await _refuse_if_offered(conn, address)
    held = await conn.scalar(select(customers.c.email).where(customers.c.email == address))
    booking_ids = [r.id for r in rows]
    entries = await anonymise(
        conn,
        erased_address(),
        now,
        bookings_where=bookings.c.customer_email == address,
        waitlist_where=waitlist_entries.c.customer_email == address,
    )
    if held is None and not rows and not entries:
        raise CustomerNotFound()
    await conn.execute(delete(customers).where(customers.c.email == address))
    keys = await _forget_idempotency(conn, booking_ids)
    files = len(mail_files(settings, address))
    erased = Erased(len(rows), entries, keys, files)
    await record(conn, "erase", email=address, actor=actor, now=now, detail=erased.detail())
    return erased


def _refuse_if_to_come(rows: Sequence[Any], settings: Settings, now: datetime) -> None:
    for row in rows:
        if row.status == "confirmed" and row.ends_at > now:
            start = to_local_iso(row.starts_at, settings.timezone)
            raise CustomerHasFutureBooking(
                f"This customer has a confirmed booking to come ({row.reference}, {start}): "
                "cancel it, or erase after it is over.",
                booking={
                    "id": row.id,
                    "reference": row.reference,
                    "starts_at": start,
                    "url": f"/api/bookings/{row.id}",
                    "staff_url": f"/staff?date={start[:10]}",
                },
            )


async def _refuse_if_offered(conn: AsyncConnection, address: str) -> None:
    offer = (
        await conn.execute(
            select(waitlist_offers.c.id, waitlist_offers.c.expires_at)
            .join(waitlist_entries, waitlist_entries.c.id == waitlist_offers.c.entry_id)
            .where(waitlist_entries.c.customer_email == address, waitlist_offers.c.status == "open")
        )
    ).first()
    if offer is not None:
        raise CustomerHasFutureBooking(
            "This customer has an open waitlist offer, which they can still take up; "
            "erase after it ends.",
            waitlist_offer={"id": offer.id, "expires_at": offer.expires_at.isoformat()},
        )


async def anonymise(
    conn: AsyncConnection,
    placeholder: str,
    now: datetime,
    *,
    bookings_where: ColumnElement[bool],
    waitlist_where: ColumnElement[bool],
) -> int:
    """Replace the personal data of the bookings and waitlist entries selected with nothing (and
    `placeholder` as their address); the number of waitlist entries. Shared by erasure and the
    retention period, so the two can never erase differently."""
    await conn.execute(
        insert(customers).values(email=placeholder, name=ERASED_NAME, phone=None, updated_at=now)
    )
    await conn.execute(
        update(bookings)
        .where(bookings_where)
        .values(
            customer_email=placeholder,
            customer_name=ERASED_NAME,
            customer_phone=None,
            notes=None,
        )
    )
    changed = await conn.execute(
        update(waitlist_entries)
        .where(waitlist_where)
        .values(
            customer_email=placeholder,
            customer_name=ERASED_NAME,
            customer_phone=None,
            # Nobody to offer a time to any more.
            status=case(
                (waitlist_entries.c.status.in_(_OPEN_WAITLIST), "left"),
                else_=waitlist_entries.c.status,
            ),
        )
    )
    in_use = await conn.scalar(
        select(func.count()).select_from(bookings).where(bookings.c.customer_email == placeholder)
    )
    if not in_use:  # nothing pointed at it: no row of "nobody" is left behind
        await conn.execute(delete(customers).where(customers.c.email == placeholder))
    return int(changed.rowcount or 0)


async def _forget_idempotency(conn: AsyncConnection, booking_ids: list[str]) -> int:
    """A retry's stored 201 carries the name, e-mail and phone: the records go (they would be
    pruned within IDEMPOTENCY_TTL_HOURS anyway)."""
    if not booking_ids:
        return 0
    gone = await conn.execute(
        delete(idempotency_keys).where(idempotency_keys.c.booking_id.in_(booking_ids))
    )
    return int(gone.rowcount or 0)


def remove_mail_files(settings: Settings, email: str) -> int:
    """Delete our drop folder's mails to `email`: after the erasure commits (files are not
    transactional; a failed erasure keeps them)."""
    files = mail_files(settings, normalise(email))
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)
