"""The migrations and the query metadata agree; the seed is idempotent and right across DST."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.schema import metadata, slots
from garagebook.slots.seed import opening_slots, seed_demo_garage
from tests.support.stack import Stack

LONDON = ZoneInfo("Europe/London")


async def test_migrations_match_the_query_metadata(stack: Stack) -> None:
    engine = create_async_engine(stack.database_url)

    def differences(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diffs = compare_metadata(context, metadata)
        return [
            d
            for d in diffs
            if not (
                isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version"
            )
        ]

    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_seed_is_idempotent(stack: Stack) -> None:
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.begin() as conn:
            before = await conn.scalar(text("SELECT count(*) FROM slots"))
            again = await seed_demo_garage(conn, datetime.now(LONDON).date(), LONDON)
            after = await conn.scalar(text("SELECT count(*) FROM slots"))
        assert (again.services, again.bays, again.slots) == (0, 0, 0)
        assert before == after
        assert before == 3 * 9 * len(
            {d.date() for d, _ in opening_slots(datetime.now(LONDON).date(), 14, LONDON)}
        )
    finally:
        await engine.dispose()


def test_opening_hours_are_local_across_daylight_saving() -> None:
    # Saturday 28 March 2026 is GMT, Monday 30 March is BST (clocks went forward on Sunday 29th).
    wanted = opening_slots(date(2026, 3, 28), 3, LONDON)
    by_day: dict[date, list[tuple[datetime, datetime]]] = {}
    for start, end in wanted:
        by_day.setdefault(start.date(), []).append((start, end))
    assert sorted(by_day) == [date(2026, 3, 28), date(2026, 3, 30)]  # closed on Sunday
    for day_slots in by_day.values():
        assert [s.astimezone(LONDON).hour for s, _ in day_slots] == list(range(8, 17))
    saturday_first = by_day[date(2026, 3, 28)][0][0]
    monday_first = by_day[date(2026, 3, 30)][0][0]
    assert saturday_first.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert monday_first.utcoffset().total_seconds() == 3600  # type: ignore[union-attr]


async def test_slot_times_are_stored_and_read_back_exactly(stack: Stack) -> None:
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            first = (
                await conn.execute(select(slots.c.starts_at).order_by(slots.c.starts_at))
            ).first()
        assert first is not None
        local = first.starts_at.astimezone(LONDON)
        assert (local.hour, local.minute) == (8, 0)
    finally:
        await engine.dispose()
