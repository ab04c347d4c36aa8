"""What a new customer tripped over on their first day (issue 13), in a real browser: errors
that stay after they are fixed, a phone that does not show what just changed, a held time
without its service and price, greyed-out days that do not say why, a closed day offered as
"full", and the mail's link that could not manage the booking."""

from __future__ import annotations

import re
from datetime import date, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import (
    DESKTOP,
    Browsing,
    assert_accessible,
    confirm,
    fill_details,
    hold_time,
    open_day,
    screenshot,
)
from tests.support.api import booking_body, wait_until
from tests.support.stack import ADMIN_TOKEN

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]

PHONE_390 = {"width": 390, "height": 844}


@pytest.fixture
def web_overrides(tmp_path: Path) -> dict[str, str]:
    return {
        "MAIL_DROP_DIR": str(tmp_path / "mail"),
        "WORKER_POLL_SECONDS": "0.1",
        "EMBEDDED_WORKER": "true",
        "GARAGE_ADDRESS": "12 Mill Lane, Kwikton KW1 2AB",
        "GARAGE_PHONE": "01632 960123",
    }


async def phone(browsing: Browsing) -> Page:
    return await browsing.page(viewport=PHONE_390, is_mobile=True, has_touch=True)


@pytest.mark.parametrize("viewport", [PHONE_390, DESKTOP], ids=["phone", "desktop"])
async def test_a_field_error_goes_as_soon_as_the_field_is_right(
    browsing: Browsing, viewport: dict[str, int]
) -> None:
    page = await browsing.page(viewport=viewport, is_mobile=viewport is PHONE_390)
    await open_day(page, "MOT")
    await hold_time(page, await page.locator("#times button.time").first.inner_text())
    await page.get_by_role("button", name="Confirm booking").click()
    name, email = page.locator("#f-name"), page.locator("#f-email")
    await expect(page.locator("#e-name")).to_have_text("Enter your name.")
    await expect(name).to_have_attribute("aria-invalid", "true")
    await expect(name).to_be_focused()

    await name.press_sequentially("Grace Hopper")  # real key presses
    await expect(page.locator("#e-name")).to_be_hidden()
    await expect(page.locator("#e-name")).to_have_text("")
    await expect(name).not_to_have_attribute("aria-invalid", "true")
    # Another field's error stays until that field is right, then goes too.
    await expect(page.locator("#e-email")).to_have_text(re.compile("Enter an email address"))
    await email.press_sequentially("grace@example")
    await expect(page.locator("#e-email")).to_have_text(re.compile("Enter an email address"))
    await email.press_sequentially(".com")
    await expect(page.locator("#e-email")).to_be_hidden()
    await expect(email).not_to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#e-registration")).to_be_visible()  # not fixed: still said
    await screenshot(
        page, f"first-day-errors-cleared-{'phone' if viewport is PHONE_390 else 'desktop'}"
    )
    await assert_accessible(page)


async def test_on_a_phone_each_tap_shows_what_it_changed(browsing: Browsing) -> None:
    page = await phone(browsing)
    await page.goto("/")
    await page.get_by_role("link", name=re.compile("^Full service")).click()
    # The page reloads with the days in view, not at the top.
    await expect(page.locator("#step-day")).to_be_in_viewport()
    await page.locator("ul.days a.choice").nth(1).click()
    await expect(page.locator("#step-time")).to_be_in_viewport()
    assert await page.evaluate("window.scrollY") > 0
    await page.locator("#times button.time").first.click()
    # The hold, its countdown and the form come into view, and the focus moves there.
    hold = page.locator("#hold")
    await expect(hold).to_be_visible()
    await expect(hold).to_be_in_viewport()
    await expect(hold).to_be_focused()
    await expect(page.locator("#countdown")).to_be_in_viewport()
    await expect(page.locator("#f-name")).to_be_in_viewport()
    await page.keyboard.press("Tab")  # from the hold on to its "Choose another time"
    await expect(page.locator("#release")).to_be_focused()
    await page.screenshot(
        path=str(Path(screenshot.__globals__["SCREENSHOTS"]) / "first-day-phone-after-time-tap.png")
    )
    await assert_accessible(page)


async def test_the_hold_and_the_confirmation_show_service_price_and_the_garage(
    browsing: Browsing,
) -> None:
    page = await browsing.page()
    await open_day(page, "Full service")
    await hold_time(page, await page.locator("#times button.time").first.inner_text())
    await expect(page.locator("#hold-what")).to_contain_text("Full service (3 hours, £229.00), ")
    for where in (page,):
        await expect(where.locator("#garage-address")).to_have_text("12 Mill Lane, Kwikton KW1 2AB")
        await expect(where.locator("#garage-phone")).to_have_text("01632 960123")
        await expect(where.locator("#garage-hours")).to_contain_text("Monday–Saturday 08:00–17:00")
    await fill_details(page)
    await confirm(page)
    await expect(page.locator("#booking-service")).to_have_text("Full service")
    await expect(page.locator("#booking-price")).to_have_text("£229.00")
    await expect(page.locator("#garage-address")).to_be_visible()
    await expect(page.locator("#garage-hours")).to_have_text(
        "Monday–Saturday 08:00–17:00; Sunday closed"
    )
    await screenshot(page, "first-day-confirmation-desktop")
    await assert_accessible(page)


