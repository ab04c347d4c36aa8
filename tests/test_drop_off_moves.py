"""Moving a drop-off to another day (issue 15): its minutes go back to the old day and are
taken from a technician's new day under the same guarded counter as a booking, in one
transaction, on both stacks. Refused, the booking keeps its day; a race for a day's last
place between moves and new bookings is decided by the counter: exactly one wins."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

import garagebook.bookings.reschedule as reschedule_module
from garagebook.app import create_app
from garagebook.technicians.drop_offs import plan_drop_off
from tests.support.api import booking_body
from tests.support.control import database_without
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.support.technicians import (
    LABOUR,
    OIL,
    a_day,
    add_drop_off_service,
    add_technicians,
    drop_off,
)
from tests.test_concurrency import dead_redis_url
from tests.test_drop_offs import (
    _without_the_check,
    at,
    day_counts,
    hours_of,
    without_the_guard,
    working,
)

SQL = Callable[..., Awaitable[list[Any]]]


def working_days(count: int) -> list[date]:
    """`count` working days (not Sundays) from `a_day()` on."""
    days, day = [], a_day()
    while len(days) < count:
        if day.weekday() != 6:
            days.append(day)
        day += timedelta(days=1)
    return days


async def move(api: httpx.AsyncClient, token: str, day: date) -> httpx.Response:
    return await api.post(f"/api/manage/{token}/reschedule", json={"day": day.isoformat()})


async def test_a_drop_off_moves_to_another_day_and_its_minutes_follow(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    first, second = working_days(2)
    booked = (await api.post("/api/bookings", json=drop_off(service, first))).json()

    moved = await move(api, booked["cancel_token"], second)
    assert moved.status_code == 200, moved.text
    shown = moved.json()
    assert (shown["id"], shown["reference"]) == (booked["id"], booked["reference"])
    assert shown["starts_at"] == at(second, 8)  # the new day's window opens
    assert shown["ends_at"] == at(second, 16, 30)  # and its collection
    assert (shown["slot_id"], shown["bay_id"], shown["technician_id"]) == (None, None, ids["Sam"])
    assert (await day_counts(stack.database_url, first))[ids["Sam"]][:2] == (0, 0)
    assert (await day_counts(stack.database_url, second))[ids["Sam"]][:2] == (LABOUR, LABOUR)
    assert await sql("SELECT sequence FROM bookings WHERE id = :b", b=booked["id"]) == [(1,)]
    kinds = Counter(k for (k,) in await sql("SELECT kind FROM outbox"))
    assert kinds["booking_rescheduled"] == 1

    # Staff move it back through the API with the admin token; the manage link keeps working.
    back = await api.post(
        f"/api/bookings/{booked['id']}/reschedule",
        json={"day": first.isoformat()},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert back.status_code == 200, back.text
    assert (await api.get(f"/api/manage/{booked['cancel_token']}")).json()["starts_at"] == at(
        first, 8
    )
    assert (await day_counts(stack.database_url, first))[ids["Sam"]][:2] == (LABOUR, LABOUR)
    assert (await day_counts(stack.database_url, second))[ids["Sam"]][:2] == (0, 0)
    # The same day again: nothing to move, nothing written.
    same = await move(api, booked["cancel_token"], first)
    assert same.status_code == 200, same.text
    assert await sql("SELECT sequence FROM bookings WHERE id = :b", b=booked["id"]) == [(2,)]


async def test_a_move_to_a_full_day_is_refused_and_the_booking_keeps_its_day(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    ids = await add_technicians(stack.database_url, ("Sam", "general"), ("Ali", "general"))
    service = await add_drop_off_service(stack.database_url)
    await working(stack.database_url, 300)  # one 240-minute job per technician and day
    first, second = working_days(2)
    mine = (await api.post("/api/bookings", json=drop_off(service, first, 1))).json()
    for i in (2, 3):  # the second day full: Sam and Ali both booked
        assert (await api.post("/api/bookings", json=drop_off(service, second, i))).is_success
    before = {day: await day_counts(stack.database_url, day) for day in (first, second)}

    refused = await move(api, mine["cancel_token"], second)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "slot_unavailable"
    kept = (await api.get(f"/api/manage/{mine['cancel_token']}")).json()
    assert (kept["starts_at"], kept["technician_id"]) == (mine["starts_at"], mine["technician_id"])
    assert {day: await day_counts(stack.database_url, day) for day in (first, second)} == before
    assert set(ids.values()) == set(before[second])


async def test_a_move_keeps_the_technician_when_they_have_the_minutes(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """Ali (fewer skills) would be chosen for a new drop-off; a moved one stays with Priya."""
    ids = await add_technicians(
        stack.database_url, ("Priya", "mot_tester,general"), ("Ali", "general")
    )
    service = await add_drop_off_service(stack.database_url)
    first, second = working_days(2)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    booked = (await api.post("/api/bookings", json=drop_off(service, first))).json()
    assert booked["technician_id"] == ids["Ali"]
    placed = await api.post(
        f"/api/admin/bookings/{booked['id']}/reassign",
        json={"technician_id": ids["Priya"]},
        headers=admin,
    )
    assert placed.status_code == 200, placed.text
    moved = await move(api, booked["cancel_token"], second)
    assert moved.status_code == 200, moved.text
    assert moved.json()["technician_id"] == ids["Priya"]


async def test_what_a_move_takes(stack: Stack, api: httpx.AsyncClient) -> None:
    """A timed booking moves to a time, a drop-off to a day; one of them, not both or none."""
    await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    first, second = working_days(2)
    slot = (await hours_of(api, first))[0]
    timed = (await api.post("/api/bookings", json=booking_body(slot["id"], OIL))).json()
    to_a_day = await move(api, timed["cancel_token"], second)
    assert to_a_day.status_code == 422, to_a_day.text
    dropped = (await api.post("/api/bookings", json=drop_off(service, first, 1))).json()
    token = dropped["cancel_token"]
    for body in ({}, {"slot_id": slot["id"], "day": second.isoformat()}, {"day": "tomorrow"}):
        answer = await api.post(f"/api/manage/{token}/reschedule", json=body)
        assert answer.status_code == 422, (body, answer.text)
    past = await move(api, token, date.today() - timedelta(days=1))
    assert past.status_code == 409, past.text  # that day's window has long opened


async def test_a_setup_change_while_a_move_plans_is_no_error(
    stack: Stack, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's minutes changed by an apply committed between the move's plan and its
    rules (PostgreSQL reads each statement afresh): the move goes on (it was a 500)."""
    await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    first, second = working_days(2)
    booked = (await api.post("/api/bookings", json=drop_off(service, first))).json()

    async def planned_before_the_change(*args: Any) -> Any:
        plan = await plan_drop_off(*args)
        return replace(plan, minutes=plan.minutes + 15)

    monkeypatch.setattr(reschedule_module, "plan_drop_off", planned_before_the_change)
    moved = await move(api, booked["cancel_token"], second)
    assert moved.status_code == 200, moved.text


