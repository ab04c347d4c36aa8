"""The booking API as clients use it, on SQLite + in-process and on PostgreSQL + Redis."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.support.api import booking_body, free_slots, service_id_named
from tests.support.stack import ADMIN_TOKEN, CONFIRMATION_JOBS, Stack

SQL = Callable[..., Awaitable[list[Any]]]
Lose = Callable[[], Awaitable[None]]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def manage(booking: dict[str, Any]) -> dict[str, str]:
    """The header that opens `booking`: its manage token, from the 201."""
    return {"Authorization": f"Bearer {booking['cancel_token']}"}


async def test_book_then_read_back(api: httpx.AsyncClient, sql: SQL) -> None:
    slot = (await free_slots(api))[0]
    response = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert response.status_code == 201, response.text
    booking = response.json()
    assert booking["status"] == "confirmed"
    assert booking["slot_id"] == slot["id"]
    assert booking["slot_ids"] == [slot["id"]]
    assert booking["starts_at"] == slot["starts_at"]
    assert booking["ends_at"] == slot["ends_at"]
    assert booking["customer"] == {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+44 7700 900123",
    }
    assert booking["vehicle"] == {"registration": "AB12 CDE", "make": "Ford", "model": "Focus"}
    assert len(booking["id"]) >= 20  # unguessable: 128 random bits
    assert len(booking["reference"]) == 9
    cancel_token = booking.pop("cancel_token")
    assert len(cancel_token) >= 32
    assert cancel_token != booking["id"]
    fetched = await api.get(
        f"/api/bookings/{booking['id']}", headers={"Authorization": f"Bearer {cancel_token}"}
    )
    assert fetched.status_code == 200
    assert fetched.json() == booking  # the cancel token is shown once, at creation
    assert cancel_token not in str(await sql("SELECT * FROM bookings"))  # stored hashed

    # One transaction wrote all of it.
    assert await sql("SELECT email, name FROM customers") == [("ada@example.com", "Ada Lovelace")]
    assert await sql("SELECT registration, make FROM vehicles") == [("AB12 CDE", "Ford")]
    outbox = await sql(CONFIRMATION_JOBS)
    assert [(kind, status) for kind, _, status in outbox] == [("booking_confirmed", "pending")]
    assert json.loads(outbox[0][1]) == {
        "booking_id": booking["id"],
        "reference": booking["reference"],
        "sequence": 0,
    }


async def test_second_booking_of_a_slot_is_409(api: httpx.AsyncClient, stack: Stack) -> None:
    slot = (await free_slots(api))[0]
    assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201
    again = await api.post("/api/bookings", json=booking_body(slot["id"], service_id=2))
    assert again.status_code == 409
    error = again.json()["error"]
    assert error["code"] == "slot_unavailable"
    assert error["rejected_by"] == "reservation"  # the key of the first booking is still held


async def test_database_decides_when_the_reservation_is_gone(
    api: httpx.AsyncClient, sql: SQL, lose_reservations: Lose
) -> None:
    """Layer 3 alone: a booked slot whose reservation key vanished is still refused."""
    slot = (await free_slots(api))[0]
    first = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert first.status_code == 201
    await lose_reservations()
    again = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert again.status_code == 409
    assert again.json()["error"]["rejected_by"] == "database"
    assert await sql("SELECT count(*) FROM bookings") == [(1,)]


async def test_cancel_frees_the_slot_at_once(api: httpx.AsyncClient, sql: SQL) -> None:
    slot = (await free_slots(api))[0]
    booking = (await api.post("/api/bookings", json=booking_body(slot["id"]))).json()

    cancelled = await api.post(f"/api/bookings/{booking['id']}/cancel", headers=manage(booking))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancelled_at"] is not None
    listed = await api.get("/api/slots", params={"available": "true", "limit": 1000})
    assert slot["id"] in {s["id"] for s in listed.json()}

    rebooked = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert rebooked.status_code == 201, rebooked.text
    assert rebooked.json()["id"] != booking["id"]

    twice = await api.post(f"/api/bookings/{booking['id']}/cancel", headers=manage(booking))
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "already_cancelled"
    kinds = await sql("SELECT kind FROM outbox WHERE kind <> 'booking_reminder' ORDER BY id")
    assert kinds == [("booking_confirmed",), ("booking_cancelled",), ("booking_confirmed",)]


async def test_unknown_booking_is_404(api: httpx.AsyncClient) -> None:
    for path in ("/api/bookings/nope", "/api/bookings/" + "x" * 500):
        response = await api.get(path, headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "booking_not_found"
        cancel = await api.post(path + "/cancel", headers=ADMIN)
        assert cancel.status_code == 404


async def test_reading_or_cancelling_needs_the_manage_token_or_the_admin_token(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    """Issue 18, finding 1: the id alone read the customer's data and cancelled the booking,
    also from a foreign page (`Origin: https://evil.example`, a text/plain "simple request")."""
    first, second = (await free_slots(api))[:2]
    booking = (await api.post("/api/bookings", json=booking_body(first["id"]))).json()
    other = (await api.post("/api/bookings", json=booking_body(second["id"]))).json()
    path = f"/api/bookings/{booking['id']}"

    evil = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
    for headers in ({}, evil, {"Authorization": "Basic eDp5"}, {"Authorization": "Bearer "}):
        read = await api.get(path, headers=headers)
        assert read.status_code == 401, read.text
        assert read.json()["error"]["code"] == "not_authenticated"
        assert "ada@example.com" not in read.text
        cancel = await api.post(f"{path}/cancel", headers=headers, content=b"{}")
        assert cancel.status_code == 401, cancel.text
    for wrong in (other["cancel_token"], booking["id"], booking["reference"], "x" * 5000):
        headers = {"Authorization": f"Bearer {wrong}"}
        read = await api.get(path, headers=headers)
        assert read.status_code == 403, read.text
        assert read.json()["error"]["code"] == "forbidden"
        assert (await api.post(f"{path}/cancel", headers=headers)).status_code == 403
    # A manage token learns nothing about ids that are not its own booking's: the same 403.
    for unknown in ("nope", "y" * 500):
        headers = manage(booking)
        assert (await api.get(f"/api/bookings/{unknown}", headers=headers)).status_code == 403
        cancel = await api.post(f"/api/bookings/{unknown}/cancel", headers=headers)
        assert cancel.status_code == 403
    assert await sql("SELECT status FROM bookings ORDER BY created_at") == [
        ("confirmed",),
        ("confirmed",),
    ]

    own = await api.get(path, headers=manage(booking))
    assert own.status_code == 200
    assert own.json()["customer"]["email"] == "ada@example.com"
    staff = await api.get(f"/api/bookings/{other['id']}", headers=ADMIN)
    assert staff.status_code == 200
    assert staff.json()["id"] == other["id"]
    cancelled = await api.post(f"{path}/cancel", headers=manage(booking))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    by_staff = await api.post(f"/api/bookings/{other['id']}/cancel", headers=ADMIN)
    assert by_staff.status_code == 200


async def test_failed_attempt_leaves_the_slot_bookable(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    bad = booking_body(slot["id"], customer={"name": "Ada", "email": "not-an-email"})
    assert (await api.post("/api/bookings", json=bad)).status_code == 422
    assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201


async def test_failure_after_reserving_releases_every_key(
    api: httpx.AsyncClient, lose_reservations: Lose
) -> None:
    """A 3-hour booking takes three keys, then loses in the database on its middle slot: its
    keys must be released, so the first and last hour are bookable at once."""
    full = await service_id_named(api, "Full service")
    start = (await free_slots(api, service_id=full))[0]
    slots = await free_slots(api)
    run = [
        s for s in slots if s["bay_id"] == start["bay_id"] and s["starts_at"] >= start["starts_at"]
    ]
    first, middle, last = run[0], run[1], run[2]
    assert (await api.post("/api/bookings", json=booking_body(middle["id"]))).status_code == 201
    await lose_reservations()  # the middle slot's key is lost; only the database knows

    lost = await api.post("/api/bookings", json=booking_body(first["id"], service_id=full))
    assert lost.status_code == 409
    assert lost.json()["error"]["rejected_by"] == "database"
    for slot in (first, last):
        again = await api.post("/api/bookings", json=booking_body(slot["id"]))
        assert again.status_code == 201, again.text


async def test_long_service_claims_every_slot_it_covers(api: httpx.AsyncClient, sql: SQL) -> None:
    full = await service_id_named(api, "Full service")
    start = (await free_slots(api, service_id=full))[0]
    booking = await api.post("/api/bookings", json=booking_body(start["id"], service_id=full))
    assert booking.status_code == 201, booking.text
    covered = booking.json()["slot_ids"]
    assert len(covered) == 3
    claims = await sql("SELECT slot_id FROM booking_slots WHERE active ORDER BY slot_id")
    assert [c[0] for c in claims] == sorted(covered)
    for slot_id in covered[1:]:
        clash = await api.post("/api/bookings", json=booking_body(slot_id))
        assert clash.status_code == 409
    listed = await api.get("/api/slots", params={"available": "true", "limit": 1000})
    assert not set(covered) & {s["id"] for s in listed.json()}

    await api.post(f"/api/bookings/{booking.json()['id']}/cancel", headers=manage(booking.json()))
    for slot_id in covered:
        assert (await api.post("/api/bookings", json=booking_body(slot_id))).status_code == 201


async def test_service_that_does_not_fit_is_409(api: httpx.AsyncClient, sql: SQL) -> None:
    full = await service_id_named(api, "Full service")
    slots = await free_slots(api)
    # The last slot of a day (16:00–17:00): a 3-hour service would run past closing.
    last_of_day = next(s for s in slots if s["starts_at"][11:16] == "16:00")
    response = await api.post(
        "/api/bookings", json=booking_body(last_of_day["id"], service_id=full)
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "slot_unavailable"
    fits = await free_slots(api, service_id=full)
    assert last_of_day["id"] not in {s["id"] for s in fits}
    assert await sql("SELECT count(*) FROM bookings") == [(0,)]


async def test_past_slot_is_422(api: httpx.AsyncClient, sql: SQL) -> None:
    created = await api.post(
        "/api/admin/slots",
        headers={"Authorization": "Bearer test-admin-token"},
        json={
            "bay_id": 1,
            "starts_at": "2020-01-06T08:00:00+00:00",
            "ends_at": "2020-01-06T09:00:00+00:00",
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["available"] is False
    response = await api.post("/api/bookings", json=booking_body(created.json()["id"]))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert await sql("SELECT count(*) FROM bookings") == [(0,)]


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("ab12cde", "AB12 CDE"), (" AB12  cde ", "AB12 CDE"), ("a123 bcd", "A123 BCD"), ("k9", "K9")],
)
async def test_registration_is_normalised_as_on_the_booking_page(
    api: httpx.AsyncClient, typed: str, stored: str
) -> None:
    slot = (await free_slots(api))[0]
    body = booking_body(slot["id"], vehicle={"registration": typed})
    response = await api.post("/api/bookings", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["vehicle"]["registration"] == stored
