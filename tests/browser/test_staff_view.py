"""The staff day view in a real browser: sign-in, a booking from another browser appearing
without a reload, cancel, walk-in, closing and reopening and opening slots, print layout;
a wrong password refused; a customer's script-looking name shown as text everywhere."""

from __future__ import annotations

import re
from datetime import date

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import (
    PHONE,
    STAFF_PASSWORD,
    Browsing,
    assert_accessible,
    book_through_page,
    screenshot,
    sign_in,
)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]

XSS_NAME = "<script>alert(1)</script>"


async def test_staff_watch_the_day_fill_in_cancel_and_add_a_walk_in(
    browsing: Browsing, api_client: httpx.AsyncClient, staff_user: str
) -> None:
    slots = (
        await api_client.get("/api/slots", params={"available": "true", "service_id": 4})
    ).json()
    # The first day a 3-hour walk-in still fits (after 14:00 that is no longer today).
    day = slots[0]["starts_at"][:10]
    staff = await browsing.page()
    await sign_in(staff)
    await staff.wait_for_url(re.compile(r"/staff$"))
    await expect(staff.get_by_text(f"Signed in as {staff_user}")).to_be_visible()
    await staff.goto(f"/staff?date={day}")
    await assert_accessible(staff)
    await staff.evaluate("window.notReloaded = true")

    # A customer books from another browser, with a name that looks like a script.
    customer = await browsing.page()
    token = await book_through_page(customer, "MOT", name=XSS_NAME, day=day)
    await expect(customer.locator("#customer-name")).to_have_text(XSS_NAME)
    reference = await customer.locator("#reference").inner_text()

    cell = staff.locator(f'td.booking[data-booking="{reference}"]')
    await expect(cell).to_be_visible(timeout=5_000)
    await expect(cell.locator(".customer")).to_have_text(XSS_NAME)  # text, not markup
    assert await staff.evaluate("window.notReloaded === true")  # it came without a reload
    await expect(cell).to_contain_text("MOT")
    await expect(cell).to_contain_text("AB12 CDE")

    # Walk-in, through the same booking path.
    await staff.get_by_label("Service").select_option(label="Full service (3 hours)")
    await staff.get_by_label("Customer name").fill("Walk-in Wendy")
    await staff.get_by_label("Registration").fill("WK12 ABC")
    await staff.get_by_role("button", name="Book walk-in").click()
    await expect(staff.get_by_text("Walk-in booked.")).to_be_visible()
    walk_in = staff.locator("td.booking", has_text="Walk-in Wendy")
    await expect(walk_in).to_have_attribute("rowspan", "3")  # three hours, three rows

    # Close a free slot (a booking for the garage itself), open an extra one at 17:00.
    await staff.locator("td.free button", has_text="Close").first.click()
    await expect(staff.get_by_text("Slot closed.")).to_be_visible()
    await expect(staff.locator("td.closed")).to_have_count(1)
    await staff.get_by_label("Starts at").fill("17:00")
    await staff.get_by_role("button", name="Open slot").click()
    await expect(staff.get_by_text("Extra slot opened.")).to_be_visible()
    await expect(staff.locator("tbody th", has_text="17:00")).to_be_visible()
    await assert_accessible(staff)
    await screenshot(staff, "staff-day-desktop")
    await staff.emulate_media(media="print")
    await screenshot(staff, "staff-day-print")
    await staff.emulate_media(media="screen")

    phone = await browsing.page(viewport=PHONE, is_mobile=True)
    await sign_in(phone)
    await phone.goto(f"/staff?date={day}")
    await screenshot(phone, "staff-day-phone")
    await assert_accessible(phone)

    await staff.locator("td.closed button", has_text="Reopen").click()
    await expect(staff.get_by_text("Slot reopened.")).to_be_visible()
    await expect(staff.locator("td.closed")).to_have_count(0)

    # Cancel the customer's booking (the page asks first; the test accepts).
    await staff.get_by_role("button", name=f"Cancel booking {reference}").click()
    await expect(staff.get_by_text("Booking cancelled")).to_be_visible()
    await expect(cell).to_have_count(0)
    assert (await api_client.get(f"/api/manage/{token}")).json()["status"] == "cancelled"
    assert browsing.dialogs == [f"confirm: Cancel booking {reference}?"]


async def test_a_wrong_password_is_refused(browsing: Browsing, staff_user: str) -> None:
    page = await browsing.page()
    await page.goto("/staff")
    await page.wait_for_url(re.compile(r"/staff/login$"))
    await assert_accessible(page)
    await screenshot(page, "staff-sign-in-desktop")
    async with page.expect_response(
        lambda r: r.url.endswith("/staff/login") and r.request.method == "POST"
    ) as answer:
        await sign_in(page, password="not the password")
    assert (await answer.value).status == 401
    await expect(page.get_by_role("alert")).to_have_text("That name and password do not match.")
    await assert_accessible(page)
    # The right password on a form without its CSRF token: refused as well.
    await page.evaluate("document.querySelector('input[name=csrf_token]').remove()")
    await page.get_by_label("Password").fill(STAFF_PASSWORD)
    async with page.expect_response(
        lambda r: r.url.endswith("/staff/login") and r.request.method == "POST"
    ) as answer:
        await page.get_by_role("button", name="Sign in").click()
    assert (await answer.value).status == 403
    await expect(page.get_by_role("heading", level=1)).to_have_text("Please try again")
    await page.goto(f"/staff?date={date.today().isoformat()}")
    await page.wait_for_url(re.compile(r"/staff/login$"))  # still signed out
    await page.goto("/manage/no-such-token")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Booking not found")
    await assert_accessible(page)
