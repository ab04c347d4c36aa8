"""HTTP routes for vehicles and the MOT. Staff and back-office use the admin token; a customer
records their MOT expiry through their booking's manage link."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from garagebook.bookings.routes import private_json
from garagebook.bookings.service import booking_id_for_cancel_token
from garagebook.deps import AdminDep, DatabaseDep, SettingsDep, rate_limit
from garagebook.errors import BookingNotFound
from garagebook.http import error_responses, json_body, parse_json
from garagebook.timeutil import utcnow
from garagebook.vehicles.mot import MotIn
from garagebook.vehicles.service import (
    complete_booking,
    local_today,
    registration_of,
    set_customer_mot_expiry,
    set_mot_expiry,
    vehicle_history,
)

# Full paths: these sit beside the bookings routers' /api/bookings and /api/manage.
router = APIRouter(tags=["vehicles"])

_TOKEN_MAX = 128


@router.get(
    "/api/vehicles/{registration}",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 503),
)
async def get_vehicle(registration: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Staff: the vehicle, its MOT expiry, its bookings past and upcoming, services done.
    Any spelling of the registration (`ab12cde`, `AB12 CDE`)."""
    key = registration_of(registration)
    async with db.read() as conn:
        return private_json(await vehicle_history(conn, settings, key, utcnow()))


@router.put(
    "/api/vehicles/{registration}/mot",
    dependencies=[AdminDep],
    openapi_extra=json_body(MotIn),
    responses=error_responses(401, 403, 404, 413, 422, 503),
)
async def put_vehicle_mot(
    registration: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """Staff: record the MOT expiry (the certificate's date); answers the vehicle's history."""
    key = registration_of(registration)
    body = await parse_json(request, MotIn)
    now = utcnow()
    async with db.transaction() as conn:
        await set_mot_expiry(conn, key, body.expires_on, now, local_today(settings, now))
        return private_json(await vehicle_history(conn, settings, key, now))


@router.post(
    "/api/manage/{cancel_token}/mot",
    dependencies=[rate_limit("cancel")],
    openapi_extra=json_body(MotIn),
    responses=error_responses(404, 413, 422, 429, 503),
)
async def post_managed_mot(
    cancel_token: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """Customer: record the MOT expiry of the vehicle of the booking behind their link, for their
    own MOT reminder. Kept on their booking: the car's record (what staff entered) does not
    change. The answer names only that vehicle and date, not its history (other people may
    have booked the same car)."""
    if len(cancel_token) > _TOKEN_MAX:
        raise BookingNotFound()
    body = await parse_json(request, MotIn)
    async with db.transaction() as conn:
        booking_id = await booking_id_for_cancel_token(conn, cancel_token)
        key = await set_customer_mot_expiry(
            conn, booking_id, body.expires_on, local_today(settings)
        )
    return private_json({"registration": key, "mot_expires_on": body.expires_on.isoformat()})


@router.post(
    "/api/bookings/{booking_id}/complete",
    dependencies=[AdminDep],
    responses=error_responses(401, 403, 404, 409, 503),
)
async def post_complete_booking(
    booking_id: str, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """Staff: the work is done. `completed` (idempotent; 409 if cancelled). A completed MOT
    sets the vehicle's next MOT expiry, shown as `vehicle.mot_expires_on`."""
    return private_json(await complete_booking(db, settings, booking_id))
