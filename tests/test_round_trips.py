"""The hot path's database and Redis budget, counted (not timed): a regression guard for round
trips.

PostgreSQL, successful booking: the plan read (autocommit, once per slot and service, then
cached) + BEGIN, one statement, COMMIT. SQLite runs the writes one by one (in-process).
Rejected by the reservation layer: no database statement at all once the plan is cached.

Reservation layer (one round trip to Redis per call, a script or a DEL; in-process on the
embedded default): successful booking reserve + confirm (the short lease, then the TTL once
committed: issue 12); rejected by the reservation layer reserve; rejected by the database
reserve + release."""

from __future__ import annotations

import inspect
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import event, text

from garagebook.app import create_app
from garagebook.config import Settings
from garagebook.reservations import RedisReservations
from tests.support.api import booking_body, free_slots, free_slots_ahead
from tests.support.stack import NO_BOOKING_CAPS, Stack


def record_statements(app: FastAPI) -> list[str]:
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    for engine in (app.state.db.engine, app.state.db.generic_plans):
        if engine is not None:  # the second: PostgreSQL's pool for the fingerprint reads
            event.listen(engine.sync_engine, "before_cursor_execute", before)
    return statements


class ReservationCalls:
    """The reservation store's calls, and on Redis the commands that went to Redis."""

    def __init__(self, app: FastAPI) -> None:
        self.calls: list[str] = []
        self.commands: list[str] = []
        store = app.state.reservations
        # A booking reserves with `reserve_first` (its candidates: bays and technicians).
        for name, label in (
            ("reserve", "reserve"),
            ("reserve_first", "reserve"),
            ("confirm", "confirm"),
            ("release", "release"),
            ("forget", "forget"),
        ):
            setattr(store, name, self._counted(label, getattr(store, name)))
        if isinstance(store, RedisReservations):
            execute = store._client.execute_command

            async def counted_command(*args: Any, **kwargs: Any) -> Any:
                self.commands.append(str(args[0]).upper())
                return await execute(*args, **kwargs)

            store._client.execute_command = counted_command  # type: ignore[method-assign]

    def _counted(self, name: str, method: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await method(*args, **kwargs)

        return counted

    def clear(self) -> None:
        self.calls.clear()
        self.commands.clear()

    def assert_round_trips(self, stack: Stack, calls: list[str]) -> None:
        assert self.calls == calls
        # One command per call (its script, or DEL), never a second one hidden in a call.
        assert len(self.commands) == (len(calls) if stack.redis_url else 0)


async def test_booking_round_trips(app: FastAPI, api: httpx.AsyncClient, stack: Stack) -> None:
    first, slot = (await free_slots_ahead(api))[:2]
    # Not counted: the first booking loads the scripts into Redis (NOSCRIPT, SCRIPT LOAD).
    assert (await api.post("/api/bookings", json=booking_body(first["id"]))).status_code == 201
    statements = record_statements(app)
    reservations = ReservationCalls(app)

    created = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert created.status_code == 201
    # SQLite reads the setup's rules (garage/rules.py) in one more in-process SELECT, then
    # writes booking, claims, customer, vehicle, outbox (the confirmation and, the slot being
    # days ahead, the reminder), webhook jobs (an INSERT … SELECT); the one PostgreSQL
    # statement does all of it itself.
    writes = ["WITH"] if stack.is_postgres else ["SELECT", *["INSERT"] * 7]
    assert [s for s in statements if s != "BEGIN"] == ["SELECT", *writes]
    reservations.assert_round_trips(stack, ["reserve", "confirm"])
    await _rejected_without_a_statement(api, stack, slot, statements, reservations)


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
        first, slot = (await free_slots_ahead(api))[:2]
        # Not counted: the first booking loads the scripts into Redis (NOSCRIPT, SCRIPT LOAD).
        body = booking_body(first["id"])
        body["customer"] = {**body["customer"], "email": "first@example.com"}
        assert (await api.post("/api/bookings", json=body)).status_code == 201
        statements = record_statements(app)
        reservations = ReservationCalls(app)
        created = await api.post("/api/bookings", json=booking_body(slot["id"]))
        assert created.status_code == 201
        writes = ["WITH"] if stack.is_postgres else ["SELECT", "SELECT", *["INSERT"] * 7]
        assert [s for s in statements if s != "BEGIN"] == ["SELECT", *writes]
        reservations.assert_round_trips(stack, ["reserve", "confirm"])
        await _rejected_without_a_statement(api, stack, slot, statements, reservations)


async def _rejected_without_a_statement(
    api: httpx.AsyncClient,
    stack: Stack,
    slot: dict[str, Any],
    statements: list[str],
    reservations: ReservationCalls,
) -> None:
    statements.clear()
    reservations.clear()
    rejected = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert rejected.json()["error"]["rejected_by"] == "reservation"
    assert statements == []
    reservations.assert_round_trips(stack, ["reserve"])


DEFAULT_CAPS = {name: Settings.model_fields[name].default for name in NO_BOOKING_CAPS}


async def test_database_rejection_is_one_statement(
    app: FastAPI, api: httpx.AsyncClient, stack: Stack, lose_reservations: Any
) -> None:
    slot = (await free_slots(api))[0]
    assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201
    await lose_reservations()
    await app.state.reservations.release([slot["id"]], "not counted: loads the script")
    statements = record_statements(app)
    reservations = ReservationCalls(app)
    rejected = await api.post("/api/bookings", json=booking_body(slot["id"]))
    assert rejected.json()["error"]["rejected_by"] == "database"
    assert [s for s in statements if s != "BEGIN"] == (
        ["WITH"] if stack.is_postgres else ["SELECT", "INSERT"]  # SQLite: the rules' SELECT
    )
    reservations.assert_round_trips(stack, ["reserve", "release"])


def test_no_dependency_runs_in_a_thread(app: FastAPI) -> None:
    """FastAPI runs a plain-`def` dependency in its thread pool: a thread hop per request."""
    from fastapi.routing import APIRoute

    def calls(dependant: Any) -> list[Any]:
        found = []
        for dependency in dependant.dependencies:
            found.append(dependency.call)
            found.extend(calls(dependency))
        return found

    def endpoints(routes: list[Any], inherited: list[Any]) -> list[tuple[str, list[Any]]]:
        """Every APIRoute the app serves, with the calls a request to it makes. An included
        router is one route of `app.routes` that is not an APIRoute (`_IncludedRouter` on
        FastAPI 0.165): walk into its router, with the dependencies given to include_router."""
        found = []
        for route in routes:
            if isinstance(route, APIRoute):
                found.append((route.path, [route.endpoint, *inherited, *calls(route.dependant)]))
            router = getattr(route, "original_router", None)
            if router is not None:
                included = [
                    depends.dependency
                    for depends in getattr(route.include_context, "dependencies", [])
                ]
                found.extend(endpoints(router.routes, [*inherited, *included]))
        return found

    served = endpoints(app.routes, [])
    # The API and the pages: well over the two /docs routes that sit directly in app.routes,
    # so the walk cannot pass by finding nothing.
    assert len(served) > 40, [path for path, _ in served]
    assert {"/api/bookings", "/api/slots", "/book"} <= {path for path, _ in served}
    sync = [
        f"{path}: {call.__qualname__}"
        for path, found in served
        for call in found
        if not inspect.iscoroutinefunction(call)
    ]
    assert sync == []


async def test_a_booking_that_takes_a_technician_costs_no_more_round_trips(
    app: FastAPI, api: httpx.AsyncClient, stack: Stack
) -> None:
    """Issue 15: with technicians, PostgreSQL still books in its one statement and Redis takes
    the first free bay-and-technician pair (two candidates here) in one call. Planning a new
    slot is the same one SELECT as for a bay, once per slot and service: it reads the
    technicians and their slots at those times too (it took one more read, and before that
    two); SQLite's technician claim is four in-process statements."""
    from tests.support.technicians import OIL, add_technicians

    await add_technicians(stack.database_url, ("Priya", "mot_tester,general"), ("Sam", "general"))
    first, slot = (await free_slots(api))[:2]
    assert (await api.post("/api/bookings", json=booking_body(first["id"], OIL))).status_code == 201
    statements = record_statements(app)
    reservations = ReservationCalls(app)

    created = await api.post("/api/bookings", json=booking_body(slot["id"], OIL))
    assert created.status_code == 201, created.text
    assert created.json()["technician_id"] is not None
    plan = ["SELECT"]
    technician = ["SELECT", "SELECT", "INSERT", "UPDATE"]
    writes = ["WITH"] if stack.is_postgres else ["SELECT", "INSERT", "INSERT", *technician]
    assert [s for s in statements if s != "BEGIN"][: len(plan) + len(writes)] == [*plan, *writes]
    if stack.is_postgres:
        assert [s for s in statements if s != "BEGIN"] == [*plan, *writes]
    reservations.assert_round_trips(stack, ["reserve", "confirm"])


async def test_drop_off_round_trips(app: FastAPI, api: httpx.AsyncClient, stack: Stack) -> None:
    """A drop-off (issue 15) plans from the database each time — the service, the setup
    document (its window), the qualified technicians, their minutes left that day, the setup's
    version: five reads, not cached — then books in the same one statement as a timed booking
    on PostgreSQL (SQLite: its in-process inserts and the day's guarded UPDATE). The
    reservation layer takes no part: no Redis call at all."""
    from tests.support.technicians import a_day, add_drop_off_service, add_technicians, drop_off

    await add_technicians(stack.database_url, ("Sam", "general"))
    service = await add_drop_off_service(stack.database_url)
    statements = record_statements(app)
    reservations = ReservationCalls(app)
    created = await api.post("/api/bookings", json=drop_off(service, a_day()))
    assert created.status_code == 201, created.text
    plan = ["SELECT"] * 5
    if stack.is_postgres:
        assert [s for s in statements if s != "BEGIN"] == [*plan, "WITH"]
    else:
        assert [s for s in statements if s != "BEGIN"][: len(plan)] == plan
    reservations.assert_round_trips(stack, [])


async def test_a_cached_days_availability_is_one_round_trip(
    app: FastAPI, api: httpx.AsyncClient, stack: Stack
) -> None:
    """`GET /api/availability` for a day already worked out reads its fingerprint, and the
    service's mode and length with it, in one statement (PostgreSQL; SQLite always computes)."""
    timed = [s for s in (await api.get("/api/services")).json() if s["mode"] == "timed"]
    day = (await free_slots_ahead(api))[0]["starts_at"][:10]
    query = {"service_id": timed[0]["id"], "date": day}
    first = await api.get("/api/availability", params=query)
    assert first.status_code == 200
    assert first.json()
    statements = record_statements(app)
    again = await api.get("/api/availability", params=query)
    assert again.json() == first.json()
    if stack.is_postgres:
        assert statements == ["WITH"]


async def test_fingerprints_are_read_on_connections_that_plan_them_once(
    app: FastAPI, api: httpx.AsyncClient, stack: Stack
) -> None:
    """PostgreSQL: the availability cache's fingerprint statement runs on the pool whose
    connections keep one (generic) plan per statement, and nothing else does; the main pool
    plans as PostgreSQL chooses. SQLite has neither (it always computes)."""
    if not stack.is_postgres:
        assert app.state.db.generic_plans is None
        return
    async with app.state.db.read_planned_once() as conn:
        assert await conn.scalar(text("SHOW plan_cache_mode")) == "force_generic_plan"
    async with app.state.db.read() as conn:
        assert await conn.scalar(text("SHOW plan_cache_mode")) == "auto"
    on_generic: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        on_generic.append(statement.split(None, 1)[0].upper())

    event.listen(app.state.db.generic_plans.sync_engine, "before_cursor_execute", before)
    timed = [s for s in (await api.get("/api/services")).json() if s["mode"] == "timed"]
    day = (await free_slots_ahead(api))[0]["starts_at"][:10]
    query = {"service_id": timed[0]["id"], "date": day}
    assert (await api.get("/api/availability", params=query)).status_code == 200
    assert on_generic == ["WITH"]
    everything = record_statements(app)
    booked = await api.post("/api/bookings", json=booking_body((await free_slots(api))[0]["id"]))
    assert booked.status_code == 201
    assert on_generic == ["WITH"]  # a booking's statements plan on the main pool
    assert everything
