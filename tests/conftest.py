"""Test fixtures: real databases built by the migrations, real Redis, real server processes.

Behavioural tests run twice, on the two shapes garagebook is deployed in:
  "sqlite"   — SQLite file + in-process reservations (the embedded default);
  "postgres" — PostgreSQL + Redis (production).
PostgreSQL and Redis are the machine's shared services; each test run gets its own database
and its own Redis key prefix. Under CI=true a missing service fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.app import create_app
from garagebook.cli import migrate_database
from garagebook.config import Settings
from garagebook.reservations import LocalReservations
from garagebook.slots.seed import seed_demo_garage

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
    "waitlist_offers",
    "waitlist_entries",
    "outbox",
    "idempotency_keys",
    "booking_slots",
    "bookings",
    "customers",
    "vehicles",
    "slots",
    "bays",
    "services",
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


@pytest.fixture(scope="session")
def worker_id_suffix(request: pytest.FixtureRequest) -> str:
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    return f"{worker}_{os.getpid()}"


@pytest.fixture(scope="session")
def postgres_url(worker_id_suffix: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test process, built by the migrations."""
    name = f"garagebook_test_{worker_id_suffix}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=5
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        run_sync(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        run_sync(lambda: admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        service_missing("PostgreSQL", exc)
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    in_thread(migrate_database, url)
    yield url
    run_sync(lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "garagebook.db"
    url = f"sqlite+aiosqlite:///{path}"
    in_thread(migrate_database, url)
    return url


@pytest.fixture(scope="session")
def redis_available() -> str:
    async def ping() -> None:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        run_sync(ping)
    except (OSError, redis.RedisError) as exc:
        service_missing("Redis", exc)
    return REDIS_URL


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
    """Empty every table, then add the demo garage (fresh slots from today)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if url.startswith("postgresql"):
                tables = ", ".join(DATA_TABLES)
                await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            else:
                for table in DATA_TABLES:
                    await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 (constant names)
            zone = Settings(_env_file=None).timezone  # type: ignore[call-arg]
            await seed_demo_garage(conn, datetime.now(zone).date(), zone, days=14)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """Each behavioural test runs on both deployment shapes, each time on a reset database."""
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
        redis_url = None
    else:
        url = request.getfixturevalue("postgres_url")
        redis_url = request.getfixturevalue("redis_available")
    await reset_database(url)
    prefix = f"gbtest:{uuid.uuid4().hex[:12]}:"
    yield Stack(request.param, url, redis_url, prefix)
    if redis_url:
        client = redis.Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def app(stack: Stack) -> FastAPI:
    return create_app(stack.settings())


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process over ASGI, its lifespan run (engines, Redis) as in a server."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as client,
    ):
        yield client


@pytest.fixture
def lose_reservations(app: FastAPI, stack: Stack) -> Callable[[], Awaitable[None]]:
    """Drop every reservation key, as when Redis restarts empty or keys expire early."""

    async def lose() -> None:
        store = app.state.reservations
        if isinstance(store, LocalReservations):
            await store.close()  # empties it
            return
        assert stack.redis_url is not None
        client = redis.Redis.from_url(stack.redis_url)
        keys = [key async for key in client.scan_iter(f"{stack.key_prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    return lose


@pytest.fixture
async def sql(stack: Stack) -> AsyncIterator[Callable[..., Awaitable[list[Any]]]]:
    """Run SQL directly against the test database, bypassing the app."""
    engine = create_async_engine(stack.database_url)

    async def query(statement: str, **params: Any) -> list[Any]:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []

    yield query
    await engine.dispose()


# --- request helpers -------------------------------------------------------------------------


def booking_body(slot_id: int, service_id: int = 1, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "slot_id": slot_id,
        "service_id": service_id,
        "customer": {
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+44 7700 900123",
        },
        "vehicle": {"registration": "AB12 CDE", "make": "Ford", "model": "Focus"},
        "notes": "rattle from the front left",
    }
    body.update(overrides)
    return body


async def free_slots(
    client: httpx.AsyncClient, service_id: int | None = None
) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"available": "true", "limit": 1000}
    if service_id is not None:
        params["service_id"] = service_id
    response = await client.get("/api/slots", params=params)
    assert response.status_code == 200, response.text
    slots: list[dict[str, Any]] = response.json()
    assert slots, "the demo garage has free slots"
    return slots


async def service_id_named(client: httpx.AsyncClient, name: str) -> int:
    services = (await client.get("/api/services")).json()
    return next(s["id"] for s in services if s["name"] == name)


def in_future(hours: int) -> datetime:
    return datetime.now().astimezone() + timedelta(hours=hours)


ROOT = Path(__file__).resolve().parent.parent


# --- processes the tests start and stop themselves ------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RedisProcess:
    """A throwaway redis-server of our own on a free port, so a test may kill it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("redis-server", FileNotFoundError("redis-server"))
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--enable-debug-command",
                "local",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), 10, "redis-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


class ServerProcess:
    """`garagebook serve` as a real process, on a free port, stopped by its pid."""

    def __init__(self, env: dict[str, str], workers: int = 1) -> None:
        self.port = free_port()
        self.env = env
        self.workers = workers
        self.log = tempfile.NamedTemporaryFile(prefix="garagebook-serve-", suffix=".log")  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "garagebook.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 30, "the server to answer /health")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    def close(self) -> None:
        self.stop()
        self.log.close()


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(env: dict[str, str], workers: int = 1) -> ServerProcess:
        server = ServerProcess(env, workers)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.close()


# --- mail and background jobs: an SMTP server, worker processes, apps with their worker ------
# This section was appended; its imports sit here rather than at the top of the file.

import email  # noqa: E402
import email.policy  # noqa: E402
import threading  # noqa: E402
from collections import Counter  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402
from email.message import EmailMessage  # noqa: E402

from aiosmtpd.controller import Controller  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _quiet_outbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that are not about mail run without the embedded worker, which would change outbox
    rows under their feet; and nothing writes mail into the working directory. Mail tests
    switch the worker on explicitly (`mail_settings`, `mail_env`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBEDDED_WORKER", "false")
        patch.setenv("MAIL_DROP_DIR", str(tmp_path_factory.mktemp("mail-drop")))
        yield


@dataclass(frozen=True)
class ReceivedMail:
    recipients: list[str]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def reference(self) -> str:
        return str(self.message["X-Booking-Reference"])

    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        """Like a real server, refuse mailboxes that do not exist (here: `bounce…@`)."""
        if address.startswith("bounce"):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.sink.record(ReceivedMail(list(envelope.rcpt_tos), message))
        return "250 OK"


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a free port, in a thread of the test process. `stop()`
    closes the port, as when the mail server is down; `start()` opens it again on the same
    port. `delay` makes every message take that long to be accepted."""

    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.delay = delay
        self._mails: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._controller = Controller(_SinkHandler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._mails.append(mail)

    @property
    def mails(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._mails)

    def copies(self) -> Counter[str]:
        """How many times each Message-ID arrived."""
        return Counter(mail.message_id for mail in self.mails)

    async def wait_for(self, distinct: int, within: float) -> list[ReceivedMail]:
        """Wait until `distinct` different messages have arrived."""
        deadline = time.monotonic() + within
        while len(self.copies()) < distinct:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.copies())} of {distinct} mails after {within}s")
            await asyncio.sleep(0.05)
        return self.mails


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


# Short leases, polls and backoff, so failure and recovery happen within seconds.
FAST_JOBS: dict[str, Any] = {
    "worker_poll_seconds": 0.1,
    "worker_lease_seconds": 2.0,
    "worker_shutdown_seconds": 3.0,
    "job_retry_base_seconds": 0.1,
    "job_retry_max_seconds": 0.5,
    "job_max_attempts": 100,
}


def mail_settings(stack: Stack, sink: SmtpSink | None, **overrides: Any) -> Settings:
    """Settings of a server that runs its own worker and sends to `sink` (None: drop folder)."""
    values: dict[str, Any] = {"embedded_worker": True, "smtp_url": sink.url if sink else None}
    values.update(FAST_JOBS)
    values.update(overrides)
    return stack.settings(**values)


def mail_env(stack: Stack, sink: SmtpSink | None, **overrides: str) -> dict[str, str]:
    """Environment of a server or worker process of this stack that sends to `sink`."""
    values = {name.upper(): str(value) for name, value in FAST_JOBS.items()}
    if sink is not None:
        values["SMTP_URL"] = sink.url
    values.update(overrides)
    return stack.env(**values)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process with its lifespan (and so its embedded worker, if on)."""
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as client,
    ):
        yield client


class WorkerProcess:
    """`garagebook worker` as a real process, stopped (or killed) by its pid."""

    def __init__(self, env: dict[str, str], concurrency: int) -> None:
        self.env = env
        self.concurrency = concurrency
        self.log = tempfile.NamedTemporaryFile(prefix="garagebook-worker-", suffix=".log")  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "garagebook.cli",
                "worker",
                "--concurrency",
                str(self.concurrency),
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def name(self) -> str:
        """As the worker writes it into `outbox.locked_by`."""
        return f"{socket.gethostname()[:40]}:{self.pid}"

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def kill(self) -> None:
        """kill -9: no chance to finish or hand back anything."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def close(self) -> None:
        self.stop()
        self.log.close()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], concurrency: int = 4) -> WorkerProcess:
        worker = WorkerProcess(env, concurrency)
        started.append(worker)
        worker.start()
        return worker

    yield start
    for worker in started:
        worker.close()


async def book_slots(
    client: httpx.AsyncClient, slots: list[dict[str, Any]], parallel: int = 8, **body: Any
) -> list[dict[str, Any]]:
    """Book each slot (a 1-hour service), `parallel` requests at a time, each for its own
    customer (`customer{i}@example.com`); all must be 201."""
    gate = asyncio.Semaphore(parallel)

    async def one(i: int, slot: dict[str, Any]) -> dict[str, Any]:
        request = booking_body(slot["id"], **body)
        request["customer"] = {**request["customer"], "email": f"customer{i}@example.com"}
        async with gate:
            response = await client.post("/api/bookings", json=request)
        assert response.status_code == 201, response.text
        booking: dict[str, Any] = response.json()
        return booking

    return list(await asyncio.gather(*(one(i, slot) for i, slot in enumerate(slots))))


async def open_admin_slot(
    client: httpx.AsyncClient, starts_at: datetime | str, bay_id: int = 1
) -> int:
    """A one-hour slot opened through the admin API (staff opening an extra time)."""
    start = datetime.fromisoformat(starts_at) if isinstance(starts_at, str) else starts_at
    response = await client.post(
        "/api/admin/slots",
        json={
            "bay_id": bay_id,
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=1)).isoformat(),
        },
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert response.status_code == 201, response.text
    slot_id: int = response.json()["id"]
    return slot_id


async def book_as(client: httpx.AsyncClient, slot_id: int, email: str) -> dict[str, Any]:
    """Book `slot_id` (service 1) for the customer at `email`; asserts the 201."""
    body = booking_body(slot_id)
    body["customer"] = {**body["customer"], "email": email}
    response = await client.post("/api/bookings", json=body)
    assert response.status_code == 201, response.text
    booking: dict[str, Any] = response.json()
    return booking


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)
