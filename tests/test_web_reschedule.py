"""Moving a booking from the pages (issue 8), over HTTP in-process on both stacks: the
customer's manage page (without JavaScript: `?day=` lists times, a form posts the move), the
staff day view's Move, the deep links into the booking page, the .ics SEQUENCE and UID across
moves, its attachment to the mails, and 09:00 staying 09:00 across the clock changes."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import time_machine
from fastapi import FastAPI
from icalendar import Calendar

from garagebook.config import Settings
from garagebook.jobs.messages import BookingMail, compose
from tests.support.api import booking_body, free_slots, service_id_named, wait_until
from tests.support.mail import mail_settings, running_app
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.test_web_pages import add_staff, csrf_of, sign_in

SQL = Callable[..., Awaitable[list[Any]]]
LONDON = ZoneInfo("Europe/London")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def book(api: httpx.AsyncClient, slot_id: int, service_id: int = 1) -> dict[str, Any]:
    response = await api.post("/api/bookings", json=booking_body(slot_id, service_id=service_id))
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


def move_times(page: str) -> dict[str, int]:
    """The manage page's offered times: label → slot id."""
    return {
        label: int(slot_id)
        for slot_id, label in re.findall(
            r'<input type="radio" name="slot_id" value="(\d+)"[^>]*> (\d\d:\d\d)</label>', page
        )
    }


async def move(
    api: httpx.AsyncClient, token: str, slot_id: int, day: str, csrf: str | None = None
) -> httpx.Response:
    if csrf is None:
        csrf = csrf_of((await api.get(f"/manage/{token}", params={"day": day})).text)
    return await api.post(
        f"/manage/{token}/reschedule", data={"csrf_token": csrf, "slot_id": slot_id, "day": day}
    )


async def ics_event(api: httpx.AsyncClient, token: str) -> tuple[bytes, Any]:
    response = await api.get(f"/manage/{token}/calendar.ics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/calendar")
    return response.content, Calendar.from_ical(response.content).walk("VEVENT")[0]


def later_days(slots: list[dict[str, Any]]) -> list[str]:
    """Days after today with free slots (all their hours still ahead)."""
    today = datetime.now(LONDON).date().isoformat()
    return sorted({s["starts_at"][:10] for s in slots if s["starts_at"][:10] > today})


# --- the customer's manage page ----------------------------------------------------------------


