"""Idempotency-Key: a retry gets the original 201, never a 409 and never a second booking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx

from tests.support.api import booking_body, free_slots, wait_until
from tests.support.mail import mail_settings, running_app
from tests.support.stack import Stack

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


async def test_retry_after_cancel_says_so_and_books_nothing(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    """Issue 18, finding 7: a replay after cancel used to answer 201 "confirmed", with the
    manage token. Now: 409 `idempotent_booking_closed`, naming the booking and its status."""
    slot = (await free_slots(api))[0]
    headers = {"Idempotency-Key": "retry-after-cancel"}
    first = await api.post("/api/bookings", json=booking_body(slot["id"]), headers=headers)
    token = first.json()["cancel_token"]
    cancel = await api.post(
        f"/api/bookings/{first.json()['id']}/cancel", headers={"Authorization": f"Bearer {token}"}
    )
    assert cancel.status_code == 200
    again = await api.post("/api/bookings", json=booking_body(slot["id"]), headers=headers)
    assert again.status_code == 409, again.text
    error = again.json()["error"]
    assert error["code"] == "idempotent_booking_closed"
    assert error["booking_id"] == first.json()["id"]
    assert error["reference"] == first.json()["reference"]
    assert error["status"] == "cancelled"
    assert token not in again.text
    assert await sql("SELECT status FROM bookings") == [("cancelled",)]


async def test_retry_after_a_move_answers_the_booking_as_it_is_now(
    api: httpx.AsyncClient,
) -> None:
    first_slot, second_slot = (await free_slots(api))[:2]
    headers = {"Idempotency-Key": "retry-after-move"}
    body = booking_body(first_slot["id"])
    first = (await api.post("/api/bookings", json=body, headers=headers)).json()
    moved = await api.post(
        f"/api/bookings/{first['id']}/reschedule",
        json={"slot_id": second_slot["id"]},
        headers={"Authorization": f"Bearer {first['cancel_token']}"},
    )
    assert moved.status_code == 200, moved.text
    again = await api.post("/api/bookings", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first["id"]
    assert again.json()["slot_id"] == second_slot["id"]  # where it is now, not where it was
    assert again.json()["starts_at"] == second_slot["starts_at"]
    assert again.json()["cancel_token"] == first["cancel_token"]  # the client's retry gets it


async def test_no_token_or_key_is_stored_in_plain_text(api: httpx.AsyncClient, sql: SQL) -> None:
    """Issue 18, finding 7: `idempotency_keys.response_body` kept the manage token."""
    slot = (await free_slots(api))[0]
    key = "9f1c2d3e-plain-text-check"
    first = await api.post(
        "/api/bookings", json=booking_body(slot["id"]), headers={"Idempotency-Key": key}
    )
    token = first.json()["cancel_token"]
    stored = str(await sql("SELECT * FROM idempotency_keys"))
    assert token not in stored
    assert key not in stored
    assert first.json()["id"] in stored  # the record is there, naming its booking
    again = await api.post(
        "/api/bookings", json=booking_body(slot["id"]), headers={"Idempotency-Key": key}
    )
    assert again.json()["cancel_token"] == token  # unsealed with the key the client sent


async def test_records_expire(app: Any, api: httpx.AsyncClient, sql: SQL) -> None:
    """After IDEMPOTENCY_TTL_HOURS a key is forgotten: not replayed, free for a new booking,
    and the worker's pruning deletes the record."""
    from garagebook.bookings.idempotency import prune
    from garagebook.timeutil import utcnow

    slots = await free_slots(api)
    headers = {"Idempotency-Key": "old-key"}
    first = await api.post("/api/bookings", json=booking_body(slots[0]["id"]), headers=headers)
    assert first.status_code == 201
    await sql("UPDATE idempotency_keys SET created_at = :t", t=utcnow() - timedelta(hours=25))
    # The same key with another body is a new request now, not a reused key.
    fresh = await api.post("/api/bookings", json=booking_body(slots[1]["id"]), headers=headers)
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["id"] != first.json()["id"]
    assert fresh.headers.get("Idempotent-Replayed") is None
    assert await sql("SELECT count(*) FROM idempotency_keys") == [(1,)]
    await sql("UPDATE idempotency_keys SET created_at = :t", t=utcnow() - timedelta(hours=25))
    async with app.state.db.transaction() as conn:
        assert await prune(conn, app.state.settings, utcnow()) == 1
    assert await sql("SELECT count(*) FROM idempotency_keys") == [(0,)]


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


async def test_the_worker_prunes_expired_records(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    from garagebook.timeutil import utcnow

    slots = await free_slots(api)
    for i, slot in enumerate(slots[:2]):
        answer = await api.post(
            "/api/bookings", json=booking_body(slot["id"]), headers={"Idempotency-Key": f"k{i}"}
        )
        assert answer.status_code == 201
    await sql(
        "UPDATE idempotency_keys SET created_at = :t WHERE booking_id = :b",
        t=utcnow() - timedelta(hours=25),
        b=answer.json()["id"],
    )

    async def pruned() -> bool:
        return await sql("SELECT count(*) FROM idempotency_keys") == [(1,)]

    async with running_app(mail_settings(stack, None)):  # the embedded worker prunes at start
        await wait_until(pruned, 10, "the expired record pruned")
    [(kept,)] = await sql("SELECT booking_id FROM idempotency_keys")
    assert kept != answer.json()["id"]  # the fresh record stays
