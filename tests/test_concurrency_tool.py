"""`garagebook concurrency-test` run as a user would, against real server processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.cli import migrate_database
from tests.support.processes import (
    ROOT,
    RedisProcess,
    ServerProcess,
    free_port,
    port_open,
    wait_for,
)
from tests.support.stack import ADMIN_TOKEN, METRICS_HEADERS, Stack, in_thread, run_sync

StartServer = Callable[..., ServerProcess]
pytestmark = pytest.mark.slow


@dataclass
class ToolRun:
    exit_code: int
    stdout: str
    stderr: str

    def total(self) -> dict[str, int]:
        """The four count lines of the final total (the last occurrence of each)."""
        labels = {
            "requests": "Total Requests:",
            "created": "✓ Successful (201):",
            "conflicts": "⚠ Conflicts (409):",
            "errors": "✗ Errors (other):",
        }
        counts = {}
        for key, label in labels.items():
            found = re.findall(rf"^{re.escape(label)}\s+(\d+)$", self.stdout, re.MULTILINE)
            counts[key] = int(found[-1])
        return counts


def run_tool(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> ToolRun:
    done = subprocess.run(
        [sys.executable, "-m", "garagebook.cli", "concurrency-test", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
        check=False,
    )
    return ToolRun(done.returncode, done.stdout, done.stderr)


def assert_passed(run: ToolRun, requests: int, iterations: int) -> None:
    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.total() == {
        "requests": requests * iterations,
        "created": iterations,
        "conflicts": (requests - 1) * iterations,
        "errors": 0,
    }
    assert f"PASS: every iteration had exactly one 201, {requests - 1} 409s" in run.stdout


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_embedded_default_50_x_3(stack: Stack, start_server: StartServer) -> None:
    server = start_server(stack.env())
    run = run_tool("--api-url", server.url, "-n", "50", "-i", "3")
    assert_passed(run, 50, 3)
    # The four lines are printed per iteration too, exactly as runbooks expect.
    assert run.stdout.count("Total Requests:        50\n") == 3
    assert (
        "✓ Successful (201):    1\n⚠ Conflicts (409):     49\n✗ Errors (other):      0"
        in run.stdout
    )


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
@pytest.mark.parametrize(("requests", "iterations"), [(50, 3), (200, 1)])
def test_postgres_and_redis(
    stack: Stack, start_server: StartServer, requests: int, iterations: int
) -> None:
    server = start_server(stack.env(), workers=2)
    env = {
        **stack.env(),
        "API_URL": server.url,
        "CONCURRENT_REQUESTS": str(requests),
        "TEST_ITERATIONS": str(iterations),
    }
    assert_passed(run_tool(env=env), requests, iterations)


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_postgres_with_redis_down(
    stack: Stack, start_server: StartServer, own_redis: RedisProcess
) -> None:
    server = start_server(stack.env(REDIS_URL=own_redis.url), workers=2)
    own_redis.stop()
    run = run_tool("--api-url", server.url, "-n", "50", "-i", "3")
    assert_passed(run, 50, 3)
    assert "409s rejected by: reservation 0, database 147" in run.stdout


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_two_servers_share_the_requests(stack: Stack, start_server: StartServer) -> None:
    servers = [start_server(stack.env()) for _ in range(2)]
    urls = ",".join(s.url for s in servers)
    assert_passed(run_tool("--api-url", urls, "-n", "50", "-i", "3"), 50, 3)
    for server in servers:  # each single-worker server counted its own half
        metrics = httpx.get(f"{server.url}/metrics", headers=METRICS_HEADERS).text
        attempts = re.findall(
            r'^garagebook_booking_attempts_total\{outcome="[a-z_]+"\} (\S+)$', metrics, re.MULTILINE
        )
        assert sum(float(n) for n in attempts) == 75


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_json_output_and_cleanup(stack: Stack, start_server: StartServer) -> None:
    server = start_server(stack.env())
    run = run_tool("--api-url", server.url, "-n", "20", "-i", "2", "--cleanup", "--json")
    assert run.exit_code == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["verdict"] == "PASS"
    assert result["total"]["successful"] == 2
    assert result["total"]["conflicts"] == 38
    for iteration in result["iterations"]:
        assert iteration["cancelled"] == 1
        (booking_id,) = iteration["booking_ids"]
        booking = httpx.get(
            f"{server.url}/api/bookings/{booking_id}",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ).json()
        assert booking["status"] == "cancelled"
    assert result["iterations"][0]["slot_id"] != result["iterations"][1]["slot_id"]


def test_broken_server_fails_the_gate(tmp_path: Path) -> None:
    port = free_port()
    double = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.broken_server:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
    )
    try:
        wait_for(lambda: port_open(port), 20, "the broken server")
        run = run_tool("--api-url", f"http://127.0.0.1:{port}", "-n", "10")
    finally:
        double.terminate()
        double.wait(10)
    assert run.exit_code == 1, run.stdout
    assert run.total()["created"] == 2
    assert "FAIL" in run.stdout
    assert "2 successes ← BAD! Double-booking occurred" in run.stdout


def test_no_server_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = run_tool("--api-url", url)
    assert run.exit_code == 2
    assert f"✗ Cannot connect to server at {url}" in run.stdout + run.stderr
    assert "make run" in run.stderr


def test_creates_a_slot_with_the_admin_token_when_none_is_free(
    tmp_path: Path, start_server: StartServer
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    in_thread(migrate_database, url)

    async def add_bay_and_service() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO bays (id, name) VALUES (1, 'Bay 1')"))
            await conn.execute(
                text(
                    "INSERT INTO services (key, name, duration_minutes, price_pence)"
                    " VALUES ('mot', 'MOT', 60, 1)"
                )
            )
        await engine.dispose()

    run_sync(add_bay_and_service)
    server = start_server(Stack("empty", url, None, "gb:").env())
    without = run_tool("--api-url", server.url)
    assert without.exit_code == 1
    assert "No free slot" in without.stderr
    with_token = run_tool("--api-url", server.url, "--admin-token", ADMIN_TOKEN, "-n", "20")
    assert_passed(with_token, 20, 1)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_repeated_runs_stay_clear_of_the_caps_per_customer(
    stack: Stack, start_server: StartServer
) -> None:
    """The server caps live bookings per e-mail, registration and day (on here, at their
    defaults). Runs without --cleanup leave their bookings behind; a later run's winner must
    still get its 201, so every request of every run is a customer of its own."""
    caps = {
        "MAX_LIVE_BOOKINGS_PER_EMAIL": "4",
        "MAX_LIVE_BOOKINGS_PER_REGISTRATION": "3",
        "MAX_BOOKINGS_PER_EMAIL_PER_DAY": "2",
    }
    server = start_server(stack.env(**caps))
    for _ in range(2):
        run = run_tool("--api-url", server.url, "-n", "1", "-i", "3")
        assert_passed(run, 1, 3)


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_by_time_aims_at_a_technicians_last_free_hour(
    stack: Stack, start_server: StartServer
) -> None:
    """The tool books the shortest service, the MOT: in a garage whose only MOT tester is
    Priya (and three bays), each of its times has one free unit, her free hour. 200 bookings
    of such a time at once (the server picks bay and technician) give exactly one 201 and 199
    409s, against PostgreSQL + Redis; the time is then no longer offered."""
    from tests.support.technicians import add_technicians

    run_sync(
        lambda: add_technicians(
            stack.database_url, ("Priya", "mot_tester,general"), ("Sam", "general")
        )
    )
    server = start_server(stack.env(), workers=2)
    run = run_tool("--api-url", server.url, "-n", "200", "-i", "2", "--by-time", "--json")
    assert run.exit_code == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["verdict"] == "PASS"
    for iteration in report["iterations"]:
        assert iteration["free"] == 1
        assert len(iteration["booking_ids"]) == 1
        assert iteration["slot_shows_taken"] is True
        assert sum(iteration["rejected_by"].values()) == 199


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
def test_drop_off_fills_the_scarcest_day_exactly(stack: Stack, start_server: StartServer) -> None:
    """A drop-off day has as many places as its technicians' minutes left allow: Sam alone
    works 540 minutes, so two 240-minute drop-offs. 200 bookings of the day at once, against
    two server processes on PostgreSQL + Redis, give exactly two 201s and 198 409s, and the
    day is then no longer offered."""
    from tests.support.technicians import add_drop_off_service, add_technicians

    run_sync(lambda: add_technicians(stack.database_url, ("Sam", "general")))
    run_sync(lambda: add_drop_off_service(stack.database_url))
    server = start_server(stack.env(), workers=2)
    run = run_tool("--api-url", server.url, "-n", "200", "-i", "2", "--drop-off", "--json")
    assert run.exit_code == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["verdict"] == "PASS"
    for iteration in report["iterations"]:
        assert iteration["free"] == 2
        assert len(iteration["booking_ids"]) == 2
        assert iteration["slot_shows_taken"] is True
        assert iteration["rejected_by"] == {"reservation": 0, "database": 198}
