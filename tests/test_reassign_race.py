"""A reassignment racing a new booking for the same technician's slot (issue 15), on both
stacks: an oil change holds Priya (general) at a time; staff reassign it to Sam while a customer
books an MOT on another bay at that time, which only Sam (the MOT tester) can take. Both
fired at once, 20 rounds: at most one holds Sam's slot, and exactly one of the two succeeds.
The control drops uq_technician_claims_technician_slot_id_active in its own database and shows
both then get Sam at the same time: the index is what makes the race test pass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.schema import bookings, technician_claims, technician_slots
from tests.support.control import app_without
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.support.technicians import MOT, OIL, add_technician, body, book, times_on

ROUNDS = 20
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def holders(url: str, technician_id: int, starts_at: str) -> int:
    """Active claims of live bookings on the technician's slot at `starts_at`."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(technician_claims)
                .join(
                    technician_slots,
                    technician_slots.c.id == technician_claims.c.technician_slot_id,
                )
                .join(bookings, bookings.c.id == technician_claims.c.booking_id)
                .where(
                    technician_claims.c.active,
                    bookings.c.status != "cancelled",
                    technician_slots.c.technician_id == technician_id,
                    technician_slots.c.starts_at == datetime.fromisoformat(starts_at),
                )
            )
    finally:
        await engine.dispose()
    return int(count or 0)


async def race_round(
    api: httpx.AsyncClient, slots_at: list[dict[str, Any]], sam: int, i: int
) -> tuple[httpx.Response, httpx.Response]:
    """An oil change on bay 1 (Priya), then the reassignment to Sam and an MOT on bay 2 (Sam
    alone can) fired at once."""
    held = await book(api, slots_at[0]["id"], OIL, 1000 + i)
    gate = asyncio.Event()

    async def move() -> httpx.Response:
        await gate.wait()
        return await api.post(
            f"/api/admin/bookings/{held['id']}/reassign",
            json={"technician_id": sam},
            headers=ADMIN,
        )

    async def new_booking() -> httpx.Response:
        await gate.wait()
        return await api.post("/api/bookings", json=body(slots_at[1]["id"], MOT, 2000 + i))

    tasks = [asyncio.create_task(move()), asyncio.create_task(new_booking())]
    await asyncio.sleep(0.01)
    gate.set()
    moved, booked = await asyncio.gather(*tasks)
    return moved, booked


async def rounds_of_times(api: httpx.AsyncClient) -> list[list[dict[str, Any]]]:
    times = [*(await times_on(api, 2)), *(await times_on(api, 3)), *(await times_on(api, 4))]
    assert len(times) >= ROUNDS
    return times[:ROUNDS]


@pytest.mark.slow
async def test_a_reassignment_and_a_new_booking_race_for_one_technician_slot(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    priya = await add_technician(stack.database_url, "Priya")
    sam = await add_technician(stack.database_url, "Sam", "mot_tester,general")
    outcomes = {"reassigned": 0, "booked": 0}
    for i, slots_at in enumerate(await rounds_of_times(api)):
        moved, booked = await race_round(api, slots_at, sam, i)
        assert {moved.status_code, booked.status_code} <= {200, 201, 409}, (moved.text, booked.text)
        won = [moved.status_code == 200, booked.status_code == 201]
        assert sum(won) == 1, (moved.text, booked.text)
        if booked.status_code == 201:
            assert booked.json()["technician_id"] == sam
        assert await holders(stack.database_url, sam, slots_at[0]["starts_at"]) == 1
        assert await holders(stack.database_url, priya, slots_at[0]["starts_at"]) == int(won[1])
        outcomes["reassigned" if won[0] else "booked"] += 1
    assert sum(outcomes.values()) == ROUNDS


@pytest.fixture
async def unguarded_api(
    stack: Stack, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The app on its own database without uq_technician_claims_technician_slot_id_active."""
    async with app_without(
        stack, request, tmp_path, "uq_technician_claims_technician_slot_id_active"
    ) as unguarded:
        yield unguarded


@pytest.mark.slow
async def test_control_without_the_claims_index_both_hold_the_technician_slot(
    unguarded_api: tuple[str, httpx.AsyncClient],
) -> None:
    url, api = unguarded_api
    await add_technician(url, "Priya")
    sam = await add_technician(url, "Sam", "mot_tester,general")
    [slots_at] = (await rounds_of_times(api))[:1]

    moved, booked = await race_round(api, slots_at, sam, 0)

    assert moved.status_code == 200, moved.text
    assert booked.status_code == 201, booked.text
    assert booked.json()["technician_id"] == sam
    assert await holders(url, sam, slots_at[0]["starts_at"]) == 2  # Sam booked twice over
