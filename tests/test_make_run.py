"""`make run` as the README has a developer start it: the URL it prints answers at once, and
stopping it (Ctrl-C, or SIGTERM from a process manager, to the whole process group) ends
quietly: no `make: *** … Terminated`, no traceback, the server's own exit status 0. And a
worker that would sign its mails' links with a key of its own refuses to start."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ROOT, free_port

pytestmark = pytest.mark.slow


def _start(args: list[str], tmp_path: Path, cwd: Path = ROOT) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'garagebook.db'}",
        "MAIL_DROP_DIR": str(tmp_path / "mail"),
        "REDIS_URL": "",
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def _until_ready(process: subprocess.Popen[str], port: int) -> list[str]:
    """Read the output until the line with the URL; at that moment the URL must answer."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if f"http://127.0.0.1:{port}" in line and "admin token" not in line:
            # Asked the moment the URL is shown: no waiting, no retry.
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
            return lines
    raise AssertionError("no URL printed:\n" + "".join(lines))


def _stop(process: subprocess.Popen[str], sig: signal.Signals) -> str:
    os.killpg(process.pid, sig)  # what Ctrl-C (SIGINT) or a process manager does to the group
    try:
        rest, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return rest


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_make_run_prints_the_url_when_it_answers_and_stops_quietly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    port = free_port()
    process = _start(["make", "--no-print-directory", "run", f"PORT={port}"], tmp_path)
    shown = "".join(_until_ready(process, port))
    rest = _stop(process, sig)
    output = shown + rest
    assert "make: ***" not in output
    assert "Traceback" not in output
    assert "Terminated" not in output
    assert rest.rstrip().endswith("garagebook stopped")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_exits_0_when_stopped(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    migrate = subprocess.run(
        [sys.executable, "-m", "garagebook.cli", "migrate"],
        env={**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'garagebook.db'}"},
        capture_output=True,
        check=False,
    )
    assert migrate.returncode == 0
    process = _start(
        [sys.executable, "-m", "garagebook.cli", "serve", "--port", str(port)], tmp_path
    )
    _until_ready(process, port)
    _stop(process, sig)
    assert process.returncode == 0


def test_a_worker_without_a_link_secret_refuses_to_start(tmp_path: Path) -> None:
    """Its mails' manage links would be signed with a key no server has."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SECRET")}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'garagebook.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "garagebook.cli", "worker"],
        env=env,
        cwd=tmp_path,  # no .env file here
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "MANAGE_LINK_SECRET" in result.stderr
