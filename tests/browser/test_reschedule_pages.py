"""Moving a booking in a real browser (issue 8): a customer moves twice through the manage
link (page and downloaded .ics show the new time, SEQUENCE 1 then 2, the same UID, the old
time bookable at once); staff move a booking in the day view; a deep link's marked time is
held with one click."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import httpx
import pytest
from icalendar import Calendar
from playwright.async_api import Page, expect

from tests.browser.conftest import Browsing, assert_accessible, book_through_page, sign_in
from tests.support.api import booking_body
from tests.support.stack import ADMIN_TOKEN

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]


async def downloaded_event(page: Page) -> Any:
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name=re.compile("Add to calendar")).click()
    download = await download_info.value
    assert download.suggested_filename.startswith("booking-")
    calendar = Calendar.from_ical((await download.path()).read_bytes())
    return calendar.walk("VEVENT")[0]


async def move_on_page(page: Page, day_index: int) -> tuple[str, str]:
    """Pick the `day_index`th bookable day in "Move to another time", then its first time;
    returns (ISO day, HH:MM)."""
    day_link = page.locator("#move ul.days a.choice").nth(day_index)
    day = (await day_link.get_attribute("href") or "").split("day=")[1][:10]
    await day_link.click()
    await page.wait_for_url(re.compile(rf"day={day}"))
    radio = page.locator('#move-form input[type="radio"]').first
    label = (await page.locator("#move-form label.choice").first.inner_text()).strip()
    await radio.check()
    await page.get_by_role("button", name="Move my booking to this time").click()
    await page.wait_for_url(re.compile(r"\?moved=1$"))
    return day, label


async def test_a_customer_moves_twice_through_the_manage_link(
    browsing: Browsing, api_client: httpx.AsyncClient
) -> None:
    page = await browsing.page()
    token = await book_through_page(page, "MOT")
    original = (await api_client.get(f"/api/manage/{token}")).json()
    first = await downloaded_event(page)
    assert first["sequence"] == 0
    await expect(page.get_by_role("heading", name="Move to another time")).to_be_visible()

    day, label = await move_on_page(page, 1)
    await expect(page.locator("#moved")).to_contain_text("Your booking has moved")
    await expect(page.locator("#booking-time")).to_have_text(re.compile(f"^{label}–"))
    await assert_accessible(page)
    event = await downloaded_event(page)
    assert event["sequence"] == 1
    assert str(event["uid"]) == str(first["uid"])
    starts = event.decoded("dtstart")
    assert isinstance(starts, datetime)
    assert starts.strftime("%Y-%m-%d %H:%M") == f"{day} {label}"
    assert str(event["dtstart"].params["TZID"]) == "Europe/London"
    # The old time is bookable at once, by someone else.
    again = await api_client.post(
        "/api/bookings", json=booking_body(original["slot_id"], original["service_id"])
    )
    assert again.status_code == 201, again.text

    day, label = await move_on_page(page, 2)
    await expect(page.locator("#booking-time")).to_have_text(re.compile(f"^{label}–"))
    event = await downloaded_event(page)
    assert event["sequence"] == 2
    assert str(event["uid"]) == str(first["uid"])
    assert event.decoded("dtstart").strftime("%Y-%m-%d %H:%M") == f"{day} {label}"
    moved = (await api_client.get(f"/api/manage/{token}")).json()
    assert (moved["id"], moved["status"]) == (original["id"], "confirmed")
    assert moved["starts_at"][:16] == f"{day}T{label}"


async def test_staff_move_a_booking_in_the_day_view(
    browsing: Browsing, api_client: httpx.AsyncClient, staff_user: str
) -> None:
    slots = (
        await api_client.get("/api/slots", params={"available": "true", "service_id": 1})
    ).json()
    today = datetime.now().date().isoformat()
    day = next(s["starts_at"][:10] for s in slots if s["starts_at"][:10] > today)
    start = next(s for s in slots if s["starts_at"][:10] == day)
    created = await api_client.post("/api/bookings", json=booking_body(start["id"]))
    booking = created.json()
    reference = booking["reference"]

    staff = await browsing.page()
    await sign_in(staff)
    await staff.wait_for_url(re.compile(r"/staff$"))
    await staff.goto(f"/staff?date={day}")
    cell = staff.locator(f'td.booking[data-booking="{reference}"]')
    await expect(cell).to_contain_text(start["starts_at"][11:16])
    await staff.get_by_role("link", name=f"Move booking {reference}").click()
    await expect(staff.get_by_role("heading", level=1)).to_have_text(f"Move booking {reference}")
    await assert_accessible(staff)
    select = staff.get_by_label("New time and bay")
    option = select.locator("option", has_text="11:00").first
    value = await option.get_attribute("value")
    assert value is not None
    await select.select_option(value)
    await staff.get_by_role("button", name="Move booking").click()
    await expect(staff.get_by_text("Booking moved")).to_be_visible()
    await expect(cell).to_contain_text("11:00")
    moved = (await api_client.get(f"/api/bookings/{booking['id']}", headers=ADMIN_AUTH)).json()
    assert moved["slot_id"] == int(value)
    assert moved["starts_at"][11:16] == "11:00"
    # The old time is free again, in the grid too.
    free_again = staff.locator(f'td.free[data-free-slot="{start["id"]}"]')
    await expect(free_again).to_have_count(1)


async def test_a_deep_link_marks_a_time_and_one_click_holds_it(
    browsing: Browsing, api_client: httpx.AsyncClient
) -> None:
    slots = (
        await api_client.get("/api/slots", params={"available": "true", "service_id": 1})
    ).json()
    today = datetime.now().date().isoformat()
    wanted = [s for s in slots if s["starts_at"][:10] > today][4]
    page = await browsing.page()
    await page.goto(f"/?service=1&slot={wanted['id']}")
    marked = page.locator("#times button.time.suggested")
    await expect(marked).to_have_text(wanted["starts_at"][11:16])
    await expect(marked).to_be_focused()
    await expect(page.locator("ul.days a[aria-current=date]")).to_have_attribute(
        "href", f"/?service=1&date={wanted['starts_at'][:10]}#step-time"
    )
    await assert_accessible(page)
    await marked.click()
    await page.locator("#hold").wait_for(state="visible")
    await expect(page.locator("#hold-what")).to_contain_text(wanted["starts_at"][11:16])
