"""The admin API for absences and reassigning (issue 15): `POST`/`GET /api/admin/absences`,
`DELETE /api/admin/absences/{id}` (withdraw), `POST /api/admin/bookings/{id}/reassign`. The
staff pages (web/technicians.py) call the same functions."""

from __future__ import annotations

from datetime import UTC, date, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from garagebook.bookings.service import get_booking
from garagebook.config import Settings
from garagebook.deps import AdminDep, DatabaseDep, ReservationsDep, SettingsDep
from garagebook.errors import InvalidRequest
from garagebook.fields import DB_INT_MAX, Id, IsoDate
from garagebook.http import error_responses, json_body, json_response, parse_json
from garagebook.schema import bookings
from garagebook.slots.service import local_day_bounds
from garagebook.technicians.absences import enter_absence, list_absences, withdraw_absence
from garagebook.technicians.reassign import reassign
from garagebook.timeutil import utcnow

router = APIRouter(prefix="/api/admin", tags=["technicians"], dependencies=[AdminDep])

# An absence marks one row per day: a quarter is the most one request may enter.
MAX_ABSENCE_DAYS = 92
LISTING_DAYS = 60
ADMIN = "admin"


class AbsenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    technician_id: Id
    first_day: IsoDate
    last_day: IsoDate
    reason: Annotated[str | None, Field(max_length=200)] = None


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    technician_id: Id | None = None
    bay_id: Id | None = None
    starts_at: AwareDatetime | None = None  # a drop-off placed on bay_id: when work starts


def check_range(first_day: date, last_day: date, zone: ZoneInfo) -> None:
    """422 for a range that ends before it starts, is longer than MAX_ABSENCE_DAYS, or whose
    days' bounds are not instants in years 1 to 9999 in UTC."""
    try:
        local_day_bounds(first_day, zone)[0].astimezone(UTC)
        local_day_bounds(last_day, zone)[1].astimezone(UTC)
    except OverflowError:
        raise InvalidRequest("The days must be within years 1 to 9999.") from None
    if last_day < first_day:
        raise InvalidRequest("last_day must not be before first_day.")
    if (last_day - first_day).days + 1 > MAX_ABSENCE_DAYS:
        raise InvalidRequest(f"An absence is at most {MAX_ABSENCE_DAYS} days.")


async def flagged_json(
    conn: AsyncConnection, settings: Settings, booking_ids: list[str]
) -> list[dict[str, Any]]:
    """The flagged bookings as the API shows a booking, with the technician they hold."""
    shown = []
    for booking_id in booking_ids:
        booking = await get_booking(conn, settings, booking_id)
        booking["technician_id"] = await conn.scalar(
            bookings.select()
            .with_only_columns(bookings.c.technician_id)
            .where(bookings.c.id == booking_id)
        )
        shown.append(booking)
    return shown


@router.post(
    "/absences",
    status_code=201,
    openapi_extra=json_body(AbsenceIn),
    responses=error_responses(401, 403, 404, 413, 422, 503),
)
async def create_absence(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Enter an absence: the technician's time in those days closes; their confirmed bookings
    there come back in `flagged`, to reassign (none is cancelled)."""
    body = await parse_json(request, AbsenceIn)
    check_range(body.first_day, body.last_day, settings.timezone)
    async with db.transaction() as conn:
        entered = await enter_absence(
            conn,
            body.technician_id,
            body.first_day,
            body.last_day,
            body.reason,
            ADMIN,
            utcnow(),
            zone=settings.timezone,
        )
        flagged = await flagged_json(conn, settings, entered.flagged)
    return json_response({**entered.absence.json(), "flagged": flagged}, 201)


@router.get("/absences", responses=error_responses(401, 403, 422, 503))
async def get_absences(
    db: DatabaseDep,
    settings: SettingsDep,
    first: Annotated[IsoDate | None, Query(alias="from")] = None,
    last: Annotated[IsoDate | None, Query(alias="to")] = None,
) -> Response:
    """Absences overlapping the days `from` to `to` (default: today and the next 60 days),
    active and withdrawn, soonest first."""
    first = first or utcnow().astimezone(settings.timezone).date()
    try:
        last = last or first + timedelta(days=LISTING_DAYS)
    except OverflowError:
        raise InvalidRequest("`from` must be a day within years 1 to 9999.") from None
    if last < first:
        raise InvalidRequest("`to` must not be before `from`.")
    async with db.read() as conn:
        found = await list_absences(conn, first, last)
    return json_response([a.json() for a in found])


@router.delete("/absences/{absence_id}", responses=error_responses(401, 403, 404, 409, 503))
async def delete_absence(
    absence_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)], db: DatabaseDep, settings: SettingsDep
) -> Response:
    """Withdraw: the technician works those days again (409 `absence_withdrawn` twice)."""
    async with db.transaction() as conn:
        absence = await withdraw_absence(conn, absence_id, utcnow(), zone=settings.timezone)
    return json_response(absence.json())


@router.post(
    "/bookings/{booking_id}/reassign",
    openapi_extra=json_body(ReassignIn),
    responses=error_responses(401, 403, 404, 409, 413, 422, 503),
)
async def reassign_booking(
    booking_id: Annotated[str, Path(max_length=32)],
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    settings: SettingsDep,
) -> Response:
    """Give the booking another technician and/or bay at the same time: 409
    `slot_unavailable` when the database refuses either (nothing changes then). A drop-off
    is placed on a bay with `bay_id` and `starts_at` (when work on it starts that day): its
    labour minutes of the bay and of its technician, from then."""
    body = await parse_json(request, ReassignIn)
    booking = await reassign(
        db,
        reservations,
        settings,
        booking_id,
        technician_id=body.technician_id,
        bay_id=body.bay_id,
        starts_at=body.starts_at,
    )
    return json_response(booking)
