"""The migrations and the query metadata agree; the demo garage applies idempotently and its
slots are right across DST."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.garage.apply import apply_in
from garagebook.garage.calendar import day_times
from garagebook.garage.demo import demo_document
from garagebook.schema import metadata, slots
from garagebook.timeutil import utcnow
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


def opening_slots(first_day: date, days: int) -> list[tuple[datetime, datetime]]:
    document = demo_document()
    return [t for n in range(days) for t in day_times(document, first_day + timedelta(days=n))]


async def test_seed_is_idempotent(stack: Stack) -> None:
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.begin() as conn:
            before = await conn.scalar(text("SELECT count(*) FROM slots"))
            again = await apply_in(conn, demo_document(), actor="test", now=utcnow())
            after = await conn.scalar(text("SELECT count(*) FROM slots"))
        assert again.changes == []
        assert before == after
        today = datetime.now(LONDON).date()
        # Today's slots that already started are not made: the calendar starts now.
        wanted = [s for s, _ in opening_slots(today, 15) if s > utcnow()]
        assert before == 3 * len(wanted)
    finally:
        await engine.dispose()


def test_opening_hours_are_local_across_daylight_saving() -> None:
    # Saturday 28 March 2026 is GMT, Monday 30 March is BST (clocks went forward on Sunday 29th).
    wanted = opening_slots(date(2026, 3, 28), 3)
    by_day: dict[date, list[tuple[datetime, datetime]]] = {}
    for start, end in wanted:
        by_day.setdefault(start.astimezone(LONDON).date(), []).append((start, end))
    assert sorted(by_day) == [date(2026, 3, 28), date(2026, 3, 30)]  # closed on Sunday
    for day_slots in by_day.values():
        assert [s.astimezone(LONDON).hour for s, _ in day_slots] == list(range(8, 17))
    saturday_first = by_day[date(2026, 3, 28)][0][0].astimezone(LONDON)
    monday_first = by_day[date(2026, 3, 30)][0][0].astimezone(LONDON)
    assert saturday_first.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert monday_first.utcoffset().total_seconds() == 3600  # type: ignore[union-attr]


async def test_slot_times_are_stored_and_read_back_exactly(stack: Stack) -> None:
    # The first slot from tomorrow on: today's calendar starts now, so after 08:00 today's
    # first slot is a later hour (this test failed every run made after 08:00 London time).
    tomorrow = datetime.combine(
        datetime.now(LONDON).date() + timedelta(days=1), datetime.min.time(), tzinfo=LONDON
    )
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            first = (
                await conn.execute(
                    select(slots.c.starts_at)
                    .where(slots.c.starts_at >= tomorrow)
                    .order_by(slots.c.starts_at)
                )
            ).first()
        assert first is not None
        local = first.starts_at.astimezone(LONDON)
        assert (local.hour, local.minute) == (8, 0)
    finally:
        await engine.dispose()
