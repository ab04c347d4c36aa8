"""HTTP routes for services and slots, and the admin route that creates slots."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from garagebook.deps import AdminDep, AvailabilityDep, DatabaseDep, SettingsDep
from garagebook.errors import InvalidRequest, ServiceNotFound
from garagebook.fields import Id, IsoDate
from garagebook.garage.rules import notice_minutes
from garagebook.http import error_responses, json_body, json_response, parse_json
from garagebook.schema import services
from garagebook.slots.cache import AvailabilityCache
from garagebook.slots.service import (
    Availability,
    Slot,
    create_slot,
    local_day_bounds,
    slots_listing,
)
from garagebook.technicians.drop_offs import drop_off_days
from garagebook.timeutil import to_local_iso, utcnow

router = APIRouter(prefix="/api", tags=["slots"])

# Without ?date=, /api/slots looks this far ahead.
LISTING_HORIZON = timedelta(days=60)
MAX_SLOT_LENGTH = timedelta(hours=12)


def slot_json(slot: Slot, available: bool, zone: ZoneInfo) -> dict[str, object]:
    return {
        "id": slot.id,
        "bay_id": slot.bay_id,
        "starts_at": to_local_iso(slot.starts_at, zone),
        "ends_at": to_local_iso(slot.ends_at, zone),
        "available": available,
    }


@router.get("/services", responses=error_responses(503))
async def list_services(db: DatabaseDep) -> Response:
    """The services offered now (retired ones are kept for their bookings, not listed)."""
    async with db.read() as conn:
        rows = (
            await conn.execute(select(services).where(services.c.active).order_by(services.c.id))
        ).all()
    return json_response([row._asdict() for row in rows])


@router.get("/slots", responses=error_responses(404, 422, 503))
async def get_slots(
    db: DatabaseDep,
    settings: SettingsDep,
    cache: AvailabilityDep,
    day: Annotated[IsoDate | None, Query(alias="date")] = None,
    available: bool | None = None,
    service_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Response:
    """Slots soonest first: one local day with `date`, else the next 60 days.
    `available=true` lists only bookable ones; with `service_id`, only starts where it fits."""
    now = utcnow()
    zone = settings.timezone
    start, end = local_day_bounds(day, zone) if day else (now, now + LISTING_HORIZON)
    async with db.read() as conn:
        if service_id is None:
            listed = await slots_listing(
                conn, start=start, end=end, now=now, available=available, limit=limit
            )
        elif day is not None:
            listed = (await cache.days(conn, service_id, day, 1, now)).days[day]
        else:
            listed = await _ahead(conn, cache, service_id, now, zone, available, limit)
    if available is not None:
        listed = [a for a in listed if a.available == available]
    return json_response([slot_json(a.slot, a.available, zone) for a in listed[:limit]])


async def _ahead(
    conn: AsyncConnection,
    cache: AvailabilityCache,
    service_id: int,
    now: datetime,
    zone: ZoneInfo,
    available: bool | None,
    limit: int,
) -> list[Availability]:
    """A service's slots from now to LISTING_HORIZON, a week at a time until `limit` of them
    pass the `available` filter: the soonest free times cost what it takes to reach them."""
    end = now + LISTING_HORIZON
    day, last = now.astimezone(zone).date(), end.astimezone(zone).date()
    listed: list[Availability] = []
    while day <= last and len(listed) < limit:
        count = min(7, (last - day).days + 1)
        for found in (await cache.days(conn, service_id, day, count, now)).days.values():
            listed.extend(
                a
                for a in found
                if now <= a.slot.starts_at < end and available in (None, a.available)
            )
        day += timedelta(days=count)
    return listed


class SlotIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    bay_id: Id
    starts_at: AwareDatetime
    ends_at: AwareDatetime


@router.post(
    "/admin/slots",
    status_code=201,
    dependencies=[AdminDep],
    openapi_extra=json_body(SlotIn),
    responses=error_responses(401, 403, 404, 409, 413, 422, 503),
)
async def create_admin_slot(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Open a slot on a bay; 409 when it overlaps one already there."""
    body = await parse_json(request, SlotIn)
    try:  # stored in UTC: 0001-01-01T00:00:00+01:00 is a valid date-time with no UTC year
        body.starts_at.astimezone(UTC), body.ends_at.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(
            "starts_at and ends_at must be within years 1 to 9999 in UTC."
        ) from None
    length = body.ends_at - body.starts_at
    if not timedelta(0) < length <= MAX_SLOT_LENGTH:
        raise InvalidRequest("ends_at must be after starts_at, and a slot at most 12 hours long.")
    async with db.transaction() as conn:
        slot = await create_slot(conn, body.bay_id, body.starts_at, body.ends_at, settings.timezone)
    return json_response(slot_json(slot, slot.starts_at > utcnow(), settings.timezone), 201)


@router.get("/availability", responses=error_responses(404, 422, 503))
async def get_availability(
    db: DatabaseDep,
    settings: SettingsDep,
    cache: AvailabilityDep,
    service_id: Annotated[int, Query(ge=1, le=2**31 - 1)],
    day: Annotated[IsoDate | None, Query(alias="date")] = None,
) -> Response:
    """The times a timed service can start on a local day: `[{"starts_at", "ends_at",
    "free"}]`, each a start where some capable bay and (where the garage lists technicians)
    some qualified technician are both free for the whole service; `free` is how many such
    bookings could start then (free bays, or free technicians if fewer: any capable bay goes
    with any qualified technician). Book one with `POST /api/bookings` `{"service_id",
    "starts_at", …}`: the server picks the bay and the technician.

    A drop-off service: the days (that `date`, or without it every day ahead) on which some
    qualified technician has its labour minutes left and the drop-off window has not opened:
    `[{"day", "drop_off_from", "drop_off_until", "collect_from", "free"}]`, `free` being how
    many more the technicians' minutes left could take. Book one with `{"service_id", "day",
    …}`: the server picks the technician."""
    now = utcnow()
    zone = settings.timezone
    async with db.read() as conn:
        if day is None:  # a drop-off's days ahead, or a timed service asked without its day
            mode = await conn.scalar(
                select(services.c.mode).where(services.c.id == service_id, services.c.active)
            )
            if mode is None:
                raise ServiceNotFound(service_id=service_id)
            if mode == "drop_off":
                return json_response(await _drop_off_days(conn, service_id, None, now, zone))
            raise InvalidRequest(
                "Give the day as date=YYYY-MM-DD.",
                fields=[{"field": "date", "problem": "a timed service's times are listed by day"}],
            )
        # The service's mode comes with the day (one round trip where the day is cached).
        offered = await cache.starts(conn, service_id, day, now)
        if offered.mode == "drop_off":
            return json_response(await _drop_off_days(conn, service_id, day, now, zone))
    return json_response(b"[" + b",".join(offered.starts) + b"]")  # each start's JSON, kept


async def _drop_off_days(
    conn: AsyncConnection, service_id: int, day: date | None, now: datetime, zone: ZoneInfo
) -> list[dict[str, str | int]]:
    today = now.astimezone(zone).date()
    first, last = (day, day) if day is not None else (today, today + LISTING_HORIZON)
    earliest = now + timedelta(minutes=await notice_minutes(conn))
    return [
        {
            "day": w.day.isoformat(),
            "drop_off_from": to_local_iso(w.drop_off_from, zone),
            "drop_off_until": to_local_iso(w.drop_off_until, zone),
            "collect_from": to_local_iso(w.collect_from, zone),
            "free": w.free,
        }
        for w in await drop_off_days(conn, service_id, first, last, earliest)
    ]
