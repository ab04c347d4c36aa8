"""No input makes the server answer 500 or write anything: each is a 4xx in the contract's shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.support.api import booking_body, free_slots
from tests.support.stack import ADMIN_TOKEN

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

SQL = Callable[..., Awaitable[list[Any]]]
SLOT = -1  # replaced by a real free slot id


def with_customer(**fields: Any) -> dict[str, Any]:
    customer = {"name": "Ada Lovelace", "email": "ada@example.com"}
    customer.update(fields)
    return booking_body(SLOT, customer=customer)


def without(field: str) -> dict[str, Any]:
    body = booking_body(SLOT)
    del body[field]
    return body


BAD_BODIES: list[tuple[str, Any, int]] = [
    ("malformed json", b'{"slot_id": 1,', 422),
    ("not json at all", b"slot_id=1&service_id=1", 422),
    ("empty body", b"", 422),
    ("json array", [1, 2, 3], 422),
    ("json string", "book me", 422),
    ("json null", b"null", 422),
    ("missing slot_id", without("slot_id"), 422),
    ("missing customer", without("customer"), 422),
    ("missing vehicle", without("vehicle"), 422),
    ("extra field", {**booking_body(SLOT), "price_pence": 0}, 422),
    ("extra customer field", with_customer(is_admin=True), 422),
    ("slot_id as string", {**booking_body(SLOT), "slot_id": "1"}, 422),
    ("slot_id as float", {**booking_body(SLOT), "slot_id": 1.5}, 422),
    ("slot_id as bool", {**booking_body(SLOT), "slot_id": True}, 422),
    ("slot_id negative", {**booking_body(SLOT), "slot_id": -4}, 422),
    ("slot_id huge", {**booking_body(SLOT), "slot_id": 10**30}, 422),
    ("customer as string", {**booking_body(SLOT), "customer": "Ada"}, 422),
    ("bad email", with_customer(email="not-an-email"), 422),
    ("email with spaces", with_customer(email="ada @example.com"), 422),
    ("empty name", with_customer(name="   "), 422),
    ("name too long", with_customer(name="A" * 101), 422),
    ("nul in name", with_customer(name="Ada\x00Lovelace"), 422),
    ("control char in name", with_customer(name="Ada\x1b[31m"), 422),
    ("phone with letters", with_customer(phone="call me"), 422),
    ("bad registration", booking_body(SLOT, vehicle={"registration": "AB-12;DROP"}), 422),
    ("notes too long", booking_body(SLOT, notes="x" * 1001), 422),
    ("unknown slot", {**booking_body(SLOT), "slot_id": 2_000_000_000}, 404),
    ("unknown service", {**booking_body(SLOT), "service_id": 999_999}, 404),
    ("injection in name", with_customer(name="Robert'); DROP TABLE bookings;--"), 201),
    ("non-ascii name", with_customer(name="Zoë Ñúñez 渡辺 🚗"), 201),
]


@pytest.mark.parametrize(
    ("case", "body", "status"), BAD_BODIES, ids=[case for case, _, _ in BAD_BODIES]
)
async def test_bad_booking_request(
    api: httpx.AsyncClient, sql: SQL, case: str, body: Any, status: int
) -> None:
    slot_id = (await free_slots(api))[0]["id"]
    if isinstance(body, dict):
        body = {**body, "slot_id": slot_id} if body.get("slot_id") == SLOT else body
    if isinstance(body, bytes):
        response = await api.post(
            "/api/bookings", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await api.post("/api/bookings", json=body)
    assert response.status_code == status, response.text
    if status == 201:
        # Stored as text, harmlessly: the tables are still there and it reads back unchanged.
        booking = (
            await api.get(f"/api/bookings/{response.json()['id']}", headers=ADMIN_AUTH)
        ).json()
        assert booking["customer"]["name"] == body["customer"]["name"]
        assert await sql("SELECT count(*) FROM bookings") == [(1,)]
        return
    error = response.json()["error"]
    assert set(error) >= {"code", "message"}
    assert error["message"]
    assert "Traceback" not in response.text
    for table in ("bookings", "booking_slots", "customers", "vehicles", "outbox"):
        assert await sql(f"SELECT count(*) FROM {table}") == [(0,)], table  # noqa: S608
    # Nothing was reserved either: the slot is bookable at once.
    assert (await api.post("/api/bookings", json=booking_body(slot_id))).status_code == 201


async def test_oversized_body_is_413(api: httpx.AsyncClient, sql: SQL) -> None:
    slot_id = (await free_slots(api))[0]["id"]
    body = booking_body(slot_id, notes="x" * (2 * 1024 * 1024))
    response = await api.post("/api/bookings", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert await sql("SELECT count(*) FROM bookings") == [(0,)]


async def test_oversized_chunked_body_is_413(api: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(64):
            yield b"x" * 32 * 1024

    response = await api.post(
        "/api/bookings", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "query",
    [
        {"date": "tomorrow"},
        {"date": "2026-13-01"},
        {"limit": "0"},
        {"limit": "100000"},
        {"available": "perhaps"},
        {"service_id": "abc"},
        {"service_id": "-1"},
    ],
)
async def test_bad_slot_query_is_422(api: httpx.AsyncClient, query: dict[str, str]) -> None:
    response = await api.get("/api/slots", params=query)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_unknown_route_and_method(api: httpx.AsyncClient) -> None:
    missing = await api.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await api.delete("/api/bookings")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
