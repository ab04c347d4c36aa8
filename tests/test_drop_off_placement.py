"""Placing a drop-off on a bay (issue 15): staff give a car left for the day a bay and a time
of that day, `POST /api/admin/bookings/{id}/reassign` `{"bay_id", "starts_at"}`. It claims
the bay's slots for its labour minutes and its technician's slots at those times, under the
indexes that keep every timed booking's bay and technician (uq_booking_slots_slot_id_active,
uq_technician_claims_technician_slot_id_active); its minutes stay counted once. Both stacks.

The garage: the demo garage (three general bays, 60-minute slots, 08:00-17:00) with Sam and
Ali (general) and a drop-off service, window 08:00-09:30, collection 16:30."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.schema import booking_slots, bookings, technician_claims
from tests.support.control import app_without
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.support.technicians import (
    LABOUR,
    OIL,
    a_day,
    add_drop_off_service,
    add_technicians,
    body,
    drop_off,
)
from tests.test_drop_off_moves import working_days
from tests.test_drop_offs import at, day_counts

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def free_on_bay(api: httpx.AsyncClient, day: date, bay_id: int) -> list[str]:
    """The local start times ("10:00") of the bay's free slots on `day`."""
    listed = (
        await api.get("/api/slots", params={"available": "true", "date": day.isoformat()})
    ).json()
    return sorted(s["starts_at"][11:16] for s in listed if s["bay_id"] == bay_id)


async def slot_at(api: httpx.AsyncClient, day: date, bay_id: int, clock: str) -> int:
    listed = (await api.get("/api/slots", params={"date": day.isoformat()})).json()
    return next(s["id"] for s in listed if s["bay_id"] == bay_id and s["starts_at"][11:16] == clock)


async def place(
    api: httpx.AsyncClient, booking_id: str, bay_id: int, starts_at: str, **more: Any
) -> httpx.Response:
    return await api.post(
        f"/api/admin/bookings/{booking_id}/reassign",
        json={"bay_id": bay_id, "starts_at": starts_at, **more},
        headers=ADMIN,
    )


