"""A vehicle's history, its MOT expiry, and marking a booking done. Functions taking a
connection only execute statements; `complete_booking` owns its transaction."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.bookings.schemas import normalise_registration
from garagebook.bookings.service import get_booking
from garagebook.config import Settings
from garagebook.db import Database
from garagebook.errors import (
    AlreadyCancelled,
    BookingNotFound,
    NotCompleted,
    NotDueYet,
    VehicleNotFound,
)
from garagebook.schema import bookings, services, vehicles
from garagebook.timeutil import to_local_iso, utcnow
from garagebook.vehicles.mot import check_expiry, next_mot_expiry
from garagebook.webhooks.events import BOOKING_COMPLETED, enqueue_event

_REGISTRATION_MAX = 16
_BOOKING_ID_MAX = 64


def registration_of(value: str) -> str:
    """A registration as typed or as in a URL (`ab12cde`, `AB12%20CDE`) → the vehicle's key."""
    registration = normalise_registration(value)
    if not registration or len(registration) > _REGISTRATION_MAX:
        raise VehicleNotFound()
    return registration


def local_today(settings: Settings, now: datetime | None = None) -> date:
    """The garage's date: MOT expiries are local dates."""
    return (now or utcnow()).astimezone(settings.timezone).date()


async def vehicle_history(
    conn: AsyncConnection, settings: Settings, registration: str, now: datetime
) -> dict[str, Any]:
    """The vehicle, its bookings (upcoming soonest first, past latest first, cancelled ones
    included with their status) and the services done on it."""
    vehicle = (
        await conn.execute(select(vehicles).where(vehicles.c.registration == registration))
    ).first()
    if vehicle is None:
        raise VehicleNotFound(registration=registration)
    rows = (
        await conn.execute(
            select(
                bookings.c.id,
                bookings.c.reference,
                bookings.c.service_id,
                services.c.name.label("service"),
                bookings.c.starts_at,
                bookings.c.ends_at,
                bookings.c.status,
                bookings.c.completed_at,
                bookings.c.customer_name,
                bookings.c.customer_email,
                bookings.c.mot_expires_on,
            )
            .join_from(bookings, services, services.c.id == bookings.c.service_id)
            .where(bookings.c.vehicle_registration == registration)
            .order_by(bookings.c.starts_at, bookings.c.id)
        )
    ).all()
    zone = settings.timezone

    def shown(row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            "reference": row.reference,
            "service_id": row.service_id,
            "service": row.service,
            "starts_at": to_local_iso(row.starts_at, zone),
            "ends_at": to_local_iso(row.ends_at, zone),
            "status": row.status,
            "completed_at": to_local_iso(row.completed_at, zone) if row.completed_at else None,
            "customer": {"name": row.customer_name, "email": row.customer_email},
            # What this booking's customer said the MOT expiry is (not the car's record).
            "customer_mot_expires_on": _iso(row.mot_expires_on),
        }

    done = sorted((r for r in rows if r.completed_at), key=lambda r: r.completed_at, reverse=True)
    return {
        "registration": vehicle.registration,
        "make": vehicle.make,
        "model": vehicle.model,
        "mot_expires_on": _iso(vehicle.mot_expires_on),
        "mot_reminded_for": _iso(vehicle.mot_reminded_for),
        # By what happened, not only by the clock: a booking marked done is history even
        # when staff marked it before its time.
        "upcoming": [shown(r) for r in rows if _upcoming(r, now)],
        "past": [shown(r) for r in reversed(rows) if not _upcoming(r, now)],
        "services_done": [
            {
                "reference": r.reference,
                "service": r.service,
                "starts_at": to_local_iso(r.starts_at, zone),
                "completed_at": to_local_iso(r.completed_at, zone),
            }
            for r in done
        ],
    }


def _upcoming(row: Any, now: datetime) -> bool:
    return bool(row.starts_at >= now and row.status != "completed")


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


async def set_mot_expiry(
    conn: AsyncConnection, registration: str, expires_on: date, now: datetime, today: date
) -> None:
    """Record the MOT certificate's expiry. A new date also means a new reminder when it comes
    within MOT_REMINDER_DAYS (reminders are once per expiry date, not once per vehicle)."""
    check_expiry(expires_on, today)
    result = await conn.execute(
        update(vehicles)
        .where(vehicles.c.registration == registration)
        .values(mot_expires_on=expires_on, updated_at=now)
    )
    if result.rowcount == 0:
        raise VehicleNotFound(registration=registration)