async def _race_for_the_last_place(
    client: httpx.AsyncClient, service: int, target: date, others: list[date]
) -> tuple[list[dict[str, Any]], Counter[int]]:
    """A drop-off on each of `others`, then at once: each moved to `target`, and as many new
    drop-offs for `target`. The drop-offs moved, and the answers' statuses."""
    tokens = []
    for i, day in enumerate(others):
        booked = await client.post("/api/bookings", json=drop_off(service, day, 100 + i))
        assert booked.status_code == 201, booked.text
        tokens.append(booked.json())
    answers = await asyncio.gather(
        *(move(client, b["cancel_token"], target) for b in tokens),
        *(
            client.post("/api/bookings", json=drop_off(service, target, 200 + i))
            for i in range(len(others))
        ),
    )
    return tokens, Counter(a.status_code for a in answers)


async def test_moves_and_bookings_race_for_a_days_last_place_and_one_wins(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """Sam has room for one 240-minute job a day; six drop-offs on six days are moved to a
    seventh while six customers book it: one of the twelve gets it. Every loser's drop-off
    keeps its own day, and every day's counter equals its live bookings' minutes."""
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    await working(stack.database_url, 300)
    target, *others = working_days(7)
    _, statuses = await _race_for_the_last_place(api, service, target, others)
    assert statuses[200] + statuses[201] == 1, statuses
    assert statuses[409] == 11, statuses
    days = [(await day_counts(stack.database_url, day))[ids["Sam"]] for day in (target, *others)]
    assert days[0][:2] == (LABOUR, LABOUR)
    assert all(booked == taken <= hours for booked, taken, hours in days), days
    # Six drop-offs, and the new booking if it was one that won.
    assert sum(booked for booked, _, _ in days) == LABOUR * (6 + statuses[201])


async def test_control_without_the_days_guard_moves_book_a_day_past_its_hours(
    stack: Stack, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control of the race above: no CHECK on technician_days and the counter's UPDATE
    without `booked + mine <= working` (the move's claim, and the booking's statement), and
    more than one of the twelve gets Sam's day: the guard is what held above."""
    url = await database_without(stack, request, tmp_path)
    await add_technicians(url, ("Sam", "general"))
    service = await add_drop_off_service(url)
    await _without_the_check(url)
    await working(url, 300)
    without_the_guard(monkeypatch)
    app = create_app(stack.settings(database_url=url, redis_url=dead_redis_url()))
    target, *others = working_days(7)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as client,
    ):
        _, statuses = await _race_for_the_last_place(client, service, target, others)
    assert statuses[200] + statuses[201] > 1, statuses
    booked, taken, hours = next(iter((await day_counts(url, target)).values()))
    assert booked == taken > hours == 300
