"""Technicians in the setup document, and the calendar that keeps their time (issue 15):
apply and export are idempotent, left-out technicians are retired, hours make slots and days
(closed days off for everyone), absences close them and withdrawing reopens them, a shortening
never takes a day's working minutes below its booked minutes, concurrent extenders create
nothing twice, a new slot length re-lays technicians' slots, and bookings whose technician no
longer works then are listed outside the hours with a reason."""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from garagebook.garage.apply import ApplyResult, apply_in
from garagebook.garage.calendar import extend_calendar, outside_hours, sync_technician_days
from garagebook.garage.demo import demo_document
from garagebook.garage.document import parse_json, parse_toml, to_json
from garagebook.schema import (
    absences,
    bookings,
    garage_changes,
    services,
    technician_claims,
    technician_days,
    technician_slots,
    technicians,
)
from tests.support.api import booking_body, free_slots
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.test_garage_cli import garagebook

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LONDON = ZoneInfo("Europe/London")
EXAMPLE = Path(__file__).parent.parent / "examples" / "technicians-garage.toml"
MONDAY = date(2027, 3, 1)
NOW = datetime.combine(MONDAY, time(6, 30), tzinfo=LONDON)  # before opening on a Monday


def garage_with_technicians() -> dict[str, Any]:
    """The demo garage (08:00-17:00 Monday to Saturday, 60-minute slots, 14 days ahead) with
    Priya on the garage's hours and Tom on Monday mornings; the second Monday is closed."""
    data = copy.deepcopy(to_json(demo_document()))
    data["closed"] = [(MONDAY + timedelta(days=7)).isoformat()]
    data["technicians"] = [
        {"name": "Priya", "skills": ["mot_tester", "general"]},
        {"name": "Tom", "skills": ["general"], "hours": {"monday": ["08:00-12:00"]}},
    ]
    return data


@pytest.fixture
async def engine(stack: Stack) -> AsyncIterator[AsyncEngine]:
    created = create_async_engine(stack.database_url)
    yield created
    await created.dispose()


async def apply(engine: AsyncEngine, data: dict[str, Any], now: datetime = NOW) -> ApplyResult:
    async with engine.begin() as conn:
        return await apply_in(conn, parse_json(data), actor="tests", now=now)


