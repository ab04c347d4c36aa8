"""`garagebook staff add NAME` (registered in cli.py): who may sign in to `/staff`."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer

from garagebook.config import Settings, get_settings
from garagebook.db import Database, create_engine
from garagebook.timeutil import utcnow
from garagebook.web.auth import set_password

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
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise typer.BadParameter("the name must be 1 to 100 characters")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise typer.BadParameter(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    created = asyncio.run(_store(get_settings(), name, password))
    typer.echo(f"staff user {name!r} {'added' if created else 'password changed'}")


async def _store(settings: Settings, name: str, password: str) -> bool:
    db = Database(create_engine(settings))
    try:
        async with db.transaction() as conn:
            return await set_password(conn, name, password, utcnow())
    finally:
        await db.dispose()
