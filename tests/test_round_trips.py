"""The hot path's database budget, counted (not timed): a regression guard for round trips.

PostgreSQL, successful booking: the plan read (autocommit, once per slot and service, then
cached) + BEGIN, one statement, COMMIT. SQLite runs the writes one by one (in-process).
Rejected by the reservation layer: no database statement at all once the plan is cached."""

from __future__ import annotations

import inspect
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event

from garagebook.app import create_app
from garagebook.config import Settings
from tests.conftest import NO_BOOKING_CAPS, Stack, booking_body, free_slots


def record_statements(app: FastAPI) -> list[str]:
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    event.listen(app.state.db.engine.sync_engine, "before_cursor_execute", before)
    return statements


async def test_booking_round_trips(app: FastAPI, api: httpx.AsyncClient, stack: Stack) -> None:
    slot = (await free_slots(api))[0]
    statements = record_statements(app)

    created = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert created.status_code == 201
    writes = ["WITH"] if stack.is_postgres else ["INSERT"] * 5
    assert [s for s in statements if s != "BEGIN"] == ["SELECT", *writes]
    await _rejected_without_a_statement(api, slot, statements)


async def test_booking_round_trips_with_the_caps_on(stack: Stack) -> None:
    """The caps on live bookings per customer (the defaults) cost PostgreSQL no round trip:
    they are counted inside the one statement. SQLite counts in one more (in-process) SELECT."""
    app = create_app(stack.settings(**DEFAULT_CAPS))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as api,
    ):
        slot = (await free_slots(api))[0]
        statements = record_statements(app)
        created = await api.post("/api/bookings", json=booking_body(slot["id"]))
        assert created.status_code == 201
        writes = ["WITH"] if stack.is_postgres else ["SELECT", *["INSERT"] * 5]
        assert [s for s in statements if s != "BEGIN"] == ["SELECT", *writes]
        await _rejected_without_a_statement(api, slot, statements)


async def _rejected_without_a_statement(
    api: httpx.AsyncClient, slot: dict[str, Any], statements: list[str]
) -> None:

    statements.clear()
    rejected = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert rejected.json()["error"]["rejected_by"] == "reservation"
    assert statements == []


DEFAULT_CAPS = {name: Settings.model_fields[name].default for name in NO_BOOKING_CAPS}


async def test_database_rejection_is_one_statement(
    app: FastAPI, api: httpx.AsyncClient, stack: Stack, lose_reservations: Any
) -> None:
    slot = (await free_slots(api))[0]
    assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201
    await lose_reservations()
    statements = record_statements(app)
    rejected = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert rejected.json()["error"]["rejected_by"] == "database"
    assert [s for s in statements if s != "BEGIN"] == (
        ["WITH"] if stack.is_postgres else ["INSERT"]
    )


def test_no_dependency_runs_in_a_thread(app: FastAPI) -> None:
    """FastAPI runs a plain-`def` dependency in its thread pool: a thread hop per request."""
    from fastapi.routing import APIRoute

    def calls(dependant: Any) -> list[Any]:
        found = []
        for dependency in dependant.dependencies:
            found.append(dependency.call)
            found.extend(calls(dependency))
        return found

    sync = [
        f"{route.path}: {call.__qualname__}"
        for route in app.routes
        if isinstance(route, APIRoute)
        for call in [route.endpoint, *calls(route.dependant)]
        if not inspect.iscoroutinefunction(call)
    ]
    assert sync == []
