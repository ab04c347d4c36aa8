"""The outbox table as a job queue. Each function only executes statements on the connection
it is given: the worker loop and the CLI open and commit the transactions.

A job's life: `pending` → (claimed) `running` → `done` | `skipped` | back to `pending` with a
later `run_at` (a retry) | `dead` (out of attempts, or a failure that no retry can fix).
A claim is a lease: `locked_until` says when another worker may take the job over, and the
pair (`locked_by`, `attempts`) fences every later write, so a worker that lost its lease can
no longer change the job it thought it held.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, delete, func, literal, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.errors import JobNotFound, JobNotRetryable
from garagebook.schema import outbox

PENDING = "pending"
RUNNING = "running"
DONE = "done"
SKIPPED = "skipped"  # nothing to send any more, e.g. the confirmation of a cancelled booking
DEAD = "dead"
STATES = (PENDING, RUNNING, DONE, SKIPPED, DEAD)

_ERROR_MAX_CHARS = 1000

# A new job's columns, in this order: `enqueue` writes them, and so does the booking's one
# PostgreSQL statement (bookings/sql.py), which builds its insert from this tuple.
NEW_JOB_COLUMNS = ("kind", "payload", "status", "attempts", "run_at", "created_at")


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int  # including this one: each claim is an attempt, so a job that kills its worker
    worker: str  # runs out of attempts too; (worker, attempts) identifies this claim

    @property
    def reference(self) -> str:
        """The booking reference: what logs may name (never the customer)."""
        return str(self.payload.get("reference", "?"))


@dataclass(frozen=True)
class Backlog:
    due: int  # pending and due now or overdue: what the workers should be sending
    scheduled: int  # pending but due later (e.g. tomorrow's reminders): nothing is stuck
    running: int
    dead: int
    oldest_due_seconds: float  # how long the oldest due pending job has waited; 0 if none

    @property
    def pending(self) -> int:
        """`pending` in /health and the metrics means waiting to go out: the due jobs."""
        return self.due


@dataclass(frozen=True)
class DeadJob:
    id: int
    kind: str
    reference: str
    attempts: int
    last_error: str | None
    died_at: datetime | None


def retry_delay(attempts: int, base_seconds: float, max_seconds: float) -> float:
    """Exponential backoff with jitter: the ceiling doubles per attempt up to `max_seconds`, and
    the delay is drawn from its upper half, so retries spread out yet never come back early."""
    ceiling = min(max_seconds, base_seconds * 2.0 ** max(attempts - 1, 0))
    return ceiling / 2 + secrets.SystemRandom().uniform(0, ceiling / 2)


def encode_payload(payload: Mapping[str, Any]) -> str:
    return orjson.dumps(dict(payload)).decode()


def new_job(
    kind: str, payload: Mapping[str, Any], now: datetime, run_at: datetime | None = None
) -> dict[str, Any]:
    """The row `enqueue` inserts: pending, no attempts yet, due at `run_at` (default: now)."""
    return {
        "kind": kind,
        "payload": encode_payload(payload),
        "status": PENDING,
        "attempts": 0,
        "run_at": run_at or now,
        "created_at": now,
    }


async def enqueue(
    conn: AsyncConnection,
    kind: str,
    *payloads: Mapping[str, Any],
    now: datetime,
    run_at: datetime | None = None,
    only_if: ColumnElement[bool] | None = None,
) -> None:
    """Queue one job of `kind` per payload, in one statement on the caller's connection: the
    job is born in the caller's transaction and exists exactly when its change commits (the
    outbox). A payload names things (a booking id, a day), never personal data: the handler
    reads that when it runs. `only_if`: written only where this condition holds at insert
    time (e.g. "someone is waiting that day"), still one statement."""
    if not payloads:
        return
    rows = [new_job(kind, payload, now, run_at) for payload in payloads]
    if only_if is None:
        await conn.execute(outbox.insert().values(rows))
        return
    selects = [
        select(*(literal(row[column], outbox.c[column].type) for column in NEW_JOB_COLUMNS)).where(
            only_if
        )
        for row in rows
    ]
    source = selects[0] if len(selects) == 1 else union_all(*selects)
    await conn.execute(outbox.insert().from_select(list(NEW_JOB_COLUMNS), source))


async def prune(conn: AsyncConnection, finished_before: datetime, limit: int) -> int:
    """Delete up to `limit` jobs that finished (`done` or `skipped`) before `finished_before`;
    how many went. Dead jobs stay until an operator retries them (`garagebook jobs`). Bounded,
    so each call is one short transaction; on PostgreSQL rows another pruner holds are skipped."""
    finished = (
        select(outbox.c.id)
        .where(outbox.c.status.in_((DONE, SKIPPED)), outbox.c.done_at < finished_before)
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await conn.execute(delete(outbox).where(outbox.c.id.in_(finished)))
    return result.rowcount


def _payload(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _held(job: Job) -> ColumnElement[bool]:
    return and_(
        outbox.c.id == job.id,
        outbox.c.status == RUNNING,
        outbox.c.locked_by == job.worker,
        outbox.c.attempts == job.attempts,
    )


def _clip(error: str) -> str:
    return error if len(error) <= _ERROR_MAX_CHARS else error[: _ERROR_MAX_CHARS - 1] + "…"


async def claim(
    conn: AsyncConnection,
    worker: str,
    limit: int,
    now: datetime,
    lease: timedelta,
    running: Collection[int] = (),
) -> list[Job]:
    """Take up to `limit` due jobs: pending ones whose time has come, and running ones whose
    lease ran out (their worker died). On PostgreSQL `FOR UPDATE SKIP LOCKED` lets any number
    of workers claim at once, each getting different jobs without waiting for the others; on
    SQLite the engine's BEGIN IMMEDIATE makes the whole claim exclusive.

    `running`: the jobs this worker is still running. A lease that ran out under a starved
    event loop does not mean its worker died; the worker must not take its own job a second
    time and send it twice (other workers still may: that is at least once)."""
    due = (
        select(outbox.c.id)
        .where(
            or_(
                and_(outbox.c.status == PENDING, outbox.c.run_at <= now),
                and_(
                    outbox.c.status == RUNNING,
                    outbox.c.locked_until <= now,
                    outbox.c.id.not_in(running),
                ),
            )
        )
        .order_by(outbox.c.run_at, outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = await conn.execute(
        update(outbox)
        .where(outbox.c.id.in_(due))
        .values(
            status=RUNNING,
            attempts=outbox.c.attempts + 1,
            locked_by=worker,
            locked_until=now + lease,
        )
        .returning(outbox.c.id, outbox.c.kind, outbox.c.payload, outbox.c.attempts)
    )
    jobs = [Job(r.id, r.kind, _payload(r.payload), r.attempts, worker) for r in rows]
    return sorted(jobs, key=lambda job: job.id)


async def extend(conn: AsyncConnection, jobs: list[Job], until: datetime) -> int:
    """The heartbeat: jobs still running keep their lease however long a send takes."""
    if not jobs:
        return 0
    result = await conn.execute(
        update(outbox).where(or_(*(_held(job) for job in jobs))).values(locked_until=until)
    )
    return result.rowcount


async def finish(conn: AsyncConnection, job: Job, status: str, now: datetime) -> bool:
    """`done` or `skipped`. False when the lease was lost meanwhile (the new holder decides).
    A payload's secrets (a waitlist offer's link token) go with it: the mail is sent, or will
    never be, so the outbox keeps no usable copy (`jobs retry` of such a job then fails: the
    link cannot be sent twice)."""
    assert status in (DONE, SKIPPED)
    values: dict[str, Any] = {"status": status, "done_at": now, "locked_until": None}
    if SECRET_PAYLOAD_KEYS & job.payload.keys():
        kept = {k: v for k, v in job.payload.items() if k not in SECRET_PAYLOAD_KEYS}
        values["payload"] = orjson.dumps(kept).decode()
    result = await conn.execute(update(outbox).where(_held(job)).values(**values))
    return result.rowcount == 1


# Payload keys that are secrets: kept only while the job is still to run.
SECRET_PAYLOAD_KEYS = frozenset({"token"})


async def retry_later(conn: AsyncConnection, job: Job, error: str, run_at: datetime) -> bool:
    result = await conn.execute(
        update(outbox)
        .where(_held(job))
        .values(status=PENDING, run_at=run_at, locked_until=None, last_error=_clip(error))
    )
    return result.rowcount == 1


async def bury(conn: AsyncConnection, job: Job, error: str, now: datetime) -> bool:
    """Dead: out of attempts, or failed in a way no retry fixes. `garagebook jobs retry`
    brings it back once the cause is fixed."""
    result = await conn.execute(
        update(outbox)
        .where(_held(job))
        .values(status=DEAD, done_at=now, locked_until=None, last_error=_clip(error))
    )
    return result.rowcount == 1


async def release(conn: AsyncConnection, jobs: list[Job]) -> int:
    """Hand unfinished jobs back at shutdown, due at once and without using up an attempt,
    instead of leaving them locked until their lease runs out."""
    if not jobs:
        return 0
    result = await conn.execute(
        update(outbox)
        .where(or_(*(_held(job) for job in jobs)))
        .values(status=PENDING, attempts=outbox.c.attempts - 1, locked_until=None)
    )
    return result.rowcount


async def backlog(conn: AsyncConnection, now: datetime) -> Backlog:
    is_due = and_(outbox.c.status == PENDING, outbox.c.run_at <= now)
    row = (
        await conn.execute(
            select(
                func.count().filter(is_due),
                func.count().filter(and_(outbox.c.status == PENDING, outbox.c.run_at > now)),
                func.count().filter(outbox.c.status == RUNNING),
                func.count().filter(outbox.c.status == DEAD),
                func.min(outbox.c.run_at).filter(is_due),
            ).where(outbox.c.status.in_((PENDING, RUNNING, DEAD)))
        )
    ).one()
    due, scheduled, running, dead, oldest_due = row
    waited = (now - oldest_due).total_seconds() if oldest_due is not None else 0.0
    return Backlog(due, scheduled, running, dead, round(max(waited, 0.0), 3))


async def counts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        select(outbox.c.status, func.count()).group_by(outbox.c.status).order_by(outbox.c.status)
    )
    found: dict[str, int] = {status: 0 for status in STATES}
    found.update({status: number for status, number in rows.tuples()})
    return found


async def dead_jobs(conn: AsyncConnection, limit: int = 100) -> list[DeadJob]:
    rows = await conn.execute(
        select(
            outbox.c.id,
            outbox.c.kind,
            outbox.c.payload,
            outbox.c.attempts,
            outbox.c.last_error,
            outbox.c.done_at,
        )
        .where(outbox.c.status == DEAD)
        .order_by(outbox.c.id)
        .limit(limit)
    )
    return [
        DeadJob(
            r.id,
            r.kind,
            str(_payload(r.payload).get("reference", "?")),
            r.attempts,
            r.last_error,
            r.done_at,
        )
        for r in rows
    ]


def _put_back(now: datetime) -> dict[str, Any]:
    return {
        "status": PENDING,
        "attempts": 0,
        "run_at": now,
        "locked_until": None,
        "done_at": None,
    }


async def retry(conn: AsyncConnection, job_id: int, now: datetime) -> None:
    """Put one dead or finished job back in the queue with a fresh set of attempts (a finished
    confirmation is sent again: same Message-ID, so the customer's mail client shows one)."""
    status = await conn.scalar(select(outbox.c.status).where(outbox.c.id == job_id))
    if status is None:
        raise JobNotFound(job_id=job_id)
    if status not in (DEAD, DONE, SKIPPED):
        raise JobNotRetryable(job_id=job_id, status=status)
    await conn.execute(
        update(outbox)
        .where(outbox.c.id == job_id, outbox.c.status == status)
        .values(_put_back(now))
    )


async def retry_dead(conn: AsyncConnection, now: datetime) -> int:
    result = await conn.execute(
        update(outbox).where(outbox.c.status == DEAD).values(_put_back(now))
    )
    return result.rowcount


async def wake_workers(conn: AsyncConnection, channel: str) -> None:
    """On PostgreSQL, tell listening workers at commit that jobs are due (the insert trigger
    does this for new jobs; jobs put back by hand need it said)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_notify(channel, "")))
