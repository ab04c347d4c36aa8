"""The customer's booking page: choose a service, a day and a time at `/`.

With JavaScript, `static/book.js` holds a time and books through the JSON API (`/api/holds`,
`/api/bookings`), with a live countdown. Without it, the same buttons post to `/book/hold` and
`/book` (`web.no_script`), which call the same functions (`create_hold`, `book`): the page works
either way.

A drop-off service (issue 15) has no time step and no hold: the customer picks a day, shown
with its drop-off window and collection time, and the details form below it posts to `/book`
with that day, script or not."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from starlette.responses import Response

from garagebook.deps import AvailabilityDep, DatabaseDep, SettingsDep
from garagebook.schema import services, slots
from garagebook.timeutil import utcnow
from garagebook.web.choices import (
    Day,
    DropOffDay,
    Time,
    day_choices,
    day_label,
    drop_off_choices,
    iso_day,
    times_of,
)
from garagebook.web.pages import render

router = APIRouter(include_in_schema=False)


def _positive_int(value: str | None) -> int | None:
    """A query value from a link someone may have mangled: an id, or None."""
    if value is None or not value.isdigit() or len(value) > 10:
        return None
    number = int(value)
    return number if 1 <= number <= 2**31 - 1 else None


@router.get("/")
async def booking_page(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    cache: AvailabilityDep,
    service: str | None = None,
    date_value: Annotated[str | None, Query(alias="date")] = None,
    day_value: Annotated[str | None, Query(alias="day")] = None,
    slot: str | None = None,
    taken: str | None = None,
) -> Response:
    """Service → day → time. Links and forms that work without JavaScript (the time buttons
    post to `/book/hold`); `book.js` turns the same buttons into a hold with a countdown.

    Deep links (a reminder mail's): `?service=ID&slot=ID` opens the slot's day with that time
    marked, so one click holds it; `?service=ID&day=YYYY-MM-DD` opens that day. Anything
    unknown or malformed is ignored: the page falls back to what it can show."""
    now = utcnow()
    service_id = _positive_int(service)
    day = iso_day(day_value) or iso_day(date_value)
    slot_id = _positive_int(slot)
    async with db.read() as conn:
        service_rows = (
            await conn.execute(select(services).where(services.c.active).order_by(services.c.id))
        ).all()
        chosen = next((s for s in service_rows if s.id == service_id), None)
        days: list[Day] = []
        times: list[Time] = []
        drop_off_days: list[DropOffDay] = []
        if chosen is not None and chosen.mode == "drop_off":
            drop_off_days = await drop_off_choices(conn, settings, chosen.id, now)
            if not any(d.day == day for d in drop_off_days):
                day = None
        elif chosen is not None:
            if slot_id is not None:
                slot_start = await conn.scalar(
                    select(slots.c.starts_at).where(slots.c.id == slot_id)
                )
                if slot_start is None:
                    slot_id = None
                else:
                    day = slot_start.astimezone(settings.timezone).date()
            days, listed = await day_choices(conn, settings, chosen.id, now, cache=cache)
            if day is not None and any(d.day == day for d in days):
                times = times_of(listed.get(day, []), settings, prefer=slot_id)
            else:
                day = None
    suggested = next((t for t in times if t.slot_id == slot_id), None)
    context: dict[str, Any] = {
        "services": service_rows,
        "chosen": chosen,
        "days": days,
        "day": day,
        "day_label": day_label(day, settings) if day else "",
        "times": times,
        "drop_off_days": drop_off_days,
        "drop_off_day": next((d for d in drop_off_days if d.day == day), None),
        "idempotency_key": secrets.token_hex(16),
        "suggested": suggested,
        "link_taken": slot_id is not None and day is not None and suggested is None,
        "hold_ttl_seconds": settings.hold_ttl_seconds,
        "taken": taken == "true",
        "values": {},
        "errors": {},
    }
    return render(request, settings, "book.html", context)
