"""create_app(): stores opened in the lifespan, routers, error handlers, /health and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from garagebook import __version__
from garagebook.bookings.routes import holds_router, manage_router
from garagebook.bookings.routes import router as bookings_router
from garagebook.config import Settings, get_settings
from garagebook.db import Database, create_engine
from garagebook.deps import DatabaseDep, ReservationsDep
from garagebook.errors import DatabaseUnavailable
from garagebook.http import BodySizeLimit, install_error_handlers, json_response
from garagebook.jobs import queue
from garagebook.jobs.worker import EmbeddedWorker
from garagebook.logs import configure_logging
from garagebook.ratelimit import RateLimiter
from garagebook.reservations import RedisReservations, create_reservations
from garagebook.slots.routes import router as slots_router
from garagebook.slots.service import PlanCache
from garagebook.timeutil import utcnow


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.db = Database(create_engine(settings))
        app.state.reservations = create_reservations(settings)
        app.state.plans = PlanCache(settings.timezone)
        app.state.rate_limiter = RateLimiter(settings, app.state.reservations)
        # The embedded default delivers its own mail; production runs `garagebook worker`.
        worker = EmbeddedWorker(settings) if settings.runs_embedded_worker else None
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await app.state.rate_limiter.close()
            await app.state.reservations.close()
            await app.state.db.dispose()

    app = FastAPI(title="garagebook", version=__version__, lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.include_router(bookings_router)
    app.include_router(holds_router)
    app.include_router(manage_router)
    app.include_router(slots_router)

    @app.get("/health", tags=["operations"])
    async def health(db: DatabaseDep, reservations: ReservationsDep) -> Response:
        """200 while the database answers (reservations may be `degraded`), else 503. With the
        mail backlog: jobs waiting, and how long the oldest due one has waited."""
        if isinstance(reservations, RedisReservations) and reservations.status == "ok":
            await reservations.ping()
        database_ok = await db.ping()
        body: dict[str, object] = {
            "status": "ok" if database_ok else "unavailable",
            "database": "ok" if database_ok else "unreachable",
            "reservations": reservations.status,
        }
        if database_ok:
            try:
                async with db.read() as conn:
                    backlog = await queue.backlog(conn, utcnow())
                body["backlog"] = {
                    "pending": backlog.pending,
                    "running": backlog.running,
                    "dead": backlog.dead,
                    "oldest_due_seconds": backlog.oldest_due_seconds,
                }
            except DatabaseUnavailable:
                pass  # gone since the ping: the next check says so
        return json_response(body, 200 if database_ok else 503)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
