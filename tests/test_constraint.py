"""Layer 3 on its own: the partial unique indexes refuse a second live booking of a slot,
whatever code writes it."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.stack import Stack

BOOKING = """
INSERT INTO bookings (id, reference, slot_id, service_id, customer_email, customer_name,
    vehicle_registration, status, starts_at, ends_at, created_at)
SELECT :id, :ref, s.id, 1, 'ada@example.com', 'Ada', 'AB12 CDE', :status,
    s.starts_at, s.ends_at, s.starts_at
FROM slots s WHERE s.id = :slot
"""
PARENTS = [
    "INSERT INTO customers (email, name, updated_at)"
    " VALUES ('ada@example.com', 'Ada', CURRENT_TIMESTAMP)",
    "INSERT INTO vehicles (registration, updated_at) VALUES ('AB12 CDE', CURRENT_TIMESTAMP)",
]


async def insert_booking(stack: Stack, booking_id: str, status: str) -> None:
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.begin() as conn:
            slot = (await conn.execute(text("SELECT min(id) FROM slots"))).scalar_one()
            await conn.execute(
                text(BOOKING), {"id": booking_id, "ref": booking_id, "status": status, "slot": slot}
            )
            for parent in PARENTS:
                await conn.execute(text(parent + " ON CONFLICT DO NOTHING"))
    finally:
        await engine.dispose()


async def test_two_live_bookings_of_one_slot_are_refused(stack: Stack) -> None:
    await insert_booking(stack, "first", "confirmed")
    with pytest.raises(IntegrityError):
        await insert_booking(stack, "second", "confirmed")


async def test_cancelled_bookings_do_not_count(stack: Stack) -> None:
    await insert_booking(stack, "old-1", "cancelled")
    await insert_booking(stack, "old-2", "cancelled")
    await insert_booking(stack, "live", "confirmed")
    with pytest.raises(IntegrityError):
        await insert_booking(stack, "second-live", "confirmed")


async def test_two_active_claims_of_one_slot_are_refused(stack: Stack) -> None:
    await insert_booking(stack, "a", "confirmed")
    await insert_booking(stack, "b", "cancelled")
    engine = create_async_engine(stack.database_url)
    claim = "INSERT INTO booking_slots (booking_id, slot_id, active) VALUES (:b, :s, :active)"
    try:
        async with engine.begin() as conn:
            slot = (await conn.execute(text("SELECT max(id) FROM slots"))).scalar_one()
            await conn.execute(text(claim), {"b": "b", "s": slot, "active": False})
            await conn.execute(text(claim), {"b": "a", "s": slot, "active": True})
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(text(claim), {"b": "b", "s": slot, "active": True})
    finally:
        await engine.dispose()
