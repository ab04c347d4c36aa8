"""`GET/PUT /api/admin/garage` on both stacks: all or nothing, idempotent, recorded; free times
follow the document at once (hours, closed days, retired bays, capabilities, minimum notice);
bookings are never lost to a change; changes unsafe under future bookings are refused."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI

from garagebook.garage.demo import demo_document
from garagebook.garage.document import to_json
from tests.support.api import booking_body, free_slots
from tests.support.stack import ADMIN_TOKEN
from tests.test_web_pages import add_staff, sign_in

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LONDON = ZoneInfo("Europe/London")
WEEK = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def demo() -> dict[str, Any]:
    return copy.deepcopy(to_json(demo_document()))


def every_day(document: dict[str, Any], *ranges: str) -> dict[str, Any]:
    document["hours"] = {day: list(ranges) for day in WEEK}
    return document


async def put(api: httpx.AsyncClient, document: dict[str, Any]) -> httpx.Response:
    return await api.put("/api/admin/garage", json=document, headers=AUTH)


async def applied(api: httpx.AsyncClient, document: dict[str, Any]) -> dict[str, Any]:
    response = await put(api, document)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def local(slot: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(slot["starts_at"]).astimezone(LONDON)


async def history(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await api.get("/api/admin/garage/history", headers=AUTH)
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()
    return rows


async def test_the_document_needs_the_admin_token(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/admin/garage")).status_code == 401
    assert (await api.put("/api/admin/garage", json=demo())).status_code == 401
    shown = await api.get("/api/admin/garage", headers=AUTH)
    assert shown.status_code == 200
    assert shown.json() == demo()


async def test_apply_is_idempotent_and_records_only_real_changes(api: httpx.AsyncClient) -> None:
    before = await history(api)
    exported = (await api.get("/api/admin/garage", headers=AUTH)).json()
    again = await applied(api, exported)
    assert again["changes"] == []
    assert await history(api) == before

    changed = demo()
    changed["services"][1]["price_pence"] = 8500
    changed["hours"]["saturday"] = ["08:00-12:00"]
    result = await applied(api, changed)
    assert result["changes"] == [
        "hours.saturday: 08:00-17:00 → 08:00-12:00",
        "service 'oil-change': price_pence 7900 → 8500",
    ]
    latest = (await history(api))[0]
    assert (latest["actor"], latest["changes"]) == ("admin token", result["changes"])
    assert len(await history(api)) == len(before) + 1
    assert (await applied(api, changed))["changes"] == []


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda d: d["garage"].update(colour="red"), "garage.colour"),
        (lambda d: d["hours"].update(monday=["08:00-12:00", "11:00-13:00"]), "hours.monday[1]"),
        (lambda d: d["hours"].update(monday=["12:00-08:00"]), "hours.monday[0]"),
        (lambda d: d["hours"].update(monday=["08:00-99:00"]), "hours.monday[0]"),
        (lambda d: d["garage"].update(timezone="Mars/Olympus"), "garage.timezone"),
        (lambda d: d["services"][0].update(minutes=90), "services[0].minutes"),
        (lambda d: d["services"][1].update(key="mot"), "services[1].key"),
        (lambda d: d["bays"][1].update(name="Bay 1"), "bays[1].name"),
        (lambda d: d["services"][0].update(needs="mot"), "services[0].needs"),
        (lambda d: d.update(closed=["2026-02-30"]), "closed[0]"),
    ],
)
async def test_a_bad_document_is_refused_whole(
    api: httpx.AsyncClient, change: Any, path: str
) -> None:
    before = (await api.get("/api/admin/garage", headers=AUTH)).json()
    recorded = await history(api)
    slots = await free_slots(api)
    document = demo()
    document["hours"]["tuesday"] = ["08:00-10:00"]  # a valid change that must not go in either
    change(document)
    refused = await put(api, document)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_garage"
    assert path in [p["path"] for p in error["problems"]]
    assert (await api.get("/api/admin/garage", headers=AUTH)).json() == before
    assert await history(api) == recorded
    assert await free_slots(api) == slots


async def test_malformed_json_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.put(
        "/api/admin/garage",
        content=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_garage"


async def test_fewer_hours_remove_free_times_and_longer_hours_add_them(
    api: httpx.AsyncClient,
) -> None:
    await applied(api, every_day(demo(), "08:00-12:00"))
    hours = {local(s).hour for s in await free_slots(api)}
    assert hours <= set(range(8, 12))
    await applied(api, every_day(demo(), "07:00-19:00"))
    hours = {local(s).hour for s in await free_slots(api)}
    assert {7, 17, 18} <= hours
    sundays = [s for s in await free_slots(api) if local(s).weekday() == 6]
    assert sundays  # every day is open now


async def test_a_closed_day_and_a_retired_bay_stop_being_offered(api: httpx.AsyncClient) -> None:
    slots = await free_slots(api)
    day = local(slots[-1]).date()
    bay_3 = max(s["bay_id"] for s in slots)
    document = demo()
    document["closed"] = [day.isoformat()]
    document["bays"] = document["bays"][:2]  # Bay 3 left out: retired
    result = await applied(api, document)
    assert "bay 'Bay 3' retired (left out)" in result["changes"]
    after = await free_slots(api)
    assert day not in {local(s).date() for s in after}
    assert bay_3 not in {s["bay_id"] for s in after}
    on_bay_3 = next(s for s in slots if s["bay_id"] == bay_3 and local(s).date() != day)
    refused = await api.post("/api/bookings", json=booking_body(on_bay_3["id"]))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "slot_unavailable"
    # Brought back: offered again.
    await applied(api, demo())
    assert bay_3 in {s["bay_id"] for s in await free_slots(api)}


async def test_a_booking_left_outside_the_hours_stays_confirmed(api: httpx.AsyncClient) -> None:
    late = next(s for s in await free_slots(api) if local(s).hour == 16)
    booked = await api.post("/api/bookings", json=booking_body(late["id"]))
    assert booked.status_code == 201
    booking = booked.json()
    result = await applied(api, every_day(demo(), "08:00-12:00"))
    assert result["outside_hours"] == [
        {
            "id": booking["id"],
            "reference": booking["reference"],
            "starts_at": booking["starts_at"],
            "reason": "outside the hours",
        }
    ]
    shown = await api.get(f"/api/bookings/{booking['id']}", headers=AUTH)
    assert shown.json()["status"] == "confirmed"
    # Applied again, nothing changes, and the booking is still reported outside the hours.
    again = await applied(api, every_day(demo(), "08:00-12:00"))
    assert (again["changes"], again["outside_hours"]) == ([], result["outside_hours"])


async def test_capabilities_choose_the_bays(api: httpx.AsyncClient) -> None:
    document = demo()
    document["services"][0]["needs"] = "mot"
    document["bays"][0]["can"] = ["mot", "general"]
    await applied(api, document)
    services = (await api.get("/api/services")).json()
    mot = next(s for s in services if s["key"] == "mot")
    bay_1 = min(s["bay_id"] for s in await free_slots(api))
    offered = await free_slots(api, service_id=mot["id"])
    assert {s["bay_id"] for s in offered} == {bay_1}
    elsewhere = next(s for s in await free_slots(api) if s["bay_id"] != bay_1)
    refused = await api.post("/api/bookings", json=booking_body(elsewhere["id"], mot["id"]))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "slot_unavailable"
    ok = await api.post("/api/bookings", json=booking_body(offered[0]["id"], mot["id"]))
    assert ok.status_code == 201, ok.text


async def test_min_notice_for_customers_not_for_staff(api: httpx.AsyncClient) -> None:
    document = every_day(demo(), "00:00-24:00")
    document["garage"]["min_notice_minutes"] = 180
    await applied(api, document)
    now = datetime.now(LONDON)
    offered = await free_slots(api)
    assert all(local(s) >= now + timedelta(minutes=180) for s in offered)
    listed = (await api.get("/api/slots", params={"limit": 1000})).json()
    soon = next(
        s for s in listed if now + timedelta(minutes=75) < local(s) < now + timedelta(minutes=170)
    )
    assert soon["available"] is False

    booking = await api.post("/api/bookings", json=booking_body(soon["id"]))
    assert booking.status_code == 422, booking.text
    assert booking.json()["error"]["code"] == "slot_too_soon"
    hold = await api.post("/api/holds", json={"slot_id": soon["id"], "service_id": 1})
    assert hold.status_code == 422
    assert hold.json()["error"]["code"] == "slot_too_soon"

    later = await api.post("/api/bookings", json=booking_body(offered[0]["id"]))
    assert later.status_code == 201
    token = later.json()["cancel_token"]
    move = await api.post(
        f"/api/bookings/{later.json()['id']}/reschedule",
        json={"slot_id": soon["id"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert move.status_code == 422
    assert move.json()["error"]["code"] == "slot_too_soon"
    # The garage itself (the admin token) is exempt.
    staff = await api.post("/api/bookings", json=booking_body(soon["id"]), headers=AUTH)
    assert staff.status_code == 201, staff.text


async def test_a_changed_service_is_booked_as_it_is_now(api: httpx.AsyncClient) -> None:
    """The plan of oil change (60 minutes) is cached by a hold; then it becomes 120 minutes
    and a new price: the booking claims two slots and keeps the new price."""
    services = (await api.get("/api/services")).json()
    oil = next(s for s in services if s["key"] == "oil-change")
    slot = next(s for s in await free_slots(api, service_id=oil["id"]) if local(s).hour == 9)
    hold = await api.post("/api/holds", json={"slot_id": slot["id"], "service_id": oil["id"]})
    assert hold.status_code == 201
    assert (await api.delete(f"/api/holds/{hold.json()['hold_token']}")).status_code in (200, 204)
    document = demo()
    document["services"][1].update(minutes=120, price_pence=9900)
    await applied(api, document)
    booked = await api.post("/api/bookings", json=booking_body(slot["id"], oil["id"]))
    assert booked.status_code == 201, booked.text
    assert len(booked.json()["slot_ids"]) == 2
    ends = datetime.fromisoformat(booked.json()["ends_at"])
    assert ends - datetime.fromisoformat(booked.json()["starts_at"]) == timedelta(hours=2)


async def test_a_retired_service_is_not_offered_but_its_bookings_stay(
    api: httpx.AsyncClient,
) -> None:
    slot = (await free_slots(api))[0]
    booked = await api.post("/api/bookings", json=booking_body(slot["id"], 1))
    assert booked.status_code == 201
    document = demo()
    document["services"] = document["services"][1:]  # MOT left out: retired
    result = await applied(api, document)
    assert "service 'mot' retired (left out)" in result["changes"]
    assert "mot" not in {s["key"] for s in (await api.get("/api/services")).json()}
    other = (await free_slots(api))[0]
    refused = await api.post("/api/bookings", json=booking_body(other["id"], 1))
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "service_not_found"
    kept = await api.get(f"/api/bookings/{booked.json()['id']}", headers=AUTH)
    assert (kept.json()["status"], kept.json()["service_id"]) == ("confirmed", 1)


async def test_a_new_slot_length_waits_for_future_bookings(api: httpx.AsyncClient) -> None:
    document = demo()
    document["garage"]["slot_minutes"] = 30
    slot = (await free_slots(api))[0]
    booked = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert booked.status_code == 201
    refused = await put(api, document)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "unsafe_garage_change"
    assert "slot_minutes (60 → 30)" in error["message"]
    assert (await api.get("/api/admin/garage", headers=AUTH)).json()["garage"]["slot_minutes"] == 60

    cancel = await api.post(f"/api/bookings/{booked.json()['id']}/cancel", headers=AUTH)
    assert cancel.status_code == 200
    await applied(api, document)
    offered = await free_slots(api)
    lengths = {
        datetime.fromisoformat(s["ends_at"]) - datetime.fromisoformat(s["starts_at"])
        for s in offered
    }
    assert lengths == {timedelta(minutes=30)}
    assert {local(s).minute for s in offered} == {0, 30}
    # A half-hour start with the next half hour free on its bay (not today's 16:30: the MOT
    # would end after closing).
    starts = {(s["bay_id"], s["starts_at"]) for s in offered}
    half = next(
        s for s in offered if local(s).minute == 30 and (s["bay_id"], s["ends_at"]) in starts
    )
    mot = await api.post("/api/bookings", json=booking_body(half["id"]))  # 60 minutes: 2 slots
    assert mot.status_code == 201, mot.text
    assert len(mot.json()["slot_ids"]) == 2


async def test_staff_see_bookings_outside_the_hours_flagged_and_listed(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    await add_staff(app)
    assert (await sign_in(api)).status_code == 303
    late = next(s for s in await free_slots(api) if local(s).hour == 16)
    booked = await api.post("/api/bookings", json=booking_body(late["id"]))
    reference = booked.json()["reference"]
    listing = await api.get("/staff/outside-hours")
    assert listing.status_code == 200
    assert reference not in listing.text
    await applied(api, every_day(demo(), "08:00-12:00"))
    listing = await api.get("/staff/outside-hours")
    assert f'data-booking="{reference}"' in listing.text
    assert f"/staff/bookings/{booked.json()['id']}/move" in listing.text
    day = await api.get("/staff", params={"date": local(late).date().isoformat()})
    cell = day.text.split(f'data-booking="{reference}"', 1)[1].split("</td>", 1)[0]
    assert "Outside the hours" in cell
    # The afternoon is no longer offered: no free cell after 12:00 that day.
    assert 'data-free-label="13:00' not in day.text
