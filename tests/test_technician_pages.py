"""The staff pages with technicians (issue 15), on both stacks, for an owner and a staff
account: the day view shows each technician's bookings, the hours left per skill and the
bookings flagged for reassignment with a form that reassigns them; the absences page lists,
enters (then shows what it flagged) and withdraws. A garage without technicians keeps its day
view as it was."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from garagebook.timeutil import utcnow
from garagebook.web.auth import Role, set_password
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.support.technicians import (
    MOT,
    OIL,
    a_day,
    add_drop_off_service,
    add_technician,
    book,
    drop_off,
    needs_skill,
    times_on,
)
from tests.test_web_pages import PASSWORD, csrf_of

SQL = Callable[..., Awaitable[list[Any]]]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROLES: list[Role] = ["owner", "staff"]


async def signed_in(app: FastAPI, api: httpx.AsyncClient, role: Role) -> None:
    async with app.state.db.transaction() as conn:
        await set_password(conn, "first-owner", PASSWORD, utcnow(), "owner")
        await set_password(conn, "kim", PASSWORD, utcnow(), role)
    token = csrf_of((await api.get("/staff/login")).text)
    answer = await api.post(
        "/staff/login", data={"csrf_token": token, "name": "kim", "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.text


def section(html: str, element_id: str) -> str:
    """The text from the element with `element_id` to the next table or section end."""
    match = re.search(rf'id="{element_id}".*?</(table|section)>', html, re.S)
    assert match is not None, element_id
    return match.group(0)


def column_of(html: str, name: str) -> str:
    """A technician's column of the day view."""
    columns = html.split('id="technician-columns"')[1].split('id="flagged-title"')[0]
    match = re.search(rf'data-technician="{name}".*?(?=data-technician=|$)', columns, re.S)
    assert match is not None, name
    return match.group(0)


