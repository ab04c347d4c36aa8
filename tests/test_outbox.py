"""The outbox as an API of `jobs`: one `enqueue` (the booking's one PostgreSQL statement builds
its insert from the same definition), "a time was freed" as an event of the booking core that
the waitlist subscribes to (the core never imports the waitlist), and finished jobs pruned
after JOB_RETENTION_DAYS by the worker, in bounded batches."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from garagebook.bookings import sql as booking_sql
from garagebook.config import Settings
from garagebook.db import Database, create_engine
from garagebook.jobs import kinds, queue
from garagebook.schema import outbox
from garagebook.timeutil import utcnow
from tests.support.api import booking_body, free_slots, wait_until
from tests.support.mail import mail_settings, running_app
from tests.support.processes import ROOT
from tests.support.stack import ADMIN_TOKEN, Stack

SQL = Callable[..., Awaitable[list[Any]]]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CORE = ("garagebook.bookings", "garagebook.slots")


def test_the_booking_core_does_not_import_the_waitlist() -> None:
    """Neither directly (read from the source) nor through anything it imports (every module of
    the core imported in a fresh interpreter, then sys.modules looked at)."""
    for package in CORE:
        folder = ROOT / "src" / Path(*package.split("."))
        for source in folder.glob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                assert not [n for n in names if n.startswith("garagebook.waitlist")], source
    program = (
        "import importlib, pkgutil, sys\n"
        f"for package in {CORE!r}:\n"
        "    root = importlib.import_module(package)\n"
        "    for module in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        importlib.import_module(module.name)\n"
        "print(sorted(m for m in sys.modules if m.startswith('garagebook.waitlist')))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout.strip() == "[]", found.stdout


def test_the_booking_statement_inserts_jobs_as_enqueue_does() -> None:
    assert tuple(booking_sql.JOB_VALUES) == queue.NEW_JOB_COLUMNS
    statement = booking_sql.BOOK_POSTGRES
    assert f"INSERT INTO outbox ({', '.join(queue.NEW_JOB_COLUMNS)})" in statement
    assert f"'{kinds.BOOKING_CONFIRMED}'" in statement
    assert f"'{kinds.BOOKING_REMINDER}'" in statement
    assert f"'{queue.PENDING}'" in statement


async def test_booking_jobs_are_the_rows_enqueue_writes(
    api: httpx.AsyncClient, stack: Stack, sql: SQL
) -> None:
    """On PostgreSQL the booking's jobs come from its one statement, on SQLite from `enqueue`:
    either way the same rows as a job queued by `enqueue` itself."""
    soon = utcnow() + timedelta(days=2)  # more than a day ahead: it gets a reminder too
    later = [s for s in await free_slots(api) if datetime.fromisoformat(s["starts_at"]) > soon]
    booked = await api.post("/api/bookings", json=booking_body(later[0]["id"]))
    assert booked.status_code == 201, booked.text
    booking = booked.json()
    db = Database(create_engine(stack.settings()))
    try:
        async with db.transaction() as conn:
            payload = {"booking_id": booking["id"], "reference": booking["reference"]}
            await queue.enqueue(
                conn, kinds.BOOKING_CONFIRMED, {**payload, "sequence": 0}, now=utcnow()
            )
    finally:
        await db.dispose()
    rows = await sql(
        "SELECT id, kind, payload, status, attempts, locked_until, locked_by, last_error, "
        "done_at FROM outbox ORDER BY id"
    )
    assert [r.kind for r in rows] == [
        kinds.BOOKING_CONFIRMED,
        kinds.BOOKING_REMINDER,
        kinds.BOOKING_CONFIRMED,
    ]
    by_statement, _, by_enqueue = rows
    assert by_statement[2:] == by_enqueue[2:]  # payload, status, attempts, lease, error, done
    assert by_statement.status == queue.PENDING


async def test_a_cancel_tells_the_waitlist_through_the_event(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    """The cancel raises "a time was freed"; the waitlist's listener queues its matching in the
    cancel's transaction, and only when someone waits for that day."""
    first, second = (await free_slots(api))[:2]
    cancels = []
    for slot in (first, second):
        booked = (await api.post("/api/bookings", json=booking_body(slot["id"]))).json()
        cancels.append(f"/api/bookings/{booked['id']}/cancel")
    assert (await api.post(cancels[0], headers=AUTH)).status_code == 200
    assert await _matches(sql) == 0  # nobody waits: no job
    day = second["starts_at"][:10]
    joined = await api.post(
        "/api/waitlist",
        json={
            "service_id": 1,
            "day": day,
            "customer": {"name": "Kim", "email": "kim@example.com"},
            "vehicle": {"registration": "AB12 CDE"},
        },
    )
    assert joined.status_code == 201, joined.text
    queued_by_join = await _matches(sql)
    assert (await api.post(cancels[1], headers=AUTH)).status_code == 200
    assert await _matches(sql) == queued_by_join + 1


