"""/health, /metrics, and what reaches the logs."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import ServerProcess, Stack, booking_body, free_slots


async def test_health_reports_each_part(api: httpx.AsyncClient, stack: Stack) -> None:
    response = await api.get("/health")
    assert response.status_code == 200
    expected = "ok" if stack.redis_url else "local"
    body = response.json()
    assert {k: body[k] for k in ("status", "database", "reservations")} == {
        "status": "ok",
        "database": "ok",
        "reservations": expected,
    }


async def test_metrics_count_outcomes(api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    await api.post("/api/bookings", json=booking_body(slot["id"]))
    await api.post("/api/bookings", json=booking_body(slot["id"]))
    text = (await api.get("/metrics")).text
    assert 'garagebook_booking_attempts_total{outcome="created"}' in text
    assert 'garagebook_booking_attempts_total{outcome="rejected_reservation"}' in text
    assert "garagebook_reservation_layer_skipped_total" in text


@pytest.mark.slow
async def test_no_personal_data_or_booking_ids_in_server_logs(
    stack: Stack, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(stack.env(LOG_LEVEL="DEBUG"))
    async with httpx.AsyncClient(base_url=server.url) as client:
        slot = (await client.get("/api/slots", params={"available": "true", "limit": 1})).json()[0]
        body = booking_body(slot["id"])
        body["customer"] = {
            "name": "Grace Hopper",
            "email": "grace.hopper@example.org",
            "phone": "+44 7700 900999",
        }
        booking = (await client.post("/api/bookings", json=body)).json()
        await client.get(f"/api/bookings/{booking['id']}")
        await client.post(f"/api/bookings/{booking['id']}/cancel")
        await client.post(
            "/api/bookings", json={**body, "customer": {"email": "grace.hopper@example.org"}}
        )
    server.stop()
    logs = server.output()
    assert "POST /api/bookings" in logs  # the access log is on, so this test can fail
    for secret in ("grace.hopper", "900999", "Grace Hopper", booking["id"], "test-admin-token"):
        assert secret not in logs
