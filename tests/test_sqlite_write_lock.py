"""SQLite's one write lock under a burst (issue 19): reads never queue for it, and the
process's own writers take it in turn instead of racing for it in SQLite's busy handler.

Found as 503 `database_unavailable` among the 200 bookings of
tests/test_jobs_delivery.py on a loaded machine: the requests that failed had waited 5 s
(DATABASE_TIMEOUT_SECONDS) in BEGIN IMMEDIATE, four of five of them only to read a slot's
plan, while the lock was free for a quarter of that time."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import make_url, text

from garagebook.db import Database, create_engine
from garagebook.errors import DatabaseUnavailable
from tests.support.api import booking_body, free_slots
from tests.support.mail import running_app
from tests.support.stack import Stack

pytestmark = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)

TIMEOUT = 1.0  # DATABASE_TIMEOUT_SECONDS in the read test: the busy timeout
WRITERS = 8


@contextmanager
def held_write_lock(stack: Stack) -> Iterator[sqlite3.Connection]:
    """Another process's writer (as the CLI would be) holding the lock: its own connection."""
    path = make_url(stack.database_url).database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield holder
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_reads_answer_while_another_writer_holds_the_lock(stack: Stack) -> None:
    """A read used to begin with BEGIN IMMEDIATE like a write: it waited for every writer and
    got 503 past the busy timeout. In WAL mode a reader needs no lock: it answers at once."""
    async with running_app(stack.settings(database_timeout_seconds=TIMEOUT)) as api:
        slot = (await free_slots(api))[0]
        with held_write_lock(stack) as holder:
            started = time.monotonic()
            listed = await api.get("/api/slots", params={"available": "true", "limit": 5})
            read_in = time.monotonic() - started
            # The control: the lock really is held, and a write does wait for it, then 503.
            booked = await api.post("/api/bookings", json=booking_body(slot["id"]))
            assert holder.in_transaction
    assert listed.status_code == 200, listed.text
    assert read_in < TIMEOUT  # not a wait for the lock (that would be TIMEOUT, then a 503)
    assert booked.status_code == 503
    assert booked.json()["error"]["code"] == "database_unavailable"


async def test_writers_of_one_process_take_the_lock_in_turn(stack: Stack) -> None:
    """Eight writers on two engines (as the server and its embedded worker), each holding the
    lock for a few event-loop turns, back to back for three seconds. SQLite's busy handler
    does not queue them: a waiter sleeps and retries, up to 100 ms apart, while others take the
    lock in between, dozens of times (so, under load, past the busy timeout: the 503s). Taking
    turns, a writer lets only those ahead of it go first: at most the seven others. Counted
    in turns, not seconds, so a loaded machine changes nothing."""
    settings = stack.settings()  # the default busy timeout (5 s)
    server, worker = Database(create_engine(settings)), Database(create_engine(settings))
    turns = 0
    overtaken: list[int] = []  # per transaction: how many others took the lock while it waited

    async def writer(db: Database) -> None:
        nonlocal turns
        deadline = time.monotonic() + 3.0
        first = True  # its first transaction also opens a connection, before it joins the queue
        while time.monotonic() < deadline:
            asked = turns
            async with db.transaction() as conn:
                if not first:
                    overtaken.append(turns - asked)
                turns += 1
                first = False
                await conn.execute(text("UPDATE services SET name = name WHERE id = 1"))
                await asyncio.sleep(0.01)  # the loop is busy elsewhere; the lock is held
                await conn.execute(text("SELECT count(*) FROM bookings"))

    try:
        await asyncio.gather(*(writer(server if i % 2 else worker) for i in range(WRITERS)))
    finally:
        await server.dispose()
        await worker.dispose()
    assert len(overtaken) > 5 * WRITERS  # they did queue: many turns each
    assert max(overtaken) <= WRITERS - 1


async def test_a_long_queue_that_moves_is_no_timeout_a_stuck_writer_is(stack: Stack) -> None:
    """DATABASE_TIMEOUT_SECONDS measures the database, not our own queue: six writers arriving
    at once, each holding the lock for 0.6 s, make the last wait 3 s, past a 2 s timeout, yet
    every turn ahead was work getting done, so none of them is told 503 (they were, from the
    busy timeout). The control: a writer stuck holding the lock for longer than the timeout,
    and the one waiting behind it gets 503 once the timeout has passed with no turn ending."""
    settings = stack.settings(database_timeout_seconds=2.0)
    db = Database(create_engine(settings))
    waited: list[float] = []

    async def writer(hold: float) -> None:
        asked = time.monotonic()
        async with db.transaction() as conn:
            waited.append(time.monotonic() - asked)
            await conn.execute(text("UPDATE services SET name = name WHERE id = 1"))
            await asyncio.sleep(hold)

    try:
        await asyncio.gather(*(writer(0.6) for _ in range(6)))
        assert max(waited) > 2.0  # the last one did wait longer than the timeout
        stuck = asyncio.create_task(writer(4.5))
        await asyncio.sleep(0.2)  # it has the lock
        asked = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await writer(0)
        gave_up_after = time.monotonic() - asked
        await stuck
    finally:
        await db.dispose()
    assert 2.0 <= gave_up_after < 4.3  # the timeout with no turn ending, not the stuck one's end
