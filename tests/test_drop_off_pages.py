"""Drop-offs on the pages (issue 15), on both stacks: the booking page offers a drop-off
service by day (its window and collection time, no time step, no hold) and books it with the
day, without JavaScript; the confirmation page says when to bring the car and when to collect
it, offers no move and cancels as for a timed booking; the staff day view lists the day's
drop-offs and places one on another qualified technician through `reassign`.

The garage is the demo garage with technicians and the drop-off service of
tests/support/technicians.py: window 08:00-09:30, collection from 16:30, 240 labour minutes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from garagebook.jobs.messages import compose, load_booking
from garagebook.timeutil import utcnow
from tests.support.stack import Stack
from tests.support.technicians import (
    OIL,
    a_day,
    add_drop_off_service,
    add_technicians,
    drop_off,
)
from tests.test_technician_pages import section, signed_in
from tests.test_web_pages import csrf_of

SQL = Callable[..., Awaitable[list[Any]]]
TIMES = "drop off 08:00–09:30, collect from 16:30"


def long_day(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def details(page: httpx.Response, day: date, service: int, **typed: str) -> dict[str, str]:
    """The details form of `page` filled in, as a browser without JavaScript posts it."""
    return {
        "csrf_token": csrf_of(page.text),
        "service_id": str(service),
        "day": day.isoformat(),
        "idempotency_key": re.findall(r'name="idempotency_key" value="([0-9a-f]+)"', page.text)[0],
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "registration": "ab12cde",
        **typed,
    }


async def book_by_page(api: httpx.AsyncClient, service: int, day: date) -> str:
    """Book a drop-off through the booking page's form; its cancel token."""
    page = await api.get("/", params={"service": service, "date": day.isoformat()})
    answer = await api.post("/book", data=details(page, day, service))
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"]).rsplit("/", 1)[1]


async def test_a_drop_off_is_booked_by_day_through_the_page_and_cancelled(
    stack: Stack, app: FastAPI, api: httpx.AsyncClient, sql: SQL
) -> None:
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()

    choose = await api.get("/", params={"service": service})

    assert choose.status_code == 200
    days = section(choose.text, "step-day")
    link = f'href="/?service={service}&amp;date={day.isoformat()}#step-details"'
    assert link in days
    assert TIMES in days
    assert 'id="step-time"' not in choose.text  # no time step
    assert 'id="details-form"' not in choose.text  # not before a day is picked
    page = await api.get("/", params={"service": service, "date": day.isoformat()})
    assert page.status_code == 200
    assert 'id="step-time"' not in page.text
    assert 'action="/book/hold"' not in page.text  # no hold
    assert 'data-mode="drop_off"' in page.text  # book.js stands aside
    form = section(page.text, "details")
    assert f'name="day" value="{day.isoformat()}"' in form
    assert 'name="slot_id"' not in form
    assert f"on {long_day(day)}: {TIMES}." in page.text

    answer = await api.post("/book", data=details(page, day, service))

    assert answer.status_code == 303, answer.text
    token = str(answer.headers["location"]).rsplit("/", 1)[1]
    rows = await sql(
        "SELECT slot_id, technician_id, technician_minutes, vehicle_registration, status"
        " FROM bookings"
    )
    assert [tuple(r) for r in rows] == [(None, ids["Sam"], 240, "AB12 CDE", "confirmed")]
    # Its mail, as the worker reads the booking: no bay, and the drop-off's times.
    async with app.state.db.read() as conn:
        mail = await load_booking(conn, (await sql("SELECT id FROM bookings"))[0][0])
    assert mail is not None
    assert (mail.drop_off, mail.bay) == (True, None)
    text = compose(mail, "confirmed", app.state.settings, utcnow()).get_body(("plain",))
    assert text is not None
    assert f"When:       Drop off {long_day(day)} from 08:00; collect from 16:30" in str(
        text.get_content()  # type: ignore[attr-defined]
    )
    confirmation = await api.get(f"/manage/{token}")
    assert confirmation.status_code == 200
    assert (
        f"Bring your car in on {long_day(day)}, 08:00–09:30, and collect it from 16:30"
        in confirmation.text
    )
    assert re.search(r'id="booking-drop-off">08:00–09:30<', confirmation.text)
    assert re.search(r'id="booking-collect">16:30<', confirmation.text)
    assert f'id="booking-date">{long_day(day)}<' in confirmation.text
    assert "<dt>Bay</dt>" not in confirmation.text
    assert "Change the day" in confirmation.text  # to another day with room, never a time
    assert 'name="slot_id"' not in confirmation.text
    assert f'value="{day.isoformat()}"' not in confirmation.text  # not its own day
    ask = await api.get(f"/manage/{token}/cancel")
    assert f"on {long_day(day)}, drop off from 08:00, collect from 16:30" in ask.text
    cancelled = await api.post(f"/manage/{token}/cancel", data={"csrf_token": csrf_of(ask.text)})
    assert cancelled.status_code == 303
    assert await sql("SELECT status FROM bookings") == [("cancelled",)]
    assert await sql("SELECT minutes_booked FROM technician_days WHERE day = :d", d=day) == [(0,)]
    after = await api.get(f"/manage/{token}")
    assert "This booking is cancelled" in after.text
    assert "To change the day" not in after.text


