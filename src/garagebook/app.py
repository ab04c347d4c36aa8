"""create_app(): stores opened in the lifespan, middleware, routers, error handlers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from garagebook import __version__
from garagebook.bookings.routes import RescheduleIn, holds_router, manage_router
from garagebook.bookings.routes import router as bookings_router
from garagebook.bookings.schemas import BookingIn, HoldIn
from garagebook.closures.routes import ClosureIn
from garagebook.closures.routes import router as closures_router
from garagebook.config import Settings, get_settings
from garagebook.customers.routes import router as customers_router
from garagebook.db import Database, create_engine
from garagebook.feeds.routes import FeedIn
from garagebook.feeds.routes import router as feeds_router
from garagebook.garage.document import GarageDocument
from garagebook.garage.routes import router as garage_router
from garagebook.http import (
    BodySizeLimit,
    ObserveRequests,
    document_bodies,
    install_error_handlers,
)
from garagebook.jobs.worker import EmbeddedWorker
from garagebook.logs import configure_logging
from garagebook.ops import router as ops_router
from garagebook.ratelimit import RateLimiter
from garagebook.reservations import create_reservations
from garagebook.slots.cache import AvailabilityCache
from garagebook.slots.routes import SlotIn
from garagebook.slots.routes import router as slots_router
from garagebook.slots.service import PlanCache
from garagebook.technicians.routes import AbsenceIn, ReassignIn
from garagebook.technicians.routes import router as technicians_router
from garagebook.vehicles.mot import MotIn
from garagebook.vehicles.routes import router as vehicles_router
from garagebook.waitlist.routes import router as waitlist_router
from garagebook.waitlist.schemas import WaitlistIn
from garagebook.web import install_web
from garagebook.web.auth import StaffSessions
from garagebook.webhooks.routes import WebhookChange, WebhookIn
from garagebook.webhooks.routes import router as webhooks_router

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _new_app(settings: Settings, lifespan: Lifespan) -> FastAPI:
    """Without API_DOCS: no /docs, /redoc or /openapi.json (they map every endpoint for
    whoever asks). With it: Swagger UI from the fastapi-offline package's own copy of its
    assets, so /docs works without internet and loads nothing from other hosts."""
    info: dict[str, Any] = {"title": "garagebook", "version": __version__, "lifespan": lifespan}
    if not settings.api_docs:
        return FastAPI(docs_url=None, redoc_url=None, openapi_url=None, **info)
    return FastAPIOffline(
        docs_url="/docs",
        redoc_url=None,
        static_url="/docs-assets",
        swagger_ui_parameters={"validatorUrl": None},  # the default badge calls another host
        **info,
    )


def create_served_app() -> FastAPI:
    """`garagebook serve`'s app: create_app's, with garbage collections kept short (see
    _keep_collections_short). Not in tests: they build many apps in one process, and what a
    freeze holds is never collected."""
    return create_app(served=True)


def _keep_collections_short() -> None:
    """Why: a full collection of the cyclic garbage collector stops every request in flight
    while it walks every object that is not garbage. The heap a worker starts with (~176,000
    objects: FastAPI's routes, SQLAlchemy's tables and compiled statements, pydantic's models)
    lives as long as the process, and walking it took 90–115 ms, about once a second under load:
    a one-query request's p99 was 91 ms at 8 connections against a p50 of 4 ms. Frozen
    (`gc.freeze`), it is left out (refcounting still frees it): 1 ms a collection, p99 6 ms.
    What the caches keep walks too (1,000 days of availability: ~160,000 objects, 50–100 ms);
    a young generation of 10,000 objects instead of 700 promotes far fewer request objects to
    the old one, so that walk comes far less often (`wrk -c8` for 16 s on a one-worker server with
    those days cached: 6 full collections → none, p99 74 → 8 ms)."""
    gc.freeze()  # no gc.collect() first: it found nothing to free there, and took 82 ms
    gc.set_threshold(10_000, 10, 10)


def create_app(settings: Settings | None = None, *, served: bool = False) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.db = Database(
            create_engine(settings),
            None if settings.is_sqlite else create_engine(settings, generic_plans=True),
        )
        app.state.reservations = create_reservations(settings)
        app.state.plans = PlanCache(settings.timezone)
        app.state.availability = AvailabilityCache(
            settings.timezone, read=app.state.db.read_planned_once
        )
        app.state.rate_limiter = RateLimiter(settings, app.state.reservations)
        # The embedded default delivers its own mail; production runs `garagebook worker`.
        worker = (
            EmbeddedWorker(settings, app.state.reservations)
            if settings.runs_embedded_worker
            else None
        )
        if worker is not None:
            worker.start()
        if served:
            _keep_collections_short()
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await app.state.rate_limiter.close()
            await app.state.reservations.close()
            await app.state.db.dispose()

    app = _new_app(settings, lifespan)
    # Innermost: a /staff route sees only a session that has not been ended.
    app.add_middleware(StaffSessions)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ObserveRequests)
    install_error_handlers(app)
    app.include_router(bookings_router)
    app.include_router(holds_router)
    app.include_router(manage_router)
    app.include_router(slots_router)
    app.include_router(closures_router)
    app.include_router(technicians_router)
    app.include_router(vehicles_router)
    app.include_router(waitlist_router)
    app.include_router(ops_router)
    app.include_router(garage_router)
    app.include_router(feeds_router)
    app.include_router(customers_router)
    app.include_router(webhooks_router)
    document_bodies(
        app,
        BookingIn,
        HoldIn,
        SlotIn,
        RescheduleIn,
        MotIn,
        WaitlistIn,
        ClosureIn,
        AbsenceIn,
        ReassignIn,
        GarageDocument,
        FeedIn,
        WebhookIn,
        WebhookChange,
    )
    install_web(app)

    return app