async def claims_of(url: str, booking_id: str) -> tuple[int, int]:
    """The booking's active claims: (bay slots, technician slots)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            bay = await conn.scalar(
                select(func.count())
                .select_from(booking_slots)
                .where(booking_slots.c.booking_id == booking_id, booking_slots.c.active)
            )
            staff = await conn.scalar(
                select(func.count())
                .select_from(technician_claims)
                .where(technician_claims.c.booking_id == booking_id, technician_claims.c.active)
            )
    finally:
        await engine.dispose()
    return int(bay or 0), int(staff or 0)


async def test_staff_place_a_drop_off_on_a_bay_for_its_labour_time(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    left = (await api.post("/api/bookings", json=drop_off(service, day))).json()
    bay = 1

    placed = await place(api, left["id"], bay, at(day, 10))

    assert placed.status_code == 200, placed.text
    shown = placed.json()
    assert shown["bay_id"] == bay
    assert shown["slot_id"] is None  # still a drop-off: its times are the customer's
    assert [shown["starts_at"], shown["ends_at"]] == [at(day, 8), at(day, 16, 30)]
    assert len(shown["slot_ids"]) == LABOUR // 60
    assert shown["technician_id"] == ids["Sam"]
    assert "10:00" not in await free_on_bay(api, day, bay)
    assert "13:00" not in await free_on_bay(api, day, bay)
    assert "14:00" in await free_on_bay(api, day, bay)
    assert await claims_of(stack.database_url, left["id"]) == (4, 4)
    # Its minutes were counted when it was booked, and are not counted again.
    assert (await day_counts(stack.database_url, day))[ids["Sam"]][:2] == (LABOUR, LABOUR)

    # Sam, the only technician, works on it 10:00-14:00: no oil change then, on any bay.
    other_bay = await api.post("/api/bookings", json=body(await slot_at(api, day, 2, "11:00")))
    assert other_bay.status_code == 409, other_bay.text
    later = await api.post("/api/bookings", json=body(await slot_at(api, day, 2, "14:00"), OIL, 1))
    assert later.status_code == 201, later.text

    # Placed again where Sam is busy at 14:00: refused, and it stays where it was.
    clash = await place(api, left["id"], bay, at(day, 11))
    assert clash.status_code == 409, clash.text
    assert await claims_of(stack.database_url, left["id"]) == (4, 4)
    assert "10:00" not in await free_on_bay(api, day, bay)
    # Placed past collection, or before the car is brought in: refused the same way.
    for late in (at(day, 13), at(day, 7)):
        outside = await place(api, left["id"], bay, late)
        assert outside.status_code == 422, outside.text
    # Placed again where Sam and the bay are free: the old time is free again.
    moved = await place(api, left["id"], 3, at(day, 8))
    assert moved.status_code == 200, moved.text
    assert moved.json()["bay_id"] == 3
    assert "10:00" in await free_on_bay(api, day, bay)
    assert "08:00" not in await free_on_bay(api, day, 3)

    token = {"Authorization": f"Bearer {left['cancel_token']}"}
    assert (await api.post(f"/api/bookings/{left['id']}/cancel", headers=token)).status_code == 200
    assert "08:00" in await free_on_bay(api, day, 3)
    assert await claims_of(stack.database_url, left["id"]) == (0, 0)
    assert (await day_counts(stack.database_url, day))[ids["Sam"]][:2] == (60, 60)


async def test_a_placed_drop_off_keeps_its_bay_time_with_another_technician_and_leaves_it_on_a_move(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    ids = await add_technicians(stack.database_url, ("Sam", "general"), ("Ali", "general"))
    service = await add_drop_off_service(stack.database_url)
    day, next_day = working_days(2)
    left = (await api.post("/api/bookings", json=drop_off(service, day))).json()
    other = ids["Ali"] if left["technician_id"] == ids["Sam"] else ids["Sam"]
    assert (await place(api, left["id"], 2, at(day, 9))).status_code == 200

    handed = await api.post(
        f"/api/admin/bookings/{left['id']}/reassign", json={"technician_id": other}, headers=ADMIN
    )

    assert handed.status_code == 200, handed.text
    assert handed.json()["technician_id"] == other
    assert handed.json()["bay_id"] == 2
    assert await claims_of(stack.database_url, left["id"]) == (4, 4)
    counts = await day_counts(stack.database_url, day)
    assert counts[other][:2] == (LABOUR, LABOUR)
    assert counts[left["technician_id"]][:2] == (0, 0)

    # To another day: the bay and its technician's hours on the old day are given back.
    moved = await api.post(
        f"/api/bookings/{left['id']}/reschedule", json={"day": next_day.isoformat()}, headers=ADMIN
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["bay_id"] is None
    assert await claims_of(stack.database_url, left["id"]) == (0, 0)
    assert "09:00" in await free_on_bay(api, day, 2)


async def test_a_timed_booking_cannot_be_placed_and_a_drop_off_needs_bay_and_time(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    timed = (await api.post("/api/bookings", json=body(await slot_at(api, day, 1, "10:00")))).json()
    left = (await api.post("/api/bookings", json=drop_off(service, day, 1))).json()

    for booking, answer in (
        (timed, await place(api, timed["id"], 2, at(day, 12))),
        (
            left,
            await api.post(
                f"/api/admin/bookings/{left['id']}/reassign", json={"bay_id": 2}, headers=ADMIN
            ),
        ),
        (left, await place(api, left["id"], 99, at(day, 11))),
    ):
        assert answer.status_code in (404, 422), answer.text
        assert await claims_of(stack.database_url, booking["id"]) == (
            (1, 1) if booking is timed else (0, 0)
        )


# --- the race: a placement and a new booking for the same bay slot --------------------------

ROUNDS = 8  # each round a 60-minute drop-off and an hour's oil change: 16 of Sam and Ali's 18


async def bay_holders(url: str, slot_id: int) -> int:
    """Live bookings actively claiming the bay slot."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(booking_slots)
                .join(bookings, bookings.c.id == booking_slots.c.booking_id)
                .where(
                    booking_slots.c.slot_id == slot_id,
                    booking_slots.c.active,
                    bookings.c.status != "cancelled",
                )
            )
    finally:
        await engine.dispose()
    return int(count or 0)


