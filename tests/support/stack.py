"""The deployment shapes under test and the shared services they run on.

PostgreSQL and Redis are the machine's shared services (where to find them: `TEST_PG_*`,
`TEST_REDIS_URL`); `Stack` is one shape garagebook is deployed in, with its settings and a
server environment; `reset_database` empties one and adds the demo garage. Under CI=true a
missing service fails the run instead of skipping (`service_missing`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.config import Settings
from garagebook.garage.apply import apply_in
from garagebook.garage.demo import demo_document
from garagebook.timeutil import utcnow

CI = os.environ.get("CI") == "true"
PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_TOKEN = "test-admin-token"
METRICS_TOKEN = "test-metrics-token"
METRICS_HEADERS = {"Authorization": f"Bearer {METRICS_TOKEN}"}
TEST_REDIS_TIMEOUT_MS = 2000
DATA_TABLES = [
    "personal_data_audit",
    "calendar_feeds",
    "garage_changes",
    "garage",
    "webhook_deliveries",
    "webhooks",
    "waitlist_offers",
    "waitlist_entries",
    "outbox",
    "idempotency_keys",
    "technician_claims",
    "booking_slots",
    "closures",
    "bookings",
    "technician_slots",
    "technician_days",
    "absences",
    "technicians",
    "customers",
    "vehicles",
    "slots",
    "bays",
    "services",
    "staff_users",
]

# Reminders are due a day before the appointment: they stay pending in tests about the other
# mails, and only some bookings get one (the slot must be more than a day ahead).
CONFIRMATION_JOBS = (
    "SELECT kind, payload, status FROM outbox WHERE kind <> 'booking_reminder' ORDER BY id"
)

# Most tests book many times as one customer (`booking_body`) and are about something else:
# they run without the caps on live bookings per customer. tests/test_booking_caps.py runs
# with the defaults.
NO_BOOKING_CAPS = {
    "max_live_bookings_per_email": 0,
    "max_live_bookings_per_registration": 0,
    "max_bookings_per_email_per_day": 0,
}

T = TypeVar("T")


def run_sync(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on its own loop in a thread (safe from inside any loop)."""

    async def main() -> T:
        return await coro_factory()

    return in_thread(asyncio.run, main())


def in_thread(function: Callable[..., T], *args: Any) -> T:
    """Call `function` in a fresh thread: migrations run their own event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args).result()


def service_missing(name: str, error: BaseException) -> None:
    message = f"{name} is not reachable ({type(error).__name__}: {error})"
    if CI:
        pytest.fail(f"{message}: CI needs it", pytrace=False)
    pytest.skip(message)


@dataclass
class Stack:
    """One deployment shape under test: where data and reservations live."""

    name: str
    database_url: str
    redis_url: str | None
    key_prefix: str

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "redis_key_prefix": self.key_prefix,
            "admin_token": ADMIN_TOKEN,
            "log_level": "WARNING",
            # Generous: on a busy CI machine a starved event loop must not open the breaker
            # in tests that are about something else (breaker tests set their own timeouts).
            "redis_timeout_ms": TEST_REDIS_TIMEOUT_MS,
            **NO_BOOKING_CAPS,
            # As in development (`make run`): the tests read the schema and the metrics.
            "api_docs": True,
            "metrics_token": METRICS_TOKEN,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment for a server process of this stack."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_KEY_PREFIX=self.key_prefix,
            ADMIN_TOKEN=ADMIN_TOKEN,
            LOG_LEVEL="WARNING",
            REDIS_TIMEOUT_MS=str(TEST_REDIS_TIMEOUT_MS),
            SESSION_SECRET="test-session-secret",  # `serve --workers N>1` requires one
            **{name.upper(): "0" for name in NO_BOOKING_CAPS},
            API_DOCS="true",
            METRICS_TOKEN=METRICS_TOKEN,
        )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(overrides)
        return env

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


async def reset_database(url: str) -> None:
    """Empty every table, then apply the demo garage (fresh slots from today; its minimum
    notice is 0, so tests may book the next hour)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if url.startswith("postgresql"):
                tables = ", ".join(DATA_TABLES)
                await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            else:
                for table in DATA_TABLES:
                    await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 (constant names)
            await apply_in(conn, demo_document(), actor="tests", now=utcnow())
    finally:
        await engine.dispose()
