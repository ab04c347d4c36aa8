"""The hot path's database budget, counted (not timed): a regression guard for round trips.

Successful booking: 1 read (plan) + BEGIN, 5 writes, COMMIT. Rejected by the reservation
layer: the plan read only. On PostgreSQL the read runs in autocommit (no BEGIN/COMMIT)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event

from tests.conftest import booking_body, free_slots


def record_statements(app: FastAPI) -> list[str]:
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    event.listen(app.state.db.engine.sync_engine, "before_cursor_execute", before)
    return statements


async def test_booking_round_trips(app: FastAPI, api: httpx.AsyncClient) -> None:
    slot = (await free_slots(api))[0]
    statements = record_statements(app)

    created = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert created.status_code == 201
    ours = [s for s in statements if s in {"SELECT", "INSERT", "UPDATE", "DELETE"}]
    assert ours == ["SELECT", "INSERT", "INSERT", "INSERT", "INSERT", "INSERT"]

    statements.clear()
    rejected = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert rejected.json()["error"]["rejected_by"] == "reservation"
    assert [s for s in statements if s != "BEGIN"] == ["SELECT"]
