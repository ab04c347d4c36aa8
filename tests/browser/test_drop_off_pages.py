"""A drop-off in a real browser (issue 15): a customer books a car left for the day through the
booking page (a day with its drop-off window and collection time, no time, no hold), with and
without JavaScript, staff see it in the day view's Drop-offs section and place it on
another technician and on a bay, and the customer changes its day on the booking's page."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.browser.conftest import (
    Browsing,
    assert_accessible,
    confirm,
    fill_details,
    screenshot,
    sign_in,
)
from tests.support.stack import Stack
from tests.support.technicians import a_day, add_drop_off_service, add_technicians

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("stack", ["sqlite", "postgres"], indirect=True),
]
SERVICE = "Full service (left for the day)"
TIMES = "drop off 08:00–09:30, collect from 16:30"


@pytest.mark.parametrize("script", [True, False], ids=["script", "no-script"])
async def test_a_customer_books_a_drop_off_and_staff_place_it_on_a_technician_and_a_bay(
    browsing: Browsing, staff_user: str, stack: Stack, script: bool
) -> None:
    ids = await add_technicians(stack.database_url, ("Sam", "general"), ("Alex", "general"))
    await add_drop_off_service(stack.database_url)
    day = a_day()  # at least two days ahead, not a Sunday: its window is far off
    long_day = f"{day:%A} {day.day} {day:%B %Y}"

    customer = await browsing.page(java_script_enabled=script)
    await customer.goto("/")
    await customer.get_by_role("link", name=re.compile(f"^{re.escape(SERVICE)}")).click()
    pick = customer.locator(f'ul.days a[href*="date={day.isoformat()}"]')
    await expect(pick).to_contain_text(TIMES)
    await expect(customer.locator("#step-time")).to_have_count(0)  # a day, not a time
    await pick.click()
    await expect(customer.locator("#drop-off-what")).to_contain_text(f"{long_day}: {TIMES}")
    await expect(customer.locator("#hold")).to_have_count(0)  # nothing is held
    if script:  # axe runs as a script
        await assert_accessible(customer)
        if not stack.is_postgres:  # the README's, once
            await screenshot(customer, "drop-off-day-desktop")
    await fill_details(customer)
    await confirm(customer)
    await expect(customer.locator("#drop-off-when")).to_have_text(
        f"Bring your car in on {long_day}, 08:00–09:30, and collect it from 16:30 (UK time)."
    )
    await expect(customer.locator("#booking-collect")).to_have_text("16:30")
    await expect(customer.locator("#move")).to_contain_text("Change the day")
    await expect(customer.locator("#move-form input[name=slot_id]")).to_have_count(0)  # days
    if script:
        await assert_accessible(customer)
    reference = await customer.locator("#reference").inner_text()

    staff = await browsing.page()
    await sign_in(staff)
    await staff.wait_for_url(re.compile(r"/staff$"))
    await staff.goto(f"/staff?date={day.isoformat()}")
    row = staff.locator(f'#drop-off-list tr[data-drop-off="{reference}"]')
    await expect(row).to_contain_text("Ada Lovelace")
    await expect(row).to_contain_text("AB12 CDE")
    await expect(row).to_contain_text("4 h")
    first = (await row.locator("td.technician").inner_text()).strip()
    assert first in ids
    other = next(name for name in ids if name != first)
    await assert_accessible(staff)

    await row.get_by_label("Technician").select_option(label=other)
    await row.get_by_role("button", name=re.compile("Place")).click()

    await expect(staff.get_by_text("Drop-off placed on the technician")).to_be_visible()
    await expect(row.locator("td.technician")).to_have_text(other)
    await expect(row.get_by_label("Technician").locator("option")).to_have_text(["(pick)", first])

    # On a bay for the time it is worked on: its 4 hours in Bay 2's column from 10:00.
    await row.get_by_label("Bay").select_option(label="Bay 2")
    await row.get_by_label("From").select_option(label="10:00")
    await row.get_by_role("button", name=re.compile("Put it there")).click()
    await expect(staff.get_by_text("Drop-off placed on the bay")).to_be_visible()
    await expect(row.locator(".placed")).to_have_text("Bay 2, 10:00–14:00")
    cell = staff.locator(f'table.day td.booking[data-booking="{reference}"]')
    await expect(cell).to_have_attribute("rowspan", "4")
    await expect(cell.locator(".what")).to_contain_text("10:00–14:00")
    await expect(cell.locator(f"#cancel-{reference}")).to_have_count(0)  # under Drop-offs
    await assert_accessible(staff)
    if script and not stack.is_postgres:
        await screenshot(staff, "day-drop-offs")

    # The customer changes the day on the booking's page; the technician who has it keeps it.
    new_day = await customer.locator("#move-form input[name=day]").first.get_attribute("value")
    assert new_day is not None
    assert new_day != day.isoformat()
    await customer.locator("#move-first").check()
    await customer.locator("#move-submit").click()
    await expect(customer.locator("#moved")).to_be_visible()
    await expect(customer.locator("#booking-collect")).to_have_text("16:30")
    if script:
        await assert_accessible(customer)
    await staff.goto(f"/staff?date={new_day}")
    moved = staff.locator(f'#drop-off-list tr[data-drop-off="{reference}"]')
    await expect(moved.locator("td.technician")).to_have_text(other)
    await expect(moved.locator(".placed")).to_have_count(0)  # its bay was the old day's
    await staff.goto(f"/staff?date={day.isoformat()}")
    await expect(staff.locator(f'td.booking[data-booking="{reference}"]')).to_have_count(0)