async def test_the_day_view_of_a_garage_without_technicians_shows_none(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    await signed_in(app, api, "staff")
    page = await api.get("/staff")
    assert page.status_code == 200
    assert 'id="grid"' in page.text
    assert 'id="technicians"' not in page.text
    assert "Hours left" not in page.text


@pytest.mark.parametrize("role", ROLES)
async def test_the_day_view_shows_technicians_hours_left_and_reassigns_flagged_bookings(
    stack: Stack, app: FastAPI, api: httpx.AsyncClient, sql: SQL, role: Role
) -> None:
    priya = await add_technician(stack.database_url, "Priya", "mot_tester,general")
    sam = await add_technician(stack.database_url, "Sam")
    await needs_skill(stack.database_url, MOT, "mot_tester")
    times = await times_on(api)
    day = times[0][0]["starts_at"][:10]
    oil = await book(api, times[1][0]["id"], OIL, 1)  # Sam
    mot = await book(api, times[3][0]["id"], MOT, 2)  # Priya
    assert (oil["technician_id"], mot["technician_id"]) == (sam, priya)
    away = await api.post(
        "/api/admin/absences",
        json={"technician_id": sam, "first_day": day, "last_day": day, "reason": "sick"},
        headers=ADMIN,
    )
    assert away.status_code == 201
    await signed_in(app, api, role)

    page = await api.get("/staff", params={"date": day})

    assert page.status_code == 200
    columns = page.text.split('id="technician-columns"')[1].split('id="flagged-title"')[0]
    assert 'data-technician="Priya"' in columns
    assert 'data-technician="Sam"' in columns
    assert oil["reference"] in columns
    assert mot["reference"] in columns
    hours = section(page.text, "hours-left")
    # Priya works 9 hours and has a 1-hour MOT; Sam is absent, so general is Priya's alone.
    assert re.search(r'data-skill="general"><td>general</td><td>8 h</td>', hours)
    assert re.search(r'data-skill="mot_tester"><td>mot_tester</td><td>8 h</td>', hours)
    flagged = section(page.text, "flagged")
    assert oil["reference"] in flagged
    assert "Sam is absent that day." in flagged
    assert mot["reference"] not in flagged
    assert 'id="nav-absences"' in page.text

    moved = await api.post(
        f"/staff/bookings/{oil['id']}/reassign",
        data={"csrf_token": csrf_of(page.text), "date": day, "technician_id": str(priya)},
    )

    assert moved.status_code == 303
    assert moved.headers["location"] == f"/staff?date={day}&done=reassigned"
    assert await sql("SELECT technician_id FROM bookings WHERE id = :b", b=oil["id"]) == [(priya,)]
    after = await api.get(moved.headers["location"])
    assert 'id="flagged-none"' in after.text
    assert re.search(r'data-skill="general"><td>general</td><td>7 h</td>', after.text)
    # Refused (Sam is absent): back to the day with the page's words, nothing changed.
    refused = await api.post(
        f"/staff/bookings/{mot['id']}/reassign",
        data={"csrf_token": csrf_of(after.text), "date": day, "technician_id": str(sam)},
    )
    assert refused.status_code == 303
    assert refused.headers["location"] == f"/staff?date={day}&error=tech_taken"
    shown = await api.get(refused.headers["location"])
    assert "That technician cannot take it then" in shown.text
    assert await sql("SELECT technician_id FROM bookings WHERE id = :b", b=mot["id"]) == [(priya,)]
    forged = await api.post(
        f"/staff/bookings/{mot['id']}/reassign",
        data={"csrf_token": "forged", "date": day, "technician_id": str(sam)},
    )
    assert forged.status_code == 403


@pytest.mark.parametrize("role", ROLES)
async def test_the_absences_page_enters_shows_flagged_and_withdraws(
    stack: Stack, app: FastAPI, api: httpx.AsyncClient, sql: SQL, role: Role
) -> None:
    assert (await api.get("/staff/absences")).headers["location"] == "/staff/login"
    sam = await add_technician(stack.database_url, "Sam")
    times = await times_on(api)
    day = times[0][0]["starts_at"][:10]
    oil = await book(api, times[2][0]["id"], OIL, 1)
    await signed_in(app, api, role)
    page = await api.get("/staff/absences")
    assert page.status_code == 200
    assert 'id="absences-none"' in page.text

    entered = await api.post(
        "/staff/absences",
        data={
            "csrf_token": csrf_of(page.text),
            "technician_id": str(sam),
            "first_day": day,
            "last_day": "",
            "reason": "training",
        },
    )

    assert entered.status_code == 201, entered.text
    shown = section(entered.text, "flagged-bookings")
    assert oil["reference"] in shown
    assert f'href="/staff?date={day}"' in shown
    listed = section(entered.text, "absences-list")
    assert "Sam" in listed
    assert "training" in listed
    assert "kim" in listed
    [(absence_id,)] = await sql("SELECT id FROM absences")
    assert await sql("SELECT status FROM bookings WHERE id = :b", b=oil["id"]) == [("confirmed",)]

    withdrawn = await api.post(
        f"/staff/absences/{absence_id}/withdraw", data={"csrf_token": csrf_of(entered.text)}
    )
    assert withdrawn.status_code == 303
    after = await api.get(withdrawn.headers["location"])
    assert "Absence withdrawn" in after.text
    assert "withdrawn</td>" in section(after.text, "absences-list")
    again = await api.post(
        f"/staff/absences/{absence_id}/withdraw", data={"csrf_token": csrf_of(after.text)}
    )
    assert again.headers["location"] == "/staff/absences?error=withdrawn"
    backwards = await api.post(
        "/staff/absences",
        data={
            "csrf_token": csrf_of(after.text),
            "technician_id": str(sam),
            "first_day": day,
            "last_day": "2000-01-01",
        },
    )
    assert backwards.headers["location"] == "/staff/absences?error=invalid"
    assert await sql("SELECT count(*) FROM absences") == [(1,)]


async def test_flags_a_booking_without_technician_one_retired_and_one_lacking_the_skill(
    stack: Stack, app: FastAPI, api: httpx.AsyncClient, sql: SQL
) -> None:
    times = await times_on(api)
    day = times[0][0]["starts_at"][:10]
    before = await book(api, times[1][0]["id"], OIL, 1)  # no technician listed yet: none
    assert before["technician_id"] is None
    sam = await add_technician(stack.database_url, "Sam")
    alex = await add_technician(stack.database_url, "Alex", "general,tyres")
    retired = await book(api, times[2][0]["id"], OIL, 2)  # Sam (fewest skills)
    lacking = await book(api, times[3][0]["id"], MOT, 3)  # Sam again
    fine = await book(api, times[4][0]["id"], OIL, 4)
    assert (retired["technician_id"], lacking["technician_id"]) == (sam, sam)
    await sql("UPDATE technicians SET active = false WHERE id = :t", t=sam)
    await sql("UPDATE bookings SET technician_id = :t WHERE id = :b", t=alex, b=lacking["id"])
    # A setup change no document could make now (no active MOT tester): set in the database,
    # as an older document left it.
    await sql("UPDATE services SET skill = 'mot_tester' WHERE id = :s", s=MOT)
    await signed_in(app, api, "staff")

    page = await api.get("/staff", params={"date": day})

    flagged = section(page.text, "flagged")
    assert f'data-booking="{before["reference"]}"' in flagged
    assert "No technician: the garage lists technicians now." in flagged
    assert "Sam is retired." in flagged
    assert "Alex lacks the skill it needs (mot_tester)." in flagged
    assert f'data-booking="{fine["reference"]}"' in flagged  # Sam's too: he is retired
    assert f'data-booking="{lacking["reference"]}"' in flagged
    hours = section(page.text, "hours-left")
    assert 'data-skill="tyres"' in hours  # Alex's skills only: Sam is retired
    assert re.search(r'data-skill="general"><td>general</td><td>9 h</td>', hours)


async def test_the_drop_offs_place_one_on_a_bay_and_the_grid_shows_it_there(
    stack: Stack, app: FastAPI, api: httpx.AsyncClient, sql: SQL
) -> None:
    await add_technician(stack.database_url, "Sam")
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    left = (await api.post("/api/bookings", json=drop_off(service, day))).json()
    await signed_in(app, api, "staff")
    page = await api.get("/staff", params={"date": day.isoformat()})
    listed = section(page.text, "drop-off-list")
    assert f'id="pb-{left["id"]}"' in listed
    assert left["reference"] not in column_of(page.text, "Sam")  # not worked on at a time yet
    offered = re.findall(rf'<select id="pt-{left["id"]}".*?</select>', listed, re.S)[0]
    # Its 4 hours fit from the window's opening (08:00) until collection (16:30).
    assert re.findall(r">(\d\d:\d\d)</option>", offered) == [f"{h:02d}:00" for h in range(8, 13)]
    ten = re.findall(r'<option value="([^"]+)">10:00</option>', offered)[0]

    placed = await api.post(
        f"/staff/bookings/{left['id']}/reassign",
        data={
            "csrf_token": csrf_of(page.text),
            "date": day.isoformat(),
            "bay_id": "2",
            "starts_at": ten,
        },
    )

    assert placed.status_code == 303
    assert placed.headers["location"] == f"/staff?date={day.isoformat()}&done=placed_on_bay"
    claimed = await sql(
        "SELECT count(*) FROM booking_slots WHERE booking_id = :b AND active", b=left["id"]
    )
    assert claimed == [(4,)]
    after = (await api.get(placed.headers["location"])).text
    assert "Bay 2, 10:00–14:00" in section(after, "drop-off-list")
    assert re.search(
        rf'data-booking="{left["reference"]}">10:00–14:00 [^<]*· Bay 2<', column_of(after, "Sam")
    )
    cell = re.findall(
        rf'<td class="booking"[^>]*data-booking="{left["reference"]}">.*?</td>', after, re.S
    )
    assert len(cell) == 1
    assert 'rowspan="4"' in cell[0]
    assert "10:00–14:00" in cell[0]
    assert f'id="cancel-{left["reference"]}"' not in cell[0]  # its forms are under Drop-offs
    assert after.count(f'id="cancel-{left["reference"]}"') == 1
    # A time it does not fit (past collection): back with the page's words, nothing changed.
    late = await api.post(
        f"/staff/bookings/{left['id']}/reassign",
        data={
            "csrf_token": csrf_of(after),
            "date": day.isoformat(),
            "bay_id": "1",
            "starts_at": ten.replace("T10:", "T14:"),
        },
    )
    assert late.status_code == 303
    assert "error=" in late.headers["location"]
    assert await sql(
        "SELECT count(*) FROM booking_slots WHERE booking_id = :b AND active", b=left["id"]
    ) == [(4,)]
