"""Requests to the HTTP API that many tests make (a booking's body, the free slots, booking
as someone, opening a slot as staff), and waiting for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any

import httpx

from tests.support.stack import ADMIN_TOKEN


def booking_body(slot_id: int, service_id: int = 1, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "slot_id": slot_id,
        "service_id": service_id,
        "customer": {
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+44 7700 900123",
        },
        "vehicle": {"registration": "AB12 CDE", "make": "Ford", "model": "Focus"},
        "notes": "rattle from the front left",
    }
    body.update(overrides)
    return body


async def free_slots(
    client: httpx.AsyncClient, service_id: int | None = None
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"available": "true", "limit": 1000}
    if service_id is not None:
        params["service_id"] = service_id
    response = await client.get("/api/slots", params=params)
    assert response.status_code == 200, response.text
    slots: list[dict[str, Any]] = response.json()
    assert slots, "the demo garage has free slots"
    return slots


async def free_slots_ahead(
    client: httpx.AsyncClient, days: int = 2, service_id: int | None = None
) -> list[dict[str, Any]]:
    """Free slots of the first open day at least `days` local days ahead: whatever the time of
    day the test runs at, their bookings get a reminder job (more than 24 hours ahead) and
    none of them starts while it runs."""
    first = (date.today() + timedelta(days=days)).isoformat()
    ahead = [s for s in await free_slots(client, service_id) if s["starts_at"][:10] >= first]
    assert ahead, "the demo garage has free slots that far ahead"
    day = ahead[0]["starts_at"][:10]
    return [s for s in ahead if s["starts_at"][:10] == day]


async def service_id_named(client: httpx.AsyncClient, name: str) -> int:
    services = (await client.get("/api/services")).json()
    return next(s["id"] for s in services if s["name"] == name)


def in_future(hours: int) -> datetime:
    return datetime.now().astimezone() + timedelta(hours=hours)


async def book_slots(
    client: httpx.AsyncClient, slots: list[dict[str, Any]], parallel: int = 8, **body: Any
) -> list[dict[str, Any]]:
    """Book each slot (a 1-hour service), `parallel` requests at a time, each for its own
    customer (`customer{i}@example.com`); all must be 201."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int, slot: dict[str, Any]) -> dict[str, Any]:
        request = booking_body(slot["id"], **body)
        request["customer"] = {**request["customer"], "email": f"customer{i}@example.com"}
        async with gate:
            response = await client.post("/api/bookings", json=request)
        assert response.status_code == 201, response.text
        booking: dict[str, Any] = response.json()
        return booking

    return list(await asyncio.gather(*(one(i, slot) for i, slot in enumerate(slots))))


async def open_admin_slot(
    client: httpx.AsyncClient, starts_at: datetime | str, bay_id: int = 1
) -> int:
    """A one-hour slot opened through the admin API (staff opening an extra time)."""
    start = datetime.fromisoformat(starts_at) if isinstance(starts_at, str) else starts_at
    response = await client.post(
        "/api/admin/slots",
        json={
            "bay_id": bay_id,
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=1)).isoformat(),
        },
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 201, response.text
    slot_id: int = response.json()["id"]
    return slot_id


async def book_as(client: httpx.AsyncClient, slot_id: int, email: str) -> dict[str, Any]:
    """Book `slot_id` (service 1) for the customer at `email`; asserts the 201."""
    body = booking_body(slot_id)
    body["customer"] = {**body["customer"], "email": email}
    response = await client.post("/api/bookings", json=body)
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)
