"""A timed booking takes a bay and a technician (issue 15): the database decides both, the
reservation layer only turns the losers away sooner.

The garage here is the demo garage (three general bays, 60-minute slots) with technicians added
to its setup document (tests/support/technicians.py); the MOT needs an MOT tester when one is
listed."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.app import create_app
from tests.support.control import database_without
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.support.technicians import MOT, OIL, add_technicians, body, times_on
from tests.test_concurrency import dead_redis_url


async def a_time(client: httpx.AsyncClient, index: int = 0) -> list[dict[str, Any]]:
    """The three bays' slots at one free time (the `index`-th), soonest first."""
    listed = (await client.get("/api/slots", params={"available": "true", "limit": 300})).json()
    times = sorted({s["starts_at"] for s in listed})
    chosen = times[index + 1]  # not the very next hour: it may start before the test ends
    return [s for s in listed if s["starts_at"] == chosen]


async def booked_technicians(url: str) -> list[tuple[int, str]]:
    """(technician_id, time) of every active technician claim: two equal rows would be one
    technician booked twice at one time."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT ts.technician_id, ts.starts_at FROM technician_claims tc"
                    " JOIN technician_slots ts ON ts.id = tc.technician_slot_id"
                    " JOIN bookings b ON b.id = tc.booking_id"
                    " WHERE tc.active AND b.status <> 'cancelled'"
                )
            )
            return [(r[0], str(r[1])) for r in rows]
    finally:
        await engine.dispose()


async def test_the_server_picks_a_technician_who_can_keeping_the_tester_for_mots(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    ids = await add_technicians(
        stack.database_url, ("Priya", "mot_tester,general"), ("Sam", "general")
    )
    bay1, bay2, bay3 = await a_time(api)

    oil = await api.post("/api/bookings", json=body(bay1["id"], OIL, 1))
    mot = await api.post("/api/bookings", json=body(bay2["id"], MOT, 2))
    second_mot = await api.post("/api/bookings", json=body(bay3["id"], MOT, 3))

    assert oil.status_code == 201, oil.text
    assert oil.json()["technician_id"] == ids["Sam"]  # the general one: Priya kept for MOTs
    assert mot.status_code == 201, mot.text
    assert mot.json()["technician_id"] == ids["Priya"]
    assert second_mot.status_code == 409  # a free bay, but the only tester is taken
    assert second_mot.json()["error"]["code"] == "slot_unavailable"
    token = {"Authorization": f"Bearer {mot.json()['cancel_token']}"}
    found = await api.get(f"/api/bookings/{mot.json()['id']}", headers=token)
    assert found.json()["technician_id"] == ids["Priya"]


async def test_a_booking_by_time_gets_a_bay_and_a_technician(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    ids = await add_technicians(
        stack.database_url, ("Priya", "mot_tester,general"), ("Sam", "general")
    )
    bay1, *_ = await a_time(api)
    at = {k: v for k, v in body(bay1["id"], OIL, 1).items() if k != "slot_id"}
    first = await api.post("/api/bookings", json={**at, "starts_at": bay1["starts_at"]})
    second = await api.post(
        "/api/bookings", json={**body(0, OIL, 2), "slot_id": None, "starts_at": bay1["starts_at"]}
    )
    third = await api.post(
        "/api/bookings", json={**body(0, OIL, 3), "slot_id": None, "starts_at": bay1["starts_at"]}
    )
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    # Two technicians: a third car at that time has a bay but nobody to work on it.
    assert third.status_code == 409, third.text
    assert {first.json()["technician_id"], second.json()["technician_id"]} == set(ids.values())
    assert first.json()["bay_id"] != second.json()["bay_id"]
    assert first.json()["starts_at"] == bay1["starts_at"]


async def test_a_time_is_given_as_slot_id_or_starts_at_not_both(api: httpx.AsyncClient) -> None:
    both = await api.post(
        "/api/bookings", json={**body(1, OIL), "starts_at": "2030-01-07T10:00:00+00:00"}
    )
    neither = await api.post("/api/bookings", json={**body(1, OIL), "slot_id": None})
    assert both.status_code == 422
    assert neither.status_code == 422


async def test_a_cancel_gives_the_technician_back_and_a_move_takes_them_along(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    await add_technicians(stack.database_url, ("Priya", "mot_tester,general"))
    bay1, bay2, _ = await a_time(api)
    later1, later2, _ = await a_time(api, 3)
    mot = (await api.post("/api/bookings", json=body(bay1["id"], MOT, 1))).json()
    refused = await api.post("/api/bookings", json=body(bay2["id"], MOT, 2))
    assert refused.status_code == 409

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    moved = await api.post(
        f"/api/bookings/{mot['id']}/reschedule", json={"slot_id": later1["id"]}, headers=admin
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["technician_id"] == mot["technician_id"]
    # Her old time is free again; her new one is hers.
    assert (await api.post("/api/bookings", json=body(bay2["id"], MOT, 3))).status_code == 201
    assert (await api.post("/api/bookings", json=body(later2["id"], MOT, 4))).status_code == 409

    cancelled = await api.post(f"/api/bookings/{mot['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200, cancelled.text
    assert (await api.post("/api/bookings", json=body(later2["id"], MOT, 5))).status_code == 201
    assert len(await booked_technicians(stack.database_url)) == 2


async def test_no_technician_is_booked_past_the_minutes_they_work_that_day(
    stack: Stack, api: httpx.AsyncClient, sql: Any
) -> None:
    """Sam works two hours a day, whatever hours his slots cover: the third one-hour job that
    day is refused, on any bay at any free hour."""
    await add_technicians(stack.database_url, ("Sam", "general"), minutes_a_day=120)
    day = await times_on(api, 2)  # three hours of one day
    answers = [
        await api.post("/api/bookings", json=body(day[i][0]["id"], OIL, i)) for i in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 201, 409], [a.text for a in answers]
    [(booked, working)] = await sql(
        "SELECT minutes_booked, minutes_working FROM technician_days WHERE minutes_booked > 0"
    )
    assert (booked, working) == (120, 120)


async def race_mots(client: httpx.AsyncClient, bays: list[dict[str, Any]], n: int) -> list[int]:
    """`n` MOT bookings at one time, spread over the bays, released together."""
    gate = asyncio.Event()

    async def one(i: int) -> int:
        await gate.wait()
        answer = await client.post("/api/bookings", json=body(bays[i % len(bays)]["id"], MOT, i))
        assert answer.status_code in (201, 409), answer.text
        return answer.status_code

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0.05)
    gate.set()
    return list(await asyncio.gather(*tasks))


@pytest.mark.parametrize("redis_down", [False, True], ids=["reservations_on", "redis_down"])
async def test_mots_racing_for_the_only_tester_on_different_bays_one_wins(
    stack: Stack, redis_down: bool
) -> None:
    """Thirty MOTs at one time on three free bays, one MOT tester: one 201. With Redis down
    (PostgreSQL) nothing turns the others away early: the database's claims decide."""
    if redis_down and not stack.is_postgres:
        pytest.skip("SQLite runs without Redis: the reservations_on case is its only shape")
    await add_technicians(stack.database_url, ("Priya", "mot_tester,general"), ("Sam", "general"))
    settings = stack.settings(redis_url=dead_redis_url()) if redis_down else stack.settings()
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as client,
    ):
        for round_ in range(3):
            bays = await a_time(client, round_)
            answers = await race_mots(client, bays, 30)
            assert answers.count(201) == 1, Counter(answers)
    claims = await booked_technicians(stack.database_url)
    assert len(claims) == 3
    assert len(set(claims)) == 3


