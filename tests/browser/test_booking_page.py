"""The customer's booking page in a real browser: the journey (desktop with a mouse, a phone
with the keyboard alone), holds with their countdown and expiry, two people racing for one
time, a 3-hour service, the calendar file, and cancelling through the link."""

from __future__ import annotations

import asyncio
import re
from datetime import date, datetime
from typing import Any

import httpx
import pytest
from icalendar import Calendar
from playwright.async_api import Page, expect
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.browser.conftest import (
    PHONE,
    Browsing,
    assert_accessible,
    confirm,
    fill_details,
    hold_time,
    open_day,
    screenshot,
    time_buttons,
)
from tests.support.api import booking_body
from tests.support.stack import Stack

pytestmark = pytest.mark.slow
# The embedded default (`make run`); the race runs on PostgreSQL + Redis as well.
sqlite_only = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)


async def query(stack: Stack, statement: str, **params: Any) -> list[Any]:
    """The database's own view, read outside the server."""
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(statement), params)).all())
    finally:
        await engine.dispose()


async def service_id(api: httpx.AsyncClient, name: str) -> int:
    services = (await api.get("/api/services")).json()
    return next(s["id"] for s in services if s["name"] == name)


async def free(
    api: httpx.AsyncClient, service: int, day: date | None = None
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"available": "true", "service_id": service, "limit": 1000}
    if day is not None:
        params["date"] = day.isoformat()
    slots: list[dict[str, Any]] = (await api.get("/api/slots", params=params)).json()
    return slots


async def a_full_day(api: httpx.AsyncClient) -> date:
    """The first open day after today: all its hours are still in the future."""
    today = date.today()
    days = sorted({date.fromisoformat(s["starts_at"][:10]) for s in await free(api, 1)})
    return next(d for d in days if d > today)


async def assert_accessible_without_script(browsing: Browsing, page: Page) -> None:
    """axe-core needs a script: check this page's HTML in a page that may run one."""
    checker = await browsing.page()
    await checker.goto("/static/app.css")  # same origin, so the stylesheet applies
    await checker.set_content(await page.content())
    await assert_accessible(checker)


async def tab_to(page: Page, selector: str, limit: int = 120) -> None:
    """Press Tab until `selector` has the focus: the keyboard's way there, no clicks."""
    target = await page.locator(selector).first.element_handle()
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate("el => document.activeElement === el", target):
            return
    raise AssertionError(f"{selector} never got the keyboard focus")


@sqlite_only
async def test_journey_on_a_desktop(browsing: Browsing, api_client: httpx.AsyncClient) -> None:
    page = await browsing.page()
    await page.goto("/")
    await assert_accessible(page)
    await open_day(page, "Full service")
    await assert_accessible(page)
    first = (await time_buttons(page))[0]
    await hold_time(page, first)
    await expect(page.locator("#countdown")).to_have_text(re.compile(r"^[45]:\d\d$"))
    await expect(page.locator("#status")).to_contain_text("held for you")
    await fill_details(page, name="Ada Lovelace")
    await page.locator("#f-notes").fill("Rattle from the front left")
    await screenshot(page, "booking-desktop")
    await assert_accessible(page)

    token = await confirm(page)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your booking is confirmed")
    summary = page.locator("dl.summary")
    await expect(summary).to_contain_text("AB12 CDE")  # normalised from ab12cde
    await expect(summary).to_contain_text("Full service")
    await expect(summary).to_contain_text(f"{first}–")
    await screenshot(page, "confirmation-desktop")
    await assert_accessible(page)
    booking = (await api_client.get(f"/api/manage/{token}")).json()
    assert booking["status"] == "confirmed"
    assert len(booking["slot_ids"]) == 3

    # The calendar entry: valid iCalendar, at the garage's local time, with its VTIMEZONE.
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name=re.compile("Add to calendar")).click()
    download = await download_info.value
    calendar = Calendar.from_ical((await download.path()).read_bytes())
    event = calendar.walk("VEVENT")[0]
    starts = event.decoded("dtstart")
    assert isinstance(starts, datetime)
    assert starts == datetime.fromisoformat(booking["starts_at"])
    assert starts.strftime("%H:%M") == first
    assert str(event["dtstart"].params["TZID"]) == "Europe/London"
    assert calendar.walk("VTIMEZONE")[0]["TZID"] == "Europe/London"
    assert event.decoded("dtend") == datetime.fromisoformat(booking["ends_at"])

    # Cancel through the link: it asks first, then frees every slot at once.
    await page.get_by_role("link", name="Cancel this booking").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Cancel this booking?")
    await assert_accessible(page)
    await page.get_by_role("button", name="Yes, cancel my booking").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("This booking is cancelled")
    await assert_accessible(page)
    again = await api_client.post(
        "/api/bookings", json=booking_body(booking["slot_id"], booking["service_id"])
    )
    assert again.status_code == 201, again.text