async def set_customer_mot_expiry(
    conn: AsyncConnection, booking_id: str, expires_on: date, today: date
) -> str:
    """A customer's MOT expiry, given through their manage link: kept on *their booking*, for
    their own reminder, not on the car's record. Anyone can book with any registration, so a
    customer's word must not change what staff recorded for the car, nor whom its reminders
    go to (issue 18, finding 8). Returns the booking's registration."""
    check_expiry(expires_on, today)
    registration = await conn.scalar(
        update(bookings)
        .where(bookings.c.id == booking_id)
        .values(mot_expires_on=expires_on)
        .returning(bookings.c.vehicle_registration)
    )
    if registration is None:
        raise BookingNotFound()
    return str(registration)


async def complete_booking(
    db: Database, settings: Settings, booking_id: str, not_after: date | None = None
) -> dict[str, Any]:
    """Staff mark a booking done: `confirmed` → `completed`, keeping its slots (the unique
    indexes exclude only cancelled bookings). Done again: the same answer, nothing changes.
    A completed MOT renews the vehicle's MOT expiry, in the same transaction.

    The test date is the booking's day, or today if staff mark it done before that day.
    With `not_after` (the staff pages: the garage's today), a booking on a later day is
    refused: marking tomorrow's car done is a slip of the finger, not work done."""
    if len(booking_id) > _BOOKING_ID_MAX:
        raise BookingNotFound()
    now = utcnow()
    async with db.transaction() as conn:
        row = (
            await conn.execute(
                select(
                    bookings.c.status,
                    bookings.c.reference,
                    bookings.c.sequence,
                    bookings.c.starts_at,
                    bookings.c.vehicle_registration,
                    services.c.name.label("service"),
                )
                .join_from(bookings, services, services.c.id == bookings.c.service_id)
                .where(bookings.c.id == booking_id)
                .with_for_update(of=bookings)
            )
        ).first()
        if row is None:
            raise BookingNotFound()
        if row.status == "cancelled":
            raise AlreadyCancelled()
        if row.status == "confirmed" and not_after is not None:
            day = local_today(settings, row.starts_at)
            if day > not_after:
                raise NotDueYet(day=day.isoformat())
        if row.status == "confirmed":
            await conn.execute(
                update(bookings)
                .where(bookings.c.id == booking_id, bookings.c.status == "confirmed")
                .values(status="completed", completed_at=now)
            )
            done = {"id": booking_id, "reference": row.reference, "sequence": row.sequence}
            await enqueue_event(conn, BOOKING_COMPLETED, done, now)
            if row.service == settings.mot_service_name:
                test_date = min(local_today(settings, row.starts_at), local_today(settings, now))
                await _renew_mot(conn, row.vehicle_registration, test_date, now)
        booking = await get_booking(conn, settings, booking_id)
        completed_at, mot_expires_on = (
            await conn.execute(
                select(bookings.c.completed_at, vehicles.c.mot_expires_on)
                .join_from(
                    bookings,
                    vehicles,
                    vehicles.c.registration == bookings.c.vehicle_registration,
                )
                .where(bookings.c.id == booking_id)
            )
        ).one()
    booking["completed_at"] = to_local_iso(completed_at, settings.timezone)
    booking["vehicle"]["mot_expires_on"] = _iso(mot_expires_on)
    return booking


async def _renew_mot(
    conn: AsyncConnection, registration: str, test_date: date, now: datetime
) -> None:
    current = await conn.scalar(
        select(vehicles.c.mot_expires_on)
        .where(vehicles.c.registration == registration)
        .with_for_update()
    )
    await conn.execute(
        update(vehicles)
        .where(vehicles.c.registration == registration)
        .values(mot_expires_on=next_mot_expiry(test_date, current), updated_at=now)
    )


async def undo_complete(db: Database, settings: Settings, booking_id: str) -> dict[str, Any]:
    """Staff take back a "Done": `completed` → `confirmed`, under the same guard as marking it
    (one transaction, the booking row locked, the status checked under the lock), so a
    double click or two staff at once undo it once. The slots never left the booking, so
    nothing can have been booked into them meanwhile. An MOT expiry that the completion
    renewed stays as it is (the previous date is not kept): staff correct it on the vehicle's
    page if it was wrong."""
    if len(booking_id) > _BOOKING_ID_MAX:
        raise BookingNotFound()
    async with db.transaction() as conn:
        status = await conn.scalar(
            select(bookings.c.status).where(bookings.c.id == booking_id).with_for_update()
        )
        if status is None:
            raise BookingNotFound()
        if status != "completed":
            raise NotCompleted(status=status)
        await conn.execute(
            update(bookings)
            .where(bookings.c.id == booking_id, bookings.c.status == "completed")
            .values(status="confirmed", completed_at=None)
        )
        return await get_booking(conn, settings, booking_id)
