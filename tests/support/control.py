"""The control tests' database: the test's own, built by the migrations and reset to the demo
garage, with the named unique indexes dropped, so a race test's control can show the indexes
are what made it pass. Never the shared test database: the other tests need the indexes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.cli import migrate_database
from tests.support.mail import running_app
from tests.support.stack import Stack, in_thread, reset_database, run_sync


async def _admin(base_url: str, sql: str) -> None:
    admin = create_async_engine(f"{base_url}/postgres", isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(sql))
    await admin.dispose()


async def fresh_postgres_database(base_url: str, name: str) -> str:
    """A new database `name` on the server of `base_url`, migrated."""
    await drop_postgres_database(base_url, name)
    await _admin(base_url, f'CREATE DATABASE "{name}"')
    url = f"{base_url}/{name}"
    in_thread(migrate_database, url)
    return url


async def drop_postgres_database(base_url: str, name: str) -> None:
    await _admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def database_without(
    stack: Stack, request: pytest.FixtureRequest, tmp_path: Path, *indexes: str
) -> str:
    """The URL of a database of the stack's kind without `indexes`; dropped after the test."""
    if stack.is_postgres:
        base = stack.database_url.rsplit("/", 1)[0]
        name = f"garagebook_control_{id(request)}"
        url = await fresh_postgres_database(base, name)
        request.addfinalizer(lambda: run_sync(lambda: drop_postgres_database(base, name)))
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
        in_thread(migrate_database, url)
    await reset_database(url)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for index in indexes:
            await conn.execute(text(f"DROP INDEX {index}"))
    await engine.dispose()
    return url


@asynccontextmanager
async def app_without(
    stack: Stack, request: pytest.FixtureRequest, tmp_path: Path, *indexes: str
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """The app, in-process, on a database of its own without `indexes`: its URL and a client."""
    url = await database_without(stack, request, tmp_path, *indexes)
    async with running_app(stack.settings(database_url=url)) as client:
        yield url, client
