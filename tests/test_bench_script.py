"""`make bench` runs the booking statement itself under pgbench: the script it builds must fill in
every parameter of today's statement and run on a migrated database (a merge once left the
caps' parameters out and `make bench` died at its pgbench ceiling)."""

from __future__ import annotations

import asyncpg
import pytest
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
