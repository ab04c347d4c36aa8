"""Operations endpoints: /health (liveness, with what is degraded), /ready (readiness: the
database answers and its schema is the one this code expects), /metrics (Prometheus, behind
METRICS_TOKEN: it shows the exact Python version, booking volumes and sign-in results)."""

from __future__ import annotations

import hmac
from functools import cache
from pathlib import Path

from alembic.script import ScriptDirectory
from fastapi import APIRouter, HTTPException, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.responses import Response

from garagebook.deps import DatabaseDep, ReservationsDep, SettingsDep
from garagebook.errors import DatabaseUnavailable, Forbidden, NotAuthenticated
from garagebook.http import error_responses, json_response
from garagebook.jobs import queue
from garagebook.metrics import (
    DB_POOL_IN_USE,
    OUTBOX_JOBS,
    OUTBOX_OLDEST_DUE,
    RESERVATION_LAYER_UP,
)
from garagebook.reservations import RedisReservations
from garagebook.timeutil import utcnow

router = APIRouter(tags=["operations"])

MIGRATIONS = Path(__file__).parent / "migrations"


@cache
def schema_head() -> str | None:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


@router.get("/health", responses=error_responses(503))
async def health(db: DatabaseDep, reservations: ReservationsDep) -> Response:
    """200 while the database answers (reservations may be `degraded`), else 503. With the
    mail backlog: `pending` (= `due`) are jobs that should be going out now, `scheduled` the
    ones due later (reminders for next week's bookings: no sign of a stuck queue), and how
    long the oldest due one has waited."""
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
                "due": backlog.due,
                "scheduled": backlog.scheduled,
                "running": backlog.running,
                "dead": backlog.dead,
                "oldest_due_seconds": backlog.oldest_due_seconds,
            }
        except DatabaseUnavailable:
            pass  # gone since the ping: the next check says so
    return json_response(body, 200 if database_ok else 503)


@router.get("/ready", responses=error_responses(503))
async def ready(db: DatabaseDep) -> Response:
    """Send traffic here? Only when the database answers and is migrated to this code's head
    (a server on an older schema would fail its writes)."""
    try:
        async with db.read() as conn:
            version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    except DatabaseUnavailable:
        return _not_ready("The database cannot be reached.", database="unreachable")
    except DBAPIError:  # no alembic_version table: never migrated
        version = None
    if version != schema_head():
        return _not_ready(
            "The database schema is not this version's: run `garagebook migrate`.",
            database="ok",
            migrations="behind",
        )
    return json_response({"status": "ready", "database": "ok", "migrations": "current"})


def _not_ready(message: str, **data: str) -> Response:
    return json_response({"error": {"code": "not_ready", "message": message, **data}}, 503)


def _require_metrics_token(request: Request, settings: SettingsDep) -> None:
    """Prometheus sends `Authorization: Bearer <token>` (`authorization.credentials` in its
    scrape config). Without METRICS_TOKEN there are no metrics to see: 404."""
    if settings.metrics_token is None:
        raise HTTPException(404)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated()
    expected = settings.metrics_token.get_secret_value().encode()
    if not hmac.compare_digest(token.strip().encode(), expected):
        raise Forbidden()


@router.get("/metrics", include_in_schema=False)
async def metrics(
    request: Request, settings: SettingsDep, db: DatabaseDep, reservations: ReservationsDep
) -> Response:
    _require_metrics_token(request, settings)
    RESERVATION_LAYER_UP.set(0 if reservations.status == "degraded" else 1)
    DB_POOL_IN_USE.set(db.connections_in_use())
    try:
        async with db.read() as conn:
            backlog = await queue.backlog(conn, utcnow())
        OUTBOX_JOBS.labels("pending").set(backlog.pending)
        OUTBOX_JOBS.labels("scheduled").set(backlog.scheduled)
        OUTBOX_JOBS.labels("running").set(backlog.running)
        OUTBOX_JOBS.labels("dead").set(backlog.dead)
        OUTBOX_OLDEST_DUE.set(backlog.oldest_due_seconds)
    except DatabaseUnavailable:
        pass  # the backlog gauges keep their last value; /health says why
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
