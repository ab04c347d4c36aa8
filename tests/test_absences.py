"""Absences and reassigning (issue 15), through the admin API on both stacks: an absence flags
the technician's bookings and never drops one, closes their time so nothing new is booked on
them, and is withdrawn to what they work; a reassignment moves a booking to another technician
or bay, or is refused (taken, lacking the skill, absent, out of minutes) with nothing changed.
The race of a reassignment against a new booking, with its control, is in
tests/test_reassign_race.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import httpx

from tests.support.stack import ADMIN_TOKEN, Stack
from tests.support.technicians import MOT, OIL, add_technician, body, book, needs_skill, times_on

SQL = Callable[..., Awaitable[list[Any]]]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def absence(
    api: httpx.AsyncClient, technician_id: int, first: str, last: str | None = None
) -> httpx.Response:
    return await api.post(
        "/api/admin/absences",
        json={
            "technician_id": technician_id,
            "first_day": first,
            "last_day": last or first,
            "reason": "holiday",
        },
        headers=ADMIN,
    )


async def state(sql: SQL) -> dict[str, list[Any]]:
    """Everything a reassignment may change, to compare before and after a refusal."""
    return {
        "bookings": await sql(
            "SELECT id, slot_id, technician_id, status FROM bookings ORDER BY id"
        ),
        "booking_slots": await sql(
            "SELECT booking_id, slot_id, active FROM booking_slots ORDER BY booking_id, slot_id"
        ),
        "technician_claims": await sql(
            "SELECT booking_id, technician_slot_id, active FROM technician_claims"
            " ORDER BY booking_id, technician_slot_id"
        ),
        "technician_days": await sql(
            "SELECT technician_id, day, minutes_booked, absent FROM technician_days"
            " ORDER BY technician_id, day"
        ),
    }


async def open_slots(sql: SQL, technician_id: int, day: str) -> int:
    rows = await sql(
        "SELECT starts_at FROM technician_slots WHERE technician_id = :t AND open",
        t=technician_id,
    )
    return sum(str(r[0]).startswith(day) for r in rows)  # stored in UTC: 08:00-17:00 London


async def day_row(sql: SQL, technician_id: int, day: str) -> tuple[int, int, bool]:
    [row] = [
        r
        for r in await sql(
            "SELECT day, minutes_working, minutes_booked, absent FROM technician_days"
            " WHERE technician_id = :t",
            t=technician_id,
        )
        if str(r[0]) == day
    ]
    return int(row[1]), int(row[2]), bool(row[3])


async def reassign(api: httpx.AsyncClient, booking_id: str, **body: int) -> httpx.Response:
    return await api.post(f"/api/admin/bookings/{booking_id}/reassign", json=body, headers=ADMIN)


async def test_an_absence_flags_the_technicians_bookings_and_never_drops_one(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    priya = await add_technician(stack.database_url, "Priya")
    times = await times_on(api)
    day = times[0][0]["starts_at"][:10]
    first = await book(api, times[1][0]["id"], i=1)
    second = await book(api, times[3][0]["id"], i=2)
    assert first["technician_id"] == second["technician_id"] == priya

    entered = await absence(api, priya, day)

    assert entered.status_code == 201, entered.text
    shown = entered.json()
    assert (shown["technician_id"], shown["first_day"], shown["last_day"]) == (priya, day, day)
    assert [b["id"] for b in shown["flagged"]] == [first["id"], second["id"]]
    assert {b["technician_id"] for b in shown["flagged"]} == {priya}
    for booking in (first, second):  # still booked, still holding Priya and the bay
        still = await sql("SELECT status FROM bookings WHERE id = :b", b=booking["id"])
        assert still == [("confirmed",)]
    assert (await sql("SELECT count(*) FROM technician_claims WHERE active"))[0][0] == 2
    assert await open_slots(sql, priya, day) == 0
    assert (await day_row(sql, priya, day))[2] is True
    listed = await api.get("/api/admin/absences", params={"from": day, "to": day}, headers=ADMIN)
    assert [a["id"] for a in listed.json()] == [shown["id"]]


async def test_after_an_absence_nothing_new_is_booked_on_the_technician_that_day(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    priya = await add_technician(stack.database_url, "Priya")
    times = await times_on(api)
    day = times[0][0]["starts_at"][:10]
    assert (await absence(api, priya, day)).status_code == 201

    refused = await api.post("/api/bookings", json=body(times[2][0]["id"], OIL, 9))
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "slot_unavailable"
    # The counter's own guard refuses the day too, whatever reads came before.
    guarded = await sql(
        "UPDATE technician_days SET minutes_booked = minutes_booked + 60"
        " WHERE technician_id = :t AND day = :d AND NOT absent"
        " AND minutes_booked + 60 <= minutes_working RETURNING technician_id",
        t=priya,
        d=date.fromisoformat(day),
    )
    assert guarded == []
    next_day = (await times_on(api, days_ahead=3))[2][0]
    assert (await api.post("/api/bookings", json=body(next_day["id"], OIL, 9))).status_code == 201


async def test_withdrawing_reopens_the_days_no_other_absence_covers(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    priya = await add_technician(stack.database_url, "Priya")
    first_day = (await times_on(api, 2))[0][0]["starts_at"][:10]
    second_day = (await times_on(api, 3))[0][0]["starts_at"][:10]
    working = await open_slots(sql, priya, first_day)
    both = (await absence(api, priya, first_day, second_day)).json()
    assert (await absence(api, priya, second_day)).status_code == 201  # a sick day inside

    withdrawn = await api.delete(f"/api/admin/absences/{both['id']}", headers=ADMIN)

    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["active"] is False
    assert await open_slots(sql, priya, first_day) == working
    assert (await day_row(sql, priya, first_day))[2] is False
    assert await open_slots(sql, priya, second_day) == 0  # the sick day still holds
    assert (await day_row(sql, priya, second_day))[2] is True
    again = await api.delete(f"/api/admin/absences/{both['id']}", headers=ADMIN)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "absence_withdrawn"
    gone = await api.delete("/api/admin/absences/99999", headers=ADMIN)
    assert gone.status_code == 404


async def test_absence_errors_unknown_technician_bad_range_no_token(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    priya = await add_technician(stack.database_url, "Priya")
    unknown = await absence(api, priya + 100, "2030-01-07")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "technician_not_found"
    backwards = await absence(api, priya, "2030-01-07", "2030-01-06")
    assert backwards.status_code == 422
    assert backwards.json()["error"]["code"] == "validation_error"
    no_token = await api.post(
        "/api/admin/absences",
        json={"technician_id": priya, "first_day": "2030-01-07", "last_day": "2030-01-07"},
    )
    assert no_token.status_code == 401
    assert await sql("SELECT count(*) FROM absences") == [(0,)]


async def test_a_booking_is_reassigned_to_another_technician_and_bay(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    priya = await add_technician(stack.database_url, "Priya")
    sam = await add_technician(stack.database_url, "Sam")
    bay1, bay2, _ = (await times_on(api))[2]
    day = bay1["starts_at"][:10]
    booking = await book(api, bay1["id"])
    assert booking["technician_id"] == priya

    moved = await reassign(api, booking["id"], technician_id=sam, bay_id=bay2["bay_id"])

    assert moved.status_code == 200, moved.text
    shown = moved.json()
    assert (shown["technician_id"], shown["bay_id"]) == (sam, bay2["bay_id"])
    assert (shown["slot_id"], shown["slot_ids"], shown["starts_at"]) == (
        bay2["id"],
        [bay2["id"]],
        booking["starts_at"],
    )
    assert (await day_row(sql, priya, day))[1] == 0
    assert (await day_row(sql, sam, day))[1] == 60
    claims = await sql(
        "SELECT ts.technician_id FROM technician_claims tc"
        " JOIN technician_slots ts ON ts.id = tc.technician_slot_id WHERE tc.active"
    )
    assert claims == [(sam,)]
    assert await sql("SELECT slot_id FROM booking_slots WHERE active") == [(bay2["id"],)]
    # Priya and bay 1 are free again at that time: a new booking takes them.
    again = await book(api, bay1["id"], i=5)
    assert again["technician_id"] == priya
    back = await reassign(api, booking["id"], technician_id=priya)  # she is taken now
    assert back.status_code == 409


async def test_refused_reassignments_change_nothing(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    priya = await add_technician(stack.database_url, "Priya", "mot_tester,general")
    sam = await add_technician(stack.database_url, "Sam")
    kim = await add_technician(stack.database_url, "Kim")
    await needs_skill(stack.database_url, MOT, "mot_tester")
    times = await times_on(api)
    day = times[0][0]["starts_at"][:10]
    bay1, bay2, bay3 = times[2]
    oil = await book(api, bay1["id"], OIL, 1)  # Sam (fewest skills, lowest id)
    mot = await book(api, bay2["id"], MOT, 2)  # Priya, the only tester
    other = await book(api, bay3["id"], OIL, 3)  # Kim
    assert (oil["technician_id"], mot["technician_id"], other["technician_id"]) == (sam, priya, kim)
    await sql(
        "UPDATE technician_days SET minutes_working = minutes_booked WHERE technician_id = :t",
        t=priya,
    )  # Priya's day is full
    before = await state(sql)

    refusals = {
        "taken slot": await reassign(api, oil["id"], technician_id=kim),
        "lacking skill": await reassign(api, mot["id"], technician_id=sam),
        "over minutes": await reassign(api, oil["id"], technician_id=priya),
        "bay taken": await reassign(api, oil["id"], bay_id=bay2["bay_id"]),
    }
    assert await state(sql) == before
    cancelled = await api.post(f"/api/bookings/{other['id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.text  # Kim is free at that time
    assert (await absence(api, kim, day)).status_code == 201  # but away that day
    before = await state(sql)
    refusals["absent"] = await reassign(api, oil["id"], technician_id=kim)
    assert await state(sql) == before

    for why, answer in refusals.items():
        assert answer.status_code == 409, (why, answer.text)
        assert answer.json()["error"]["code"] == "slot_unavailable", why
    nothing = await reassign(api, oil["id"])
    assert nothing.status_code == 422
    missing = await reassign(api, "nosuchbooking", technician_id=kim)
    assert missing.status_code == 404
    stranger = await reassign(api, oil["id"], technician_id=kim + 50)
    assert stranger.status_code == 404
    assert (await day_row(sql, sam, day))[1] == 60  # Sam still has the oil change


async def burst_with_an_absence(
    api: httpx.AsyncClient, priya: int, times: list[list[dict[str, Any]]], day: str
) -> tuple[httpx.Response, list[httpx.Response]]:
    """An MOT on every bay at every time of `day` (Priya, the only tester, can take one per
    time) and her absence for the day, all released at once, the absence in the middle."""
    gate = asyncio.Event()
    bodies = [
        body(slot["id"], MOT, i)
        for i, slot in enumerate(slot for slots_at in times for slot in slots_at)
    ]
    for payload in bodies:  # each booking's plan made beforehand: they race, not plan
        held = await api.post("/api/holds", json={"slot_id": payload["slot_id"], "service_id": MOT})
        assert held.status_code == 201, held.text
        assert (await api.delete(f"/api/holds/{held.json()['hold_token']}")).status_code == 204

    async def one(payload: dict[str, Any]) -> httpx.Response:
        await gate.wait()
        return await api.post("/api/bookings", json=payload)

    async def away() -> httpx.Response:
        await gate.wait()
        return await absence(api, priya, day)

    half = len(bodies) // 2
    first = [asyncio.create_task(one(b)) for b in bodies[:half]]
    entering = asyncio.create_task(away())
    rest = [asyncio.create_task(one(b)) for b in bodies[half:]]
    await asyncio.sleep(0.05)
    gate.set()
    booked = await asyncio.gather(*first, *rest)
    return await entering, list(booked)


async def test_an_absence_entered_during_a_burst_flags_every_booking_made_before_it(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """Issue 15's race: bookings that need Priya fly while staff enter her absence for the day.
    Every booking that got its 201 committed before the absence did, so the absence lists it
    (flagged, kept); none got in after. On PostgreSQL a booking holds her slots FOR SHARE and
    her day row, so the absence waits for it, and a booking behind the absence finds them
    closed; SQLite's one writer orders them."""
    priya = await add_technician(stack.database_url, "Priya", "mot_tester,general")
    times = await times_on(api, 2)
    day = times[0][0]["starts_at"][:10]

    entered, bookings = await burst_with_an_absence(api, priya, times, day)

    assert entered.status_code == 201, entered.text
    assert {b.status_code for b in bookings} <= {201, 409}, [b.text for b in bookings]
    made = {b.json()["id"] for b in bookings if b.status_code == 201}
    # Exactly those made before it are flagged (kept); none was booked after it.
    assert made == {f["id"] for f in entered.json()["flagged"]}
    assert len(made) <= len(times)  # one tester: one MOT per time at most
    late = await api.post("/api/bookings", json=body(times[-1][0]["id"], MOT, 999))
    assert late.status_code == 409


async def test_control_an_absence_that_closes_nothing_lets_bookings_through(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    """The control: the absence recorded but her slots and day left open (what the absence
    would be without closing them) — the next booking for her that day still gets a 201,
    which the test above would catch as booked after the absence."""
    priya = await add_technician(stack.database_url, "Priya", "mot_tester,general")
    times = await times_on(api, 2)
    day = times[0][0]["starts_at"][:10]
    await sql(
        "INSERT INTO absences (technician_id, first_day, last_day, entered_by, created_at)"
        " VALUES (:t, :d, :d, 'control', CURRENT_TIMESTAMP)",
        t=priya,
        d=date.fromisoformat(day),
    )
    after = await api.post("/api/bookings", json=body(times[0][0]["id"], MOT, 1))
    assert after.status_code == 201, after.text