async def ids(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {r.name: r.id for r in await conn.execute(select(technicians))}


async def slot_hours(
    engine: AsyncEngine, technician_id: int, *, open_only: bool = True
) -> dict[date, list[int]]:
    """The technician's future slots as local start hours per day."""
    query = select(technician_slots).where(
        technician_slots.c.technician_id == technician_id, technician_slots.c.starts_at > NOW
    )
    if open_only:
        query = query.where(technician_slots.c.open)
    found: dict[date, list[int]] = {}
    async with engine.connect() as conn:
        for r in await conn.execute(query.order_by(technician_slots.c.starts_at)):
            local = r.starts_at.astimezone(LONDON)
            assert r.ends_at - r.starts_at == timedelta(hours=1)
            found.setdefault(local.date(), []).append(local.hour)
    return found


async def days(engine: AsyncEngine, technician_id: int) -> dict[date, tuple[int, int, bool]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(technician_days).where(technician_days.c.technician_id == technician_id)
        )
        return {r.day: (r.minutes_working, r.minutes_booked, r.absent) for r in rows}


async def test_hours_make_slots_and_days_and_closed_days_are_off(engine: AsyncEngine) -> None:
    await apply(engine, garage_with_technicians())
    found = await ids(engine)
    priya, tom = await slot_hours(engine, found["Priya"]), await slot_hours(engine, found["Tom"])
    closed = MONDAY + timedelta(days=7)
    for offset in range(15):  # today through book_ahead_days (14) ahead
        day = MONDAY + timedelta(days=offset)
        works = day.weekday() != 6 and day != closed
        assert priya.get(day, []) == (list(range(8, 17)) if works else []), day
        assert tom.get(day, []) == ([8, 9, 10, 11] if works and day.weekday() == 0 else []), day
    priya_days, tom_days = await days(engine, found["Priya"]), await days(engine, found["Tom"])
    assert priya_days[MONDAY] == (540, 0, False)
    assert closed not in priya_days
    assert MONDAY + timedelta(days=6) not in priya_days
    assert tom_days == {MONDAY: (240, 0, False), MONDAY + timedelta(days=14): (240, 0, False)}
    async with engine.connect() as conn:
        rows = {r.name: r for r in await conn.execute(select(technicians))}
    assert (rows["Priya"].skills, rows["Priya"].hours, rows["Priya"].active) == (
        "mot_tester,general",
        None,
        True,
    )
    assert json.loads(rows["Tom"].hours)["monday"] == ["08:00-12:00"]


async def test_apply_again_changes_nothing_and_leaving_out_retires(engine: AsyncEngine) -> None:
    data = garage_with_technicians()
    data["services"][3].update(skill="mot_tester", labour_minutes=150)
    first = await apply(engine, data)
    assert first.changes
    async with engine.connect() as conn:
        slots_before = await conn.scalar(select(func.count()).select_from(technician_slots))
        changes_before = await conn.scalar(select(func.count()).select_from(garage_changes))
        service = (
            await conn.execute(select(services).where(services.c.key == "full-service"))
        ).one()
    assert (service.skill, service.labour_minutes, service.mode) == ("mot_tester", 150, "timed")
    again = await apply(engine, data)
    assert again.changes == []
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(technician_slots)) == (
            slots_before
        )
        assert await conn.scalar(select(func.count()).select_from(garage_changes)) == (
            changes_before
        )
    # Tom left out, Priya's hours changed: readable lines; Tom retired, never deleted.
    data["technicians"] = [
        {"name": "Priya", "skills": ["mot_tester", "general"], "hours": {"monday": ["08:00-10:00"]}}
    ]
    changed = await apply(engine, data)
    assert "technician 'Tom' retired (left out)" in changed.changes
    assert "technician 'Priya': hours the garage's → monday 08:00-10:00" in changed.changes
    found = await ids(engine)
    assert set(found) == {"Priya", "Tom"}
    async with engine.connect() as conn:
        tom = (await conn.execute(select(technicians).where(technicians.c.name == "Tom"))).one()
    assert not tom.active
    assert await slot_hours(engine, found["Tom"]) == {}  # every future slot closed
    assert await slot_hours(engine, found["Tom"], open_only=False)  # but still there
    assert {w for w, _, _ in (await days(engine, found["Tom"])).values()} == {0}
    assert await slot_hours(engine, found["Priya"]) == {
        MONDAY + timedelta(days=d): [8, 9] for d in (0, 14)
    }
    # And back: the same row comes back to life with its slots open again.
    await apply(engine, garage_with_technicians())
    assert (await ids(engine))["Tom"] == found["Tom"]
    assert (await slot_hours(engine, found["Tom"]))[MONDAY] == [8, 9, 10, 11]


async def test_absences_close_the_day_and_withdrawing_reopens_it(engine: AsyncEngine) -> None:
    await apply(engine, garage_with_technicians())
    priya = (await ids(engine))["Priya"]
    tuesday, wednesday = MONDAY + timedelta(days=1), MONDAY + timedelta(days=2)
    async with engine.begin() as conn:
        absence = await conn.scalar(
            insert(absences)
            .values(
                technician_id=priya,
                first_day=tuesday,
                last_day=wednesday,
                reason="holiday",
                entered_by="tests",
                created_at=NOW,
            )
            .returning(absences.c.id)
        )
        await sync_technician_days(conn, parse_json(garage_with_technicians()), NOW, priya)
    hours = await slot_hours(engine, priya)
    assert tuesday not in hours
    assert wednesday not in hours
    assert hours[MONDAY] == hours[MONDAY + timedelta(days=3)] == list(range(8, 17))
    priya_days = await days(engine, priya)
    assert (priya_days[tuesday][2], priya_days[wednesday][2], priya_days[MONDAY][2]) == (
        True,
        True,
        False,
    )
    # An apply (sync_calendar) keeps the absence; a later extender too.
    await apply(engine, {**garage_with_technicians(), "closed": []})
    async with engine.begin() as conn:
        await extend_calendar(conn, parse_json(garage_with_technicians()), NOW)
    assert tuesday not in await slot_hours(engine, priya)
    async with engine.begin() as conn:
        await conn.execute(
            update(absences).where(absences.c.id == absence).values(withdrawn_at=NOW)
        )
        await sync_technician_days(conn, parse_json(garage_with_technicians()), NOW)
    assert (await slot_hours(engine, priya))[tuesday] == list(range(8, 17))
    assert (await days(engine, priya))[tuesday] == (540, 0, False)