@sqlite_only
async def test_journey_on_a_phone_with_the_keyboard_alone(browsing: Browsing) -> None:
    page = await browsing.page(viewport=PHONE, is_mobile=True, has_touch=True)
    await page.goto("/")
    await tab_to(page, "ul.services a.choice:has-text('MOT')")
    await page.keyboard.press("Enter")
    await page.locator("#step-day").wait_for()
    await tab_to(page, "ul.days a.choice")
    await page.keyboard.press("Enter")
    await page.locator("#step-time").wait_for()
    await tab_to(page, "#times button.time")
    await page.keyboard.press("Enter")
    await page.locator("#hold").wait_for(state="visible")
    for field, value in [
        ("#f-name", "Grace Hopper"),
        ("#f-email", "grace@example.com"),
        ("#f-phone", "07700 900456"),
        ("#f-registration", "cd34efg"),
    ]:
        await tab_to(page, field)
        await page.keyboard.type(value)
    await tab_to(page, "#f-notes")
    await expect(page.locator("#f-registration")).to_have_value("CD34 EFG")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await screenshot(page, "booking-phone")
    await assert_accessible(page)
    await tab_to(page, "#confirm")
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/manage/[^/]+$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your booking is confirmed")
    await expect(page.locator("#customer-name")).to_have_text("Grace Hopper")
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await screenshot(page, "confirmation-phone")
    await assert_accessible(page)


@pytest.mark.parametrize("stack", ["sqlite", "postgres"], indirect=True)
async def test_two_browsers_race_for_one_time(
    browsing: Browsing, api_client: httpx.AsyncClient, stack: Stack
) -> None:
    day = (await a_full_day(api_client)).isoformat()
    first, second = await browsing.page(), await browsing.page()
    await open_day(first, "MOT", day)
    await open_day(second, "MOT", day)
    wanted = first.locator("#times button.time").first
    slot = await wanted.get_attribute("data-slot-id")
    theirs_button = second.locator("#times button.time").first
    assert await theirs_button.get_attribute("data-slot-id") == slot

    # Both pick the same time at once: one hold wins, the other is told straight away.
    await asyncio.gather(wanted.click(), theirs_button.click())
    for page in (first, second):  # both answered
        await expect(page.locator("#status")).to_contain_text(re.compile("held for|taken"))
    winner, loser = (
        (first, second) if await first.locator("#hold").is_visible() else (second, first)
    )
    await expect(winner.locator("#hold")).to_be_visible()
    await expect(loser.locator("#status")).to_contain_text("has just been taken")
    await expect(loser.locator("#hold")).to_be_hidden()
    alternatives = loser.locator("#alternatives button.time")
    await expect(alternatives.first).to_be_visible()
    await assert_accessible(loser)
    await screenshot(loser, "time-taken-desktop")
    await alternatives.first.click()
    await loser.locator("#hold").wait_for(state="visible")

    await fill_details(winner, name="Winner", email="winner@example.com")
    await fill_details(loser, name="Runner-up", email="runner-up@example.com")
    tokens = [await confirm(winner), await confirm(loser)]
    booked = [(await api_client.get(f"/api/manage/{t}")).json() for t in tokens]
    assert str(booked[0]["slot_id"]) == slot
    assert booked[1]["slot_id"] != booked[0]["slot_id"]
    rows = await query(
        stack, "SELECT slot_id, customer_name FROM bookings WHERE status = 'confirmed'"
    )
    assert sorted((r.slot_id, r.customer_name) for r in rows) == sorted(
        (b["slot_id"], b["customer"]["name"]) for b in booked
    )