async def race_round(
    api: httpx.AsyncClient, service: int, ali: int, day: date, bay: int, clock: str, i: int
) -> tuple[httpx.Response, httpx.Response, int]:
    """A drop-off given to Ali, then its placement on `bay` at `clock` and an oil change of
    that bay slot (which takes Sam: fewer skills) fired at once; the slot's id."""
    left = (await api.post("/api/bookings", json=drop_off(service, day, 100 + i))).json()
    handed = await api.post(
        f"/api/admin/bookings/{left['id']}/reassign", json={"technician_id": ali}, headers=ADMIN
    )
    assert handed.status_code == 200, handed.text
    slot_id = await slot_at(api, day, bay, clock)
    hour = int(clock[:2])
    gate = asyncio.Event()

    async def placing() -> httpx.Response:
        await gate.wait()
        return await place(api, left["id"], bay, at(day, hour))

    async def booking() -> httpx.Response:
        await gate.wait()
        return await api.post("/api/bookings", json=body(slot_id, OIL, 200 + i))

    tasks = [asyncio.create_task(placing()), asyncio.create_task(booking())]
    await asyncio.sleep(0.01)
    gate.set()
    placed, booked = await asyncio.gather(*tasks)
    return placed, booked, slot_id


def rounds() -> list[tuple[int, str]]:
    return [(1 + i % 3, f"{8 + i:02d}:00") for i in range(ROUNDS)]  # the last ends 16:00


async def two_technicians(url: str) -> int:
    """Sam (general) and Ali (general and MOT tester: an oil change takes Sam first); Ali's id."""
    ids = await add_technicians(url, ("Sam", "general"), ("Ali", "general,mot_tester"))
    return ids["Ali"]


@pytest.mark.slow
async def test_a_placement_and_a_new_booking_race_for_one_bay_slot(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    ali = await two_technicians(stack.database_url)
    service = await add_drop_off_service(stack.database_url, labour_minutes=60)
    day = a_day()
    won = {"placed": 0, "booked": 0}
    for i, (bay, clock) in enumerate(rounds()):
        placed, booked, slot_id = await race_round(api, service, ali, day, bay, clock, i)
        assert {placed.status_code, booked.status_code} <= {200, 201, 409}, (
            placed.text,
            booked.text,
        )
        assert [placed.status_code == 200, booked.status_code == 201].count(True) == 1, (
            placed.text,
            booked.text,
        )
        assert await bay_holders(stack.database_url, slot_id) == 1
        won["placed" if placed.status_code == 200 else "booked"] += 1
    assert sum(won.values()) == ROUNDS


@pytest.fixture
async def unguarded_api(
    stack: Stack, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The app on its own database without uq_booking_slots_slot_id_active."""
    async with app_without(
        stack, request, tmp_path, "uq_booking_slots_slot_id_active"
    ) as unguarded:
        yield unguarded


@pytest.mark.slow
async def test_control_without_the_bay_claims_index_a_placement_and_a_booking_share_a_slot(
    unguarded_api: tuple[str, httpx.AsyncClient],
) -> None:
    url, api = unguarded_api
    ali = await two_technicians(url)
    service = await add_drop_off_service(url, labour_minutes=60)
    bay, clock = rounds()[0]

    placed, booked, slot_id = await race_round(api, service, ali, a_day(), bay, clock, 0)

    assert placed.status_code == 200, placed.text
    assert booked.status_code == 201, booked.text
    assert await bay_holders(url, slot_id) == 2  # one bay, two cars
