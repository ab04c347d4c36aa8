"""Holds (a time kept for a customer while they type) and the manage/cancel link's token."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from garagebook.app import create_app
from tests.support.api import booking_body, free_slots, service_id_named
from tests.support.processes import free_port
from tests.support.stack import Stack

SQL = Callable[..., Awaitable[list[Any]]]


async def hold(api: httpx.AsyncClient, slot_id: int, service_id: int = 1) -> httpx.Response:
    return await api.post("/api/holds", json={"slot_id": slot_id, "service_id": service_id})


async def test_a_hold_keeps_the_time_for_its_holder_only(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    held = await hold(api, slot["id"])
    assert held.status_code == 201, held.text
    token = held.json()["hold_token"]
    assert held.json()["slot_ids"] == [slot["id"]]
    expires_at = datetime.fromisoformat(held.json()["expires_at"])
    assert timedelta(minutes=4) < expires_at - datetime.now(UTC) <= timedelta(minutes=5)

    assert (await hold(api, slot["id"])).status_code == 409
    stranger = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert stranger.status_code == 409
    assert stranger.json()["error"]["rejected_by"] == "reservation"

    mine = await api.post("/api/bookings", json=booking_body(slot["id"], hold_token=token))
    assert mine.status_code == 201, mine.text
    again = await api.post("/api/bookings", json=booking_body(slot["id"], hold_token=token))
    assert again.status_code == 409  # the hold ended with the booking; the database says no


async def test_releasing_a_hold_frees_the_time_at_once(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    token = (await hold(api, slot["id"])).json()["hold_token"]
    assert (await api.delete(f"/api/holds/{token}")).status_code == 204
    assert (await api.delete(f"/api/holds/{token}")).status_code == 204  # idempotent
    assert (await api.delete("/api/holds/not-a-token")).status_code == 204
    assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201


async def test_an_unused_hold_expires(stack: Stack) -> None:
    app = create_app(stack.settings(hold_ttl_seconds=1))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as api,
    ):
        slot = (await free_slots(api))[0]
        assert (await hold(api, slot["id"])).status_code == 201
        assert (await hold(api, slot["id"])).status_code == 409
        await asyncio.sleep(1.2)
        assert (await hold(api, slot["id"])).status_code == 201


async def test_a_booked_time_cannot_be_held_even_without_its_keys(
    api: httpx.AsyncClient, lose_reservations: Callable[[], Awaitable[None]]
) -> None:
    slot = (await free_slots(api))[0]
    assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201
    await lose_reservations()
    refused = await hold(api, slot["id"])
    assert refused.status_code == 409
    assert refused.json()["error"]["rejected_by"] == "database"
    # …and the refused hold left nothing behind.
    other = (await free_slots(api))[0]
    assert (await hold(api, other["id"])).status_code == 201


async def test_a_long_service_hold_covers_every_slot(api: httpx.AsyncClient) -> None:
    full = await service_id_named(api, "Full service")
    start = (await free_slots(api, service_id=full))[0]
    held = await hold(api, start["id"], full)
    assert held.status_code == 201
    covered = held.json()["slot_ids"]
    assert len(covered) == 3
    for slot_id in covered:
        assert (await api.post("/api/bookings", json=booking_body(slot_id))).status_code == 409
    token = held.json()["hold_token"]
    body = booking_body(start["id"], service_id=full, hold_token=token)
    assert (await api.post("/api/bookings", json=body)).status_code == 201


async def test_many_customers_pick_the_same_time_one_gets_it(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    responses = await asyncio.gather(*(hold(api, slot["id"]) for _ in range(30)))
    assert Counter(r.status_code for r in responses) == {201: 1, 409: 29}


@pytest.mark.parametrize(
    "token", ["h_short_1", "x" * 40, "h_" + "a" * 32 + "_1;DROP", "h_" + "a" * 32 + "_"]
)
async def test_malformed_hold_token_is_422(api: httpx.AsyncClient, token: str) -> None:
    slot = (await free_slots(api))[0]
    response = await api.post("/api/bookings", json=booking_body(slot["id"], hold_token=token))
    assert response.status_code == 422


async def test_hold_on_a_past_or_unknown_slot(api: httpx.AsyncClient) -> None:
    assert (await hold(api, 2_000_000_000)).status_code == 404
    assert (await api.post("/api/holds", json={"slot_id": "1"})).status_code == 422


@pytest.fixture
async def api_with_dead_redis(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack.settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as api,
    ):
        yield api


async def test_holds_are_best_effort_without_redis(api_with_dead_redis: httpx.AsyncClient) -> None:
    api = api_with_dead_redis
    slot = (await free_slots(api))[0]
    held = await hold(api, slot["id"])
    assert held.status_code == 201  # granted without keys
    token = held.json()["hold_token"]
    body = booking_body(slot["id"], hold_token=token)
    assert (await api.post("/api/bookings", json=body)).status_code == 201
    assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 409


async def test_manage_link_reads_and_cancels(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    created = (await api.post("/api/bookings", json=booking_body(slot["id"]))).json()
    token = created["cancel_token"]
    read = await api.get(f"/api/manage/{token}")
    assert read.status_code == 200
    assert read.json()["id"] == created["id"]
    cancelled = await api.post(f"/api/manage/{token}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert (await api.post(f"/api/manage/{token}/cancel")).status_code == 409
    assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201


async def test_guessing_manage_tokens_and_references_finds_nothing(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    created = (await api.post("/api/bookings", json=booking_body(slot["id"]))).json()
    guesses = [secrets.token_urlsafe(24) for _ in range(1000)] + [created["reference"]]
    statuses = Counter(
        [(await api.get(f"/api/manage/{g}")).status_code for g in guesses]
        + [
            (
                await api.get(f"/api/bookings/{g}", headers={"Authorization": f"Bearer {g}"})
            ).status_code
            for g in guesses
        ]
    )
    # A guessed token opens nothing, whether or not the id exists: 403, never the booking.
    assert statuses == {404: len(guesses), 403: len(guesses)}


async def test_an_idempotency_key_does_not_pass_someone_elses_hold(api: httpx.AsyncClient) -> None:
    """Found by the stateful test: a request carrying an Idempotency-Key once went past the
    reservation layer (to let retries pass their own first attempt) and took a held time."""
    slot = (await free_slots(api))[0]
    assert (await hold(api, slot["id"])).status_code == 201
    keyed = await api.post(
        "/api/bookings", json=booking_body(slot["id"]), headers={"Idempotency-Key": "k-1"}
    )
    assert keyed.status_code == 409
    assert keyed.json()["error"]["rejected_by"] == "reservation"


async def test_a_hold_used_for_another_time_ends_too(api: httpx.AsyncClient) -> None:
    """Found by the stateful test: booking another time with a hold's token left the held
    time blocked until the hold expired."""
    first, second = (await free_slots(api))[:2]
    token = (await hold(api, first["id"])).json()["hold_token"]
    body = booking_body(second["id"], hold_token=token)
    assert (await api.post("/api/bookings", json=body)).status_code == 201
    assert (await api.post("/api/bookings", json=booking_body(first["id"]))).status_code == 201


# --- holds that keep a technician (issue 15) --------------------------------------------------


async def test_a_hold_keeps_the_technician_too(stack: Stack, api: httpx.AsyncClient) -> None:
    """Priya is the only MOT tester: a customer holding an MOT on bay 1 keeps her as well, so
    a stranger's MOT at that time on bay 2 is turned away while the hold lasts (without it,
    the holder would lose her between picking the time and confirming); an oil change on bay 3
    still goes to Sam; the holder books with Priya, and the hold ends with the booking."""
    from tests.support.technicians import MOT, OIL, add_technicians, body
    from tests.test_technician_bookings import a_time

    ids = await add_technicians(
        stack.database_url, ("Priya", "mot_tester,general"), ("Sam", "general")
    )
    bay1, bay2, bay3 = await a_time(api)
    held = await hold(api, bay1["id"], MOT)
    assert held.status_code == 201, held.text
    token = held.json()["hold_token"]
    assert token.endswith(f".t{ids['Priya']}")

    stranger = await api.post("/api/bookings", json=body(bay2["id"], MOT, 2))
    assert stranger.status_code == 409, stranger.text
    assert stranger.json()["error"]["rejected_by"] == "reservation"
    assert (await hold(api, bay2["id"], MOT)).status_code == 409
    oil = await api.post("/api/bookings", json=body(bay3["id"], OIL, 3))
    assert oil.status_code == 201, oil.text
    assert oil.json()["technician_id"] == ids["Sam"]

    mine = await api.post("/api/bookings", json={**body(bay1["id"], MOT, 1), "hold_token": token})
    assert mine.status_code == 201, mine.text
    assert mine.json()["technician_id"] == ids["Priya"]
    late = await api.post("/api/bookings", json=body(bay2["id"], MOT, 4))
    assert late.status_code == 409  # Priya is booked now: the database says so


async def test_releasing_a_hold_frees_its_technician_at_once(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    from tests.support.technicians import MOT, add_technicians, body
    from tests.test_technician_bookings import a_time

    ids = await add_technicians(stack.database_url, ("Priya", "mot_tester,general"))
    bay1, bay2, _ = await a_time(api)
    token = (await hold(api, bay1["id"], MOT)).json()["hold_token"]
    assert (await api.delete(f"/api/holds/{token}")).status_code == 204
    other = await api.post("/api/bookings", json=body(bay2["id"], MOT, 2))
    assert other.status_code == 201, other.text
    assert other.json()["technician_id"] == ids["Priya"]


async def test_holds_take_the_next_free_technician_until_none_is_left(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """Two general technicians, three bays: two oil-change holds at one time keep one each,
    the third is turned away though its bay is free."""
    from tests.support.technicians import OIL, add_technicians
    from tests.test_technician_bookings import a_time

    ids = await add_technicians(stack.database_url, ("Sam", "general"), ("Ali", "general"))
    bays = await a_time(api)
    first, second, third = [await hold(api, bay["id"], OIL) for bay in bays]
    assert (first.status_code, second.status_code) == (201, 201), second.text
    kept = {int(r.json()["hold_token"].rsplit(".t", 1)[1]) for r in (first, second)}
    assert kept == set(ids.values())
    assert third.status_code == 409, third.text
