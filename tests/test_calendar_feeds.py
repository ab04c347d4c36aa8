"""Calendar feeds (issue 16), on both stacks: staff make a feed through the admin API, a real
iCalendar parser (the `icalendar` library) reads what `GET /calendar/{token}.ics` serves —
upcoming bookings and closed times, stable UIDs and SEQUENCE as the mails' .ics, times in the
garage's zone with its VTIMEZONE, and no customer's name, e-mail or phone — and a revoked or
unknown token gets 404."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import FastAPI
from icalendar import Calendar

from garagebook.logs import redact_path
from tests.support.api import booking_body, free_slots
from tests.support.stack import ADMIN_TOKEN
from tests.test_web_pages import add_staff, csrf_of, sign_in

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NAME, EMAIL, PHONE = "Philippa Quartermaine", "philippa.q@example.com", "+44 7700 900456"


async def make_feed(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/api/admin/feeds", json={"label": "Workshop", **body}, headers=ADMIN)
    assert response.status_code == 201, response.text
    feed: dict[str, Any] = response.json()
    return feed


async def book(api: httpx.AsyncClient, slot: dict[str, Any]) -> dict[str, Any]:
    body = booking_body(slot["id"])
    body["customer"] = {"name": NAME, "email": EMAIL, "phone": PHONE}
    response = await api.post("/api/bookings", json=body)
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


async def read_feed(api: httpx.AsyncClient, feed: dict[str, Any]) -> tuple[str, Calendar]:
    response = await api.get("/calendar/" + feed["token"] + ".ics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    assert response.headers["cache-control"] == "no-store"
    return response.text, Calendar.from_ical(response.content)


def events_of(calendar: Calendar) -> dict[str, Any]:
    return {str(event["uid"]): event for event in calendar.walk("VEVENT")}


async def test_a_feed_shows_bookings_and_closed_times_without_customer_contact_details(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    slots = await free_slots(api)
    booking = await book(api, slots[0])
    # A slot staff close is a closed time in the feed.
    await add_staff(app)
    closed_slot = next(s for s in slots[1:] if s["bay_id"] == slots[0]["bay_id"])
    day = closed_slot["starts_at"][:10]
    assert (await sign_in(api)).status_code == 303
    token = csrf_of((await api.get("/staff", params={"date": day})).text)
    closed = await api.post(
        f"/staff/slots/{closed_slot['id']}/close", data={"date": day, "csrf_token": token}
    )
    assert closed.headers["location"].endswith("done=closed")

    feed = await make_feed(api)
    assert feed["url"].endswith(f"/calendar/{feed['token']}.ics")
    assert feed["bay_id"] is None
    raw, calendar = await read_feed(api, feed)

    for private in (NAME, "Philippa", EMAIL, PHONE, "rattle", "closed-slot@"):
        assert private not in raw
    assert str(calendar["x-wr-calname"]).endswith("Workshop")
    [zone] = calendar.walk("VTIMEZONE")
    assert str(zone["tzid"]) == "Europe/London"
    events = events_of(calendar)
    assert len(events) == 2
    event = events[f"{booking['reference']}@garagebook.localhost"]
    assert int(event["sequence"]) == 0
    assert str(event["summary"]) == "MOT · AB12 CDE"
    assert booking["reference"] in str(event["description"])
    start = event["dtstart"].dt
    assert start.tzinfo == ZoneInfo("Europe/London") or str(start.tzinfo) == "Europe/London"
    assert start == datetime.fromisoformat(booking["starts_at"])
    [closure] = [e for uid, e in events.items() if not uid.startswith(booking["reference"])]
    assert str(closure["summary"]).startswith("Closed")
    assert "description" not in closure
    assert closure["dtstart"].dt == datetime.fromisoformat(closed_slot["starts_at"])


async def test_a_moved_booking_keeps_its_uid_and_counts_up_its_sequence(
    api: httpx.AsyncClient,
) -> None:
    """As in the mails' .ics: a calendar updates the one entry instead of adding another."""
    slots = await free_slots(api)
    booking = await book(api, slots[0])
    feed = await make_feed(api)
    uid = f"{booking['reference']}@garagebook.localhost"
    before = events_of((await read_feed(api, feed))[1])
    assert int(before[uid]["sequence"]) == 0
    target = slots[3]
    moved = await api.post(
        f"/api/bookings/{booking['id']}/reschedule", json={"slot_id": target["id"]}, headers=ADMIN
    )
    assert moved.status_code == 200, moved.text
    after = events_of((await read_feed(api, feed))[1])
    assert list(after) == [uid]
    assert int(after[uid]["sequence"]) == 1
    assert after[uid]["dtstart"].dt == datetime.fromisoformat(target["starts_at"])

    cancelled = await api.post(f"/api/bookings/{booking['id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.text
    assert events_of((await read_feed(api, feed))[1]) == {}


async def test_a_bay_feed_shows_only_that_bay(api: httpx.AsyncClient) -> None:
    slots = await free_slots(api)
    on_1 = next(s for s in slots if s["bay_id"] == 1)
    on_2 = next(s for s in slots if s["bay_id"] == 2)
    first, second = await book(api, on_1), await book(api, on_2)
    feed = await make_feed(api, bay_id=2)
    assert feed["bay_id"] == 2
    assert feed["bay"]
    events = events_of((await read_feed(api, feed))[1])
    assert list(events) == [f"{second['reference']}@garagebook.localhost"]
    assert first["reference"] not in str(events)
    missing = await api.post(
        "/api/admin/feeds", json={"label": "Nowhere", "bay_id": 999}, headers=ADMIN
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "bay_not_found"


async def test_a_revoked_or_unknown_token_gets_404_and_tokens_are_never_listed(
    api: httpx.AsyncClient, sql: Any
) -> None:
    feed = await make_feed(api)
    await read_feed(api, feed)
    listed = (await api.get("/api/admin/feeds", headers=ADMIN)).json()
    assert [f["id"] for f in listed] == [feed["id"]]
    assert feed["token"] not in str(listed)
    [(stored,)] = await sql("SELECT token_hash FROM calendar_feeds")
    assert feed["token"] not in stored  # only its hash

    revoked = await api.delete(f"/api/admin/feeds/{feed['id']}", headers=ADMIN)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    gone = await api.get(f"/calendar/{feed['token']}.ics")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "feed_not_found"
    unknown = await api.get("/calendar/" + "x" * 43 + ".ics")
    assert unknown.status_code == 404
    assert (await api.delete("/api/admin/feeds/999", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize("path", ["/api/admin/feeds", "/api/admin/feeds/1"])
async def test_the_admin_api_of_feeds_needs_the_admin_token(
    api: httpx.AsyncClient, path: str
) -> None:
    answer = await (api.get(path) if path.endswith("feeds") else api.delete(path))
    assert answer.status_code == 401


def test_logged_paths_carry_no_feed_token_and_no_address() -> None:
    token = "k3Jq9_xZ-8vQ2mN4pL7rT1sW6yU0aB5cD8eF3gH2iJ4"
    assert token not in redact_path(f"/calendar/{token}.ics")
    assert "ada@example.com" not in redact_path("/api/admin/customers/ada@example.com")
    assert "ada@example.com" not in redact_path("/staff/customers/ada@example.com")
