"""HTTP routes of the waitlist: join, leave, look at an offer, take it up."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from garagebook.bookings.routes import private_json
from garagebook.deps import DatabaseDep, PlansDep, ReservationsDep, SettingsDep, rate_limit
from garagebook.http import error_responses, json_body, parse_json
from garagebook.timeutil import utcnow
from garagebook.waitlist import service
from garagebook.waitlist.schemas import WaitlistIn

router = APIRouter(prefix="/api/waitlist", tags=["waitlist"])


@router.post(
    "",
    status_code=201,
    dependencies=[rate_limit("hold")],
    openapi_extra=json_body(WaitlistIn),
    responses=error_responses(404, 413, 422, 429, 503),
)
async def join_waitlist(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Wait for a time for a service on a day. When one frees up, the first person waiting is
    mailed an offer held for WAITLIST_HOLD_MINUTES. `leave_token` takes you off the list."""
    body = await parse_json(request, WaitlistIn)
    return private_json(await service.join(db, settings, body), 201)


@router.delete("/{leave_token}", status_code=204, responses=error_responses(404, 503))
async def leave_waitlist(
    leave_token: str, db: DatabaseDep, reservations: ReservationsDep
) -> Response:
    await service.leave(db, reservations, leave_token)
    return Response(status_code=204)


@router.get("/offers/{token}", responses=error_responses(404, 503))
async def get_offer(token: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    offer = await service.offer_for_link(db, token, settings)
    return private_json(offer.as_json(settings, utcnow()))


@router.post(
    "/offers/{token}/confirm",
    status_code=201,
    dependencies=[rate_limit("booking")],
    responses=error_responses(404, 409, 429, 503),
)
async def confirm_offer(
    token: str,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """Book the offered time (201 with the booking and its `cancel_token`); 409 `offer_gone`
    once it was taken up or ran out."""
    result = await service.accept(db, reservations, plans, settings, token)
    return private_json(result.body, 201)
