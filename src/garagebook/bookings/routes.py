"""HTTP routes for bookings. The path itself lives in service.py."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from garagebook.bookings import service
from garagebook.bookings.schemas import IDEMPOTENCY_KEY, BookingIn
from garagebook.deps import DatabaseDep, PlansDep, ReservationsDep, SettingsDep
from garagebook.errors import BookingNotFound, DomainError, InvalidRequest, SlotUnavailable
from garagebook.http import json_response, validation_error
from garagebook.metrics import BOOKING_OUTCOMES

router = APIRouter(prefix="/api/bookings", tags=["bookings"])

_BOOKING_ID_MAX = 64


@router.post(
    "",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BookingIn.model_json_schema()}},
        }
    },
)
async def create_booking(
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """Book a slot. 201 with the booking, or 409 `slot_unavailable` saying which layer refused."""
    key = request.headers.get("idempotency-key")
    try:
        if key is not None and not IDEMPOTENCY_KEY.match(key):
            raise InvalidRequest("Idempotency-Key must be 1 to 255 printable ASCII characters.")
        try:
            booking = BookingIn.model_validate_json(await request.body())
        except ValidationError as exc:
            raise validation_error(exc.errors(include_input=False)) from None
        result = await service.book(db, reservations, plans, settings, booking, key)
    except SlotUnavailable as exc:
        BOOKING_OUTCOMES.labels(f"rejected_{exc.data['rejected_by']}").inc()
        raise
    except DomainError:
        BOOKING_OUTCOMES.labels("invalid").inc()
        raise
    BOOKING_OUTCOMES.labels("replayed" if result.replayed else "created").inc()
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return json_response(result.body, 201, headers)


@router.get("/{booking_id}")
async def get_booking(booking_id: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    if len(booking_id) > _BOOKING_ID_MAX:
        raise BookingNotFound()
    async with db.read() as conn:
        return json_response(await service.get_booking(conn, settings, booking_id))


@router.post("/{booking_id}/cancel")
async def cancel_booking(
    booking_id: str, db: DatabaseDep, reservations: ReservationsDep, settings: SettingsDep
) -> Response:
    """Cancel; the slots are bookable again at once."""
    if len(booking_id) > _BOOKING_ID_MAX:
        raise BookingNotFound()
    return json_response(await service.cancel(db, reservations, settings, booking_id))
