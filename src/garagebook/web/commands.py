"""`garagebook staff add|passwd|remove NAME` (registered in cli.py): who may sign in to
`/staff`. A new password and a removal end the user's sessions at once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.config import Settings, get_settings
from garagebook.db import Database, create_engine
from garagebook.timeutil import utcnow
from garagebook.web.auth import change_password, remove_user, set_password

MIN_PASSWORD_LENGTH = 10

staff_cli = typer.Typer(help="Staff who may sign in to the day view at /staff.")


@staff_cli.command("add")
def add(
    name: Annotated[str, typer.Argument(help="the sign-in name, e.g. 'sam'")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
) -> None:
    """Add a staff user, or set a new password for one. Asks for the password (never an
    argument: it would end up in the shell history and the process list)."""
    name = _checked_name(name)
    password = _read_password(password_stdin)
    created = asyncio.run(_store(get_settings(), name, password))
    typer.echo(f"staff user {name!r} {'added' if created else 'password changed'}")


_PASSWORD_STDIN = typer.Option("--password-stdin", help="read the password from standard input")


@staff_cli.command("passwd")
def passwd(
    name: Annotated[str, typer.Argument(help="an existing sign-in name")],
    password_stdin: Annotated[bool, _PASSWORD_STDIN] = False,
) -> None:
    """Set a new password for a staff user; every session they have ends at once."""
    name = _checked_name(name)
    password = _read_password(password_stdin)

    async def run(conn: AsyncConnection) -> bool:
        return await change_password(conn, name, password, utcnow())

    if not asyncio.run(_in_transaction(get_settings(), run)):
        typer.echo(f"no staff user {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"staff user {name!r} password changed; their sessions have ended")


@staff_cli.command("remove")
def remove(name: Annotated[str, typer.Argument(help="the sign-in name")]) -> None:
    """Remove a staff user: they can no longer sign in, and their open sessions end at once."""
    name = _checked_name(name)

    async def run(conn: AsyncConnection) -> bool:
        return await remove_user(conn, name)

    if not asyncio.run(_in_transaction(get_settings(), run)):
        typer.echo(f"no staff user {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"staff user {name!r} removed; their sessions have ended")


def _checked_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise typer.BadParameter("the name must be 1 to 100 characters")
    return name


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise typer.BadParameter(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    return password


async def _in_transaction(
    settings: Settings, work: Callable[[AsyncConnection], Awaitable[bool]]
) -> bool:
    db = Database(create_engine(settings))
    try:
        async with db.transaction() as conn:
            return await work(conn)
    finally:
        await db.dispose()


async def _store(settings: Settings, name: str, password: str) -> bool:
    async def run(conn: AsyncConnection) -> bool:
        return await set_password(conn, name, password, utcnow())

    return await _in_transaction(settings, run)