async def _matches(sql: SQL) -> int:
    rows = await sql("SELECT count(*) FROM outbox WHERE kind = :kind", kind=kinds.WAITLIST_MATCH)
    return int(rows[0][0])


# --- pruning -----------------------------------------------------------------------------------


async def _add_jobs(stack: Stack, jobs: list[tuple[str, timedelta | None]]) -> None:
    now = utcnow()
    rows = [
        {
            # A pending job is due tomorrow: the worker of the test leaves it alone.
            **queue.new_job(kinds.BOOKING_CONFIRMED, {}, now - (age or NEW), now + timedelta(1)),
            "status": status,
            "done_at": None if age is None else now - age,
        }
        for status, age in jobs
    ]
    db = Database(create_engine(stack.settings()))
    try:
        async with db.transaction() as conn:
            await conn.execute(outbox.insert().values(rows))
    finally:
        await db.dispose()


async def _left(stack: Stack) -> list[tuple[str, bool]]:
    """(status, finished more than a day ago) of every job."""
    cutoff = utcnow() - timedelta(days=1)
    db = Database(create_engine(stack.settings()))
    try:
        async with db.read() as conn:
            rows = await conn.execute(
                select(outbox.c.status, outbox.c.done_at).order_by(outbox.c.id)
            )
            return [(r.status, r.done_at is not None and r.done_at < cutoff) for r in rows]
    finally:
        await db.dispose()


OLD, NEW = timedelta(days=40), timedelta(hours=1)
MIX = [
    ("done", OLD),
    ("skipped", OLD),
    ("done", OLD),
    ("dead", OLD),  # kept: an operator's to retry
    ("done", NEW),  # within the retention
    ("pending", None),
    ("done", OLD),
]


async def test_prune_deletes_finished_jobs_past_the_retention_in_bounded_batches(
    stack: Stack, sql: SQL
) -> None:
    await _add_jobs(stack, MIX)
    db = Database(create_engine(stack.settings()))
    try:
        before = utcnow() - timedelta(days=30)
        async with db.transaction() as conn:
            assert await queue.prune(conn, before, limit=3) == 3  # bounded
        async with db.transaction() as conn:
            assert await queue.prune(conn, before, limit=3) == 1
        async with db.transaction() as conn:
            assert await queue.prune(conn, before, limit=3) == 0
    finally:
        await db.dispose()
    assert await _left(stack) == [("dead", True), ("done", False), ("pending", False)]


async def test_the_worker_prunes_after_job_retention_days(stack: Stack, sql: SQL) -> None:
    await _add_jobs(stack, MIX)
    settings = mail_settings(stack, None, job_retention_days=30)

    async def pruned() -> bool:
        return len(await _left(stack)) == 3

    async with running_app(settings):
        await wait_until(pruned, 20, "the worker to prune old finished jobs")
    assert await _left(stack) == [("dead", True), ("done", False), ("pending", False)]


def test_job_retention_days_is_a_setting() -> None:
    assert Settings(_env_file=None).job_retention_days == 30  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(_env_file=None, job_retention_days=0)  # type: ignore[call-arg]


def test_every_kind_has_its_handler_in_the_worker() -> None:
    from garagebook.jobs import worker  # noqa: F401  (imports every handler module)
    from garagebook.jobs.handlers import HANDLERS

    assert set(HANDLERS) == set(kinds.ALL)
