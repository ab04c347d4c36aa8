"""Vehicles and the MOT (issue 8), on both stacks: a vehicle's history for staff, recording the
MOT expiry (staff and customer), marking a booking done, and the next expiry after a
completed MOT under the UK's keep-your-renewal-date rule."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from garagebook.schema import bookings
from garagebook.vehicles.mot import next_mot_expiry
from tests.support.api import booking_body, free_slots, service_id_named
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.test_web_pages import add_staff, csrf_of, sign_in

SQL = Callable[..., Awaitable[list[Any]]]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ZONE = ZoneInfo("Europe/London")


def today() -> date:
    return datetime.now(ZONE).date()


def a_year_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return date(day.year + 1, 2, 28)


async def book(
    api: httpx.AsyncClient,
    service: str,
    registration: str = "AB12 CDE",
    *,
    index: int = 0,
    email: str = "ada@example.com",
) -> dict[str, Any]:
    service_id = await service_id_named(api, service)
    slot = (await free_slots(api, service_id))[index]
    body = booking_body(slot["id"], service_id)
    body["vehicle"] = {**body["vehicle"], "registration": registration}
    body["customer"] = {**body["customer"], "email": email}
    response = await api.post("/api/bookings", json=body)
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


async def move_back(sql: SQL, stack: Stack, booking_id: str, days: int) -> None:
    """Put a booking `days` into the past (the API only books future times)."""
    if stack.is_postgres:
        shift = f"- interval '{days} days'"
        await sql(
            f"UPDATE bookings SET starts_at = starts_at {shift}, ends_at = ends_at {shift} "  # noqa: S608
            "WHERE id = :id",
            id=booking_id,
        )
    else:
        await sql(
            "UPDATE bookings SET starts_at = datetime(starts_at, :shift), "
            "ends_at = datetime(ends_at, :shift) WHERE id = :id",
            shift=f"-{days} days",
            id=booking_id,
        )


async def complete(api: httpx.AsyncClient, booking_id: str) -> httpx.Response:
    return await api.post(f"/api/bookings/{booking_id}/complete", headers=ADMIN)


async def set_mot(api: httpx.AsyncClient, registration: str, expires: date) -> None:
    response = await api.put(
        f"/api/vehicles/{registration}/mot",
        json={"expires_on": expires.isoformat()},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text


async def vehicle(api: httpx.AsyncClient, registration: str) -> dict[str, Any]:
    response = await api.get(f"/api/vehicles/{registration}", headers=ADMIN)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


# --- history ---------------------------------------------------------------------------------


async def test_staff_see_a_vehicles_bookings_past_and_upcoming_and_the_services_done(
    api: httpx.AsyncClient, sql: SQL, stack: Stack
) -> None:
    mot = await book(api, "MOT", "ab12cde")  # any spelling: one vehicle
    oil = await book(api, "Oil change", "AB12 CDE")
    later = await book(api, "Oil change", "AB 12CDE", index=5)
    other = await book(api, "MOT", "XY34 ZZZ", index=3)
    await move_back(sql, stack, mot["id"], 20)
    assert (await complete(api, mot["id"])).status_code == 200
    assert (await api.post(f"/api/bookings/{later['id']}/cancel", headers=ADMIN)).status_code == 200

    history = await vehicle(api, "ab12 cde")
    assert (history["registration"], history["make"], history["model"]) == (
        "AB12 CDE",
        "Ford",
        "Focus",
    )
    assert [b["reference"] for b in history["past"]] == [mot["reference"]]
    [past] = history["past"]
    assert past["service"] == "MOT"
    assert past["status"] == "completed"
    assert past["completed_at"] is not None
    assert datetime.fromisoformat(past["starts_at"]) < datetime.now(ZONE)
    assert datetime.fromisoformat(past["starts_at"]).utcoffset() == ZONE.utcoffset(
        datetime.fromisoformat(past["starts_at"]).replace(tzinfo=None)
    )  # local time, with the garage's offset
    upcoming = {b["reference"]: b for b in history["upcoming"]}
    assert set(upcoming) == {oil["reference"], later["reference"]}
    assert upcoming[oil["reference"]]["status"] == "confirmed"
    assert upcoming[later["reference"]]["status"] == "cancelled"
    assert other["reference"] not in str(history)
    assert history["services_done"] == [
        {
            "reference": mot["reference"],
            "service": "MOT",
            "starts_at": past["starts_at"],
            "completed_at": past["completed_at"],
        }
    ]
    # The next MOT was set by the completed one: a year after its (past) day.
    tested = date.fromisoformat(past["starts_at"][:10])
    assert history["mot_expires_on"] == a_year_after(tested).isoformat()


async def test_vehicle_history_is_for_staff_only_and_404_for_an_unknown_car(
    api: httpx.AsyncClient,
) -> None:
    await book(api, "MOT")
    assert (await api.get("/api/vehicles/AB12CDE")).status_code == 401
    wrong = await api.get("/api/vehicles/AB12CDE", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    unknown = await api.get("/api/vehicles/ZZ99ZZZ", headers=ADMIN)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "vehicle_not_found"
    unchanged = await api.put("/api/vehicles/AB12CDE/mot", json={"expires_on": today().isoformat()})
    assert unchanged.status_code == 401
    assert (await vehicle(api, "AB12CDE"))["mot_expires_on"] is None


# --- completing bookings and the next MOT ----------------------------------------------------


def test_the_next_expiry_keeps_the_renewal_date_for_a_test_at_most_a_month_minus_a_day_early() -> (
    None
):
    expiry = date(2026, 5, 15)
    assert next_mot_expiry(date(2026, 5, 15), expiry) == date(2027, 5, 15)  # on the day
    assert next_mot_expiry(date(2026, 4, 16), expiry) == date(2027, 5, 15)  # a month minus a day
    assert next_mot_expiry(date(2026, 4, 15), expiry) == date(2027, 4, 15)  # a month: too early
    assert next_mot_expiry(date(2026, 5, 20), expiry) == date(2027, 5, 20)  # expired: from test
    assert next_mot_expiry(date(2026, 3, 10), None) == date(2027, 3, 10)  # none known
    assert next_mot_expiry(date(2028, 2, 29), None) == date(2029, 2, 28)  # leap day
    end_of_march = date(2026, 3, 31)  # a month before is 28 February
    assert next_mot_expiry(date(2026, 3, 1), end_of_march) == date(2027, 3, 31)
    assert next_mot_expiry(date(2026, 2, 28), end_of_march) == date(2027, 2, 28)


async def test_completing_an_mot_sets_the_next_expiry_by_the_uk_rule(
    api: httpx.AsyncClient, sql: SQL, stack: Stack
) -> None:
    now = today()
    # registration, current expiry, days the booking is moved back, which date the next
    # expiry runs a year from: the test date, or the current expiry (tested at most a month
    # minus a day before it).
    cases = [
        ("AA11 AAA", None, 0, "test"),
        ("BB11 BBB", now + timedelta(days=20), 0, "expiry"),
        ("CC11 CCC", now + timedelta(days=40), 0, "test"),
        ("DD11 DDD", now - timedelta(days=2), 0, "test"),
        ("EE11 EEE", now + timedelta(days=3), 5, "expiry"),
        ("FF11 FFF", None, 5, "test"),
    ]
    for i, (registration, current, days_back, rule) in enumerate(cases):
        booking = await book(api, "MOT", registration, index=i)
        if current is not None:
            await set_mot(api, registration, current)
        if days_back:
            await move_back(sql, stack, booking["id"], days_back)
        starts = (await api.get(f"/api/bookings/{booking['id']}", headers=ADMIN)).json()[
            "starts_at"
        ]
        # The test date: the booking's day, or today when it is marked done before that day.
        test_date = min(date.fromisoformat(starts[:10]), now)
        response = await complete(api, booking["id"])
        assert response.status_code == 200, response.text
        done = response.json()
        assert done["status"] == "completed"
        expected = a_year_after(current if rule == "expiry" and current else test_date)
        assert done["vehicle"]["mot_expires_on"] == expected.isoformat(), registration
        assert (await vehicle(api, registration))["mot_expires_on"] == expected.isoformat()


async def test_completing_is_idempotent_keeps_the_slot_and_only_an_mot_renews(
    api: httpx.AsyncClient,
) -> None:
    booking = await book(api, "MOT")
    first = (await complete(api, booking["id"])).json()
    again = await complete(api, booking["id"])
    assert again.status_code == 200
    assert again.json()["completed_at"] == first["completed_at"]
    assert again.json()["vehicle"]["mot_expires_on"] == first["vehicle"]["mot_expires_on"]
    assert first["vehicle"]["mot_expires_on"] == a_year_after(today()).isoformat()

    # A completed booking keeps its time: nobody else can book it.
    mot_id = await service_id_named(api, "MOT")
    taken = await api.post("/api/bookings", json=booking_body(booking["slot_id"], mot_id))
    assert taken.status_code == 409
    assert booking["slot_id"] not in {s["id"] for s in await free_slots(api, mot_id)}

    oil = await book(api, "Oil change", "OI11 LLL")
    await set_mot(api, "OI11 LLL", today() + timedelta(days=10))
    assert (await complete(api, oil["id"])).json()["vehicle"]["mot_expires_on"] == (
        today() + timedelta(days=10)
    ).isoformat()


async def test_a_cancelled_booking_cannot_be_completed(api: httpx.AsyncClient) -> None:
    booking = await book(api, "MOT")
    assert (
        await api.post(f"/api/bookings/{booking['id']}/cancel", headers=ADMIN)
    ).status_code == 200
    refused = await complete(api, booking["id"])
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "already_cancelled"
    assert (await vehicle(api, "AB12CDE"))["mot_expires_on"] is None
    assert (await api.post(f"/api/bookings/{booking['id']}/complete")).status_code == 401
    assert (await complete(api, "no-such-booking")).status_code == 404
    assert (await api.get(f"/api/bookings/{booking['id']}", headers=ADMIN)).json()[
        "status"
    ] == "cancelled"


# --- recording the MOT expiry ----------------------------------------------------------------


async def test_a_customer_records_the_mot_expiry_through_their_manage_link(
    api: httpx.AsyncClient,
) -> None:
    booking = await book(api, "Oil change", "ab12cde")
    expires = today() + timedelta(days=100)
    response = await api.post(
        f"/api/manage/{booking['cancel_token']}/mot", json={"expires_on": expires.isoformat()}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"registration": "AB12 CDE", "mot_expires_on": expires.isoformat()}
    # Kept on the customer's booking, for their reminder; the car's record is staff's.
    history = await vehicle(api, "AB12CDE")
    assert history["mot_expires_on"] is None
    assert history["upcoming"][0]["customer_mot_expires_on"] == expires.isoformat()

    unknown = await api.post("/api/manage/not-a-token/mot", json={"expires_on": "2027-01-01"})
    assert unknown.status_code == 404
    for bad in (
        {"expires_on": "2027-02-30"},
        {"expires_on": 20270101},
        {"expires_on": (today() + timedelta(days=4 * 366)).isoformat()},
        {"expires_on": (today() - timedelta(days=400)).isoformat()},
        {"expires_on": "2027-01-01", "registration": "XY34 ZZZ"},
        {},
    ):
        refused = await api.post(f"/api/manage/{booking['cancel_token']}/mot", json=bad)
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["code"] == "validation_error"
    history = await vehicle(api, "AB12CDE")
    assert history["upcoming"][0]["customer_mot_expires_on"] == expires.isoformat()


# --- the pages ----------------------------------------------------------------------------------


async def test_staff_pages_show_the_history_set_the_mot_and_mark_a_booking_done(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    booking = await book(api, "MOT")
    assert (await api.get("/staff/vehicles/AB12CDE")).headers["location"] == "/staff/login"
    await add_staff(app)
    assert (await sign_in(api)).status_code == 303

    page = await api.get("/staff/vehicles/ab12cde")
    assert page.status_code == 200
    assert booking["reference"] in page.text
    assert "not recorded" in page.text
    token = csrf_of(page.text)

    forged = await api.post(
        "/staff/vehicles/AB12%20CDE/mot", data={"expires_on": "2027-01-01", "csrf_token": "0"}
    )
    assert forged.status_code == 403
    expires = today() + timedelta(days=20)
    saved = await api.post(
        "/staff/vehicles/AB12%20CDE/mot",
        data={"expires_on": expires.isoformat(), "csrf_token": token},
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == "/staff/vehicles/AB12%20CDE?done=mot"
    assert (await vehicle(api, "AB12CDE"))["mot_expires_on"] == expires.isoformat()
    bad = await api.post(
        "/staff/vehicles/AB12%20CDE/mot", data={"expires_on": "soon", "csrf_token": token}
    )
    assert bad.headers["location"].endswith("?error=invalid")

    # The car came in an hour ago (a booking made earlier): only a booking whose day has come
    # can be marked done, and the first free MOT may be days off (after 16:00, on a Saturday).
    began = datetime.now(UTC) - timedelta(hours=1)
    async with app.state.db.transaction() as conn:
        await conn.execute(
            update(bookings)
            .where(bookings.c.id == booking["id"])
            .values(starts_at=began, ends_at=began + timedelta(hours=1))
        )
    day = began.astimezone(ZONE).date().isoformat()
    done = await api.post(
        f"/staff/bookings/{booking['id']}/complete", data={"date": day, "csrf_token": token}
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/staff?date={day}&done=completed"
    history = await vehicle(api, "AB12CDE")
    assert history["past"][0]["status"] == "completed"  # done: history, not upcoming
    assert history["upcoming"] == []
    assert history["mot_expires_on"] == a_year_after(expires).isoformat()  # within the month
    page = await api.get("/staff/vehicles/AB12%20CDE")
    assert "MOT, done" in page.text


async def test_the_customer_mot_form_needs_its_csrf_token(api: httpx.AsyncClient) -> None:
    booking = await book(api, "Oil change")
    token = booking["cancel_token"]
    expires = (today() + timedelta(days=200)).isoformat()
    refused = await api.post(f"/manage/{token}/mot", data={"expires_on": expires})
    assert refused.status_code == 403
    csrf = csrf_of((await api.get(f"/manage/{token}/cancel")).text)
    saved = await api.post(f"/manage/{token}/mot", data={"expires_on": expires, "csrf_token": csrf})
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/manage/{token}"
    assert (await vehicle(api, "AB12CDE"))["upcoming"][0]["customer_mot_expires_on"] == expires
    bad = await api.post(
        f"/manage/{token}/mot", data={"expires_on": "1999-01-01", "csrf_token": csrf}
    )
    assert bad.status_code == 422
    history = await vehicle(api, "AB12CDE")
    assert history["upcoming"][0]["customer_mot_expires_on"] == expires
    assert history["mot_expires_on"] is None


async def test_someone_elses_booking_does_not_rewrite_the_cars_record(
    api: httpx.AsyncClient,
) -> None:
    """Issue 18, finding 8: booking with another person's registration overwrote the car's
    make and model, and that booking's manage token changed the car's MOT expiry. Now the
    customer's data stays on their booking; staff data (and the first booking's, where the
    record had none) stays on the car."""
    await book(api, "Oil change")  # Ada's Ford Focus
    expires = today() + timedelta(days=200)
    await set_mot(api, "AB12 CDE", expires)  # staff
    service_id = await service_id_named(api, "Oil change")
    slot = (await free_slots(api, service_id))[1]
    body = booking_body(slot["id"], service_id)
    body["customer"] = {"name": "Eve", "email": "eve@example.com"}
    body["vehicle"] = {"registration": "ab12cde", "make": "Ferrari", "model": "F40"}
    eve = await api.post("/api/bookings", json=body)
    assert eve.status_code == 201, eve.text
    assert eve.json()["vehicle"] == {"registration": "AB12 CDE", "make": "Ferrari", "model": "F40"}
    changed = await api.post(
        f"/api/manage/{eve.json()['cancel_token']}/mot",
        json={"expires_on": (today() + timedelta(days=10)).isoformat()},
    )
    assert changed.status_code == 200, changed.text
    history = await vehicle(api, "AB12 CDE")
    assert (history["make"], history["model"]) == ("Ford", "Focus")
    assert history["mot_expires_on"] == expires.isoformat()

    # The garage's own booking (the admin token: staff) does correct the record.
    slot = (await free_slots(api, service_id))[2]
    staff = booking_body(slot["id"], service_id)
    staff["vehicle"] = {"registration": "AB12 CDE", "make": "Ford", "model": "Fiesta"}
    assert (await api.post("/api/bookings", json=staff, headers=ADMIN)).status_code == 201
    assert (await vehicle(api, "AB12 CDE"))["model"] == "Fiesta"


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
async def test_the_api_documents_the_mot_body(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    assert "MotIn" in schema["components"]["schemas"]
    body = schema["paths"]["/api/vehicles/{registration}/mot"]["put"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/MotIn")


async def test_a_completed_booking_can_be_neither_cancelled_nor_moved(
    api: httpx.AsyncClient,
) -> None:
    """It used to answer 409 `already_cancelled`, which it was not."""
    booking = await book(api, "Oil change")
    done = await api.post(f"/api/bookings/{booking['id']}/complete", headers=ADMIN)
    assert done.status_code == 200, done.text
    cancel = await api.post(f"/api/manage/{booking['cancel_token']}/cancel")
    assert cancel.status_code == 409
    assert cancel.json()["error"]["code"] == "booking_completed"
    target = (await free_slots(api))[5]["id"]
    moved = await api.post(
        f"/api/manage/{booking['cancel_token']}/reschedule", json={"slot_id": target}
    )
    assert moved.status_code == 409
    assert moved.json()["error"]["code"] == "booking_completed"
    assert (await api.get(f"/api/bookings/{booking['id']}", headers=ADMIN)).json()[
        "status"
    ] == "completed"
