"""The `garagebook concurrency-test` command: options (each also an environment variable),
progress bar, exit status 0 PASS, 1 FAIL, 2 server unreachable."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from garagebook.concurrency.report import as_json, print_iteration, print_summary
from garagebook.concurrency.run import Config, Iteration, NoFreeSlot, ServerUnreachable, run

EXIT_PASS, EXIT_FAIL, EXIT_UNREACHABLE = 0, 1, 2


def concurrency_test(
    requests: Annotated[
        int,
        typer.Option(
            "--requests",
            "-n",
            envvar="CONCURRENT_REQUESTS",
            min=1,
            max=20_000,
            help="simultaneous booking requests per iteration",
        ),
    ] = 10,
    iterations: Annotated[
        int,
        typer.Option(
            "--iterations",
            "-i",
            envvar="TEST_ITERATIONS",
            min=1,
            max=1000,
            help="how many slots to test, one after another",
        ),
    ] = 1,
    api_url: Annotated[
        str,
        typer.Option(
            "--api-url",
            envvar="API_URL",
            help="server URL; several, comma-separated, share the requests round-robin",
        ),
    ] = "http://localhost:3000",
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            envvar="ADMIN_TOKEN",
            help="lets the test create a slot when none is free",
        ),
    ] = None,
    cleanup: Annotated[
        bool, typer.Option("--cleanup", help="cancel the bookings the test made")
    ] = False,
    as_json_output: Annotated[
        bool, typer.Option("--json", help="print a machine-readable result instead")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="seconds per request")
    ] = 30.0,
    by_time: Annotated[
        bool,
        typer.Option(
            "--by-time",
            help="book a time, not a slot: the server picks bay and technician; aims at the "
            "time with the fewest free (a technician's last free hour) and expects one 201 "
            "per free unit",
        ),
    ] = False,
    drop_off: Annotated[
        bool,
        typer.Option(
            "--drop-off",
            help="book the garage's drop-off service by day: aims at the day with the fewest "
            "places left and expects one 201 per place (no technician's day past their hours)",
        ),
    ] = False,
) -> None:
    """Prove that one slot cannot be booked twice: N simultaneous bookings, exactly one 201
    (with --by-time: exactly as many as the time had free; with --drop-off, as the day had)."""
    urls = [u.strip().rstrip("/") for u in api_url.split(",") if u.strip()]
    config = Config(
        urls, requests, iterations, admin_token or None, cleanup, timeout, by_time, drop_off
    )
    err = Console(stderr=True, highlight=False)
    echo = (lambda _line: None) if as_json_output else typer.echo
    progress = Progress(
        TextColumn("iterations"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json_output,
    )
    task = progress.add_task("iterations", total=iterations)

    def done(iteration: Iteration) -> None:
        progress.update(task, advance=1)
        progress.console.print(end="")  # keep the bar below the iteration text
        print_iteration(echo, iteration, iterations)

    if not as_json_output:
        typer.echo(
            f"Concurrency test: {requests} simultaneous booking requests × {iterations} "
            f"iteration(s) against {', '.join(urls)}"
        )
    try:
        with progress:
            results = asyncio.run(run(config, done))
    except ServerUnreachable as exc:
        typer.echo(f"✗ Cannot connect to server at {exc.url}", err=not as_json_output)
        typer.echo("  Is it running? Start it with `make run` (or `garagebook serve`).", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None
    except NoFreeSlot:
        typer.echo(
            "✗ No free slot to test on. Set ADMIN_TOKEN so the test can create one, "
            "or run `garagebook seed`.",
            err=True,
        )
        raise typer.Exit(EXIT_FAIL) from None
    if as_json_output:
        typer.echo(json.dumps(as_json(results, config), indent=2))
    else:
        print_summary(echo, results, config)
    raise typer.Exit(EXIT_PASS if all(it.passed for it in results) else EXIT_FAIL)
