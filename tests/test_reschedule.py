"""Reschedule: one transaction under the same three layers as a booking; the old time stays
booked when the new one is taken; same id, reference and manage link; races with exactly one
winner and the loser's booking untouched (plus a control that drops the indexes)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from garagebook.bookings import reschedule as reschedule_module
from tests.support.api import booking_body, free_slots, service_id_named
from tests.support.stack import ADMIN_TOKEN

SQL = Callable[..., Awaitable[list[Any]]]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def book(api: httpx.AsyncClient, slot_id: int, service_id: int = 1) -> dict[str, Any]:
    response = await api.post("/api/bookings", json=booking_body(slot_id, service_id=service_id))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def move(api: httpx.AsyncClient, token: str, slot_id: int) -> httpx.Response:
    return await api.post(f"/api/manage/{token}/reschedule", json={"slot_id": slot_id})


async def test_reschedule_twice_through_the_manage_link(api: httpx.AsyncClient, sql: SQL) -> None:
    first, second, third = (await free_slots(api))[:3]
    booking = await book(api, first["id"])
    token = booking["cancel_token"]

    moved = await move(api, token, second["id"])
    assert moved.status_code == 200, moved.text
    assert moved.json()["id"] == booking["id"]
    assert moved.json()["reference"] == booking["reference"]
    assert moved.json()["slot_ids"] == [second["id"]]
    assert moved.json()["starts_at"] == second["starts_at"]
    again = await move(api, token, third["id"])
    assert again.status_code == 200

    # The old times are free at once; the link still works; one live claim; two move mails.
    assert (await api.post("/api/bookings", json=booking_body(first["id"]))).status_code == 201
    assert (await api.post("/api/bookings", json=booking_body(second["id"]))).status_code == 201
    assert (await api.get(f"/api/manage/{token}")).json()["slot_ids"] == [third["id"]]
    claims = await sql("SELECT slot_id FROM booking_slots WHERE booking_id = :b", b=booking["id"])
    assert claims == [(third["id"],)]
    assert await sql("SELECT sequence FROM bookings WHERE id = :b", b=booking["id"]) == [(2,)]
    kinds = Counter(k for (k,) in await sql("SELECT kind FROM outbox"))
    assert kinds["booking_rescheduled"] == 2


async def test_reschedule_into_a_taken_time_keeps_the_old_one(api: httpx.AsyncClient) -> None:
    mine, theirs = (await free_slots(api))[:2]
    booking = await book(api, mine["id"])
    await book(api, theirs["id"])
    refused = await move(api, booking["cancel_token"], theirs["id"])
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "slot_unavailable"
    kept = (await api.get(f"/api/bookings/{booking['id']}", headers=AUTH)).json()
    assert kept["slot_ids"] == [mine["id"]]
    assert kept["status"] == "confirmed"


async def test_a_long_service_moves_by_one_hour_onto_its_own_slots(api: httpx.AsyncClient) -> None:
    full = await service_id_named(api, "Full service")
    # An 08:00 start: moved by an hour it still fits before closing (today's first free start
    # after 13:00 does not: this test failed every afternoon).
    start = next(
        s for s in await free_slots(api, service_id=full) if s["starts_at"][11:16] == "08:00"
    )
    booking = await book(api, start["id"], full)
    eight, nine, ten = booking["slot_ids"]
    slots = await free_slots(api)
    eleven = next(s for s in slots if s["bay_id"] == start["bay_id"] and s["id"] == ten + 1)
    moved = await move(api, booking["cancel_token"], nine)
    assert moved.status_code == 200, moved.text
    assert moved.json()["slot_ids"] == [nine, ten, eleven["id"]]
    assert (await api.post("/api/bookings", json=booking_body(eight))).status_code == 201
    assert (await api.post("/api/bookings", json=booking_body(eleven["id"]))).status_code == 409


async def test_reschedule_by_id_needs_the_manage_token_or_the_admin_token(
    api: httpx.AsyncClient,
) -> None:
    first, second, third = (await free_slots(api))[:3]
    booking, other = await book(api, first["id"]), await book(api, third["id"])
    path = f"/api/bookings/{booking['id']}/reschedule"
    assert (await api.post(path, json={"slot_id": second["id"]})).status_code == 401
    # Another booking's manage token does not open this one.
    not_theirs = {"Authorization": f"Bearer {other['cancel_token']}"}
    assert (
        await api.post(path, json={"slot_id": second["id"]}, headers=not_theirs)
    ).status_code == 403
    own = {"Authorization": f"Bearer {booking['cancel_token']}"}
    moved = await api.post(path, json={"slot_id": second["id"]}, headers=own)
    assert moved.status_code == 200, moved.text
    assert moved.json()["slot_ids"] == [second["id"]]
    back = await api.post(path, json={"slot_id": first["id"]}, headers=AUTH)  # staff
    assert back.status_code == 200
    unknown = "/api/bookings/nope/reschedule"
    # A manage token is not told whether another id exists: the same 403 as another booking's.
    assert (await api.post(unknown, json={"slot_id": 1}, headers=own)).status_code == 403
    assert (await api.post(unknown, json={"slot_id": 1}, headers=AUTH)).status_code == 404
    cancelled_first = await api.post(f"/api/bookings/{booking['id']}/cancel", headers=AUTH)
    assert cancelled_first.status_code == 200
    assert (await api.post(path, json={"slot_id": second["id"]}, headers=AUTH)).status_code == 409


async def test_two_customers_reschedule_into_the_same_time(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    a_slot, b_slot, target = (await free_slots(api))[:3]
    a, b = await book(api, a_slot["id"]), await book(api, b_slot["id"])
    answers = await asyncio.gather(
        *(move(api, x["cancel_token"], target["id"]) for x in [a, b] * 5)
    )
    assert Counter(r.status_code for r in answers)[200] >= 1
    live = await sql(
        "SELECT booking_id FROM booking_slots WHERE slot_id = :s AND active", s=target["id"]
    )
    assert len(live) == 1
    winner = live[0][0]
    loser = b if winner == a["id"] else a
    kept = (await api.get(f"/api/bookings/{loser['id']}", headers=AUTH)).json()
    assert kept["slot_ids"] == loser["slot_ids"]  # the loser's original time, untouched


async def test_a_reschedule_races_a_new_booking(api: httpx.AsyncClient, sql: SQL) -> None:
    mine, target = (await free_slots(api))[:2]
    booking = await book(api, mine["id"])
    answers = await asyncio.gather(
        move(api, booking["cancel_token"], target["id"]),
        *(api.post("/api/bookings", json=booking_body(target["id"])) for _ in range(10)),
    )
    winners = [r for r in answers if r.status_code in (200, 201)]
    assert len(winners) == 1
    assert (
        len(await sql("SELECT 1 FROM booking_slots WHERE slot_id = :s AND active", s=target["id"]))
        == 1
    )
    if answers[0].status_code != 200:
        kept = (await api.get(f"/api/bookings/{booking['id']}", headers=AUTH)).json()
        assert kept["slot_ids"] == [mine["id"]]


async def test_a_reschedule_races_a_cancel_of_the_same_booking(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    mine, target = (await free_slots(api))[:2]
    booking = await book(api, mine["id"])
    moved, cancelled = await asyncio.gather(
        move(api, booking["cancel_token"], target["id"]),
        api.post(f"/api/manage/{booking['cancel_token']}/cancel"),
    )
    assert cancelled.status_code == 200
    assert moved.status_code in (200, 409)
    # Whatever the order, the booking ends cancelled and holds no slot.
    assert await sql(
        "SELECT count(*) FROM booking_slots WHERE booking_id = :b AND active", b=booking["id"]
    ) == [(0,)]
    for slot in (mine, target):
        assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201


async def cancel_between_read_and_write(
    app: FastAPI, api: httpx.AsyncClient, booking: dict[str, Any], target: int
) -> httpx.Response:
    """The worst interleaving, made certain: the cancel commits after the move has read the
    booking as confirmed and before the move's transaction (the plan lookup sits between)."""
    plans = app.state.plans
    original = plans.get

    async def get_after_a_cancel(*args: Any) -> Any:
        plans.get = original
        cancelled = await api.post(f"/api/manage/{booking['cancel_token']}/cancel")
        assert cancelled.status_code == 200
        return await original(*args)

    plans.get = get_after_a_cancel
    try:
        return await move(api, booking["cancel_token"], target)
    finally:
        plans.get = original


