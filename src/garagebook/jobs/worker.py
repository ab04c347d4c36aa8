"""The worker: claims due outbox jobs, runs them, records what happened. It owns every
transaction it uses, and keeps each one short: claim, (read,) record; mail is sent with no
transaction open.

Waking up: PostgreSQL workers LISTEN on a channel that a trigger on `outbox` notifies at each
commit (migration 0003), so a new booking's job is claimed within milliseconds; polling every
WORKER_POLL_SECONDS is the fallback (and how retries come due). SQLite only polls.

Dying: a claim is a lease of WORKER_LEASE_SECONDS, renewed by a heartbeat while the job runs.
A worker that is killed stops renewing; once the lease runs out, any worker claims the job
again. Delivery is therefore at least once, and the mail's Message-ID makes a repeat the same
message. On SIGTERM the worker stops claiming, lets running jobs finish for up to
WORKER_SHUTDOWN_SECONDS, and hands back the rest at once.

Pruning: at start and every PRUNE_INTERVAL_SECONDS each worker deletes jobs that finished
(`done`, `skipped`) more than JOB_RETENTION_DAYS ago, PRUNE_BATCH at a time, each batch its own
short transaction, and Idempotency-Key records past IDEMPOTENCY_TTL_HOURS (a replay checks the
expiry itself, so an hour late costs nothing). Dead jobs are kept for `garagebook jobs`.
Once a day each worker also applies the retention period of customers' personal data
(customers/retention.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.bookings import idempotency
from garagebook.bookings import reminders as _booking_reminders  # noqa: F401  (see below)
from garagebook.config import Settings
from garagebook.customers.retention import apply_retention
from garagebook.db import Database, create_engine
from garagebook.errors import DatabaseUnavailable
from garagebook.garage.apply import extend_now
from garagebook.jobs import queue
from garagebook.jobs.handlers import JobContext, run_job
from garagebook.jobs.mail import DeliveryFailed, Mailer, create_mailer, redact
from garagebook.jobs.queue import Job
from garagebook.reservations import ReservationStore, create_reservations
from garagebook.slots.service import PlanCache
from garagebook.timeutil import utcnow
from garagebook.vehicles import reminders as _mot_reminders  # noqa: F401  (see below)
from garagebook.vehicles.reminders import queue_mot_reminders
from garagebook.waitlist import jobs as _waitlist_jobs  # noqa: F401  (see below)

log = logging.getLogger(__name__)

# The _-imports above are for their side effect: each registers the handlers of its job kinds
# (jobs.kinds), so a job written by the API always finds its handler here (booking mails are
# jobs.handlers' own).

NOTIFY_CHANNEL = "garagebook_outbox"  # the trigger in migration 0003 notifies this channel
_LISTEN_RETRY_SECONDS = 5.0
_RECORD_TRIES = 3
# Daily would do (a day enters the horizon once a day); hourly costs nothing and heals sooner.
CALENDAR_INTERVAL_SECONDS = 3600.0
MOT_REMINDER_INTERVAL_SECONDS = 24 * 3600.0  # the embedded default's `remind-mot`
PRUNE_INTERVAL_SECONDS = 3600.0
RETENTION_INTERVAL_SECONDS = 24 * 3600.0
PRUNE_BATCH = 1000
_PRUNE_MAX_BATCHES = 100  # per round: a backlog of old jobs goes over several rounds


def worker_name() -> str:
    """Who holds a lease, as operators see it in `outbox.locked_by`: host and process."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def describe(error: BaseException) -> str:
    """An error as stored in `last_error` and logged: no SQL parameters (they can carry
    customer data), no addresses."""
    if isinstance(error, SQLAlchemyError):  # its str() shows the statement and parameters
        original = getattr(error, "orig", None)
        return redact(f"{type(error).__name__}: {original if original is not None else ''}")
    return redact(f"{type(error).__name__}: {error}")


