"""A PostgreSQL pool under a burst (issue 19): waiting for one of our own pooled connections
is not the database being down. Found as 7 of 3,000 bookings answered 503 in a 1,000-way
`garagebook concurrency-test` on a loaded machine while PostgreSQL answered every statement
in time: SQLAlchemy's pool gave up on them after `pool_timeout` (DATABASE_TIMEOUT_SECONDS)
of waiting behind a queue that kept moving."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from garagebook.db import Database, create_engine
from garagebook.errors import DatabaseUnavailable
from tests.support.stack import Stack

pytestmark = pytest.mark.parametrize("stack", ["postgres"], indirect=True)

TIMEOUT = 1.0  # DATABASE_TIMEOUT_SECONDS here
POOL = 2


async def test_a_long_queue_for_the_pool_that_moves_is_no_timeout(stack: Stack) -> None:
    """Twenty transactions and reads at once on a two-connection pool, each holding its
    connection for 0.2 s: the last in line waits about 2 s, twice the timeout, yet every turn
    ahead of it was the database answering, so none is told 503 (before: the pool's
    `pool_timeout` gave up on the ones at the back)."""
    settings = stack.settings(database_pool_size=POOL, database_timeout_seconds=TIMEOUT)
    db = Database(create_engine(settings))
    waited: list[float] = []

    async def transaction() -> None:
        asked = time.monotonic()
        async with db.transaction() as conn:
            waited.append(time.monotonic() - asked)
            await conn.execute(text("SELECT pg_sleep(0.2)"))

    async def read() -> None:
        asked = time.monotonic()
        async with db.read() as conn:
            waited.append(time.monotonic() - asked)
            await conn.execute(text("SELECT pg_sleep(0.2)"))

    try:
        await asyncio.gather(*(transaction() if i % 2 else read() for i in range(20)))
    finally:
        await db.dispose()
    assert len(waited) == 20
    assert max(waited) > TIMEOUT * 1.5  # the back of the queue did wait past the timeout


async def test_a_pool_held_by_stuck_transactions_is_a_timeout(stack: Stack) -> None:
    """The control: both connections held by transactions stuck for 4 s, and the one waiting
    behind them gets 503 once the timeout has passed with no connection handed back — not
    only when the stuck ones end."""
    settings = stack.settings(database_pool_size=POOL, database_timeout_seconds=TIMEOUT)
    db = Database(create_engine(settings))

    async def stuck() -> None:
        async with db.transaction() as conn:
            await conn.execute(text("SELECT pg_sleep(4)"))

    try:
        holders = [asyncio.create_task(stuck()) for _ in range(POOL)]
        await asyncio.sleep(0.5)  # they hold both connections
        asked = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            async with db.read() as conn:
                await conn.execute(text("SELECT 1"))
        gave_up_after = time.monotonic() - asked
        await asyncio.gather(*holders)
    finally:
        await db.dispose()
    assert TIMEOUT <= gave_up_after < 3.0
