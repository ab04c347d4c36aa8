"""`garagebook staff add|passwd|remove NAME` (registered in cli.py): who may sign in to
`/staff`, and as what (`--role owner|staff`). A new password, a role change and a removal end
the user's sessions at once; the garage's last owner cannot be removed or made staff."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.config import Settings, get_settings
from garagebook.db import Database, create_engine
from garagebook.errors import DomainError, InvalidRequest, StaffUserNotFound
from garagebook.timeutil import utcnow
from garagebook.web.accounts import (
    MIN_PASSWORD_LENGTH,
    account_id,
    change_role,
    checked_name,
    remove_account,
)
from garagebook.web.auth import as_role, change_password, set_password

staff_cli = typer.Typer(help="Staff who may sign in to the day view at /staff.")


class RoleChoice(StrEnum):
    owner = "owner"
    staff = "staff"


@staff_cli.command("add")
def add(
    name: Annotated[str, typer.Argument(help="the sign-in name, e.g. 'sam'")],
    role: Annotated[
        RoleChoice | None,
        typer.Option(
            "--role",
            help="owner: may also change the garage's settings and staff accounts. Default for "
            "a new account: owner if there is no owner yet, else staff. Given for an existing "
            "account: its role changes too.",
        ),
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
) -> None:
    """Add a staff user, or set a new password for one. Asks for the password (never an
    argument: it would end up in the shell history and the process list)."""
    name = _checked_name(name)
    password = _read_password(password_stdin)
    chosen = as_role(role.value) if role is not None else None

    async def run(conn: AsyncConnection) -> bool:
        created = await set_password(conn, name, password, utcnow(), chosen)
        if not created and chosen is not None:
            await change_role(conn, await account_id(conn, name), chosen, utcnow())
        return created

    created = _run(get_settings(), run)
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
        if not await change_password(conn, name, password, utcnow()):
            raise StaffUserNotFound()
        return True

    _run(get_settings(), run)
    typer.echo(f"staff user {name!r} password changed; their sessions have ended")


@staff_cli.command("remove")
def remove(name: Annotated[str, typer.Argument(help="the sign-in name")]) -> None:
    """Remove a staff user: they can no longer sign in, and their open sessions end at once.
    The garage's last owner cannot be removed (make another account an owner first)."""
    name = _checked_name(name)

    async def run(conn: AsyncConnection) -> bool:
        await remove_account(conn, await account_id(conn, name))
        return True

    _run(get_settings(), run)
    typer.echo(f"staff user {name!r} removed; their sessions have ended")


def _checked_name(name: str) -> str:
    try:
        return checked_name(name)
    except InvalidRequest as exc:
        raise typer.BadParameter(exc.message) from exc


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise typer.BadParameter(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    return password


def _run(settings: Settings, work: Callable[[AsyncConnection], Awaitable[bool]]) -> bool:
    """`work` in one transaction; a refusal (no such user, the last owner) is exit status 1
    with its message, and nothing is changed."""
    try:
        return asyncio.run(_in_transaction(settings, work))
    except StaffUserNotFound:
        typer.echo("no staff user of that name", err=True)
    except DomainError as exc:
        typer.echo(exc.message, err=True)
    raise typer.Exit(1)


async def _in_transaction(
    settings: Settings, work: Callable[[AsyncConnection], Awaitable[bool]]
) -> bool:
    db = Database(create_engine(settings))
    try:
        async with db.transaction() as conn:
            return await work(conn)
    finally:
        await db.dispose()