async def test_control_without_the_technician_claims_index_the_tester_is_booked_twice(
    stack: Stack, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The same two MOTs at one time on different bays, in a database without
    uq_technician_claims_technician_slot_id_active and with nothing in the reservation layer
    between them: both get 201 and the only tester is booked twice over. So the index is what
    refuses the second above."""
    url = await database_without(
        stack, request, tmp_path, "uq_technician_claims_technician_slot_id_active"
    )
    await add_technicians(url, ("Priya", "mot_tester,general"))
    app = create_app(stack.settings(database_url=url, redis_url=dead_redis_url()))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as client,
    ):
        bay1, bay2, _ = await a_time(client)
        first = await client.post("/api/bookings", json=body(bay1["id"], MOT, 1))
        await app.state.reservations.close()  # SQLite's in-process keys: gone
        second = await client.post("/api/bookings", json=body(bay2["id"], MOT, 2))
    assert (first.status_code, second.status_code) == (201, 201), second.text
    claims = await booked_technicians(url)
    assert len(claims) == 2
    assert len(set(claims)) == 1  # one technician, one time, twice


async def test_availability_offers_a_start_only_where_a_bay_and_a_technician_are_free(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    await add_technicians(stack.database_url, ("Priya", "mot_tester,general"), ("Sam", "general"))
    bay1, bay2, _ = await a_time(api)
    day = bay1["starts_at"][:10]
    before = (await api.get("/api/availability", params={"service_id": MOT, "date": day})).json()
    assert {"starts_at": bay1["starts_at"], "ends_at": bay1["ends_at"], "free": 1} in before

    assert (await api.post("/api/bookings", json=body(bay1["id"], MOT, 1))).status_code == 201

    mots = (await api.get("/api/availability", params={"service_id": MOT, "date": day})).json()
    oils = (await api.get("/api/availability", params={"service_id": OIL, "date": day})).json()
    assert bay1["starts_at"] not in {a["starts_at"] for a in mots}  # two bays free, no tester
    assert {"starts_at": bay1["starts_at"], "ends_at": bay1["ends_at"], "free": 1} in oils
    assert len(mots) == len(before) - 1
    listed = await api.get(
        "/api/slots", params={"date": day, "service_id": MOT, "available": "true"}
    )
    assert bay2["id"] not in {s["id"] for s in listed.json()}
    # Sam takes the oil change at that time: then nobody is left for a third car.
    assert (await api.post("/api/bookings", json=body(bay2["id"], OIL, 2))).status_code == 201
    oils = (await api.get("/api/availability", params={"service_id": OIL, "date": day})).json()
    assert bay1["starts_at"] not in {a["starts_at"] for a in oils}


async def test_availability_without_technicians_is_the_free_bays(api: httpx.AsyncClient) -> None:
    bay1, *_ = await a_time(api)
    day = bay1["starts_at"][:10]
    offered = (await api.get("/api/availability", params={"service_id": OIL, "date": day})).json()
    listed = await api.get(
        "/api/slots", params={"date": day, "service_id": OIL, "available": "true"}
    )
    assert [a["starts_at"] for a in offered] == sorted({s["starts_at"] for s in listed.json()})
    assert {a["free"] for a in offered} <= {1, 2, 3}  # the three bays, no technicians
    assert next(a for a in offered if a["starts_at"] == bay1["starts_at"])["free"] == 3
    missing = await api.get("/api/availability", params={"service_id": 999, "date": day})
    assert missing.status_code == 404


async def test_a_move_to_another_bay_at_the_same_time_keeps_its_technician(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """Found by tests/test_stateful_technicians.py: the move gave back Sam's slot and claimed
    it again, which the old (inactive) claim row refused, so the move took Priya instead."""
    ids = await add_technicians(
        stack.database_url, ("Priya", "mot_tester,general"), ("Sam", "general")
    )
    bay1, bay2, _ = await a_time(api)
    oil = (await api.post("/api/bookings", json=body(bay1["id"], OIL, 1))).json()
    assert oil["technician_id"] == ids["Sam"]
    moved = await api.post(
        f"/api/manage/{oil['cancel_token']}/reschedule", json={"slot_id": bay2["id"]}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["technician_id"] == ids["Sam"]
    assert moved.json()["bay_id"] == bay2["bay_id"]


async def test_a_garage_with_no_document_applied_still_books(
    api: httpx.AsyncClient, sql: Any
) -> None:
    """`garagebook migrate` and slots made by the admin API, no document applied: there is no
    setup version, and a plan made without one is not stale (it was, once: every booking 409)."""
    slot, *_ = await a_time(api)
    await sql("DELETE FROM garage")
    booked = await api.post("/api/bookings", json=body(slot["id"], OIL))
    assert booked.status_code == 201, booked.text
