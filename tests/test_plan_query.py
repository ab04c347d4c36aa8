"""The plan read on the booking path stays an index walk of a few rows however many slots
the garage has (a self-join once made PostgreSQL scan every slot: 300 ms at 700k slots)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.slots.service import _PLAN
from tests.support.stack import Stack

MANY_SLOTS = """
INSERT INTO slots (bay_id, starts_at, ends_at)
SELECT b.id, timestamptz '2035-01-01' + h * interval '1 hour',
       timestamptz '2035-01-01' + (h + 1) * interval '1 hour'
FROM bays b CROSS JOIN generate_series(0, 9999) h
"""


def scans_of(plan: dict[str, Any], table: str) -> int:
    own = int(plan.get("Actual Loops", 1)) if plan.get("Relation Name") == table else 0
    return own + sum(scans_of(child, table) for child in plan.get("Plans", []))


def rows_touched(plan: dict[str, Any]) -> int:
    own = int(plan.get("Actual Rows", 0)) * int(plan.get("Actual Loops", 1))
    own += int(plan.get("Rows Removed by Filter", 0))
    own += int(plan.get("Rows Removed by Join Filter", 0))
    return own + sum(rows_touched(child) for child in plan.get("Plans", []))


async def test_plan_read_walks_a_few_rows(stack: Stack) -> None:
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.begin() as conn:
            if stack.is_postgres:
                await conn.execute(text(MANY_SLOTS))
                await conn.execute(text("ANALYZE slots"))
            slot_id = (await conn.execute(text("SELECT min(id) FROM slots"))).scalar_one()
            statement = _PLAN.params(slot_id=slot_id, service_id=1)
            sql = str(
                statement.compile(conn.sync_connection, compile_kwargs={"literal_binds": True})
            )
            if stack.is_postgres:
                explained = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
                raw = explained.scalar_one()
                plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
                assert rows_touched(plan) < 200, plan
                # The bay's capabilities once, not once per slot row (32 scans of bays was
                # most of this statement's time).
                assert scans_of(plan, "bays") == 1, plan
            else:
                rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
                detail = " | ".join(str(row[-1]) for row in rows)
                assert "SEARCH slots USING INDEX" in detail, detail
                assert "(bay_id=? AND starts_at>?)" in detail, detail
    finally:
        await engine.dispose()
