"""The waitlist's pages over HTTP (both stacks, real worker and SMTP server, frozen clock):
join from the page, the offer's one-click page, leaving. The API and the race are in
tests/test_waitlist.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import time_machine

from tests.support.api import book_as, wait_until
from tests.support.mail import SmtpSink, mail_settings, running_app
from tests.support.stack import Stack
from tests.test_waitlist import CLOCK, SUNDAY, link_of, offers_in, open_slot
from tests.test_web_pages import csrf_of

SQL = Callable[..., Awaitable[list[Any]]]


def person(name: str, email: str, registration: str = "ab12cde") -> dict[str, str]:
    return {"name": name, "email": email, "phone": "", "registration": registration}


async def test_join_from_the_page_then_book_the_offer_with_one_click(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    with time_machine.travel(CLOCK, tick=True):
        async with running_app(mail_settings(stack, smtp_sink)) as web:
            slot = await open_slot(web, 9)
            taken = await book_as(web, slot, "early@example.com")

            page = await web.get("/waitlist/join", params={"service": 1, "day": SUNDAY})
            assert page.status_code == 200
            assert "Sunday 6 June 2027" in page.text
            form = {"csrf_token": csrf_of(page.text), "service_id": "1", "day": str(SUNDAY)}

            bad = await web.post("/waitlist/join", data={**form, **person("Kim", "not-mail")})
            assert bad.status_code == 422
            assert (
                'id="w-email" name="email" type="email" value="not-mail" aria-invalid' in bad.text
            )

            joined = await web.post("/waitlist/join", data={**form, **person("Kim", "kim@ex.com")})
            assert joined.status_code == 201, joined.text
            assert "You are number 1 for Sunday 6 June 2027" in joined.text
            twice = await web.post("/waitlist/join", data={**form, **person("Kim", "kim@ex.com")})
            assert twice.status_code == 422
            assert "already on the waitlist" in twice.text
            no_csrf = {**form, "csrf_token": "forged", **person("Eve", "eve@example.com")}
            assert (await web.post("/waitlist/join", data=no_csrf)).status_code == 403
            assert await sql(
                "SELECT customer_email, vehicle_registration FROM waitlist_entries"
            ) == [("kim@ex.com", "AB12 CDE")]

            await web.post(f"/api/manage/{taken['cancel_token']}/cancel")

            async def offered() -> bool:
                return bool(offers_in(smtp_sink))

            await wait_until(offered, 10, "the offer mail")
            token = link_of(offers_in(smtp_sink)[0])
            # The link is signed when the mail is written: no job holds a usable token.
            for (payload,) in await sql("SELECT payload FROM outbox"):
                assert token not in str(payload)
                assert "token" not in str(payload)
            forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
            assert (await web.get(f"/waitlist/offers/{forged}")).status_code == 404
            offer = await web.get(f"/waitlist/offers/{token}")
            assert offer.status_code == 200
            assert "Book this time" in offer.text
            assert "10:00–11:00" in offer.text  # 09:00 UTC is 10:00 BST
            assert offer.headers["cache-control"] == "no-store"

            done = await web.post(
                f"/waitlist/offers/{token}", data={"csrf_token": csrf_of(offer.text)}
            )
            assert done.status_code == 303
            manage = await web.get(done.headers["location"])
            assert "Your booking is confirmed" in manage.text
            assert "Kim" in manage.text
            again = await web.post(
                f"/waitlist/offers/{token}", data={"csrf_token": csrf_of(offer.text)}
            )
            assert again.status_code == 409
            assert "booked this time already" in again.text
            shown = await web.get(f"/waitlist/offers/{token}")
            assert "You have booked this time" in shown.text


async def test_leaving_the_waitlist_from_its_page(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    with time_machine.travel(CLOCK, tick=True):
        async with running_app(mail_settings(stack, smtp_sink)) as web:
            page = await web.get("/waitlist/join", params={"service": 1, "day": SUNDAY})
            form = {"csrf_token": csrf_of(page.text), "service_id": "1", "day": str(SUNDAY)}
            joined = await web.post("/waitlist/join", data={**form, **person("Kim", "kim@ex.com")})
            leave_action = joined.text.split('action="/waitlist/leave/')[1].split('"')[0]
            left = await web.post(
                f"/waitlist/leave/{leave_action}", data={"csrf_token": csrf_of(joined.text)}
            )
            assert left.status_code == 200
            assert await sql("SELECT status FROM waitlist_entries") == [("left",)]


async def test_a_full_day_on_the_booking_page_links_to_its_waitlist(
    stack: Stack, smtp_sink: SmtpSink
) -> None:
    with time_machine.travel(CLOCK, tick=True):
        async with running_app(mail_settings(stack, smtp_sink)) as web:
            slot = await open_slot(web, 9)
            page = await web.get("/", params={"service": 1})
            assert f"/waitlist/join?service=1&amp;day={SUNDAY}" not in page.text  # a time is free
            await book_as(web, slot, "early@example.com")
            page = await web.get("/", params={"service": 1})
            assert f"/waitlist/join?service=1&amp;day={SUNDAY}" in page.text
            # A day without any slot (the garage is closed) offers no waitlist.
            assert "/waitlist/join?service=1&amp;day=2027-06-07" not in page.text
