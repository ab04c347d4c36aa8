"""Issue 18, findings 3 (415) and 12 (no-store): a foreign page cannot make its visitors'
browsers book (no CORS "simple request" body is read), and nothing with a customer's data or a
token is kept in a browser's or a proxy's cache."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.support.api import booking_body, free_slots
from tests.support.stack import ADMIN_TOKEN

SQL = Callable[..., Awaitable[list[Any]]]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
        "application/json; charset=latin-1",
        "application/jsonp",
        "application/json-patch+json",
        "text/json",
    ],
)
async def test_a_booking_body_that_is_not_json_is_415(
    api: httpx.AsyncClient, sql: SQL, content_type: str | None
) -> None:
    slot = (await free_slots(api))[0]
    headers = {"Origin": "https://evil.example"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = httpx.Request("POST", "/", json=booking_body(slot["id"])).content
    response = await api.post("/api/bookings", content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert await sql("SELECT count(*) FROM bookings") == [(0,)]
    # Refused before the reservation layer: the slot is free for a real request.
    again = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert again.status_code == 201, again.text


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON; Charset=UTF-8"],
)
async def test_json_with_or_without_its_charset_is_read(
    api: httpx.AsyncClient, content_type: str
) -> None:
    slot = (await free_slots(api))[0]
    body = httpx.Request("POST", "/", json=booking_body(slot["id"])).content
    response = await api.post("/api/bookings", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 201, response.text


async def test_every_json_body_of_the_api_refuses_text_plain(api: httpx.AsyncClient) -> None:
    """Every operation under /api/ that takes a body, as the OpenAPI document lists them, so a
    route added later is covered too; each also documents its 415."""
    slot = (await free_slots(api))[0]
    booking = (await api.post("/api/bookings", json=booking_body(slot["id"]))).json()
    values = {
        "booking_id": booking["id"],
        "cancel_token": booking["cancel_token"],
        "registration": "AB12CDE",
        "webhook_id": "1",  # no such subscription: the media type is refused before it is read
    }
    schema = (await api.get("/openapi.json")).json()
    operations = [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        if path.startswith("/api/")
        for method, operation in item.items()
        if method in ("post", "put", "patch") and "requestBody" in operation
    ]
    assert len(operations) >= 8, [(m, p) for m, p, _ in operations]
    for method, template, operation in operations:
        assert "415" in operation["responses"], (method, template)
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
        response = await api.request(
            method,
            path,
            content=b'{"slot_id": 1}',
            headers={**ADMIN, "Content-Type": "text/plain"},
        )
        assert (method, template, response.status_code) == (method, template, 415)
        assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_openapi_names_the_415(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/openapi.json")).json()
    assert "415" in schema["paths"]["/api/bookings"]["post"]["responses"]


async def test_answers_with_personal_data_are_never_cached(api: httpx.AsyncClient) -> None:
    first, second = (await free_slots(api))[:2]
    created = await api.post("/api/bookings", json=booking_body(first["id"]))
    assert created.status_code == 201
    booking = created.json()
    token = booking["cancel_token"]
    own = {"Authorization": f"Bearer {token}"}
    answers = {
        "POST /api/bookings": created,
        "GET /api/bookings/{id}": await api.get(f"/api/bookings/{booking['id']}", headers=own),
        "GET /api/manage/{token}": await api.get(f"/api/manage/{token}"),
        "POST /api/bookings/{id}/reschedule": await api.post(
            f"/api/bookings/{booking['id']}/reschedule", json={"slot_id": second["id"]}, headers=own
        ),
        "POST /api/manage/{token}/cancel": await api.post(f"/api/manage/{token}/cancel"),
    }
    for name, answer in answers.items():
        assert answer.status_code in (200, 201), (name, answer.text)
        assert answer.headers.get("cache-control") == "no-store", name

    # The pages without JavaScript: the held time's details form, and the booking's redirect.
    page = await api.get("/staff/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    held = await api.post(
        "/book/hold",
        data={"csrf_token": csrf.group(1), "slot_id": first["id"], "service_id": 1},
    )
    assert held.status_code == 200, held.text
    assert held.headers.get("cache-control") == "no-store"
    hold_token = re.search(r'name="hold_token" value="([^"]+)"', held.text)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', held.text)
    assert hold_token is not None
    assert key is not None
    form = {
        "csrf_token": csrf.group(1),
        "slot_id": first["id"],
        "service_id": 1,
        "hold_token": hold_token.group(1),
        "idempotency_key": key.group(1),
        "name": "Ada Lovelace",
        "email": "not-an-address",
        "registration": "AB12 CDE",
    }
    refused = await api.post("/book", data=form)
    assert refused.status_code == 422  # the form again, with what was typed
    assert "Ada Lovelace" in refused.text
    assert refused.headers.get("cache-control") == "no-store"
    booked = await api.post("/book", data={**form, "email": "ada@example.com"})
    assert booked.status_code == 303, booked.text
    assert booked.headers.get("cache-control") == "no-store"
