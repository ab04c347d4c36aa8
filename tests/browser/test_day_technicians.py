"""The staff day view with technicians in a real browser: each technician's bookings, the
hours left per skill, a booking flagged by an absence and reassigned through its form (no
JavaScript needed); the screenshot for the README, docs/screenshots/day-technicians.png."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import Browsing, assert_accessible, screenshot, sign_in
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.support.technicians import MOT, OIL, add_technician, book, needs_skill, times_on

pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("stack", ["sqlite", "postgres"], indirect=True),
]


async def test_the_day_view_shows_technicians_and_reassigns_a_flagged_booking(
    browsing: Browsing, api_client: httpx.AsyncClient, staff_user: str, stack: Stack
) -> None:
    priya = await add_technician(stack.database_url, "Priya", "mot_tester,general")
    sam = await add_technician(stack.database_url, "Sam")
    await add_technician(stack.database_url, "Alex")
    await needs_skill(stack.database_url, MOT, "mot_tester")
    times = await times_on(api_client)
    day = times[0][0]["starts_at"][:10]
    await book(api_client, times[1][0]["id"], MOT, 1)  # Priya
    flagged = await book(api_client, times[2][0]["id"], OIL, 2)  # Sam (lowest id of the two)
    await book(api_client, times[2][1]["id"], OIL, 3)  # Alex
    await book(api_client, times[4][0]["id"], OIL, 4)  # Sam
    assert flagged["technician_id"] == sam
    away = await api_client.post(
        "/api/admin/absences",
        json={"technician_id": sam, "first_day": day, "last_day": day, "reason": "sick"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert away.status_code == 201, away.text

    staff = await browsing.page()
    await sign_in(staff)
    await staff.wait_for_url(re.compile(r"/staff$"))
    await staff.goto(f"/staff?date={day}")
    await expect(staff.locator('[data-technician="Priya"]')).to_contain_text("MOT")
    await expect(staff.locator('[data-technician="Sam"]')).to_contain_text("absent")
    await expect(staff.locator('#hours-left [data-skill="general"]')).to_contain_text("16 h")
    row = staff.locator(f'#flagged tr[data-booking="{flagged["reference"]}"]')
    await expect(row).to_contain_text("Sam is absent that day.")
    await assert_accessible(staff)
    if not stack.is_postgres:  # the README's, once
        await screenshot(staff, "day-technicians")

    await row.get_by_label("Technician").select_option(label="Priya")
    await row.get_by_role("button", name=re.compile("Reassign")).click()
    await expect(staff.get_by_text("Booking reassigned")).to_be_visible()
    await expect(row).to_have_count(0)  # the other of Sam's bookings is still flagged
    await expect(staff.locator("#flagged tbody tr")).to_have_count(1)
    await expect(staff.locator('[data-technician="Priya"]')).to_contain_text(
        "Oil change · AB02 CDE"
    )
    assert priya != sam
