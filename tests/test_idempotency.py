"""Idempotency-Key: a retry gets the original 201, never a 409 and never a second booking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tests.conftest import booking_body, free_slots

SQL = Callable[..., Awaitable[list[Any]]]


async def test_sequential_retry_replays_the_original(api: httpx.AsyncClient, sql: SQL) -> None:
    slot = (await free_slots(api))[0]
    headers = {"Idempotency-Key": "retry-1"}
    first = await api.post("/api/bookings", json=booking_body(slot["id"]), headers=headers)
    assert first.status_code == 201
    for _ in range(3):
        again = await api.post("/api/bookings", json=booking_body(slot["id"]), headers=headers)
        assert again.status_code == 201
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
    assert await sql("SELECT count(*) FROM bookings") == [(1,)]
    assert await sql("SELECT count(*) FROM outbox WHERE kind <> 'booking_reminder'") == [(1,)]


async def test_retry_after_cancel_still_replays_and_books_nothing(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    slot = (await free_slots(api))[0]
    headers = {"Idempotency-Key": "retry-after-cancel"}
    first = await api.post("/api/bookings", json=booking_body(slot["id"]), headers=headers)
    await api.post(f"/api/bookings/{first.json()['id']}/cancel")
    again = await api.post("/api/bookings", json=booking_body(slot["id"]), headers=headers)
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert await sql("SELECT status FROM bookings") == [("cancelled",)]


async def test_same_key_other_body_is_422(api: httpx.AsyncClient, sql: SQL) -> None:
    slots = await free_slots(api)
    headers = {"Idempotency-Key": "reused"}
    first = await api.post("/api/bookings", json=booking_body(slots[0]["id"]), headers=headers)
    assert first.status_code == 201
    other = await api.post("/api/bookings", json=booking_body(slots[1]["id"]), headers=headers)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await sql("SELECT count(*) FROM bookings") == [(1,)]
    # The refused request released what it reserved: the other slot is free.
    assert (await api.post("/api/bookings", json=booking_body(slots[1]["id"]))).status_code == 201


async def test_concurrent_retries_make_one_booking(api: httpx.AsyncClient, sql: SQL) -> None:
    slot = (await free_slots(api))[0]
    headers = {"Idempotency-Key": "storm"}
    responses = await asyncio.gather(
        *(
            api.post("/api/bookings", json=booking_body(slot["id"]), headers=headers)
            for _ in range(20)
        )
    )
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len({r.content for r in responses}) == 1
    assert await sql("SELECT count(*) FROM bookings") == [(1,)]
    assert await sql("SELECT count(*) FROM idempotency_keys") == [(1,)]


async def test_concurrent_same_key_different_slots_make_one_booking(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    """A client bug: one key reused at once for different slots. One wins, the rest are 422."""
    slots = (await free_slots(api))[:10]
    headers = {"Idempotency-Key": "clash"}
    responses = await asyncio.gather(
        *(api.post("/api/bookings", json=booking_body(s["id"]), headers=headers) for s in slots)
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] + [422] * 9, [r.text for r in responses]
    assert await sql("SELECT count(*) FROM bookings") == [(1,)]


async def test_bad_idempotency_key_is_422(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    for key in ("x" * 256, "has space", "tab\there"):
        response = await api.post(
            "/api/bookings", json=booking_body(slot["id"]), headers={"Idempotency-Key": key}
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"