class Worker:
    def __init__(
        self,
        db: Database,
        mailer: Mailer,
        settings: Settings,
        reservations: ReservationStore,
        *,
        concurrency: int | None = None,
        name: str | None = None,
    ) -> None:
        self.db = db
        self.mailer = mailer
        self.settings = settings
        self.context = JobContext(db, mailer, settings, reservations, PlanCache(settings.timezone))
        self.concurrency = concurrency or settings.worker_concurrency
        self.name = name or worker_name()
        self._lease = timedelta(seconds=settings.worker_lease_seconds)
        self._wake = asyncio.Event()
        self._stopping = False
        self._running: dict[asyncio.Task[None], Job] = {}
        self._listener: Any = None  # the asyncpg connection in LISTEN, while it works
        self._listen_retry_at = 0.0
        self._database_ok = True
        self._prune_at = 0.0  # at start, then every PRUNE_INTERVAL_SECONDS
        self._retention_at = 0.0  # at start, then every RETENTION_INTERVAL_SECONDS
        self._calendar_at = 0.0  # at start, then every CALENDAR_INTERVAL_SECONDS

    def stop(self) -> None:
        """Stop claiming; `run` returns once running jobs are finished or handed back."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        log.info(
            "worker %s started: %d at a time, mail via %s",
            self.name,
            self.concurrency,
            self.mailer.describe(),
        )
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping:
                await self._listen()
                self._wake.clear()  # before claiming: a wake-up during the claim is kept
                free = self.concurrency - len(self._running)
                if free > 0:
                    for job in await self._claim(free):
                        self._start(job)
                if self._stopping:
                    break
                if time.monotonic() >= self._prune_at:
                    await self.prune()
                if time.monotonic() >= self._retention_at:
                    await self.apply_retention()
                if time.monotonic() >= self._calendar_at:
                    await self.extend_calendar()
                # Woken by NOTIFY, by a job finishing (a free place), by stop(); else poll.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.worker_poll_seconds):
                        await self._wake.wait()
        finally:
            heartbeat.cancel()
            await self._drain()
            await self._unlisten()
            log.info("worker %s stopped", self.name)

    # --- claiming and running ----------------------------------------------------------------

    async def _claim(self, limit: int) -> list[Job]:
        now = utcnow()
        try:
            async with self.db.transaction() as conn:
                running = [job.id for job in self._running.values()]
                jobs = await queue.claim(conn, self.name, limit, now, self._lease, running)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            if self._database_ok:
                log.warning("worker %s cannot reach the database (%s)", self.name, describe(exc))
            self._database_ok = False
            return []
        if not self._database_ok:
            log.info("worker %s reaches the database again", self.name)
            self._database_ok = True
        runnable = []
        for job in jobs:
            if job.attempts > self.settings.job_max_attempts:
                # Every attempt so far ended with its worker gone (killed, crashed mid-job).
                lost = f"gave up after {job.attempts - 1} attempts: its worker was lost each time"
                await self._failed(job, lost, permanent=True)
            else:
                runnable.append(job)
        return runnable

    async def prune(self) -> int:
        """Delete finished jobs older than JOB_RETENTION_DAYS, in bounded batches, and expired
        idempotency records; how many jobs."""
        self._prune_at = time.monotonic() + PRUNE_INTERVAL_SECONDS
        before = utcnow() - timedelta(days=self.settings.job_retention_days)
        pruned = 0
        try:
            async with self.db.transaction() as conn:
                keys = await idempotency.prune(conn, self.settings, utcnow())
            if keys:
                log.info("worker %s pruned %d expired idempotency record(s)", self.name, keys)
            for _ in range(_PRUNE_MAX_BATCHES):
                async with self.db.transaction() as conn:
                    deleted = await queue.prune(conn, before, PRUNE_BATCH)
                pruned += deleted
                if deleted < PRUNE_BATCH or self._stopping:
                    break
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning("worker %s could not prune old jobs (%s)", self.name, describe(exc))
        if pruned:
            log.info("worker %s pruned %d finished job(s)", self.name, pruned)
        return pruned

    async def apply_retention(self) -> int:
        """PERSONAL_DATA_RETENTION_MONTHS: anonymise what is older; how many bookings."""
        self._retention_at = time.monotonic() + RETENTION_INTERVAL_SECONDS
        try:
            async with self.db.transaction() as conn:
                run = await apply_retention(conn, self.settings, utcnow())
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning("worker %s could not apply retention (%s)", self.name, describe(exc))
            self._retention_at = time.monotonic() + 300.0  # try again soon, not tomorrow
            return 0
        if run.changed:
            log.info(
                "worker %s: retention anonymised %d booking(s), %d waitlist entry(ies)",
                self.name,
                run.bookings,
                run.waitlist_entries,
            )
        return run.bookings

    async def extend_calendar(self) -> int:
        """The calendar keeps itself: free times reach the setup's `book_ahead_days` again,
        with nobody running a command. Any number of workers may do it at once
        (garage.apply.extend_now)."""
        self._calendar_at = time.monotonic() + CALENDAR_INTERVAL_SECONDS
        try:
            added = await extend_now(self.db)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning("worker %s could not extend the calendar (%s)", self.name, describe(exc))
            return 0
        if added:
            log.info("worker %s added %d slot(s) to the calendar", self.name, added)
        return added

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._execute(job), name=f"garagebook-job-{job.id}")
        self._running[task] = job
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._wake.set()

    async def _execute(self, job: Job) -> None:
        started = utcnow()
        timeout = self.settings.job_timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                outcome = await run_job(job, self.context, started)
        except DeliveryFailed as exc:
            await self._failed(job, str(exc), permanent=exc.permanent)
        except TimeoutError:
            await self._failed(job, f"timed out after {timeout:g}s", permanent=False)
        except Exception as exc:  # any failure is the job's, recorded there; never the loop's
            if not isinstance(exc, SQLAlchemyError | DatabaseUnavailable):
                log.exception("job %d %s: unexpected error", job.id, job.kind)
            await self._failed(job, describe(exc), permanent=False)
        else:
            now = utcnow()
            await self._record(job, lambda conn: queue.finish(conn, job, outcome, now))
            log.info(
                "job %d %s %s: %s (attempt %d, %.0f ms)",
                job.id,
                job.kind,
                job.reference,
                outcome,
                job.attempts,
                (now - started).total_seconds() * 1000,
            )

    async def _failed(self, job: Job, error: str, *, permanent: bool) -> None:
        now = utcnow()
        if permanent or job.attempts >= self.settings.job_max_attempts:
            await self._record(job, lambda conn: queue.bury(conn, job, error, now))
            log.warning(
                "job %d %s %s dead after %d attempt(s): %s",
                job.id,
                job.kind,
                job.reference,
                job.attempts,
                error,
            )
            return
        delay = queue.retry_delay(
            job.attempts, self.settings.job_retry_base_seconds, self.settings.job_retry_max_seconds
        )
        run_at = now + timedelta(seconds=delay)
        await self._record(job, lambda conn: queue.retry_later(conn, job, error, run_at))
        log.info(
            "job %d %s %s: attempt %d failed, retry in %.1fs: %s",
            job.id,
            job.kind,
            job.reference,
            job.attempts,
            delay,
            error,
        )

    async def _record(self, job: Job, write: Callable[[AsyncConnection], Awaitable[bool]]) -> None:
        """Write a job's outcome in its own short transaction. If that cannot be done the job
        simply stays claimed and runs again after its lease: at least once, never lost."""
        for attempt in range(1, _RECORD_TRIES + 1):
            try:
                async with self.db.transaction() as conn:
                    still_ours = await write(conn)
            except DatabaseUnavailable:
                await asyncio.sleep(0.2 * attempt)
                continue
            if not still_ours:
                log.warning("job %d: lease lost before its outcome was recorded", job.id)
            return
        log.warning("job %d: outcome not recorded (database unavailable); it runs again", job.id)

    async def _heartbeat(self) -> None:
        interval = self.settings.worker_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            jobs = list(self._running.values())
            if not jobs:
                continue
            try:
                async with self.db.transaction() as conn:
                    await queue.extend(conn, jobs, utcnow() + self._lease)
            except (DatabaseUnavailable, SQLAlchemyError) as exc:
                log.warning("worker %s could not renew its leases (%s)", self.name, describe(exc))

    async def _drain(self) -> None:
        if not self._running:
            return
        _, unfinished = await asyncio.wait(
            set(self._running), timeout=self.settings.worker_shutdown_seconds
        )
        leftovers = [self._running[task] for task in unfinished]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        if not leftovers:
            return
        try:
            async with self.db.transaction() as conn:
                released = await queue.release(conn, leftovers)
            log.info("worker %s handed back %d unfinished job(s)", self.name, released)
        except (DatabaseUnavailable, SQLAlchemyError) as exc:
            log.warning(
                "worker %s could not hand back %d job(s) (%s); they run again after the lease",
                self.name,
                len(leftovers),
                describe(exc),
            )

    # --- LISTEN/NOTIFY -------------------------------------------------------------------------

    async def _listen(self) -> None:
        """(Re)connect the LISTEN connection if it is missing, at most every few seconds."""
        if self.db.engine.dialect.name != "postgresql":
            return
        if self._listener is not None and not self._listener.is_closed():
            return
        if time.monotonic() < self._listen_retry_at:
            return
        self._listen_retry_at = time.monotonic() + _LISTEN_RETRY_SECONDS
        was_listening = self._listener is not None
        self._listener = None
        dsn = make_url(self.settings.database_url).set(drivername="postgresql")
        try:
            connection = await asyncpg.connect(
                dsn.render_as_string(hide_password=False),
                timeout=self.settings.database_timeout_seconds,
            )
            await connection.add_listener(NOTIFY_CHANNEL, self._notified)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            log.warning(
                "worker %s cannot LISTEN (%s); polling every %gs",
                self.name,
                type(exc).__name__,
                self.settings.worker_poll_seconds,
            )
            return
        self._listener = connection
        self._wake.set()  # anything committed while we were not listening
        if was_listening:
            log.info("worker %s listens for new jobs again", self.name)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
            self._listener = None


def _worker_database(settings: Settings, concurrency: int) -> Database:
    """The worker's own engine: its statements never wait for (or count against) the request
    pool. A job holds a connection only to read its booking and to record its outcome."""
    pool_size = max(settings.database_pool_size, concurrency + 2)
    return Database(create_engine(settings.model_copy(update={"database_pool_size": pool_size})))


class EmbeddedWorker:
    """The worker inside the server process: the embedded default (SQLite), so that one
    process, as `make run` starts it, also sends the mail. It shares the server's reservation
    layer: on the embedded default that is an in-process store, which only this process sees.
    It also runs `remind-mot` daily (see `_remind_mot`)."""

    def __init__(self, settings: Settings, reservations: ReservationStore) -> None:
        self.settings = settings
        self.db = _worker_database(settings, settings.worker_concurrency)
        self.worker = Worker(self.db, create_mailer(settings), settings, reservations)
        self._task: asyncio.Task[None] | None = None
        self._mot_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="garagebook-embedded-worker")
        self._mot_task = asyncio.create_task(self._remind_mot(), name="garagebook-remind-mot")

    async def _run(self) -> None:
        try:
            await self.worker.run()
        except Exception:
            log.exception("the embedded worker stopped on an error")

    async def _remind_mot(self) -> None:
        """`garagebook remind-mot`, once at start and then every 24 hours: the embedded default
        has no cron. (Production runs the command from cron; `garagebook worker` does not.)
        Runs are idempotent, so a restart running it again early is harmless."""
        while True:
            try:
                async with self.db.transaction() as conn:
                    queued = await queue_mot_reminders(conn, self.settings, utcnow())
                if queued:
                    log.info("remind-mot: %d MOT reminder(s) queued", len(queued))
                delay = MOT_REMINDER_INTERVAL_SECONDS
            except Exception as exc:  # a failed run is retried, never the end of the reminders
                log.warning("remind-mot failed (%s); trying again in 5 minutes", describe(exc))
                delay = 300.0
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._mot_task is not None:
            self._mot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._mot_task
        self.worker.stop()
        if self._task is not None:
            await self._task
        await self.db.dispose()


async def run_worker(settings: Settings, concurrency: int) -> None:
    """`garagebook worker`: until SIGTERM or Ctrl-C, then a graceful stop."""
    db = _worker_database(settings, concurrency)
    reservations = create_reservations(settings)
    worker = Worker(db, create_mailer(settings), settings, reservations, concurrency=concurrency)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    try:
        await worker.run()
    finally:
        await reservations.close()
        await db.dispose()
