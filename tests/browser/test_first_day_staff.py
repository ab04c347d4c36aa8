"""What a mechanic tripped over on their first day (issue 13), in a real browser: a walk-in
that does not fit, the day view on a phone and on paper, the move page, and a Done on
tomorrow's booking that could not be taken back."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import (
    SCREENSHOTS,
    Browsing,
    assert_accessible,
    screenshot,
    sign_in,
)
from tests.support.api import booking_body
from tests.support.stack import ADMIN_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]

PHONE_390 = {"width": 390, "height": 844}
TABLET = {"width": 768, "height": 1024}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def later_day_slots(api: httpx.AsyncClient) -> tuple[str, list[dict[str, Any]]]:
    """The first open day after today (all of it in the future) and its slots."""
    slots = (await api.get("/api/slots", params={"limit": 1000})).json()
    today = date.today().isoformat()
    day = min(s["starts_at"][:10] for s in slots if s["starts_at"][:10] > today)
    return day, [s for s in slots if s["starts_at"][:10] == day]


async def no_sideways_scroll(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= await page.evaluate("window.innerWidth"), f"the page is {width} px wide"


async def test_a_walk_in_that_does_not_fit_says_why_and_keeps_what_was_typed(
    browsing: Browsing, api_client: httpx.AsyncClient, staff_user: str
) -> None:
    day, slots = await later_day_slots(api_client)
    staff = await browsing.page()
    await sign_in(staff)
    await staff.goto(f"/staff?date={day}")
    await staff.get_by_label("Service").select_option(label="Full service (3 hours)")
    times = staff.get_by_label("Time and bay")
    # Only starts where three hours fit are offered: 14:00 is the last one (closing 17:00).
    offered = await times.locator("option:not([disabled])").all_text_contents()
    assert offered, "some start fits a full service"
    assert all(re.match(r"^(0[89]|1[0-4]):00", t) for t in offered), offered
    assert not [t for t in offered if t.startswith(("15:00", "16:00"))]
    await staff.get_by_label("Service").select_option(label="MOT (1 hour)")
    assert any(
        t.startswith("16:00")
        for t in await times.locator("option:not([disabled])").all_text_contents()
    )
    await assert_accessible(staff)

    # Without the script's help (a stale page, or no JavaScript): the server says why.
    await staff.get_by_label("Customer name").fill("Walk-in Wendy")
    await staff.get_by_label("Registration").fill("WK12 ABC")
    sixteen = next(s["id"] for s in slots if s["starts_at"][11:16] == "16:00" and s["bay_id"] == 1)
    await staff.evaluate(
        """([slot]) => {
            const select = document.getElementById("w-slot");
            for (const o of select.options) { o.disabled = false; o.hidden = false; }
            select.value = String(slot);
            document.getElementById("w-service").value = "4";
        }""",
        [sixteen],
    )
    await staff.get_by_role("button", name="Book walk-in").click()
    error = staff.locator("#walk-in-error")
    await expect(error).to_contain_text("Full service takes 3 hours")
    await expect(error).to_contain_text("from 16:00 Bay 1 is free only until 17:00")
    await expect(error).not_to_contain_text("someone booked it first")
    await expect(staff.get_by_label("Customer name")).to_have_value("Walk-in Wendy")
    await expect(staff.get_by_label("Registration")).to_have_value("WK12 ABC")
    await expect(staff.get_by_label("Service")).to_have_value("4")
    await screenshot(staff, "first-day-walk-in-does-not-fit")
    await assert_accessible(staff)
    # Picking an offered time books it, with what was typed.
    await staff.get_by_label("Time and bay").select_option(index=0)
    await staff.get_by_role("button", name="Book walk-in").click()
    await expect(staff.get_by_text("Walk-in booked.")).to_be_visible()
    await expect(staff.locator("td.booking", has_text="Walk-in Wendy")).to_have_attribute(
        "rowspan", "3"
    )


@pytest.mark.parametrize("viewport", [PHONE_390, TABLET], ids=["phone", "tablet"])
async def test_the_day_view_fits_a_phone_and_a_tablet(
    browsing: Browsing, api_client: httpx.AsyncClient, staff_user: str, viewport: dict[str, int]
) -> None:
    day, slots = await later_day_slots(api_client)
    await api_client.post("/api/bookings", json=booking_body(slots[0]["id"]))
    page = await browsing.page(viewport=viewport, is_mobile=True, has_touch=True)
    await sign_in(page)
    await page.goto(f"/staff?date={day}")
    await expect(page.locator("table.day")).to_be_visible()
    await no_sideways_scroll(page)
    # All three bays on the screen, without scrolling sideways (the grid reflows).
    for bay in ("Bay 1", "Bay 2", "Bay 3"):
        header = page.locator("table.day thead th", has_text=bay)
        await expect(header).to_be_in_viewport(ratio=1)
    box = await page.locator("table.day").bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= viewport["width"]
    await no_sideways_scroll(page)
    name = "phone" if viewport is PHONE_390 else "tablet"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"first-day-staff-day-{name}-viewport.png"))
    await assert_accessible(page)


async def test_print_move_page_and_done_with_undo(
    browsing: Browsing, api_client: httpx.AsyncClient, staff_user: str
) -> None:
    day, slots = await later_day_slots(api_client)
    body = booking_body(slots[0]["id"])
    body["vehicle"]["registration"] = "EF56 GHI"
    booking = (await api_client.post("/api/bookings", json=body)).json()
    reference = booking["reference"]
    staff = await browsing.page()
    await sign_in(staff)
    await staff.goto(f"/staff?date={day}")
    cell = staff.locator(f'td.booking[data-booking="{reference}"]')

    # Tomorrow's booking offers no Done, and a Done posted anyway is refused with a word.
    await expect(cell.get_by_role("link", name=re.compile("^Move"))).to_be_visible()
    await expect(cell.get_by_role("button", name=re.compile("^Done"))).to_have_count(0)
    csrf = await staff.locator("input[name=csrf_token]").first.input_value()
    refused = await staff.request.post(
        f"/staff/bookings/{booking['id']}/complete", form={"date": day, "csrf_token": csrf}
    )
    assert refused.url.endswith(f"/staff?date={day}&error=not_due")
    await staff.goto(refused.url)
    await expect(staff.get_by_role("alert")).to_contain_text("it can be marked done on its day")
    assert (await api_client.get(f"/api/manage/{booking['cancel_token']}")).json()[
        "status"
    ] == "confirmed"

    # Printed: no Move buttons, no History links.
    await staff.emulate_media(media="print")
    await expect(cell.get_by_role("link", name=re.compile("^Move"))).to_be_hidden()
    await expect(cell.get_by_role("link", name=re.compile("^History"))).to_be_hidden()
    await expect(cell).to_contain_text(reference)
    await screenshot(staff, "first-day-staff-day-print")
    await staff.emulate_media(media="screen")

    # The move page keeps the signed-in header and groups the times by day.
    await cell.get_by_role("link", name=re.compile("^Move")).click()
    await expect(staff.get_by_text(f"Signed in as {staff_user}")).to_be_visible()
    await expect(staff.get_by_role("button", name="Sign out")).to_be_visible()
    groups = staff.locator("#m-slot optgroup")
    assert await groups.count() >= 5
    first_group = await groups.first.get_attribute("label")
    assert first_group is not None
    assert re.match(r"^\w+day \d+ \w+$", first_group)
    await assert_accessible(staff)
    await staff.get_by_role("link", name="Back to the day").click()

    # Marked done (by the admin API, which staff pages would refuse for tomorrow): the grid
    # offers Undo, and the history lists it as done, not upcoming.
    done = await api_client.post(f"/api/bookings/{booking['id']}/complete", headers=ADMIN)
    assert done.status_code == 200
    await staff.reload()
    await expect(cell.locator(".done")).to_have_text("Done")
    await staff.goto("/staff/vehicles/EF56GHI")
    await expect(staff.locator("#upcoming-title + p")).to_have_text("None.")
    past = staff.locator('table[aria-labelledby="past-title"]')
    await expect(past.locator(f'tr[data-booking="{reference}"]')).to_contain_text("completed")
    await screenshot(staff, "first-day-vehicle-history")
    await assert_accessible(staff)

    await staff.goto(f"/staff?date={day}")
    await cell.get_by_role("button", name=re.compile("^Undo")).click()
    await expect(staff.get_by_role("status")).to_have_text(
        "Done taken back: the booking is open again."
    )
    await expect(cell.locator(".done")).to_have_count(0)
    await expect(cell.get_by_role("button", name=re.compile("^Cancel"))).to_be_visible()
    assert (await api_client.get(f"/api/manage/{booking['cancel_token']}")).json()[
        "status"
    ] == "confirmed"
    await staff.goto("/staff/vehicles/EF56GHI")
    upcoming = staff.locator('table[aria-labelledby="upcoming-title"]')
    await expect(upcoming.locator(f'tr[data-booking="{reference}"]')).to_contain_text("confirmed")
    assert datetime.fromisoformat(booking["starts_at"]).date().isoformat() == day
