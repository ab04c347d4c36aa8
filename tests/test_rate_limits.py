"""Abuse protection: per-address limits on booking, hold and cancel (429 with Retry-After),
and one client hammering cannot stop another from booking."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from garagebook.app import create_app
from tests.support.api import booking_body, free_slots
from tests.support.stack import Stack

ClientAt = Callable[[str], httpx.AsyncClient]


@asynccontextmanager
async def app_with_limits(stack: Stack, **limits: object) -> AsyncIterator[FastAPI]:
    app = create_app(stack.settings(**limits))
    async with LifespanManager(app) as manager:
        yield manager.app  # type: ignore[misc]


def client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://garagebook.test")


async def test_booking_limit_per_address(stack: Stack) -> None:
    async with (
        app_with_limits(stack, rate_limit_bookings="3/minute") as app,
        client_at(app, "203.0.113.5") as hammer,
        client_at(app, "198.51.100.7") as other,
    ):
        slots = await free_slots(hammer)
        answers = [
            await hammer.post("/api/bookings", json=booking_body(s["id"])) for s in slots[:5]
        ]
        assert [a.status_code for a in answers] == [201, 201, 201, 429, 429]
        refused = answers[-1]
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 61
        # Another customer is not affected.
        mine = await other.post("/api/bookings", json=booking_body(slots[10]["id"]))
        assert mine.status_code == 201


async def test_hold_limits_and_holds_per_client(stack: Stack) -> None:
    async with (
        app_with_limits(stack, max_holds_per_client=2) as app,
        client_at(app, "203.0.113.9") as greedy,
    ):
        slots = await free_slots(greedy)
        statuses = [
            (
                await greedy.post("/api/holds", json={"slot_id": s["id"], "service_id": 1})
            ).status_code
            for s in slots[:4]
        ]
        assert statuses == [201, 201, 429, 429]


async def test_cancel_limit(stack: Stack) -> None:
    async with (
        app_with_limits(stack, rate_limit_cancels="2/minute") as app,
        client_at(app, "203.0.113.10") as client,
    ):
        statuses = Counter(
            [
                (
                    await client.post(
                        f"/api/bookings/guess{i}/cancel",
                        headers={"Authorization": f"Bearer guess{i}"},
                    )
                ).status_code
                for i in range(5)
            ]
        )
        assert statuses == {403: 2, 429: 3}


async def test_the_machine_itself_is_not_limited(stack: Stack) -> None:
    async with (
        app_with_limits(stack, rate_limit_bookings="1/minute") as app,
        client_at(app, "127.0.0.1") as local,
    ):
        slots = await free_slots(local)
        for slot in slots[:3]:
            response = await local.post("/api/bookings", json=booking_body(slot["id"]))
            assert response.status_code == 201