async def test_a_customer_changes_the_day_of_a_drop_off_on_its_page(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    """ "Change the day" lists the other days with room; picking one moves the booking (its
    minutes follow), and a day that filled up meanwhile leaves it where it was, saying so."""
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    token = await book_by_page(api, service, day)
    page = await api.get(f"/manage/{token}")
    offered = re.findall(r'name="day" value="([0-9-]{10})"', page.text)
    assert offered
    assert day.isoformat() not in offered
    new_day = date.fromisoformat(offered[0])
    moved = await api.post(
        f"/manage/{token}/reschedule", data={"csrf_token": csrf_of(page.text), "day": offered[0]}
    )
    assert moved.status_code == 303, moved.text
    assert moved.headers["location"] == f"/manage/{token}?moved=1"
    shown = await api.get(moved.headers["location"])
    assert f"Your booking has moved to {long_day(new_day)}" in shown.text
    assert f'id="booking-date">{long_day(new_day)}<' in shown.text
    minutes = "SELECT day, minutes_booked FROM technician_days WHERE technician_id = :t"
    booked = {str(d): m for d, m in await sql(minutes, t=ids["Sam"]) if m}
    assert booked == {new_day.isoformat(): 240}

    # Sam's first day filled by another customer while this one looked: refused, kept.
    await sql("UPDATE technician_days SET minutes_working = 240")
    assert (await api.post("/api/bookings", json=drop_off(service, day, 9))).status_code == 201
    page = await api.get(f"/manage/{token}")
    refused = await api.post(
        f"/manage/{token}/reschedule", data={"csrf_token": csrf_of(page.text), "day": str(day)}
    )
    assert refused.status_code == 409, refused.text
    assert "Your booking has not changed" in refused.text
    assert f'id="booking-date">{long_day(new_day)}<' in refused.text


async def test_a_day_gone_meanwhile_shows_the_form_again_with_what_was_typed(
    stack: Stack, api: httpx.AsyncClient, sql: SQL
) -> None:
    await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    page = await api.get("/", params={"service": service, "date": day.isoformat()})
    first = await api.post("/book", data=details(page, day, service))
    assert first.status_code == 303
    # Sam's 9-hour day has 300 minutes left: a second 240-minute drop-off does not fit.
    second_page = await api.get("/", params={"service": service, "date": day.isoformat()})
    assert 'id="details-form"' in second_page.text  # still offered: 300 minutes left
    await sql(
        "UPDATE technician_days SET minutes_working = minutes_booked + 100 WHERE day = :d", d=day
    )

    refused = await api.post(
        "/book", data=details(second_page, day, service, name="Grace Hopper", make="Ford")
    )

    assert refused.status_code == 409
    assert "Sorry, that day is no longer available." in refused.text
    assert 'value="Grace Hopper"' in refused.text
    assert 'value="Ford"' in refused.text
    assert f'name="day" value="{day.isoformat()}"' in refused.text
    assert f'href="/?service={service}">Pick another day' in refused.text
    assert len(await sql("SELECT id FROM bookings")) == 1
    gone = await api.get("/", params={"service": service, "date": day.isoformat()})
    assert 'id="details-form"' not in gone.text  # the day is no longer offered
    assert f"date={day.isoformat()}" not in section(gone.text, "step-day")
    # A day posted for a timed service is the form again with the server's words, not a 500.
    timed = await api.post("/book", data=details(refused, day, OIL))
    assert timed.status_code == 422
    assert "That service is booked for a time" in timed.text


async def test_the_staff_day_lists_drop_offs_and_places_one_on_another_technician(
    stack: Stack, app: FastAPI, api: httpx.AsyncClient, sql: SQL
) -> None:
    ids = await add_technicians(stack.database_url, ("Sam", "general"), ("Alex", "general"))
    priya = (await add_technicians(stack.database_url, ("Priya", "mot_tester")))["Priya"]
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    made = await api.post("/api/bookings", json=drop_off(service, day, 7))
    assert made.status_code == 201, made.text
    booking = made.json()
    first = booking["technician_id"]
    other = next(name for name, tid in ids.items() if tid != first)
    first_name = next(name for name, tid in ids.items() if tid == first)
    await signed_in(app, api, "staff")

    page = await api.get("/staff", params={"date": day.isoformat()})

    assert page.status_code == 200
    listed = section(page.text, "drop-off-list")
    row = listed.split(f'data-drop-off="{booking["reference"]}"')[1]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[:6] == [
        booking["reference"],
        "Full service (left for the day)",
        "DR07 OPS",
        "Customer 7",
        first_name,
        "4 h",
    ]
    choices = re.findall(r'<option value="(\d+)">([^<]+)</option>', cells[6])
    assert choices == [(str(ids[other]), other)]  # not its own, not the MOT tester
    assert f'action="/staff/bookings/{booking["id"]}/cancel"' in row
    # 9 hours each; the drop-off's 4 are gone from one day.
    assert re.search(r'data-skill="general"><td>general</td><td>14 h</td>', page.text)

    placed = await api.post(
        f"/staff/bookings/{booking['id']}/reassign",
        data={
            "csrf_token": csrf_of(page.text),
            "date": day.isoformat(),
            "technician_id": str(ids[other]),
        },
    )

    assert placed.status_code == 303
    assert placed.headers["location"] == f"/staff?date={day.isoformat()}&done=placed"
    assert await sql("SELECT technician_id FROM bookings") == [(ids[other],)]
    after = await api.get(placed.headers["location"])
    assert "Drop-off placed on the technician you picked" in after.text
    cells = re.findall(r"<td[^>]*>(.*?)</td>", section(after.text, "drop-off-list"), re.S)
    assert cells[4] == other
    minutes = await sql(
        "SELECT technician_id, minutes_booked FROM technician_days WHERE day = :d ORDER BY 1",
        d=day,
    )
    assert dict(minutes) == {ids[first_name]: 0, ids[other]: 240, priya: 0}
    # Refused by the day's counter (the first has 100 minutes left): the page's words, unmoved.
    await sql(
        "UPDATE technician_days SET minutes_working = 100 WHERE technician_id = :t AND day = :d",
        t=first,
        d=day,
    )
    refused = await api.post(
        f"/staff/bookings/{booking['id']}/reassign",
        data={
            "csrf_token": csrf_of(after.text),
            "date": day.isoformat(),
            "technician_id": str(first),
        },
    )
    assert refused.status_code == 303
    assert "&error=" in refused.headers["location"]
    shown = await api.get(refused.headers["location"])
    assert shown.status_code == 200
    assert 'class="flash error" role="alert"' in shown.text
    assert await sql("SELECT technician_id FROM bookings") == [(ids[other],)]

    cancelled = await api.post(
        f"/staff/bookings/{booking['id']}/cancel",
        data={"csrf_token": csrf_of(shown.text), "date": day.isoformat()},
    )

    assert cancelled.headers["location"] == f"/staff?date={day.isoformat()}&done=cancelled"
    gone = await api.get(cancelled.headers["location"])
    assert 'id="drop-offs-none"' in gone.text
    assert await sql("SELECT status FROM bookings") == [("cancelled",)]


async def test_staff_move_a_drop_off_to_another_day_from_the_day_view(
    stack: Stack, app: FastAPI, api: httpx.AsyncClient, sql: SQL
) -> None:
    """The Drop-offs' "Move to" form: the same move as the API's (staff: no notice), then the
    day it is on now; a full day refuses it, the booking stays and the page says so."""
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    later = day + timedelta(days=1 if day.weekday() != 5 else 2)  # not a Sunday
    booking = (await api.post("/api/bookings", json=drop_off(service, day, 7))).json()
    await signed_in(app, api, "staff")
    page = await api.get("/staff", params={"date": day.isoformat()})
    row = section(page.text, "drop-off-list").split(f'data-drop-off="{booking["reference"]}"')[1]
    assert f'action="/staff/bookings/{booking["id"]}/move-day"' in row

    moved = await api.post(
        f"/staff/bookings/{booking['id']}/move-day",
        data={"csrf_token": csrf_of(page.text), "date": day.isoformat(), "day": str(later)},
    )

    assert moved.status_code == 303
    assert moved.headers["location"] == f"/staff?date={later.isoformat()}&done=moved_day"
    shown = await api.get(moved.headers["location"])
    assert "Drop-off moved to this day" in shown.text
    assert booking["reference"] in section(shown.text, "drop-off-list")
    minutes = "SELECT day, minutes_booked FROM technician_days WHERE technician_id = :t"
    assert {str(d): m for d, m in await sql(minutes, t=ids["Sam"]) if m} == {str(later): 240}

    # The first day filled meanwhile: refused, back to the day it stays on, saying why.
    await sql("UPDATE technician_days SET minutes_working = 240")
    assert (await api.post("/api/bookings", json=drop_off(service, day, 8))).status_code == 201
    refused = await api.post(
        f"/staff/bookings/{booking['id']}/move-day",
        data={"csrf_token": csrf_of(shown.text), "date": later.isoformat(), "day": str(day)},
    )
    assert refused.status_code == 303
    assert refused.headers["location"].startswith(f"/staff?date={later.isoformat()}&error=")
    again = await api.get(refused.headers["location"])
    assert 'class="flash error" role="alert"' in again.text
    assert booking["reference"] in section(again.text, "drop-off-list")
    assert {str(d): m for d, m in await sql(minutes, t=ids["Sam"]) if m} == {
        str(later): 240,
        str(day): 240,
    }


async def test_staff_take_a_car_in_for_the_day_as_a_walk_in_drop_off(
    stack: Stack, app: FastAPI, api: httpx.AsyncClient, sql: SQL
) -> None:
    """The Drop-offs' "Take a car in for the day": a drop-off of the day shown, booked by staff
    through the booking path (the garage's own address without one); a full day refuses it."""
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    day = a_day()
    await signed_in(app, api, "staff")
    page = await api.get("/staff", params={"date": day.isoformat()})
    form = section(page.text, "drop-off-walk-in")
    assert re.findall(r'<option value="(\d+)">', form) == [str(service)]  # drop-offs only
    typed = {
        "csrf_token": csrf_of(page.text),
        "date": day.isoformat(),
        "service_id": str(service),
        "name": "Walk-in Wendy",
        "registration": "wk12 ndy",
    }

    taken = await api.post("/staff/walk-in-drop-off", data=typed)

    assert taken.status_code == 303
    assert taken.headers["location"] == f"/staff?date={day.isoformat()}&done=walk_in_drop_off"
    shown = await api.get(taken.headers["location"])
    assert "Car taken in for the day" in shown.text
    assert "Walk-in Wendy" in section(shown.text, "drop-off-list")
    rows = await sql(
        "SELECT slot_id, technician_id, technician_minutes, customer_email FROM bookings"
    )
    assert [tuple(r) for r in rows] == [(None, ids["Sam"], 240, app.state.settings.walk_in_email)]

    await sql("UPDATE technician_days SET minutes_working = 240")  # Sam's day is now full
    refused = await api.post("/staff/walk-in-drop-off", data={**typed, "name": "Another"})
    assert refused.status_code == 303
    assert "&error=" in refused.headers["location"]
    assert await sql("SELECT count(*) FROM bookings") == [(1,)]
    nameless = await api.post("/staff/walk-in-drop-off", data={**typed, "name": ""})
    assert "&error=" in nameless.headers["location"]