async def test_greyed_out_days_say_why_and_a_closed_day_says_closed(
    browsing: Browsing, api_client: httpx.AsyncClient
) -> None:
    """A Sunday (no opening hours), a day staff closed slot by slot, and a day customers
    booked full: the first two say "Closed" with no waitlist, the last "Full" with one."""
    slots = (await api_client.get("/api/slots", params={"limit": 1000})).json()
    by_day: dict[str, list[int]] = {}
    closed_slots: dict[str, list[dict[str, Any]]] = {}
    for s in slots:
        by_day.setdefault(s["starts_at"][:10], []).append(s["id"])
        closed_slots.setdefault(s["starts_at"][:10], []).append(s)
    today = date.today().isoformat()
    closed_day, full_day = [d for d in sorted(by_day) if d > today][2:4]
    async with httpx.AsyncClient(base_url=api_client.base_url) as api:
        for slot in closed_slots[closed_day]:
            closing = await api.post(
                "/api/admin/closures",
                json={k: slot[k] for k in ("bay_id", "starts_at", "ends_at")},
                headers=ADMIN_AUTH,
            )
            assert closing.status_code == 201, closing.text
        for slot_id in by_day[full_day]:
            assert (await api.post("/api/bookings", json=booking_body(slot_id))).status_code == 201
    page = await browsing.page()
    await page.goto("/?service=1")
    days = page.locator("ul.days li")

    def day_item(day: str) -> str:
        d = date.fromisoformat(day)
        return f"{d:%a} {d.day} {d:%b}"

    closed = days.filter(has_text=day_item(closed_day))
    await expect(closed.locator(".why")).to_have_text("Closed")
    await expect(closed.locator(".why")).to_be_visible()
    await expect(closed.get_by_role("link")).to_have_count(0)  # no waitlist for a closed day
    full = days.filter(has_text=day_item(full_day))
    await expect(full.locator(".why")).to_have_text("Full")
    await expect(full.get_by_role("link", name=re.compile("Join the waitlist"))).to_be_visible()
    start = date.today()
    sunday = next(
        start + timedelta(days=i) for i in range(1, 8) if (start + timedelta(days=i)).weekday() == 6
    )
    sunday_item = days.filter(has_text=day_item(sunday.isoformat()))
    await expect(sunday_item.locator(".why")).to_have_text("Closed")
    await expect(sunday_item.locator(".why")).to_be_visible()
    await screenshot(page, "first-day-days-why")
    await assert_accessible(page)


async def test_the_mails_button_opens_the_booking_to_move_or_cancel_it(
    browsing: Browsing, web_overrides: dict[str, str]
) -> None:
    page = await phone(browsing)
    await open_day(page, "MOT")
    await hold_time(page, await page.locator("#times button.time").first.inner_text())
    await fill_details(page)
    await confirm(page)
    reference = await page.locator("#reference").inner_text()
    path = Path(web_overrides["MAIL_DROP_DIR"]) / f"{reference}.confirmed.eml"

    async def written() -> bool:
        return path.exists()

    await wait_until(written, 10, "the confirmation mail")
    mail = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]  # EmailMessage part
    assert "curl" not in html
    assert "/api/" not in html
    [url] = re.findall(r'<a href="([^"]+)"[^>]*>Manage your booking</a>', html)
    assert url.startswith("http://127.0.0.1:3000/manage/")  # PUBLIC_URL, the default here
    link = url.removeprefix("http://127.0.0.1:3000")  # this test's server has its own port

    # A customer who closed the confirmation tab: a new browser, only the mail.
    later = await phone(browsing)
    await later.goto(link)
    await expect(later.get_by_role("heading", level=1)).to_have_text("Your booking is confirmed")
    await expect(later.locator("#reference")).to_have_text(reference)
    await expect(later.get_by_role("heading", name="Move to another time")).to_be_visible()
    await screenshot(later, "first-day-manage-from-mail-phone")
    await assert_accessible(later)
    await later.get_by_role("link", name="Cancel this booking").click()
    await later.get_by_role("button", name="Yes, cancel my booking").click()
    await expect(later.get_by_role("heading", level=1)).to_have_text("This booking is cancelled")
    # A link someone altered opens nothing.
    await later.goto(link[:-3] + ("abc" if not link.endswith("abc") else "xyz"))
    await expect(later.get_by_role("heading", level=1)).to_have_text("Booking not found")
