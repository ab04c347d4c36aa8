"""Test fixtures: real databases built by the migrations, real Redis, real server processes.
What they build on (the stack's settings, process wrappers, the SMTP sink, request helpers) is
in tests/support/; tests import it from there, not from here.

Behavioural tests run twice, on the two shapes garagebook is deployed in:
  "sqlite"   — SQLite file + in-process reservations (the embedded default);
  "postgres" — PostgreSQL + Redis (production).
PostgreSQL and Redis are the machine's shared services; each test run gets its own database
and its own Redis key prefix. Under CI=true a missing service fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

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
from garagebook.reservations import LocalReservations
from tests.support.mail import SmtpSink
from tests.support.processes import RedisProcess, ServerProcess, WorkerProcess
from tests.support.stack import (
    PG_HOST,
    PG_PORT,
    PG_USER,
    REDIS_URL,
    Stack,
    in_thread,
    reset_database,
    run_sync,
    service_missing,
)


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


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


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


@pytest.fixture(scope="session", autouse=True)
def _quiet_outbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that are not about mail run without the embedded worker, which would change outbox
    rows under their feet; and nothing writes mail into the working directory. Mail tests
    switch the worker on explicitly (`mail_settings`, `mail_env`)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EMBEDDED_WORKER", "false")
        patch.setenv("MAIL_DROP_DIR", str(tmp_path_factory.mktemp("mail-drop")))
        yield


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


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
