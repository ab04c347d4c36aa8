"""`garagebook worker` and `garagebook jobs` (registered in cli.py)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from garagebook.config import Settings, get_settings
from garagebook.db import Database, create_engine
from garagebook.errors import DomainError
from garagebook.jobs import queue
from garagebook.jobs.worker import NOTIFY_CHANNEL, run_worker
from garagebook.logs import configure_logging
from garagebook.timeutil import to_local_iso, utcnow


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="jobs run at once; default $WORKER_CONCURRENCY or 4"),
    ] = None,
) -> None:
    """Send confirmation and cancellation mails from the outbox until SIGTERM or Ctrl-C."""
    # Any number of these, on any hosts, share the outbox; on SIGTERM running jobs finish (or
    # are handed back after WORKER_SHUTDOWN_SECONDS).
    settings = get_settings()
    if settings.manage_link_secret is None and settings.session_secret is None:
        # The worker writes the mails' signed manage links; with a key of its own (random per
        # process) the servers would refuse every one of them.
        typer.echo(
            "garagebook: set MANAGE_LINK_SECRET (the same as the servers', e.g. `openssl rand "
            "-hex 32`; or SESSION_SECRET, which it is then derived from) to run a worker: the "
            "links in its mails are signed with it",
            err=True,
        )
        raise typer.Exit(2)
    configure_logging(settings.log_level)
    asyncio.run(run_worker(settings, concurrency or settings.worker_concurrency))


jobs_cli = typer.Typer(
    help="Outbox jobs: counts by state and the dead ones; `jobs retry` puts them back.",
    invoke_without_command=True,
)


@jobs_cli.callback()
def jobs(context: typer.Context) -> None:
    """Counts by state, and the dead jobs with their last error."""
    if context.invoked_subcommand is None:
        asyncio.run(_show(get_settings()))


@jobs_cli.command("retry")
def retry(
    job_id: Annotated[int | None, typer.Argument(help="a job id from `garagebook jobs`")] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="every dead job")] = False,
) -> None:
    """Put a dead job (or a finished one: its mail goes again) back, with fresh attempts."""
    # Fix the cause first: `garagebook jobs` shows each dead job's last error.
    if (job_id is None) == (not all_dead):
        raise typer.BadParameter("give either a job ID or --all-dead")
    asyncio.run(_retry(get_settings(), job_id))


async def _show(settings: Settings) -> None:
    db = Database(create_engine(settings))
    try:
        async with db.read() as conn:
            counts = await queue.counts(conn)
            backlog = await queue.backlog(conn, utcnow())
            dead = await queue.dead_jobs(conn)
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        await db.dispose()
    typer.echo("jobs by state:")
    for state, number in counts.items():
        note = ""
        if state == queue.PENDING:
            note = f"   {backlog.due} due now, {backlog.scheduled} scheduled for later"
            if backlog.oldest_due_seconds:
                note += f"; oldest due {backlog.oldest_due_seconds:.0f}s ago"
        typer.echo(f"  {state:<8} {number:>8}{note}")
    if dead:
        typer.echo(f"dead jobs ({len(dead)}{'+' if len(dead) >= 100 else ''}):")
    for job in dead:
        died = to_local_iso(job.died_at, settings.timezone) if job.died_at else "?"
        typer.echo(f"  #{job.id} {job.kind} {job.reference}: {job.attempts} attempt(s), {died}")
        typer.echo(f"      {job.last_error or '(no error recorded)'}")
    if dead:
        typer.echo("put them back: garagebook jobs retry ID | garagebook jobs retry --all-dead")


async def _retry(settings: Settings, job_id: int | None) -> None:
    db = Database(create_engine(settings))
    try:
        async with db.transaction() as conn:
            if job_id is None:
                count = await queue.retry_dead(conn, utcnow())
            else:
                await queue.retry(conn, job_id, utcnow())
                count = 1
            await queue.wake_workers(conn, NOTIFY_CHANNEL)
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        await db.dispose()
    typer.echo(f"{count} job(s) back in the queue")
