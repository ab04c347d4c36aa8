"""The race itself, against real server processes: N clients book one slot at the same
instant; exactly one gets 201, the others 409, and the database holds one booking.

The control test at the bottom removes the protection and shows the same test then sees
double bookings, so these tests can fail."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.api import booking_body
from tests.support.control import database_without
from tests.support.processes import ServerProcess as Server
from tests.support.processes import free_port
from tests.support.stack import Stack

CLIENTS = 50
StartServer = Callable[..., Server]


async def fire_at_once(urls: list[str], bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every request waits at a gate, then all are released together (spread over `urls`)."""
    gate = asyncio.Event()
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(i: int, body: dict[str, Any]) -> httpx.Response:
            await gate.wait()
            return await client.post(f"{urls[i % len(urls)]}/api/bookings", json=body)

        tasks = [asyncio.create_task(one(i, body)) for i, body in enumerate(bodies)]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks)


async def first_free_slot(url: str, service_id: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"available": "true", "limit": 1}
    if service_id:
        params["service_id"] = service_id
    async with httpx.AsyncClient() as client:
        slots = (await client.get(f"{url}/api/slots", params=params)).json()
    return slots[0]  # type: ignore[no-any-return]


async def live_bookings(database_url: str) -> list[tuple[Any, ...]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT id, slot_id FROM bookings WHERE status <> 'cancelled'")
            )
            return [tuple(row) for row in rows]
    finally:
        await engine.dispose()


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


MODES = ["reservations_on", "redis_down", "two_processes"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_one_slot_many_clients(stack: Stack, start_server: StartServer, mode: str) -> None:
    if mode == "reservations_on":
        servers = [start_server(stack.env())]
    elif mode == "redis_down":
        servers = [start_server(stack.env(REDIS_URL=dead_redis_url()))]
    else:
        redis_url = stack.redis_url or "redis://127.0.0.1:6379/0"
        servers = [start_server(stack.env(REDIS_URL=redis_url)) for _ in range(2)]
    urls = [s.url for s in servers]
    slot = await first_free_slot(urls[0])

    responses = await fire_at_once(urls, [booking_body(slot["id"])] * CLIENTS)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: CLIENTS - 1}, [
        r.text for r in responses if r.status_code >= 500
    ]
    rejected_by = Counter(
        r.json()["error"]["rejected_by"] for r in responses if r.status_code == 409
    )
    # With Redis (or the in-process store) the winner's keys turn every other request away
    # before the database; with Redis unreachable the unique index does it alone.
    expected_layer = "database" if mode == "redis_down" else "reservation"
    assert rejected_by == {expected_layer: CLIENTS - 1}
    assert await live_bookings(stack.database_url) == [
        (next(r.json()["id"] for r in responses if r.status_code == 201), slot["id"])
    ]
    async with httpx.AsyncClient() as client:
        listed = (await client.get(f"{urls[-1]}/api/slots", params={"limit": 1000})).json()
    assert next(s for s in listed if s["id"] == slot["id"])["available"] is False


@pytest.mark.slow
@pytest.mark.parametrize("redis_down", [False, True], ids=["reservations_on", "redis_down"])
async def test_long_and_short_service_race_for_an_overlapping_hour(
    stack: Stack, start_server: StartServer, redis_down: bool
) -> None:
    """A 3-hour service from 08:00 and 1-hour services at 10:00 on the same bay, many clients
    each, all at once: exactly one booking wins, whichever it is."""
    env = stack.env(REDIS_URL=dead_redis_url()) if redis_down else stack.env()
    server = start_server(env)
    async with httpx.AsyncClient() as client:
        services = (await client.get(f"{server.url}/api/services")).json()
    full = next(s["id"] for s in services if s["name"] == "Full service")
    start = await first_free_slot(server.url, service_id=full)
    async with httpx.AsyncClient() as client:
        day = (
            await client.get(f"{server.url}/api/slots", params={"date": start["starts_at"][:10]})
        ).json()
    run = [
        s for s in day if s["bay_id"] == start["bay_id"] and s["starts_at"] >= start["starts_at"]
    ]
    third_hour = run[2]

    bodies = [booking_body(start["id"], service_id=full), booking_body(third_hour["id"])] * 25
    responses = await fire_at_once([server.url], bodies)

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 49}, [r.text for r in responses if r.status_code >= 500]
    assert len(await live_bookings(stack.database_url)) == 1


@pytest.mark.slow
async def test_control_without_the_unique_indexes_the_race_double_books(
    stack: Stack, start_server: StartServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same races (bookings, and reschedules into one time) on a database whose unique
    indexes were dropped, Redis down: double bookings happen, so the tests above and
    tests/test_reschedule.py would catch a broken protection."""
    url = await database_without(
        stack,
        request,
        tmp_path,
        "uq_bookings_slot_id_not_cancelled",
        "uq_booking_slots_slot_id_active",
    )
    server = start_server(stack.env(DATABASE_URL=url, REDIS_URL=dead_redis_url()))
    slot = await first_free_slot(server.url)

    responses = await fire_at_once([server.url], [booking_body(slot["id"])] * CLIENTS)

    assert Counter(r.status_code for r in responses)[201] > 1
    assert len(await live_bookings(url)) > 1

    # And reschedules: ten bookings moved into one free time at once all "succeed".
    async with httpx.AsyncClient(base_url=server.url) as client:
        free = (await client.get("/api/slots", params={"available": "true", "limit": 11})).json()
        tokens = [
            (await client.post("/api/bookings", json=booking_body(s["id"]))).json()["cancel_token"]
            for s in free[:10]
        ]
        target = free[10]["id"]
        moves = await asyncio.gather(
            *(client.post(f"/api/manage/{t}/reschedule", json={"slot_id": target}) for t in tokens)
        )
    assert Counter(r.status_code for r in moves)[200] > 1
