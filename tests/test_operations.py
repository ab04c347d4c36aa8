"""/health, /metrics, and what reaches the logs."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from garagebook.app import create_app
from tests.support.api import booking_body, free_slots
from tests.support.mail import running_app
from tests.support.processes import ServerProcess
from tests.support.stack import ADMIN_TOKEN, METRICS_HEADERS, Stack

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


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
    text = (await api.get("/metrics", headers=METRICS_HEADERS)).text
    assert 'garagebook_booking_attempts_total{outcome="created"}' in text
    assert 'garagebook_booking_attempts_total{outcome="rejected_reservation"}' in text
    assert "garagebook_reservation_layer_skipped_total" in text


@pytest.mark.slow
async def test_no_personal_data_or_tokens_in_any_log_line(
    stack: Stack, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(stack.env(LOG_LEVEL="DEBUG"))
    customer = {
        "name": "Grace Hopper",
        "email": "grace.hopper@example.org",
        "phone": "+44 7700 900999",
    }
    async with httpx.AsyncClient(base_url=server.url) as client:
        slots = (await client.get("/api/slots", params={"available": "true", "limit": 3})).json()
        held = await client.post("/api/holds", json={"slot_id": slots[0]["id"], "service_id": 1})
        hold_token = held.json()["hold_token"]
        body = {**booking_body(slots[0]["id"]), "customer": customer, "hold_token": hold_token}
        booking = (await client.post("/api/bookings", json=body)).json()
        await client.get(f"/api/bookings/{booking['id']}", headers=ADMIN_AUTH)
        await client.get(f"/api/manage/{booking['cancel_token']}")
        await client.post(f"/api/manage/{booking['cancel_token']}/cancel")
        other = await client.post("/api/holds", json={"slot_id": slots[1]["id"], "service_id": 1})
        await client.delete(f"/api/holds/{other.json()['hold_token']}")
        # Invalid input and a database conflict: error paths log too.
        await client.post("/api/bookings", json={**body, "customer": {"email": customer["email"]}})
        await client.post(
            "/api/bookings", json={**booking_body(slots[2]["id"]), "customer": customer}
        )
        await client.post(
            "/api/bookings", json={**booking_body(slots[2]["id"]), "customer": customer}
        )
        # The waitlist's tokens and a vehicle's registration are not logged either.
        joined = await client.post(
            "/api/waitlist",
            json={
                "service_id": 1,
                "day": slots[2]["starts_at"][:10],
                "customer": customer,
                "vehicle": {"registration": "GH19 XYZ"},
            },
        )
        assert joined.status_code == 201, joined.text
        await client.get("/api/waitlist/offers/" + "o" * 32)
        await client.delete(f"/api/waitlist/{joined.json()['leave_token']}")
        await client.get("/api/vehicles/GH19XYZ", headers={"Authorization": "Bearer nope"})
        await client.get("/staff/vehicles/GH19XYZ")
        traced = await client.get("/health", headers={"X-Request-ID": "trace-me-42"})
        assert traced.headers["X-Request-ID"] == "trace-me-42"
    server.stop()
    lines = [line for line in server.output().splitlines() if line.startswith("{")]
    requests = [json.loads(line) for line in lines if '"message": "request"' in line]
    assert len(requests) >= 12  # one line per request, so this test can fail
    assert {"request_id", "method", "path", "status", "duration_ms"} <= set(requests[0])
    assert any(r["request_id"] == "trace-me-42" for r in requests)
    secrets_ = [
        "grace.hopper",
        "Grace",
        "Hopper",
        "900999",
        booking["id"],
        booking["cancel_token"],
        hold_token,
        other.json()["hold_token"],
        "test-admin-token",
        joined.json()["leave_token"],
        "o" * 32,
        "GH19",
    ]
    for line in server.output().splitlines():
        for secret in secrets_:
            assert secret not in line, line


async def test_ready_when_migrated(api: httpx.AsyncClient) -> None:
    response = await api.get("/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "database": "ok", "migrations": "current"}


async def test_not_ready_on_an_older_schema(
    api: httpx.AsyncClient, sql: Callable[..., Any]
) -> None:
    (current,) = (await sql("SELECT version_num FROM alembic_version"))[0]
    await sql("UPDATE alembic_version SET version_num = '0002_slot_unique'")
    try:
        response = await api.get("/ready")
    finally:
        await sql("UPDATE alembic_version SET version_num = :v", v=current)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
    assert response.json()["error"]["migrations"] == "behind"


async def test_metrics_under_load(api: httpx.AsyncClient) -> None:
    slots = await free_slots(api)
    await asyncio.gather(
        *(api.post("/api/bookings", json=booking_body(slots[0]["id"])) for _ in range(10))
    )
    await api.get(f"/api/bookings/{'x' * 22}", headers=ADMIN_AUTH)
    text = (await api.get("/metrics", headers=METRICS_HEADERS)).text
    assert (
        'garagebook_http_requests_total{method="POST",route="/api/bookings",status="201"} ' in text
    )
    assert 'route="/api/bookings/{booking_id}"' in text  # templates, never raw ids
    assert "x" * 22 not in text
    assert 'garagebook_http_request_duration_seconds_bucket{le="0.1",route="/api/bookings"}' in text
    assert "garagebook_reservation_layer_up 1.0" in text
    assert 'garagebook_outbox_jobs{state="pending"} 1.0' in text
    assert "garagebook_db_pool_connections_in_use" in text


async def test_health_counts_mail_due_now_apart_from_reminders_scheduled_later(
    stack: Stack,
) -> None:
    """Three bookings days ahead: three confirmations due now, three reminders due the day
    before each booking. `pending` is what should be going out now, not the reminders."""
    async with running_app(stack.settings(embedded_worker=False)) as api:  # nothing sends
        later = datetime.now(UTC) + timedelta(days=3)
        slots = [s for s in await free_slots(api) if datetime.fromisoformat(s["starts_at"]) > later]
        for slot in slots[:3]:
            assert (
                await api.post("/api/bookings", json=booking_body(slot["id"]))
            ).status_code == 201
        backlog = (await api.get("/health")).json()["backlog"]
    assert backlog["due"] == 3
    assert backlog["pending"] == 3  # pending means due, as before the reminders existed
    assert backlog["scheduled"] == 3
    assert backlog["running"] == 0
    assert backlog["dead"] == 0


async def test_a_served_app_keeps_its_startup_heap_out_of_garbage_collections(
    stack: Stack,
) -> None:
    """`garagebook serve`'s app freezes what it started with: full collections walking those
    ~176,000 objects stopped every request in flight for 90–115 ms (create_served_app)."""
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    try:
        async with LifespanManager(create_app(stack.settings(), served=True)):
            assert gc.get_freeze_count() > 50_000
            assert gc.get_threshold()[0] == 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    async with LifespanManager(create_app(stack.settings())):
        assert gc.get_freeze_count() == 0  # tests' own apps: nothing kept from collection
