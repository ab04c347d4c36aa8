"""Services, slot listing and the admin route that opens slots."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.api import booking_body, free_slots, service_id_named
from tests.support.stack import ADMIN_TOKEN, Stack

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def future_slot(days: int, hour: int, bay_id: int = 1, hours: int = 1) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=days)).replace(
        hour=hour, minute=0, second=0, microsecond=0
    )
    return {
        "bay_id": bay_id,
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=hours)).isoformat(),
    }


async def test_services_are_listed(api: httpx.AsyncClient) -> None:
    services = (await api.get("/api/services")).json()
    assert [(s["name"], s["duration_minutes"]) for s in services] == [
        ("MOT", 60),
        ("Oil change", 60),
        ("Interim service", 120),
        ("Full service", 180),
    ]
    assert all(isinstance(s["price_pence"], int) and s["id"] for s in services)


async def test_slots_for_a_day_in_local_time(api: httpx.AsyncClient) -> None:
    slots = await free_slots(api)
    day = slots[0]["starts_at"][:10]
    listed = (await api.get("/api/slots", params={"date": day})).json()
    assert listed
    assert {s["starts_at"][:10] for s in listed} == {day}
    assert [s["starts_at"] for s in listed] == sorted(s["starts_at"] for s in listed)
    assert {s["starts_at"][11:16] for s in listed} <= {f"{h:02d}:00" for h in range(8, 17)}
    assert set(listed[0]) == {"id", "bay_id", "starts_at", "ends_at", "available"}


async def test_limit_and_available_filter(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    await api.post("/api/bookings", json=booking_body(slot["id"]))
    taken = (await api.get("/api/slots", params={"available": "false", "limit": 1000})).json()
    assert slot["id"] in {s["id"] for s in taken}
    assert not any(s["available"] for s in taken)
    two = (await api.get("/api/slots", params={"available": "true", "limit": 2})).json()
    assert len(two) == 2


async def test_service_listing_only_offers_starts_where_it_fits(api: httpx.AsyncClient) -> None:
    full = await service_id_named(api, "Full service")
    starts = await free_slots(api, service_id=full)
    # 08:00 to 14:00 fit a 3-hour service in a day that closes at 17:00.
    assert {s["starts_at"][11:16] for s in starts} == {f"{h:02d}:00" for h in range(8, 15)}
    # Booking 10:00 on a bay removes 08:00, 09:00 and 10:00 as starts for that bay that day.
    ten = next(s for s in starts if s["starts_at"][11:16] == "10:00")
    assert (await api.post("/api/bookings", json=booking_body(ten["id"]))).status_code == 201
    after = await free_slots(api, service_id=full)
    same_bay_day = {
        s["starts_at"][11:16]
        for s in after
        if s["bay_id"] == ten["bay_id"] and s["starts_at"][:10] == ten["starts_at"][:10]
    }
    assert same_bay_day == {"11:00", "12:00", "13:00", "14:00"}


async def test_unknown_service_in_listing_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/slots", params={"service_id": 4242})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "service_not_found"


async def test_admin_creates_a_slot_that_can_be_booked(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/admin/slots", json=future_slot(30, 6), headers=AUTH)
    assert created.status_code == 201, created.text
    slot = created.json()
    assert slot["available"] is True
    booked = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert booked.status_code == 201


async def test_admin_refuses_overlap_on_the_same_bay(api: httpx.AsyncClient) -> None:
    assert (
        await api.post("/api/admin/slots", json=future_slot(30, 6), headers=AUTH)
    ).status_code == 201
    half_past = future_slot(30, 6)
    half_past["starts_at"] = half_past["starts_at"].replace(":00:00", ":30:00")
    half_past["ends_at"] = half_past["ends_at"].replace(":00:00", ":30:00")
    overlap = await api.post("/api/admin/slots", json=half_past, headers=AUTH)
    assert overlap.status_code == 409
    assert overlap.json()["error"]["code"] == "slot_overlaps"
    other_bay = await api.post("/api/admin/slots", json=future_slot(30, 6, bay_id=2), headers=AUTH)
    assert other_bay.status_code == 201


async def test_concurrent_overlapping_slot_creation_makes_one(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    responses = await asyncio.gather(
        *(api.post("/api/admin/slots", json=future_slot(31, 5), headers=AUTH) for _ in range(10))
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 9


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic abc"}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, 403),
    ],
)
async def test_admin_needs_the_token(
    api: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    response = await api.post("/api/admin/slots", json=future_slot(30, 6), headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] in {"not_authenticated", "forbidden"}


@pytest.mark.parametrize(
    "body",
    [
        {"bay_id": 1, "starts_at": "2030-01-01T09:00:00", "ends_at": "2030-01-01T10:00:00"},
        {"bay_id": 1, "starts_at": "2030-01-01T10:00:00Z", "ends_at": "2030-01-01T09:00:00Z"},
        {"bay_id": 1, "starts_at": "2030-01-01T10:00:00Z", "ends_at": "2030-01-02T10:00:00Z"},
        {"bay_id": "1", "starts_at": "2030-01-01T09:00:00Z", "ends_at": "2030-01-01T10:00:00Z"},
        {"bay_id": 1, "starts_at": "soon", "ends_at": "later"},
    ],
)
async def test_admin_bad_slot_is_422(api: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await api.post("/api/admin/slots", json=body, headers=AUTH)
    assert response.status_code == 422, response.text


async def test_admin_unknown_bay_is_404(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/admin/slots", json=future_slot(30, 6, bay_id=99), headers=AUTH)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "bay_not_found"


async def test_admin_disabled_without_a_token(stack: Stack) -> None:
    from asgi_lifespan import LifespanManager

    from garagebook.app import create_app

    app = create_app(stack.settings(admin_token=None))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
        ) as client,
    ):
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            response = await client.post(
                "/api/admin/slots", json=future_slot(30, 6), headers=headers
            )
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "admin_disabled"
