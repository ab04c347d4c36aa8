"""`make bench` runs the booking statement itself under pgbench: the script it builds must fill in
every parameter of today's statement and run on a migrated database (a merge once left the
caps' parameters out and `make bench` died at its pgbench ceiling). And its report must print
every scenario it measures, each one named in its docstring, and say so loudly when the
drop-off run booked past a technician's hours."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from bench import run
from bench.run import pgbench_script

from tests.support.stack import Stack


# pgbench runs against PostgreSQL only; SQLite has no one-statement booking.
@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_the_pgbench_script_books_on_a_migrated_database(stack: Stack) -> None:
    script = pgbench_script()  # asserts that no parameter of the statement is left unfilled
    statement = next(line for line in script.splitlines() if line.startswith("WITH pick"))
    dsn = stack.database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        first_slot = await conn.fetchval("SELECT min(id) FROM slots")
        await conn.execute(f"CREATE SEQUENCE bench_slot_seq START {first_slot}")
        async with conn.transaction():
            await conn.execute(statement.rstrip(";").replace(":n", "424242"))
        booked = await conn.fetchval("SELECT count(*) FROM bookings WHERE id = 'pgb424242'")
        await conn.execute("DROP SEQUENCE bench_slot_seq")
    finally:
        await conn.close()
    assert booked == 1


SCENARIOS = (
    "reservation", "database", "bookings", "bookings_technician", "availability",
    "availability_empty", "drop_offs",
)  # fmt: skip


def figures(rps: float, status: int = 201, requests: int = 1000) -> dict[str, Any]:
    """One wrk run as bench.run.wrk returns it."""
    return {
        "connections": 50,
        "requests": requests,
        "rps": rps,
        "statuses": {str(status): requests},
        "rejected_by": {"reservation": 0, "database": 0},
        "latency_ms": {"50": 2.0, "99": 8.0},
        "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0},
    }


def results(check: dict[str, int]) -> dict[str, Any]:
    scenarios: dict[str, Any] = {}
    for name in SCENARIOS:
        scenarios[name] = figures(100.0)
        scenarios[f"{name}_light"] = figures(80.0)
    for name in ("availability", "availability_light", "availability_empty_light"):
        scenarios[name] = figures(100.0, 200)
    scenarios["availability_empty"] = figures(200.0, 200)
    scenarios["drop_offs"] = figures(60.0)
    scenarios["availability"]["garage"] = {
        "days": 60, "bays": 6, "technicians": 8, "slots": 3600, "booked": 2340, "share": 0.65,
        "sample": {"starts": 9, "places": 20},
    }  # fmt: skip
    scenarios["drop_offs"]["check"] = check
    scenarios["contested"] = {"clients": 1000, "runs": []}
    return {
        "date": "2031-01-01 00:00 UTC",
        "machine": {"cores": 2},
        "workers": 2,
        "scenarios": scenarios,
        "ceilings": {
            "http": figures(1000.0, 409),
            "postgres": {"tps": 400.0, "clients": 20},
            "redis_set_nx_px": 50000.0,
        },
    }


CLEAN = {
    "days_over_hours_by_counter": 0,
    "days_over_hours_by_bookings": 0,
    "counters_not_matching_bookings": 0,
    "drop_offs_booked": 1000,
}


def test_the_report_prints_every_scenario_named_in_the_docstring() -> None:
    text = "\n".join(run.report(results(CLEAN)))
    doc = run.__doc__ or ""
    for name in SCENARIOS:
        assert name in doc, f"the module docstring lists no {name}"
    assert "availability, filled garage (60 d, 6 bays, 8 techs)" in text
    assert "50% of the empty garage" in text  # filled ÷ empty, same run
    assert "drop-off bookings (201s)" in text
    assert "15% of the pgbench ceiling" in text  # 201s/s ÷ pgbench tps
    assert "[met] drop-offs: no technician day past its hours" in text
    assert "[met] availability p99 < 10 ms at 8 connections" in text
    assert "DOUBLE BOOKING" not in text


def test_the_report_says_loudly_when_a_technician_day_was_booked_past_its_hours() -> None:
    text = "\n".join(run.report(results({**CLEAN, "counters_not_matching_bookings": 1})))
    assert "DOUBLE BOOKING" in text
    assert "[MISSED] drop-offs: no technician day past its hours" in text
