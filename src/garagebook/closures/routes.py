"""The admin API for closed times: `POST`/`GET /api/admin/closures`,
`DELETE /api/admin/closures/{id}` (reopen). The staff pages call the same service."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.responses import Response

from garagebook.closures import service
from garagebook.deps import AdminDep, DatabaseDep, ReservationsDep, SettingsDep
from garagebook.errors import InvalidRequest
from garagebook.fields import DB_INT_MAX, Id, IsoDate
from garagebook.http import error_responses, json_body, json_response, parse_json
from garagebook.slots.service import local_day_bounds
from garagebook.timeutil import utcnow

router = APIRouter(prefix="/api/admin/closures", tags=["closures"], dependencies=[AdminDep])

# One closure claims one row per slot: a month is the most one request may close.
MAX_CLOSURE = timedelta(days=31)
# Without ?to=, the listing looks this far ahead of ?from=.
LISTING_DAYS = 60
# Who closed or reopened a time through the admin token (staff pages give the user's name).
ADMIN = "admin"


class ClosureIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    bay_id: Id
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    reason: Annotated[str | None, Field(max_length=200)] = None


@router.post(
    "",
    status_code=201,
    openapi_extra=json_body(ClosureIn),
    responses=error_responses(401, 403, 404, 409, 413, 422, 503),
)
async def create_closure(
    request: Request, db: DatabaseDep, reservations: ReservationsDep, settings: SettingsDep
) -> Response:
    """Close every future slot of the bay overlapping the time: 409 `slot_unavailable` when
    any of them is booked or held (nothing is closed then)."""
    body = await parse_json(request, ClosureIn)
    try:  # stored in UTC (see POST /api/admin/slots)
        body.starts_at.astimezone(UTC), body.ends_at.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest(
            "starts_at and ends_at must be within years 1 to 9999 in UTC."
        ) from None
    if not timedelta(0) < body.ends_at - body.starts_at <= MAX_CLOSURE:
        raise InvalidRequest("ends_at must be after starts_at, and a closure at most 31 days.")
    closure = await service.close(
        db,
        reservations,
        settings,
        body.bay_id,
        body.starts_at,
        body.ends_at,
        by=ADMIN,
        reason=body.reason,
    )
    return json_response(closure.json(settings.timezone), 201)


@router.delete("/{closure_id}", responses=error_responses(401, 403, 404, 409, 503))
async def reopen_closure(
    closure_id: Annotated[int, Path(ge=1, le=DB_INT_MAX)],
    db: DatabaseDep,
    reservations: ReservationsDep,
    settings: SettingsDep,
) -> Response:
    """Reopen: the closed time is free at once; 409 `closure_reopened` the second time."""
    closure = await service.reopen(db, reservations, settings, closure_id, by=ADMIN)
    return json_response(closure.json(settings.timezone))


@router.get("", responses=error_responses(401, 403, 422, 503))
async def get_closures(
    db: DatabaseDep,
    settings: SettingsDep,
    first: Annotated[IsoDate | None, Query(alias="from")] = None,
    last: Annotated[IsoDate | None, Query(alias="to")] = None,
) -> Response:
    """Closures overlapping the local days `from` to `to` (both included; default: today and
    the next 60 days), active and reopened, soonest first."""
    zone = settings.timezone
    first = first or utcnow().astimezone(zone).date()
    try:  # the days' bounds must be instants in years 1 to 9999 in UTC
        last = last or first + timedelta(days=LISTING_DAYS)
        start, _ = local_day_bounds(first, zone)
        _, end = local_day_bounds(last, zone)
        start.astimezone(UTC), end.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest("`from` and `to` must be days within years 1 to 9999.") from None
    if last < first:
        raise InvalidRequest("`to` must not be before `from`.")
    async with db.read() as conn:
        found = await service.list_closures(conn, start, end)
    return json_response([c.json(zone) for c in found])
