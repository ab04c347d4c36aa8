"""The waitlist in a real browser, as a new customer meets it: a full day on the booking page
offers the waitlist, they join, someone cancels, the offer mail arrives (the server's own
worker writes it to the drop folder), one click on its link books the time."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import expect

from tests.browser.conftest import Browsing, assert_accessible
from tests.support.api import booking_body, open_admin_slot, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]
LONDON = ZoneInfo("Europe/London")


@pytest.fixture
def mail_drop(tmp_path: Path) -> Path:
    return tmp_path / "mail"


@pytest.fixture
def web_overrides(mail_drop: Path) -> dict[str, str]:
    return {
        "EMBEDDED_WORKER": "true",
        "MAIL_DROP_DIR": str(mail_drop),
        "WORKER_POLL_SECONDS": "0.2",
    }


def next_sunday() -> date:
    """A Sunday at least two days ahead: the demo garage is closed on Sundays, so the test's
    own slot is that day's only time."""
    day = datetime.now(LONDON).date() + timedelta(days=2)
    return day + timedelta(days=(6 - day.weekday()) % 7)


def offer_path(mail_drop: Path) -> str | None:
    for path in sorted(mail_drop.glob("*.eml")):
        message: Any = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if str(message["Subject"]).startswith("A time came free"):
            text = message.get_body(("plain",)).get_content()
            url = re.search(r"\S+/waitlist/offers/\S+", text)
            assert url is not None
            return urlsplit(url.group(0)).path
    return None


async def test_join_the_waitlist_and_book_the_offer_from_its_mail(
    browsing: Browsing, api_client: httpx.AsyncClient, mail_drop: Path
) -> None:
    sunday = next_sunday()
    start = datetime.combine(sunday, time(10), LONDON)
    slot_id = await open_admin_slot(api_client, start)
    taken = await api_client.post("/api/bookings", json=booking_body(slot_id))
    assert taken.status_code == 201

    page = await browsing.page()
    await page.goto("/")
    await page.get_by_role("link", name=re.compile("^MOT")).click()
    await page.get_by_role("link", name=re.compile("Join the waitlist")).click()
    await expect(page.get_by_role("heading", name="Join the waitlist")).to_be_visible()
    await assert_accessible(page)
    await page.get_by_label("Full name").fill("Grace Hopper")
    await page.get_by_label("Email").fill("grace@example.com")
    await page.get_by_label("Vehicle registration").fill("gh12 cob")
    await page.get_by_role("button", name="Join the waitlist").click()
    await expect(page.locator("#position")).to_contain_text("You are number 1")

    cancelled = await api_client.post(f"/api/manage/{taken.json()['cancel_token']}/cancel")
    assert cancelled.status_code == 200

    async def offered() -> bool:
        return offer_path(mail_drop) is not None  # glob on a missing folder finds nothing

    await wait_until(offered, 15, "the offer mail in the drop folder")
    path = offer_path(mail_drop)
    assert path is not None
    await page.goto(path)
    await expect(page.get_by_role("heading", name="A time came free for you")).to_be_visible()
    await expect(page.locator("#offer-time")).to_have_text("10:00–11:00")
    await assert_accessible(page)
    await page.get_by_role("button", name="Book this time").click()
    await expect(page.get_by_role("heading", name="Your booking is confirmed")).to_be_visible()
    await expect(page.locator("#customer-name")).to_have_text("Grace Hopper")
    await expect(page.locator("#booking-time")).to_have_text("10:00–11:00")
