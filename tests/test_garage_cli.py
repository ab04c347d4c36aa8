"""`garagebook garage check|apply|export` and `garagebook seed`, run as the real command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from garagebook.garage.demo import DEMO_GARAGE
from garagebook.garage.document import parse_toml
from tests.support.stack import Stack

SQL = Callable[..., Awaitable[list[Any]]]


def garagebook(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "garagebook.cli", *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


BAD = (
    DEMO_GARAGE.read_text()
    .replace('monday = ["08:00-17:00"]', 'monday = ["08:00-12:00", "11:00-17:00"]')
    .replace("minutes = 120", "minutes = 90")
)


async def test_check_names_every_problem_with_its_line(
    tmp_path: Path, stack: Stack, sql: SQL
) -> None:
    bad = tmp_path / "garage.toml"
    bad.write_text(BAD)
    lines = BAD.splitlines()
    monday = next(i for i, line in enumerate(lines, 1) if line.startswith("monday"))
    minutes = next(i for i, line in enumerate(lines, 1) if line.startswith("minutes = 90"))
    checked = garagebook(stack, "garage", "check", str(bad))
    assert checked.returncode == 1
    assert f"{bad}: hours.monday[1] (line {monday}): overlaps another range that day" in (
        checked.stderr
    )
    assert f"services[2].minutes (line {minutes}): 90 is not a multiple" in checked.stderr
    assert "Traceback" not in checked.stderr
    # apply refuses it the same way, and nothing changes.
    before = await sql("SELECT version, document FROM garage")
    refused = garagebook(stack, "garage", "apply", str(bad))
    assert refused.returncode == 1
    assert "hours.monday[1]" in refused.stderr
    assert await sql("SELECT version, document FROM garage") == before


def test_export_apply_is_a_no_op_and_apply_changes(tmp_path: Path, stack: Stack) -> None:
    exported = garagebook(stack, "garage", "export")
    assert exported.returncode == 0, exported.stderr
    assert parse_toml(exported.stdout) == parse_toml(DEMO_GARAGE.read_text())
    file = tmp_path / "garage.toml"
    file.write_text(exported.stdout)
    assert garagebook(stack, "garage", "check", str(file)).returncode == 0
    again = garagebook(stack, "garage", "apply", str(file))
    assert again.returncode == 0, again.stderr
    assert "no changes" in again.stdout

    file.write_text(exported.stdout.replace('saturday = ["08:00-17:00"]', "saturday = []"))
    changed = garagebook(stack, "garage", "apply", str(file))
    assert changed.returncode == 0, changed.stderr
    assert "changed: hours.saturday: 08:00-17:00 → closed" in changed.stdout
    assert parse_toml(garagebook(stack, "garage", "export").stdout).hours.saturday == []
    seeded = garagebook(stack, "seed")  # the demo garage again
    assert seeded.returncode == 0, seeded.stderr
    assert "changed: hours.saturday: closed → 08:00-17:00" in seeded.stdout
