"""The staff day as a grid: bays as columns, start times as rows. Every item on a bay (a
booking, or a free slot) covers [start, end) and spans the rows in that range, so a 3-hour
service is one cell three rows high. A closure is shown as one cell per run of back-to-back
slots it holds on a bay (a closed day that skipped a booking is two runs around it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from garagebook.closures.service import closed_slots
from garagebook.schema import bays, booking_slots, bookings, closures, services, slots
from garagebook.slots.service import local_day_bounds


@dataclass
class Item:
    kind: str  # "booking", "closed" or "free"
    starts_at: datetime
    ends_at: datetime
    slot_id: int
    bay_id: int
    label: str  # "10:00–13:00"
    booking_id: str | None = None
    closure_id: int | None = None
    reason: str = ""  # why a closed time is closed, as staff or the setup gave it
    reference: str = ""
    service: str = ""
    registration: str = ""
    customer: str = ""
    past: bool = False
    completed: bool = False  # marked done by staff: nothing left to move, cancel or finish
    later_day: bool = False  # on a later day than the garage's today: not to be marked done yet
    # A slot it claims is no longer offered by the setup document (outside the hours, a closed
    # day, a retired bay): still confirmed, flagged for staff to keep or move.
    outside_hours: bool = False
    drop_off: bool = False  # a car left for the day, placed here: its forms are under Drop-offs


@dataclass
class Cell:
    item: Item | None
    rowspan: int = 1


@dataclass
class Row:
    label: str
    cells: list[Cell | None] = field(default_factory=list)  # None: covered by a cell above


@dataclass
class DayGrid:
    day: date
    bays: list[tuple[int, str]]
    rows: list[Row]
    free_slots: list[Item]  # future free slots, for the walk-in form
    bookings: int


async def load_day(conn: AsyncConnection, day: date, zone: ZoneInfo, now: datetime) -> DayGrid:
    start, end = local_day_bounds(day, zone)
    bay_rows = (
        await conn.execute(select(bays.c.id, bays.c.name, bays.c.active).order_by(bays.c.id))
    ).all()
    slot_rows = (
        await conn.execute(
            select(slots.c.id, slots.c.bay_id, slots.c.starts_at, slots.c.ends_at, slots.c.open)
            .where(slots.c.starts_at >= start, slots.c.starts_at < end)
            .order_by(slots.c.starts_at, slots.c.bay_id)
        )
    ).all()
    claim_rows = (
        await conn.execute(
            select(
                booking_slots.c.slot_id,
                bookings.c.id,
                bookings.c.reference,
                bookings.c.starts_at,
                bookings.c.ends_at,
                bookings.c.customer_name,
                bookings.c.vehicle_registration,
                bookings.c.status,
                services.c.name.label("service"),
                slots.c.open,
                slots.c.starts_at.label("slot_starts_at"),
                slots.c.ends_at.label("slot_ends_at"),
                bookings.c.slot_id.is_(None).label("drop_off"),
            )
            .select_from(
                booking_slots.join(bookings, bookings.c.id == booking_slots.c.booking_id)
                .join(services, services.c.id == bookings.c.service_id)
                .join(slots, slots.c.id == booking_slots.c.slot_id)
            )
            .where(
                and_(booking_slots.c.active, slots.c.starts_at >= start, slots.c.starts_at < end)
            )
        )
    ).all()

    def span(a: datetime, b: datetime) -> str:
        return f"{a.astimezone(zone):%H:%M}–{b.astimezone(zone):%H:%M}"

    slot_bay = {s.id: s.bay_id for s in slot_rows}
    items: list[Item] = []
    claimed: set[int] = set()
    seen_bookings: set[str] = set()
    outside = {c.id for c in claim_rows if not c.open}
    # A drop-off placed on a bay is shown for the time it is worked on there (its claimed
    # slots), not for its day's window and collection.
    worked: dict[str, tuple[datetime, datetime]] = {}
    for c in claim_rows:
        if c.drop_off:
            first, last = worked.get(c.id, (c.slot_starts_at, c.slot_ends_at))
            worked[c.id] = (min(first, c.slot_starts_at), max(last, c.slot_ends_at))
    for c in claim_rows:
        claimed.add(c.slot_id)
        if c.id in seen_bookings:
            continue
        seen_bookings.add(c.id)
        starts_at, ends_at = worked.get(c.id, (c.starts_at, c.ends_at))
        items.append(
            Item(
                kind="booking",
                starts_at=starts_at,
                ends_at=ends_at,
                slot_id=c.slot_id,
                bay_id=slot_bay[c.slot_id],
                label=span(starts_at, ends_at),
                booking_id=c.id,
                reference=c.reference,
                service=c.service,
                registration=c.vehicle_registration,
                customer=c.customer_name,
                past=c.ends_at <= now,
                completed=c.status == "completed",
                later_day=day > now.astimezone(zone).date(),
                outside_hours=c.id in outside,
                drop_off=bool(c.drop_off),
            )
        )
    closed = await closed_slots(conn, start, end)
    claimed.update(closed)
    reasons = {
        r.id: r.reason
        for r in await conn.execute(
            select(closures.c.id, closures.c.reason).where(closures.c.id.in_(set(closed.values())))
        )
    }
    items.extend(_closed_runs(slot_rows, closed, reasons, now, span))
    free = [
        Item(
            "free",
            s.starts_at,
            s.ends_at,
            s.id,
            s.bay_id,
            span(s.starts_at, s.ends_at),
            past=s.starts_at <= now,
        )
        for s in slot_rows
        if s.id not in claimed and s.open  # a closed slot is not free: it is not offered
    ]
    items.extend(free)

    starts = sorted(
        {s.starts_at for s in slot_rows if s.open or s.id in claimed} | {i.starts_at for i in items}
    )
    # Retired bays only while something is on them that day.
    used = {i.bay_id for i in items}
    bay_list = [(b.id, b.name) for b in bay_rows if b.active or b.id in used]
    rows = [Row(f"{moment.astimezone(zone):%H:%M}") for moment in starts]
    for bay_id, _ in bay_list:
        on_bay = sorted((i for i in items if i.bay_id == bay_id), key=lambda i: i.starts_at)
        for index, moment in enumerate(starts):
            item = next((i for i in on_bay if i.starts_at <= moment < i.ends_at), None)
            if item is None:
                rows[index].cells.append(Cell(None))
            elif item.starts_at == moment or index == 0:
                covered = sum(1 for m in starts[index:] if m < item.ends_at)
                rows[index].cells.append(Cell(item, covered))
            else:
                rows[index].cells.append(None)
    bay_names = dict(bay_list)
    return DayGrid(
        day=day,
        bays=bay_list,
        rows=rows,
        free_slots=sorted(
            (i for i in free if not i.past),
            key=lambda i: (i.starts_at, bay_names.get(i.bay_id, "")),
        ),
        bookings=sum(1 for i in items if i.kind == "booking"),
    )


def _closed_runs(
    slot_rows: Sequence[Any],
    closed: dict[int, int],
    reasons: dict[int, str | None],
    now: datetime,
    span: Callable[[datetime, datetime], str],
) -> list[Item]:
    """One "closed" item per run of back-to-back slots one closure holds on one bay."""
    runs: list[Item] = []
    last: dict[tuple[int, int], Item] = {}  # (bay, closure) → its latest run
    for s in slot_rows:  # in time order
        closure_id = closed.get(s.id)
        if closure_id is None:
            continue
        run = last.get((s.bay_id, closure_id))
        if run is not None and run.ends_at == s.starts_at:
            run.ends_at = s.ends_at
            run.label = span(run.starts_at, run.ends_at)
            run.past = run.ends_at <= now
            continue
        run = Item(
            "closed",
            s.starts_at,
            s.ends_at,
            s.id,
            s.bay_id,
            span(s.starts_at, s.ends_at),
            closure_id=closure_id,
            reason=reasons.get(closure_id) or "",
            past=s.ends_at <= now,
        )
        last[(s.bay_id, closure_id)] = run
        runs.append(run)
    return runs