@sqlite_only
@pytest.mark.parametrize("web_overrides", [{"HOLD_TTL_SECONDS": "3"}])
async def test_an_expired_hold_is_released_and_keeps_what_was_typed(
    browsing: Browsing, api_client: httpx.AsyncClient
) -> None:
    page = await browsing.page()
    await open_day(page, "Oil change")
    button = page.locator("#times button.time").first
    slot_id = int(await button.get_attribute("data-slot-id") or 0)
    await hold_time(page, await button.inner_text())
    await page.get_by_label("Full name").fill("Typed Before Expiry")
    await page.get_by_label("Email").fill("typed@example.com")
    await expect(page.locator("#status")).to_contain_text("has run out", timeout=8_000)
    await expect(page.locator("#hold")).to_be_hidden()
    await expect(page.get_by_label("Full name")).to_have_value("Typed Before Expiry")
    await expect(page.get_by_label("Email")).to_have_value("typed@example.com")
    await expect(page.get_by_role("button", name="Confirm booking")).to_be_disabled()
    await screenshot(page, "hold-expired-desktop")
    oil_change = await service_id(api_client, "Oil change")
    other = await api_client.post("/api/holds", json={"slot_id": slot_id, "service_id": oil_change})
    assert other.status_code == 201, other.text  # released: someone else may hold it now
    # What was typed survives a reload too.
    await page.reload()
    await hold_time(page, await page.locator("#times button.time").nth(1).inner_text())
    await expect(page.get_by_label("Full name")).to_have_value("Typed Before Expiry")


@sqlite_only
async def test_a_three_hour_service_fits_or_is_hidden_and_blocks_the_next_slots(
    browsing: Browsing, api_client: httpx.AsyncClient
) -> None:
    day = await a_full_day(api_client)
    mot = await service_id(api_client, "MOT")
    day_slots = await free(api_client, mot, day)
    bay = min(s["bay_id"] for s in day_slots)
    # Only one bay left that day: every other bay is booked hour by hour.
    for i, s in enumerate(x for x in day_slots if x["bay_id"] != bay):
        body = booking_body(s["id"], mot)
        body["customer"] = {**body["customer"], "email": f"filler{i}@example.com"}
        assert (await api_client.post("/api/bookings", json=body)).status_code == 201

    page = await browsing.page()
    await open_day(page, "Full service", day.isoformat())
    hours = await time_buttons(page)
    assert hours[0] == "08:00"
    assert "14:00" in hours  # 14:00–17:00 fits before closing
    assert "15:00" not in hours
    assert "16:00" not in hours
    await hold_time(page, "08:00")
    await fill_details(page)
    token = await confirm(page)
    booking = (await api_client.get(f"/api/manage/{token}")).json()
    assert booking["bay_id"] == bay
    assert len(booking["slot_ids"]) == 3

    other = await browsing.page()
    await open_day(other, "MOT", day.isoformat())
    left = await time_buttons(other)
    assert "08:00" not in left
    assert "09:00" not in left
    assert "10:00" not in left
    assert "11:00" in left
    for covered in booking["slot_ids"][1:]:
        refused = await api_client.post("/api/bookings", json=booking_body(covered, mot))
        assert refused.status_code == 409, refused.text


@sqlite_only
async def test_the_journey_works_without_javascript(browsing: Browsing) -> None:
    page = await browsing.page(java_script_enabled=False)
    other = await browsing.page(java_script_enabled=False)
    await open_day(page, "Interim service")
    await open_day(other, "Interim service")
    first = (await time_buttons(page))[0]
    await page.locator("#times button.time", has_text=first).first.click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your details")
    await expect(page.locator(".hold")).to_contain_text(f"at {first}")
    await assert_accessible_without_script(browsing, page)

    # Someone else, also without the script, picks the same time: told it has gone.
    await other.locator("#times button.time", has_text=first).first.click()
    await expect(other.get_by_role("alert")).to_contain_text("has just been taken")

    await fill_details(page, name="No Script Nick", email="not-an-email")
    await page.get_by_role("button", name="Confirm booking").click()
    # Refused by the server's rules, shown next to the field, and nothing typed is lost.
    await expect(page.locator("#e-email")).not_to_be_empty()
    await expect(page.get_by_label("Full name")).to_have_value("No Script Nick")
    await expect(page.get_by_label("Vehicle registration")).to_have_value("AB12 CDE")
    await page.get_by_label("Email").fill("nick@example.com")
    await page.get_by_role("button", name="Confirm booking").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your booking is confirmed")
    await expect(page.locator("#customer-name")).to_have_text("No Script Nick")
