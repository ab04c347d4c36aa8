"""The README as a newcomer follows it in a fresh clone: every command it shows runs as
written (the `garagebook` command lives in `.venv/bin/` there), every `make` target exists,
nothing points outside the repository, and `docs/api.md` covers every operation the server
serves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from garagebook.app import create_app
from garagebook.cli import cli
from garagebook.config import Settings
from tests.support.processes import ROOT

README = (ROOT / "README.md").read_text()
SUBCOMMANDS = (
    "migrate",
    "seed",
    "garage",
    "serve",
    "worker",
    "jobs",
    "remind-mot",
    "concurrency-test",
    "staff",
)


def shown_code() -> list[str]:
    """Everything the README shows as code: fenced blocks and inline `…` spans."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", README, flags=re.S)
    prose = re.sub(r"```[a-z]*\n.*?```", "", README, flags=re.S)
    return fenced + re.findall(r"`([^`\n]+)`", prose)


def test_no_command_needs_garagebook_on_the_path() -> None:
    bare = re.compile(rf"(?<![\w./-])garagebook ({'|'.join(SUBCOMMANDS)})\b")
    found = [m.group(0) for code in shown_code() for m in bare.finditer(code)]
    assert found == [], f"`garagebook …` is `.venv/bin/garagebook …` in a clone: {found}"


def test_every_garagebook_command_shown_exists() -> None:
    used = {
        tuple(m.group(1).split())
        for code in shown_code()
        for m in re.finditer(r"\.venv/bin/garagebook ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", code)
    }
    assert ("staff", "add") in used
    runner = CliRunner()
    for words in sorted(used):
        # "jobs retry" is a subcommand pair; "serve --host" etc. stop at the first option.
        args = list(words)
        result = runner.invoke(cli, [*args, "--help"])
        if result.exit_code != 0 and len(args) == 2:  # the second word is an argument
            result = runner.invoke(cli, [args[0], "--help"])
        assert result.exit_code == 0, f"`garagebook {' '.join(args)}`: {result.output}"


def test_every_make_target_shown_exists() -> None:
    targets = {
        m.group(1)
        for code in shown_code()
        for m in re.finditer(r"(?<![\w-])make ([a-z][a-z-]*)", code)
    }
    assert "run" in targets
    makefile = (ROOT / "Makefile").read_text()
    declared = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    assert targets <= declared, f"not in the Makefile: {targets - declared}"
    dry = subprocess.run(
        ["make", "-n", *sorted(targets)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert dry.returncode == 0, dry.stderr


def test_nothing_in_the_repository_points_outside_it() -> None:
    outside = "../" + "shared"  # not spelled out: this file must not match itself
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".png", ".ico"} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if outside in text or "/work/" + "shared" in text or " shared/" + "DESIGN" in text:
            offenders.append(name)
    assert offenders == []
    for link in re.findall(r"\]\(([^)#]+)\)|src=\"([^\"]+)\"", README):
        target = next(part for part in link if part)
        if target.startswith(("http://", "https://")):
            continue
        resolved = (ROOT / target).resolve()
        assert resolved.is_relative_to(ROOT), target
        assert resolved.exists(), target


def test_the_api_reference_covers_every_served_operation() -> None:
    reference = (ROOT / "docs" / "api.md").read_text()
    assert "docs/api.md" in README
    spec = create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]  # pydantic-settings init arg
    missing = []
    for path, operations in spec["paths"].items():
        for method in operations:
            pattern = re.escape(f"`{method.upper()} {path}") + r"[` ?]"
            if not re.search(pattern, reference):
                missing.append(f"{method.upper()} {path}")
    assert missing == [], f"docs/api.md does not describe: {missing}"


@pytest.mark.parametrize("document", ["README.md", "docs/api.md"])
def test_documents_do_not_tell_customers_to_use_curl_for_their_booking(document: str) -> None:
    text = Path(ROOT / document).read_text()
    assert "curl -X POST" not in text