async def test_a_new_technician_with_an_absence_already_entered_starts_absent(
    engine: AsyncEngine,
) -> None:
    data = garage_with_technicians()
    tom_only = {**data, "technicians": data["technicians"][1:]}
    await apply(engine, tom_only)
    tom = (await ids(engine))["Tom"]
    async with engine.begin() as conn:
        await conn.execute(delete(technician_slots))
        await conn.execute(delete(technician_days))
        await conn.execute(
            insert(absences).values(
                technician_id=tom,
                first_day=MONDAY,
                last_day=MONDAY,
                entered_by="tests",
                created_at=NOW,
            )
        )
        await extend_calendar(conn, parse_json(tom_only), NOW)
    assert list(await slot_hours(engine, tom)) == [MONDAY + timedelta(days=14)]
    assert (await days(engine, tom))[MONDAY] == (240, 0, True)


async def test_a_shortening_never_takes_working_minutes_below_booked(engine: AsyncEngine) -> None:
    await apply(engine, garage_with_technicians())
    priya = (await ids(engine))["Priya"]
    tuesday = MONDAY + timedelta(days=1)
    async with engine.begin() as conn:
        await conn.execute(
            update(technician_days)
            .where(technician_days.c.technician_id == priya, technician_days.c.day == tuesday)
            .values(minutes_booked=480)
        )
    data = garage_with_technicians()
    data["technicians"][0]["hours"] = {
        day: ["08:00-12:00"] for day in ("monday", "tuesday", "wednesday")
    }
    await apply(engine, data)
    priya_days = await days(engine, priya)
    assert priya_days[tuesday] == (480, 480, False)  # kept: the booked minutes stay valid
    assert priya_days[MONDAY] == (240, 0, False)  # the control: unbooked days shorten
    assert priya_days[MONDAY + timedelta(days=3)] == (0, 0, False)  # Thursday: now a day off
    assert (await slot_hours(engine, priya))[tuesday] == [8, 9, 10, 11]
    # Retired, the booked day still keeps its booked minutes.
    await apply(engine, {**data, "technicians": data["technicians"][1:]})
    assert (await days(engine, priya))[tuesday] == (480, 480, False)


async def test_a_new_slot_length_relays_technicians_slots(engine: AsyncEngine) -> None:
    await apply(engine, garage_with_technicians())
    tom = (await ids(engine))["Tom"]
    data = garage_with_technicians()
    data["garage"]["slot_minutes"] = 30
    await apply(engine, data)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(technician_slots).where(
                    technician_slots.c.technician_id == tom, technician_slots.c.open
                )
            )
        ).all()
    assert {r.ends_at - r.starts_at for r in rows} == {timedelta(minutes=30)}
    assert Counter(r.starts_at.astimezone(LONDON).date() for r in rows) == {
        MONDAY: 8,
        MONDAY + timedelta(days=14): 8,
    }
    assert (await days(engine, tom))[MONDAY] == (240, 0, False)


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_concurrent_extenders_create_nothing_twice(engine: AsyncEngine) -> None:
    """Eight extenders at once, without the setup lock (the worker takes it; this shows the
    inserts that ignore conflicts are enough on their own). The control: the same row
    inserted plainly is refused by the unique constraint, so that is what holds them."""
    await apply(engine, garage_with_technicians())
    document = parse_json(garage_with_technicians())
    async with engine.begin() as conn:
        expected = await conn.scalar(select(func.count()).select_from(technician_slots))
        expected_days = await conn.scalar(select(func.count()).select_from(technician_days))
        await conn.execute(delete(technician_slots))
        await conn.execute(delete(technician_days))
    racing = create_async_engine(engine.url, pool_size=8)
    start = asyncio.Event()

    async def extender() -> int:
        async with racing.begin() as conn:
            await conn.execute(select(1))
            await start.wait()
            return await extend_calendar(conn, document, NOW)

    try:
        tasks = [asyncio.create_task(extender()) for _ in range(8)]
        await asyncio.sleep(0.2)
        start.set()
        added = await asyncio.gather(*tasks)
    finally:
        await racing.dispose()
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(technician_slots)) == expected
        assert await conn.scalar(select(func.count()).select_from(technician_days)) == (
            expected_days
        )
        one = (await conn.execute(select(technician_slots).limit(1))).one()
    assert sum(added) >= expected  # bay slots are counted too; every technician slot once
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(
                insert(technician_slots).values(
                    technician_id=one.technician_id, starts_at=one.starts_at, ends_at=one.ends_at
                )
            )


