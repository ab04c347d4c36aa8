"""The race of a closure against bookings of the same time, against real server processes:
N clients book a slot while staff close it, all released at one instant. Exactly one of them
wins, the closure or one booking, never both; with Redis unreachable the database alone
decides. The control drops the claims' unique index in its own database and shows that then
both the closure and a booking win, so the test above can fail."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.api import booking_body
from tests.support.control import database_without
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.test_concurrency import (
    StartServer,
    dead_redis_url,
)

CLIENTS = 30
ROUNDS = 3  # slots raced for, one after the other
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def race(url: str, slot: dict[str, Any]) -> tuple[httpx.Response, list[httpx.Response]]:
    """CLIENTS bookings of `slot` and one closure of it, released together at a gate; the
    closure goes in the middle of the bookings."""
    gate = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS + 1, max_keepalive_connections=CLIENTS + 1)
    closure_body = {
        "bay_id": slot["bay_id"],
        "starts_at": slot["starts_at"],
        "ends_at": slot["ends_at"],
        "reason": "staff closing it",
    }
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def book() -> httpx.Response:
            await gate.wait()
            return await client.post("/api/bookings", json=booking_body(slot["id"]))

        async def close() -> httpx.Response:
            await gate.wait()
            return await client.post("/api/admin/closures", json=closure_body, headers=ADMIN)

        first = [asyncio.create_task(book()) for _ in range(CLIENTS // 2)]
        closing = asyncio.create_task(close())
        rest = [asyncio.create_task(book()) for _ in range(CLIENTS - CLIENTS // 2)]
        await asyncio.sleep(0.05)
        gate.set()
        bookings = await asyncio.gather(*first, *rest)
        return await closing, list(bookings)


async def holders(database_url: str, slot_id: int) -> tuple[int, int]:
    """(live bookings of the slot, active closure claims of it), as the database has them."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            booked = await conn.scalar(
                text(
                    "SELECT count(*) FROM booking_slots bs JOIN bookings b ON b.id = bs.booking_id"
                    " WHERE bs.slot_id = :slot AND bs.active AND b.status <> 'cancelled'"
                ),
                {"slot": slot_id},
            )
            closed = await conn.scalar(
                text(
                    "SELECT count(*) FROM booking_slots"
                    " WHERE slot_id = :slot AND active AND closure_id IS NOT NULL"
                ),
                {"slot": slot_id},
            )
            return int(booked or 0), int(closed or 0)
    finally:
        await engine.dispose()


async def free_slots_of(url: str, count: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url) as client:
        listed = await client.get("/api/slots", params={"available": "true", "limit": count})
    slots: list[dict[str, Any]] = listed.json()
    assert len(slots) == count
    return slots


@pytest.mark.slow
@pytest.mark.parametrize("redis_down", [False, True], ids=["reservations_on", "redis_down"])
async def test_a_closure_and_bookings_race_for_one_slot_and_exactly_one_wins(
    stack: Stack, start_server: StartServer, redis_down: bool
) -> None:
    env = stack.env(REDIS_URL=dead_redis_url()) if redis_down else stack.env()
    server = start_server(env)
    winners: Counter[str] = Counter()
    for slot in await free_slots_of(server.url, ROUNDS):
        closure, bookings = await race(server.url, slot)
        answers = [closure, *bookings]
        assert {a.status_code for a in answers} <= {201, 409}, [
            a.text for a in answers if a.status_code not in (201, 409)
        ]
        booked = sum(b.status_code == 201 for b in bookings)
        closed = int(closure.status_code == 201)
        assert booked + closed == 1, (booked, closure.text)
        assert await holders(stack.database_url, slot["id"]) == (booked, closed)
        winners["closure" if closed else "booking"] += 1
        if redis_down:  # nothing held a key: every refusal was the database's
            refused = [a for a in answers if a.status_code == 409]
            assert {a.json()["error"]["rejected_by"] for a in refused} == {"database"}
    assert sum(winners.values()) == ROUNDS


@pytest.mark.slow
async def test_control_without_the_claims_index_a_closure_and_a_booking_both_win(
    stack: Stack, start_server: StartServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same race on a database without uq_booking_slots_slot_id_active, Redis down: the
    closure and a booking both get 201 and both hold the slot. (The bookings' own index on
    their start slot still keeps it to one booking: only the claims index sees closures.)"""
    url = await database_without(stack, request, tmp_path, "uq_booking_slots_slot_id_active")
    server = start_server(stack.env(DATABASE_URL=url, REDIS_URL=dead_redis_url()))
    [slot] = await free_slots_of(server.url, 1)

    closure, bookings = await race(server.url, slot)

    assert closure.status_code == 201, closure.text
    assert sum(b.status_code == 201 for b in bookings) == 1
    assert await holders(url, slot["id"]) == (1, 1)  # booked twice over: what the index stops