async def test_a_customer_moves_twice_through_the_manage_page(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    slots = await free_slots(api, service_id=1)
    first_day, second_day = later_days(slots)[:2]
    start = next(s for s in slots if s["starts_at"][:10] == first_day)
    booking = await book(api, start["id"])
    token = booking["cancel_token"]
    _, event = await ics_event(api, token)
    uid = str(event["uid"])
    assert event["sequence"] == 0

    page = await api.get(f"/manage/{token}")
    assert "Move to another time" in page.text
    assert f'href="/manage/{token}?day={second_day}#move"' in page.text
    listed = await api.get(f"/manage/{token}", params={"day": second_day})
    times = move_times(listed.text)
    assert times, "the day's free times are listed without JavaScript"
    label, slot_id = next(iter(times.items()))

    moved = await move(api, token, slot_id, second_day)
    assert moved.status_code == 303
    assert moved.headers["location"] == f"/manage/{token}?moved=1"
    shown = await api.get(moved.headers["location"])
    assert "Your booking has moved" in shown.text
    assert re.search(rf'id="booking-time">{label}–', shown.text)
    assert (await api.get(f"/api/manage/{token}")).json()["slot_id"] == slot_id
    _, event = await ics_event(api, token)
    assert event["sequence"] == 1
    assert str(event["uid"]) == uid
    assert event.decoded("dtstart").strftime("%Y-%m-%d %H:%M") == f"{second_day} {label}"
    # The old time is bookable at once.
    assert (await api.post("/api/bookings", json=booking_body(start["id"]))).status_code == 201

    # Again, back to the first day: the same link, SEQUENCE 2, the same UID.
    times = move_times((await api.get(f"/manage/{token}", params={"day": first_day})).text)
    assert start["id"] not in times.values()  # booked by someone else since
    label, slot_id = next(iter(times.items()))
    assert (await move(api, token, slot_id, first_day)).status_code == 303
    _, event = await ics_event(api, token)
    assert event["sequence"] == 2
    assert str(event["uid"]) == uid
    assert event.decoded("dtstart").strftime("%Y-%m-%d %H:%M") == f"{first_day} {label}"
    assert b"SEQUENCE:2" in (await api.get(f"/manage/{token}/calendar.ics")).content
    assert await sql("SELECT sequence FROM bookings WHERE id = :b", b=booking["id"]) == [(2,)]
    assert "Your booking is confirmed" in (await api.get(f"/manage/{token}")).text


async def test_a_taken_time_says_so_and_the_booking_stays_where_it_was(
    api: httpx.AsyncClient,
) -> None:
    slots = await free_slots(api, service_id=1)
    day = later_days(slots)[0]
    mine = next(s for s in slots if s["starts_at"][:10] == day)
    booking = await book(api, mine["id"])
    token = booking["cancel_token"]
    page = await api.get(f"/manage/{token}", params={"day": day})
    theirs = move_times(page.text)["10:00"]
    await book(api, theirs)  # someone else, while the customer looks at the page

    refused = await move(api, token, theirs, day, csrf_of(page.text))
    assert refused.status_code == 409
    assert "has just been taken by someone else" in refused.text
    assert "Your booking has not changed" in refused.text
    assert theirs not in move_times(refused.text).values()  # the day's times, fresh
    kept = (await api.get(f"/api/manage/{token}")).json()
    assert (kept["slot_id"], kept["status"]) == (mine["id"], "confirmed")
    _, event = await ics_event(api, token)
    assert event["sequence"] == 0


async def test_the_move_form_needs_its_csrf_token_and_a_cancelled_booking_has_none(
    api: httpx.AsyncClient,
) -> None:
    slots = await free_slots(api, service_id=1)
    day = later_days(slots)[0]
    mine, other = [s for s in slots if s["starts_at"][:10] == day][:2]
    booking = await book(api, mine["id"])
    token = booking["cancel_token"]
    await api.get(f"/manage/{token}")  # sets the CSRF cookie
    for data in ({"slot_id": other["id"]}, {"slot_id": other["id"], "csrf_token": "0" * 64}):
        refused = await api.post(f"/manage/{token}/reschedule", data=data)
        assert refused.status_code == 403
    assert (await api.get(f"/api/manage/{token}")).json()["slot_id"] == mine["id"]
    csrf = csrf_of((await api.get(f"/manage/{token}")).text)
    nothing = await api.post(f"/manage/{token}/reschedule", data={"csrf_token": csrf})
    assert nothing.status_code == 422  # no time picked: the page asks for one
    assert "Pick a new time first." in nothing.text

    assert (await api.post(f"/api/manage/{token}/cancel")).status_code == 200
    page = await api.get(f"/manage/{token}", params={"day": day})
    assert "Move to another time" not in page.text
    late = await move(api, token, other["id"], day, csrf_of(page.text))
    assert late.status_code == 303
    assert (await api.get(f"/api/manage/{token}")).json()["status"] == "cancelled"
    assert (await api.post("/api/bookings", json=booking_body(other["id"]))).status_code == 201


async def test_a_long_service_may_move_onto_its_own_current_slots(api: httpx.AsyncClient) -> None:
    """Full service (3 h) at 08:00 on a bay; the other bays are busy from 09:00 to 12:00. The
    only way to start at 09:00 is the booking's own bay, overlapping its own 09:00 and 10:00."""
    full = await service_id_named(api, "Full service")
    slots = await free_slots(api)
    day = later_days(slots)[0]
    on_day = [s for s in slots if s["starts_at"][:10] == day]
    eight = next(s for s in on_day if s["starts_at"][11:16] == "08:00")
    booking = await book(api, eight["id"], full)
    for s in on_day:
        if s["bay_id"] != eight["bay_id"] and s["starts_at"][11:16] in ("09:00", "10:00", "11:00"):
            await book(api, s["id"])
    token = booking["cancel_token"]
    times = move_times((await api.get(f"/manage/{token}", params={"day": day})).text)
    assert "08:00" not in times  # its current time is no choice
    assert "09:00" in times
    assert (await move(api, token, times["09:00"], day)).status_code == 303
    moved = (await api.get(f"/api/manage/{token}")).json()
    assert moved["starts_at"][11:16] == "09:00"
    assert moved["bay_id"] == eight["bay_id"]
    assert (await api.post("/api/bookings", json=booking_body(eight["id"]))).status_code == 201


# --- the staff day view --------------------------------------------------------------------------


async def test_staff_move_a_booking_from_the_day_view(
    api: httpx.AsyncClient, app: FastAPI, sql: SQL
) -> None:
    await add_staff(app)
    slots = await free_slots(api, service_id=1)
    day = later_days(slots)[0]
    mine, taken, free = [s for s in slots if s["starts_at"][:10] == day][:3]
    booking = await book(api, mine["id"])
    other = await book(api, taken["id"])
    assert (await move_page_status(api, booking["id"], day)) == 303  # not signed in
    assert (await sign_in(api)).status_code == 303

    grid = (await api.get("/staff/grid", params={"date": day})).text
    move_link = f'href="/staff/bookings/{booking["id"]}/move?date={day}"'
    assert move_link in grid
    page = await api.get(f"/staff/bookings/{booking['id']}/move", params={"date": day})
    assert page.status_code == 200
    offered = [int(v) for v in re.findall(r'<option value="(\d+)"', page.text)]
    assert free["id"] in offered
    assert taken["id"] not in offered
    assert mine["id"] not in offered  # where it is now
    csrf = csrf_of(page.text)

    refused = await api.post(
        f"/staff/bookings/{booking['id']}/move", data={"date": day, "slot_id": free["id"]}
    )
    assert refused.status_code == 403
    busy = await api.post(
        f"/staff/bookings/{booking['id']}/move",
        data={"date": day, "slot_id": taken["id"], "csrf_token": csrf},
    )
    assert busy.headers["location"] == f"/staff?date={day}&error=taken"
    assert "That time is no longer free" in (await api.get(busy.headers["location"])).text
    assert (await api.get(f"/api/bookings/{booking['id']}", headers=AUTH)).json()[
        "slot_id"
    ] == mine["id"]
    assert (await api.get(f"/api/bookings/{other['id']}", headers=AUTH)).json()["slot_id"] == taken[
        "id"
    ]

    done = await api.post(
        f"/staff/bookings/{booking['id']}/move",
        data={"date": day, "slot_id": free["id"], "csrf_token": csrf},
    )
    assert done.headers["location"] == f"/staff?date={day}&done=moved"
    assert "Booking moved" in (await api.get(done.headers["location"])).text
    assert (await api.get(f"/api/bookings/{booking['id']}", headers=AUTH)).json()[
        "slot_id"
    ] == free["id"]
    assert await sql("SELECT sequence FROM bookings WHERE id = :b", b=booking["id"]) == [(1,)]
    assert (await api.post("/api/bookings", json=booking_body(mine["id"]))).status_code == 201

    # Moved to another day: staff land on that day, where the booking now is.
    next_day = later_days(slots)[1]
    elsewhere = next(s for s in slots if s["starts_at"][:10] == next_day)
    away = await api.post(
        f"/staff/bookings/{booking['id']}/move",
        data={"date": day, "slot_id": elsewhere["id"], "csrf_token": csrf},
    )
    assert away.headers["location"] == f"/staff?date={next_day}&done=moved"


async def move_page_status(api: httpx.AsyncClient, booking_id: str, day: str) -> int:
    response = await api.get(f"/staff/bookings/{booking_id}/move", params={"date": day})
    return response.status_code


async def test_the_grid_links_each_booking_to_its_vehicle_and_a_done_form(
    api: httpx.AsyncClient, app: FastAPI
) -> None:
    """The links and forms other parts of issue 8 answer (vehicle history, completing)."""
    await add_staff(app)
    slots = await free_slots(api, service_id=1)
    day = later_days(slots)[0]
    customer, closing = [s for s in slots if s["starts_at"][:10] == day][:2]
    booking = await book(api, customer["id"])
    assert (await sign_in(api)).status_code == 303
    page = (await api.get("/staff", params={"date": day})).text
    csrf = csrf_of(page)
    await api.post(f"/staff/slots/{closing['id']}/close", data={"date": day, "csrf_token": csrf})
    grid = (await api.get("/staff/grid", params={"date": day})).text
    assert 'href="/staff/vehicles/AB12%20CDE"' in grid
    # A later day than today: no Done yet, and a Done posted anyway is refused (issue 13).
    assert "/complete" not in grid
    early = await api.post(
        f"/staff/bookings/{booking['id']}/complete", data={"date": day, "csrf_token": csrf}
    )
    assert early.headers["location"] == f"/staff?date={day}&error=not_due"
    assert "it can be marked done on its day" in (await api.get(early.headers["location"])).text
    assert (await api.get(f"/api/manage/{booking['cancel_token']}")).json()["status"] == (
        "confirmed"
    )

    # On the booking's day, half an hour before it.
    starts = datetime.fromisoformat(customer["starts_at"])
    with time_machine.travel(starts - timedelta(minutes=30), tick=True):
        # A new working day, a new session: dropped by hand, because when the day is tomorrow
        # morning the evening's session is still inside its 12 hours (and /staff/login would
        # send a signed-in client on to /staff).
        api.cookies.clear()
        assert (await sign_in(api)).status_code == 303
        csrf = csrf_of((await api.get("/staff", params={"date": day})).text)
        grid = (await api.get("/staff/grid", params={"date": day})).text
        done_form = re.search(
            rf'<form method="post" action="/staff/bookings/{booking["id"]}/complete">\s*'
            r'<input type="hidden" name="csrf_token" value="([^"]+)">',
            grid,
        )
        assert done_form is not None
        assert done_form.group(1) == csrf
        # Only real customer bookings: the closed slot gets neither.
        assert grid.count("/complete") == 1
        assert grid.count("/staff/vehicles/") == 1

        # Once done, nothing is left to move, cancel or finish — but it can be undone.
        done = await api.post(
            f"/staff/bookings/{booking['id']}/complete", data={"date": day, "csrf_token": csrf}
        )
        assert done.headers["location"] == f"/staff?date={day}&done=completed"
        assert "Booking marked done." in (await api.get(done.headers["location"])).text
        grid = (await api.get("/staff/grid", params={"date": day})).text
        assert '<span class="done">Done</span>' in grid
        assert f"/staff/bookings/{booking['id']}/move" not in grid
        assert f"/staff/bookings/{booking['id']}/cancel" not in grid
        assert f"/staff/bookings/{booking['id']}/complete" not in grid
        assert 'href="/staff/vehicles/AB12%20CDE"' in grid

        undo = await api.post(
            f"/staff/bookings/{booking['id']}/undo-complete",
            data={"date": day, "csrf_token": csrf},
        )
        assert undo.headers["location"] == f"/staff?date={day}&done=uncompleted"
        managed = (await api.get(f"/api/manage/{booking['cancel_token']}")).json()
        assert managed["status"] == "confirmed"
        again = await api.post(
            f"/staff/bookings/{booking['id']}/undo-complete",
            data={"date": day, "csrf_token": csrf},
        )
        assert again.headers["location"] == f"/staff?date={day}&error=not_done"
        grid = (await api.get("/staff/grid", params={"date": day})).text
        assert f"/staff/bookings/{booking['id']}/complete" in grid


async def test_the_manage_page_offers_to_record_the_mot_date(api: httpx.AsyncClient) -> None:
    booking = await book(api, (await free_slots(api))[0]["id"])
    token = booking["cancel_token"]
    page = (await api.get(f"/manage/{token}")).text
    form = re.search(rf'<form method="post" action="/manage/{token}/mot".*?</form>', page, re.S)
    assert form is not None
    assert f'name="csrf_token" value="{csrf_of(page)}"' in form.group(0)
    assert re.search(r'<input id="mot-expires" name="expires_on" type="date"', form.group(0))
    assert '<label for="mot-expires">' in form.group(0)


# --- deep links into the booking page -------------------------------------------------------------


async def test_a_deep_link_opens_the_slots_day_with_that_time_marked(
    api: httpx.AsyncClient,
) -> None:
    slots = await free_slots(api, service_id=1)
    day = later_days(slots)[1]
    on_day = [s for s in slots if s["starts_at"][:10] == day]
    wanted = on_day[3]
    page = await api.get("/", params={"service": 1, "slot": wanted["id"]})
    assert page.status_code == 200
    assert f'href="/?service=1&amp;date={day}#step-time" aria-current="date"' in page.text
    button = re.search(
        r'<button type="submit" name="slot_id" value="(\d+)"[^>]*suggested[^>]*>', page.text
    )
    assert button is not None
    assert button.group(1) == str(wanted["id"])
    assert "autofocus" in button.group(0)
    assert "is free: it is marked below" in page.text
    # One click: the marked button is the hold form's submit (the script makes it a hold too).
    held = await api.post(
        "/book/hold",
        data={"csrf_token": csrf_of(page.text), "service_id": 1, "slot_id": wanted["id"]},
    )
    assert held.status_code == 200
    assert "Held for you" in held.text

    by_day = await api.get("/", params={"service": 1, "day": day})
    assert f'href="/?service=1&amp;date={day}#step-time" aria-current="date"' in by_day.text
    assert f'data-starts-at="{on_day[-1]["starts_at"]}"' in by_day.text
    assert "suggested" not in by_day.text


async def test_a_deep_link_to_a_taken_time_says_so_and_odd_links_fall_back(
    api: httpx.AsyncClient,
) -> None:
    slots = await free_slots(api, service_id=1)
    day = later_days(slots)[0]
    gone = next(s for s in slots if s["starts_at"][:10] == day)
    await book(api, gone["id"])
    page = await api.get("/", params={"service": 1, "slot": gone["id"]})
    assert 'id="link-taken"' in page.text
    assert 'aria-current="date"' in page.text
    assert "3. Time on" in page.text

    for params in [
        {"service": "1", "slot": "99999999"},
        {"service": "1", "slot": "abc"},
        {"service": "1", "day": "2026-13-45"},
        {"service": "1", "day": "1999-01-01"},
        {"service": "1", "day": "x" * 500, "slot": "-3"},
        {"service": "99999", "slot": str(gone["id"])},
        {"service": "1e9", "day": day},
        {"service": "", "slot": "", "day": "", "taken": "maybe"},
    ]:
        answer = await api.get("/", params=params)
        assert answer.status_code == 200, params
        assert "3. Time on" not in answer.text, params
        assert "Book a service" in answer.text


# --- calendars in the mails ----------------------------------------------------------------------


def attachment(message: EmailMessage) -> tuple[EmailMessage, Any]:
    [part] = [p for p in message.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert isinstance(part, EmailMessage)
    return part, Calendar.from_ical(part.get_content())


def eml(path: Path) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


async def test_the_rescheduled_mail_carries_the_moved_calendar_entry(
    stack: Stack, tmp_path: Path
) -> None:
    async with running_app(mail_settings(stack, None, mail_drop_dir=tmp_path)) as api:
        slots = await free_slots(api, service_id=1)
        first_day, second_day = later_days(slots)[:2]
        start = next(s for s in slots if s["starts_at"][:10] == first_day)
        booking = await book(api, start["id"])
        token, reference = booking["cancel_token"], booking["reference"]
        names = [f"{reference}.confirmed.eml", f"{reference}.rescheduled-1.eml"]

        async def sent(name: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return (tmp_path / name).exists()

            return check

        await wait_until(await sent(names[0]), 10, "the confirmation")
        times = move_times((await api.get(f"/manage/{token}", params={"day": second_day})).text)
        label, slot_id = next(iter(times.items()))
        assert (await move(api, token, slot_id, second_day)).status_code == 303
        await wait_until(await sent(names[1]), 10, "the move mail")
    confirmed, rescheduled = (eml(tmp_path / name) for name in names)
    first_part, first = attachment(confirmed)
    part, calendar = attachment(rescheduled)
    assert part.get_filename() == f"booking-{reference}.ics"
    assert part.get_param("method") == "PUBLISH"
    assert str(calendar["method"]) == "PUBLISH"
    event, before = calendar.walk("VEVENT")[0], first.walk("VEVENT")[0]
    assert (before["sequence"], event["sequence"]) == (0, 1)
    assert str(event["uid"]) == str(before["uid"])
    starts = event.decoded("dtstart")
    assert starts.strftime("%Y-%m-%d %H:%M") == f"{second_day} {label}"
    assert str(event["dtstart"].params["TZID"]) == "Europe/London"
    assert token not in str(event["description"])  # the mail has no manage link
    assert first_part.get_filename() == f"booking-{reference}.ics"


def test_the_cancellation_mail_removes_the_calendar_entry() -> None:
    start = datetime(2027, 3, 28, 9, tzinfo=LONDON)
    booking = BookingMail(
        booking_id="bkid",
        reference="A1-7KQ2M9",
        status="cancelled",
        customer_name="Ada Lovelace",
        customer_email="ada@example.com",
        vehicle_registration="AB12 CDE",
        service="MOT",
        bay="Bay 1",
        starts_at=start.astimezone(UTC),
        ends_at=(start + timedelta(hours=1)).astimezone(UTC),
        sequence=3,
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    part, calendar = attachment(compose(booking, "cancelled", settings, datetime.now(UTC)))
    assert part.get_param("method") == "CANCEL"
    event = calendar.walk("VEVENT")[0]
    assert (str(calendar["method"]), str(event["status"]), event["sequence"]) == (
        "CANCEL",
        "CANCELLED",
        3,
    )
    assert "DTSTART;TZID=Europe/London:20270328T090000" in part.get_content()


# --- 09:00 stays 09:00 across the clock changes ------------------------------------------------

# Clocks go forward at 01:00 GMT on Sunday 28 March 2027 and back at 02:00 BST on Sunday
# 31 October 2027. Each case: "now" a week before, and three days around the change.
CLOCK_CHANGES = {
    "spring": (datetime(2027, 3, 21, 12, tzinfo=UTC), ["2027-03-27", "2027-03-28", "2027-03-29"]),
    "autumn": (datetime(2027, 10, 24, 12, tzinfo=UTC), ["2027-10-30", "2027-10-31", "2027-11-01"]),
}


@pytest.mark.parametrize("change", sorted(CLOCK_CHANGES))
async def test_nine_oclock_on_both_sides_of_the_clock_change(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Slots at 09:00 local (08:00Z in summer, 09:00Z in winter) on the days around the change:
    the booking page, the manage page and the .ics say 09:00, before and after a move across
    the change. The pages' "today" is set a week before, so the days are within their 14."""
    now, days = CLOCK_CHANGES[change]
    monkeypatch.setattr("garagebook.web.booking_page.utcnow", lambda: now)
    monkeypatch.setattr("garagebook.web.manage.utcnow", lambda: now)
    slot_ids = {}
    for day in days:
        start = datetime.combine(date.fromisoformat(day), datetime.min.time(), LONDON)
        start = start.replace(hour=9)
        created = await api.post(
            "/api/admin/slots",
            headers=AUTH,
            json={
                "bay_id": 1,
                "starts_at": start.astimezone(UTC).isoformat(),
                "ends_at": (start + timedelta(hours=1)).astimezone(UTC).isoformat(),
            },
        )
        assert created.status_code == 201, created.text
        slot_ids[day] = created.json()["id"]
        page = await api.get("/", params={"service": 1, "day": day})
        labels = re.findall(r'data-starts-at="([^"]+)">(\d\d:\d\d)</button>', page.text)
        assert labels == [(start.isoformat(), "09:00")], (day, labels)
    offsets = {
        datetime.fromisoformat(d + "T09:00").replace(tzinfo=LONDON).utcoffset() for d in days
    }
    assert len(offsets) == 2  # the days really straddle a change

    before, after = days[0], days[2]
    booking = await book(api, slot_ids[before])
    token = booking["cancel_token"]
    page = (await api.get(f"/manage/{token}", params={"day": after})).text
    assert 'id="booking-time">09:00–10:00<' in page
    assert move_times(page) == {"09:00": slot_ids[after]}
    body, _ = await ics_event(api, token)
    assert f"DTSTART;TZID=Europe/London:{before.replace('-', '')}T090000".encode() in body

    assert (await move(api, token, slot_ids[after], after)).status_code == 303
    page = (await api.get(f"/manage/{token}")).text
    assert 'id="booking-time">09:00–10:00<' in page
    day_after = date.fromisoformat(after)
    assert f"{day_after:%A} {day_after.day} {day_after:%B %Y}" in html.unescape(page)
    body, event = await ics_event(api, token)
    assert f"DTSTART;TZID=Europe/London:{after.replace('-', '')}T090000".encode() in body
    assert f"DTEND;TZID=Europe/London:{after.replace('-', '')}T100000".encode() in body
    assert event["sequence"] == 1
    # And once more onto the day of the change itself.
    assert (await move(api, token, slot_ids[days[1]], days[1])).status_code == 303
    body, _ = await ics_event(api, token)
    assert f"DTSTART;TZID=Europe/London:{days[1].replace('-', '')}T090000".encode() in body
