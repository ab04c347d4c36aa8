"""The owner's pages for calendar feeds and a customer's data (issue 16), on both stacks: they
do what the admin API does, record the signed-in owner in the audit, and keep the customer's
address out of every URL. (That a staff account gets 403 on each is test_staff_roles.py's.)"""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi import FastAPI

from tests.support.api import booking_body, free_slots
from tests.support.stack import ADMIN_TOKEN
from tests.test_staff_roles import add_account, sign_in_as
from tests.test_web_pages import csrf_of

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EMAIL = "philippa.q@example.com"


async def signed_in_owner(app: FastAPI, api: httpx.AsyncClient) -> str:
    await add_account(app, "olga")  # the first account: an owner
    await sign_in_as(api, "olga")
    return csrf_of((await api.get("/staff/feeds")).text)


async def book(api: httpx.AsyncClient) -> dict[str, Any]:
    body = booking_body((await free_slots(api))[0]["id"])
    body["customer"] = {"name": "Philippa Quartermaine", "email": EMAIL}
    response = await api.post("/api/bookings", json=body)
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


async def test_an_owner_makes_a_feed_sees_its_address_once_and_revokes_it(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    token = await signed_in_owner(app, api)
    made = await api.post(
        "/staff/feeds", data={"csrf_token": token, "label": "Bay 2", "bay_id": "2"}
    )
    assert made.status_code == 201, made.text
    match = re.search(r'id="new-feed-url" readonly value="[^"]*(/calendar/[^"]+\.ics)"', made.text)
    assert match is not None
    feed_path = match.group(1)
    assert (await api.get(feed_path)).status_code == 200
    listing = await api.get("/staff/feeds")
    assert feed_path not in listing.text  # shown once only
    assert "olga" in listing.text
    [feed_id] = re.findall(r'action="/staff/feeds/(\d+)/revoke"', listing.text)
    revoked = await api.post(f"/staff/feeds/{feed_id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    assert (await api.get(feed_path)).status_code == 404
    no_csrf = await api.post("/staff/feeds", data={"label": "x"})
    assert no_csrf.status_code == 403


async def test_an_owner_looks_up_downloads_and_erases_a_customer(
    app: FastAPI, api: httpx.AsyncClient, sql: Any
) -> None:
    booking = await book(api)
    token = await signed_in_owner(app, api)
    shown = await api.post("/staff/customers/lookup", data={"csrf_token": token, "email": EMAIL})
    assert shown.status_code == 200
    assert booking["reference"] in shown.text
    assert "Philippa Quartermaine" in shown.text
    download = await api.post("/staff/customers/export", data={"csrf_token": token, "email": EMAIL})
    assert download.status_code == 200
    assert download.headers["content-disposition"].startswith("attachment")
    assert download.json()["bookings"][0]["id"] == booking["id"]

    refused = await api.post("/staff/customers/erase", data={"csrf_token": token, "email": EMAIL})
    assert refused.status_code == 409
    assert booking["reference"] in refused.text
    day = booking["starts_at"][:10]
    assert f'<a href="/staff?date={day}" id="future-booking">' in refused.text
    cancelled = await api.post(f"/api/bookings/{booking['id']}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200
    erased = await api.post("/staff/customers/erase", data={"csrf_token": token, "email": EMAIL})
    assert erased.status_code == 200
    assert 'id="erased"' in erased.text
    assert await sql("SELECT customer_name FROM bookings") == [("(erased)",)]
    audit = await sql("SELECT action, actor FROM personal_data_audit ORDER BY id")
    assert audit == [("export", "olga"), ("export", "olga"), ("erase", "olga")]