async def test_the_example_garage_applies_through_the_cli(
    stack: Stack, engine: AsyncEngine
) -> None:
    checked = garagebook(stack, "garage", "check", str(EXAMPLE))
    assert checked.returncode == 0, checked.stderr
    applied = garagebook(stack, "garage", "apply", str(EXAMPLE))
    assert applied.returncode == 0, applied.stderr
    document = parse_toml(EXAMPLE.read_text())
    assert (len(document.bays), len(document.technicians)) == (6, 8)
    assert [t.name for t in document.technicians if "mot_tester" in t.skills] == ["Priya", "Tom"]
    async with engine.connect() as conn:
        rows = {r.name: r for r in await conn.execute(select(technicians))}
        tom_slots = await conn.scalar(
            select(func.count())
            .select_from(technician_slots)
            .where(technician_slots.c.technician_id == rows["Tom"].id)
        )
        drop_off = (
            await conn.execute(select(services).where(services.c.key == "full-service"))
        ).one()
    assert len(rows) == 8
    assert all(r.active for r in rows.values())
    assert tom_slots  # his part-time week has slots
    assert (drop_off.mode, drop_off.labour_minutes) == ("drop_off", 180)
    exported = garagebook(stack, "garage", "export")
    assert parse_toml(exported.stdout) == document
    reapplied = garagebook(stack, "garage", "apply", str(EXAMPLE))
    assert reapplied.returncode == 0
    async with engine.connect() as conn:
        versions = (await conn.execute(select(garage_changes.c.version))).all()
    assert len(versions) == 2  # the demo (reset) and the example: the second apply recorded nothing


async def test_bookings_whose_technician_no_longer_works_are_listed_with_a_reason(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    data = garage_with_technicians()
    data["closed"] = []
    data["technicians"][1] = {"name": "Tom", "skills": ["general"]}
    put = await api.put("/api/admin/garage", json=data, headers=AUTH)
    assert put.status_code == 200, put.text
    found = await ids(engine)
    starts: dict[str, dict[str, Any]] = {}
    for slot in await free_slots(api, 2):
        starts.setdefault(slot["starts_at"], slot)  # one bay per time: Priya is one person
    made = []
    for slot in list(starts.values())[:3]:
        response = await api.post("/api/bookings", json=booking_body(slot["id"], 2))
        assert response.status_code == 201, response.text
        made.append(response.json())
    # The booking path (not this part's) will pick a technician; here each is given Priya,
    # with her slot at that time claimed, as that path does.
    async with engine.begin() as conn:
        for booking in made:
            row = (await conn.execute(select(bookings).where(bookings.c.id == booking["id"]))).one()
            await conn.execute(
                update(bookings).where(bookings.c.id == row.id).values(technician_id=found["Priya"])
            )
            slot_id = await conn.scalar(
                select(technician_slots.c.id).where(
                    technician_slots.c.technician_id == found["Priya"],
                    technician_slots.c.starts_at == row.starts_at,
                )
            )
            assert slot_id is not None
            await conn.execute(
                insert(technician_claims).values(
                    booking_id=row.id, technician_slot_id=slot_id, active=True
                )
            )
        assert await outside_hours(conn, datetime.now(LONDON)) == []  # the control
        # The first as a drop-off would be: no technician slots claimed, only her day.
        await conn.execute(
            update(technician_claims)
            .where(technician_claims.c.booking_id == made[0]["id"])
            .values(active=False)
        )
        assert await outside_hours(conn, datetime.now(LONDON)) == []  # she works that day
    # Priya loses the skill the service needs (Tom keeps it, so the document is valid).
    data["technicians"][0]["skills"] = ["mot_tester"]
    result = (await api.put("/api/admin/garage", json=data, headers=AUTH)).json()
    assert {(b["id"], b["reason"]) for b in result["outside_hours"]} == {
        (b["id"], "technician lacks the skill 'general'") for b in made
    }
    # Her hours end before the bookings: not working then.
    data["technicians"][0] = {"name": "Priya", "skills": ["general"], "hours": {}}
    result = (await api.put("/api/admin/garage", json=data, headers=AUTH)).json()
    assert {(b["id"], b["reason"]) for b in result["outside_hours"]} == {
        (b["id"], "technician not working then") for b in made
    }
    # Retired.
    data["technicians"] = data["technicians"][1:]
    result = (await api.put("/api/admin/garage", json=data, headers=AUTH)).json()
    assert {b["reason"] for b in result["outside_hours"]} == {"technician retired"}
    assert len(result["outside_hours"]) == 3
    for booking in made:
        shown = await api.get(f"/api/bookings/{booking['id']}", headers=AUTH)
        assert shown.json()["status"] == "confirmed"  # kept, never cancelled
