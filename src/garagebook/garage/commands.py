"""`garagebook garage check|apply|export`: the setup document as a TOML file (config as code).
Problems are printed one a line, `path (line N): message`, and the exit status is 1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from garagebook.config import get_settings
from garagebook.db import Database, create_engine
from garagebook.errors import DomainError, InvalidGarage
from garagebook.garage.apply import (
    ApplyResult,
    apply_document,
    current_document,
    refuse_other_zone,
)
from garagebook.garage.document import GarageDocument, parse_toml, to_toml
from garagebook.timeutil import to_local_iso

garage_cli = typer.Typer(help="The garage's setup document: check, apply or export it (TOML).")

T = TypeVar("T")
FileArg = Annotated[Path, typer.Argument(help="a TOML setup file (examples/demo-garage.toml)")]


def _read(file: Path) -> GarageDocument:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        typer.echo(f"{file}: cannot read it ({error})", err=True)
        raise typer.Exit(2) from None
    try:
        return parse_toml(text)
    except InvalidGarage as invalid:
        for problem in invalid.problems:
            typer.echo(f"{file}: {problem}", err=True)
        typer.echo(invalid.message, err=True)
        raise typer.Exit(1) from None


def _with_db(work: Callable[[Database], Awaitable[T]]) -> T:
    async def run() -> T:
        db = Database(create_engine(get_settings()))
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(run())
    except InvalidGarage as invalid:
        for problem in invalid.problems:
            typer.echo(str(problem), err=True)
        typer.echo(invalid.message, err=True)
        raise typer.Exit(1) from None
    except DomainError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None


@garage_cli.command()
def check(file: FileArg) -> None:
    """Validate the file only: every problem with its line; changes nothing."""
    document = _read(file)
    typer.echo(f"{file}: valid ({len(document.services)} services, {len(document.bays)} bays)")


@garage_cli.command("apply")
def apply_command(file: FileArg) -> None:
    """Apply the file, all or nothing, and print what changed (nothing when already in force)."""
    document = _read(file)
    try:
        refuse_other_zone(document, get_settings())
    except InvalidGarage as invalid:
        for problem in invalid.problems:
            typer.echo(f"{file}: {problem}", err=True)
        raise typer.Exit(1) from None
    result: ApplyResult = _with_db(lambda db: apply_document(db, document, actor="cli"))
    print_result(result)


def print_result(result: ApplyResult) -> None:
    if not result.changes:
        typer.echo("no changes: the garage is already set up like this")
    for line in result.changes:
        typer.echo(f"changed: {line}")
    zone = result.document.zone
    for booking in result.outside_hours:
        typer.echo(
            f"outside the hours (kept, confirmed; move it if needed): {booking.reference} "
            f"at {to_local_iso(booking.starts_at, zone)}"
        )


@garage_cli.command()
def export() -> None:
    """Print the setup in force as TOML (`apply` of it changes nothing)."""

    async def read(db: Database) -> GarageDocument:
        async with db.read() as conn:
            return await current_document(conn)

    typer.echo(to_toml(_with_db(read)), nl=False)
