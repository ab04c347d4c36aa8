"""The `garagebook` command: migrate, seed, garage, serve, worker, jobs, remind-mot,
concurrency-test."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from alembic import command
from alembic.config import Config
from uvicorn.supervisors import Multiprocess

from garagebook.concurrency.command import concurrency_test
from garagebook.config import get_settings
from garagebook.db import Database, create_engine
from garagebook.errors import DomainError
from garagebook.garage.apply import apply_document
from garagebook.garage.commands import garage_cli, print_result
from garagebook.garage.demo import DEMO_GARAGE, demo_document
from garagebook.jobs.commands import jobs_cli, worker
from garagebook.serving import uvicorn_options
from garagebook.vehicles.reminders import run_remind_mot
from garagebook.web.commands import staff_cli

cli = typer.Typer(help="garagebook: online booking for car garages.", no_args_is_help=True)

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def migrate_database(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date (SQLite or PostgreSQL, from DATABASE_URL)."""
    migrate_database(get_settings().database_url)
    typer.echo("database migrated")


@cli.command()
def seed() -> None:
    """Apply the demo garage (garage/demo-garage.toml: 3 bays, 4 services, hourly slots
    Mon–Sat 08:00–17:00). Idempotent: `garagebook garage apply FILE` is the same for yours."""
    settings = get_settings()

    async def run() -> None:
        db = Database(create_engine(settings))
        try:
            print_result(await apply_document(db, demo_document(), actor="seed"))
        finally:
            await db.dispose()

    asyncio.run(run())
    typer.echo(f"demo garage applied ({DEMO_GARAGE.name})")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default: $HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default: $PORT or 3000")] = None,
    workers: Annotated[int, typer.Option(min=1, help="server processes")] = 1,
) -> None:
    """Serve the API (uvicorn with uvloop and httptools; limits and timeouts: serving.py)."""
    settings = get_settings()
    if workers > 1 and settings.session_secret is None:
        # Each process would sign staff sessions and forms with its own random key.
        typer.echo(
            "garagebook: set SESSION_SECRET (e.g. `openssl rand -hex 32`) to serve with more "
            "than one worker: staff sessions and forms are signed with it",
            err=True,
        )
        raise typer.Exit(2)
    host = host or settings.host
    port = port or settings.port
    url = f"http://{host}:{port}"
    config = uvicorn.Config(
        "garagebook.app:create_served_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        log_level=settings.log_level.lower(),
        access_log=False,  # garagebook.http.ObserveRequests logs one JSON line per request
        timeout_graceful_shutdown=10,
        **uvicorn_options(settings),
    )
    if workers > 1:
        listening = config.bind_socket()  # listening from here on: connections wait for a worker
        typer.echo(f"garagebook listening on {url}  ({workers} workers; Ctrl-C stops)")
        Multiprocess(config, sockets=[listening]).run()
    else:
        server = _Server(config, url)
        server.run()
        if not server.started:
            raise typer.Exit(3)  # uvicorn has logged why (port in use, startup failed)
    typer.echo("garagebook stopped")


class _Server(uvicorn.Server):
    """uvicorn's server that says where it is once it listens (not before: `make run`'s URL
    must work when it appears), and that ends with exit status 0 when it is stopped by Ctrl-C
    or SIGTERM: a stop someone asked for is not a failure. (uvicorn re-raises the signal after
    its graceful shutdown, which makes `make run` report `*** … Interrupt`/`Terminated`.)"""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            typer.echo(
                f"garagebook ready: {self.url}  (staff: {self.url}/staff, "
                f"API docs: {self.url}/docs; Ctrl-C stops)"
            )

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


@cli.command("remind-mot")
def remind_mot() -> None:
    """Queue MOT reminders: vehicles whose MOT expires within MOT_REMINDER_DAYS, once per
    expiry. Run it daily (cron); the embedded default runs it in-process."""
    try:
        queued = asyncio.run(run_remind_mot(get_settings()))
    except DomainError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{queued} MOT reminder(s) queued")


cli.command("concurrency-test")(concurrency_test)
cli.command()(worker)
cli.add_typer(jobs_cli, name="jobs")
cli.add_typer(staff_cli, name="staff")
cli.add_typer(garage_cli, name="garage")


if __name__ == "__main__":
    cli()