async def test_a_cancel_that_lands_mid_move_wins_and_the_move_changes_nothing(
    app: FastAPI, api: httpx.AsyncClient, sql: SQL
) -> None:
    mine, target = (await free_slots(api))[:2]
    booking = await book(api, mine["id"])
    moved = await cancel_between_read_and_write(app, api, booking, target["id"])
    assert moved.status_code == 409
    assert moved.json()["error"]["code"] == "already_cancelled"
    assert await sql(
        "SELECT count(*) FROM booking_slots WHERE booking_id = :b AND active", b=booking["id"]
    ) == [(0,)]
    assert (await api.post("/api/bookings", json=booking_body(target["id"]))).status_code == 201


async def test_control_without_the_lock_a_cancelled_booking_keeps_a_slot(
    app: FastAPI, api: httpx.AsyncClient, sql: SQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same interleaving without the in-transaction lock and status check: the move
    "succeeds" for a cancelled booking, whose new claim then blocks the slot for everyone."""

    async def no_check(conn: Any, booking_id: str) -> None:
        return None

    monkeypatch.setattr(reschedule_module, "_lock_confirmed", no_check)
    mine, target = (await free_slots(api))[:2]
    booking = await book(api, mine["id"])
    moved = await cancel_between_read_and_write(app, api, booking, target["id"])
    assert moved.status_code == 200
    assert await sql(
        "SELECT count(*) FROM booking_slots WHERE booking_id = :b AND active", b=booking["id"]
    ) == [(1,)]
    assert (await api.post("/api/bookings", json=booking_body(target["id"]))).status_code == 409
