"""The owner's settings pages in a real browser (issue 14): the owner changes the opening
hours (with a break) and a service's price, sees what changed and the change history, and the
booking page offers the new hours and price at once. A staff account sees no settings links and
is refused the pages. Saves the README's screenshot of a settings page."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from playwright.async_api import expect

from tests.browser.conftest import (
    STAFF_PASSWORD,
    Browsing,
    assert_accessible,
    open_day,
    screenshot,
    sign_in,
    time_buttons,
)
from tests.support.stack import Stack
from tests.test_staff_sessions import staff_command

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]


def a_working_day() -> date:
    """The first day after today that the demo garage opens (Monday to Saturday)."""
    day = date.today() + timedelta(days=1)
    while day.weekday() == 6:
        day += timedelta(days=1)
    return day


async def test_the_owner_changes_hours_and_a_price_and_customers_see_it(
    browsing: Browsing, staff_user: str, stack: Stack
) -> None:
    day = a_working_day()
    weekday = f"{day:%A}"
    owner = await browsing.page()
    await sign_in(owner)  # the first account: an owner
    await owner.get_by_role("link", name="Settings").click()
    await owner.get_by_role("link", name="Opening hours and closed days").click()
    hours = owner.get_by_label(weekday)
    await expect(hours).to_have_value("08:00-17:00")
    await hours.fill("10:00-12:00, 14:00-16:00")
    await owner.get_by_role("button", name="Save").click()
    applied = owner.locator("#applied")
    await expect(applied).to_contain_text(
        f"hours.{weekday.lower()}: 08:00-17:00 → 10:00-12:00, 14:00-16:00"
    )
    await expect(owner.get_by_label(weekday)).to_have_value("10:00-12:00, 14:00-16:00")

    # A mistake is shown next to its field, and nothing is applied.
    await owner.get_by_label(weekday).fill("16:00-10:00")
    await owner.get_by_role("button", name="Save").click()
    await expect(owner.locator(f'[data-for="hours.{weekday.lower()}"]')).to_contain_text(
        "ends before it starts"
    )
    await expect(owner.get_by_label(weekday)).to_have_attribute("aria-invalid", "true")

    await owner.get_by_role("link", name="Services").click()
    mot_price = owner.locator('tr[data-service="mot"] input[name$=".price_pence"]')
    await expect(mot_price).to_have_value("54.85")
    await mot_price.fill("60.00")
    await owner.get_by_role("button", name="Save").click()
    await expect(owner.locator("#applied")).to_contain_text("price_pence 5485 → 6000")
    await assert_accessible(owner)
    await screenshot(owner, "settings")

    await owner.get_by_role("link", name="Change history").first.click()
    history = owner.locator("#history")
    await expect(history).to_contain_text("price_pence 5485 → 6000")
    await expect(history).to_contain_text(f"hours.{weekday.lower()}")
    await expect(history.locator("tbody tr").first).to_contain_text(staff_user)

    # The customer's booking page: the new price, and only the new hours on that day.
    customer = await browsing.page()
    await customer.goto("/")
    await expect(customer.get_by_role("link", name=re.compile("^MOT"))).to_contain_text("£60.00")
    await open_day(customer, "MOT", day.isoformat())
    assert await time_buttons(customer) == ["10:00", "11:00", "14:00", "15:00"]


async def test_a_staff_account_sees_no_settings_links_and_is_refused(
    browsing: Browsing, staff_user: str, stack: Stack
) -> None:
    added = staff_command(stack, "add", "kim", "--password-stdin", password=STAFF_PASSWORD)
    assert added.returncode == 0, added.stderr
    page = await browsing.page()
    await page.goto("/staff/login")
    await page.get_by_label("Name").fill("kim")
    await page.get_by_label("Password").fill(STAFF_PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("link", name="Change history")).to_be_visible()
    await expect(page.get_by_role("link", name="Settings")).to_have_count(0)
    await expect(page.get_by_role("link", name="Staff accounts")).to_have_count(0)
    answer = await page.goto("/staff/settings/hours")
    assert answer is not None
    assert answer.status == 403
    await expect(page.get_by_role("heading")).to_have_text("Owners only")
