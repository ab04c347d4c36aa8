"""HTTP routes for bookings. The path itself lives in service.py."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, model_validator
from sqlalchemy import select
from starlette.responses import Response

from garagebook.bookings import holds, service
from garagebook.bookings.reschedule import move_drop_off, reschedule
from garagebook.bookings.schemas import IDEMPOTENCY_KEY, BookingIn, HoldIn
from garagebook.config import Settings
from garagebook.db import Database
from garagebook.deps import (
    DatabaseDep,
    PlansDep,
    ReservationsDep,
    SettingsDep,
    rate_limit,
)
from garagebook.errors import (
    BookingNotFound,
    DatabaseUnavailable,
    DomainError,
    Forbidden,
    InvalidRequest,
    NotAuthenticated,
    SlotUnavailable,
)
from garagebook.fields import Id, IsoDate
from garagebook.http import (
    error_response,
    error_responses,
    json_body,
    json_response,
    parse_json,
)
from garagebook.metrics import BOOKING_OUTCOMES
from garagebook.reservations import ReservationStore
from garagebook.schema import bookings
from garagebook.slots.service import PlanCache
from garagebook.timeutil import to_local_iso

router = APIRouter(prefix="/api/bookings", tags=["bookings"])

_BOOKING_ID_MAX = 64


@router.post(
    "",
    status_code=201,
    dependencies=[rate_limit("booking")],
    openapi_extra=json_body(BookingIn),
    responses=error_responses(404, 409, 413, 422, 429, 503),
)
async def create_booking(
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """Book a slot. 201 with the booking (its `cancel_token`, the manage token, is shown only
    here), or 409 `slot_unavailable` saying which layer refused; 409 `booking_limit_reached`
    past the caps on live bookings per customer (not for the admin token); 415 for a body not
    sent as `application/json`. A retry with the same `Idempotency-Key` and body within
    IDEMPOTENCY_TTL_HOURS answers the booking as it is now (201 while confirmed, 409
    `idempotent_booking_closed` once cancelled or completed).
    Refusals are answered here rather than raised through the middleware: a 409 is this
    route's most common answer and the cheapest one to give."""
    key = request.headers.get("idempotency-key")
    try:
        if key is not None and not IDEMPOTENCY_KEY.match(key):
            raise InvalidRequest("Idempotency-Key must be 1 to 255 printable ASCII characters.")
        booking = await parse_json(request, BookingIn)
        result = await service.book(
            db, reservations, plans, settings, booking, key, staff=_is_admin(request, settings)
        )
    except DomainError as exc:
        _OUTCOME[_outcome_of(exc)].inc()
        return error_response(exc)
    _OUTCOME["replayed" if result.replayed else "created"].inc()
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return private_json(result.body, 201, headers)


_OUTCOME = {
    outcome: BOOKING_OUTCOMES.labels(outcome)
    for outcome in (
        "created",
        "replayed",
        "rejected_reservation",
        "rejected_database",
        "invalid",
        "unavailable",
    )
}


def _outcome_of(error: DomainError) -> str:
    if isinstance(error, SlotUnavailable):
        return f"rejected_{error.data['rejected_by']}"
    if isinstance(error, DatabaseUnavailable):
        return "unavailable"
    return "invalid"


@router.get("/{booking_id}", responses=error_responses(401, 403, 404, 503))
async def get_booking(
    booking_id: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """The booking. `Authorization: Bearer <token>`: the booking's manage token (the
    `cancel_token` of its 201) or the admin token; 401 without a token, 403 for any other token
    (also for an id that does not exist, so a token cannot probe ids), 404 for the admin token
    and an unknown id. The id alone opens nothing: it is printed in mails, pages and logs."""
    await _may_manage(request, booking_id, db, settings)
    async with db.read() as conn:
        return private_json(await service.get_booking(conn, settings, booking_id))


@router.post(
    "/{booking_id}/cancel",
    dependencies=[rate_limit("cancel")],
    responses=error_responses(401, 403, 404, 409, 429, 503),
)
async def cancel_booking(
    booking_id: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    settings: SettingsDep,
) -> Response:
    """Cancel; the slots are bookable again at once. `Authorization: Bearer <token>`: the
    booking's manage token (the `cancel_token` of its 201) or the admin token; 401 without a
    token, 403 for any other token (also for an id that does not exist), 404 for the admin
    token and an unknown id, 409 if already cancelled."""
    await _may_manage(request, booking_id, db, settings)
    return private_json(await service.cancel(db, reservations, settings, booking_id))


holds_router = APIRouter(prefix="/api/holds", tags=["holds"])


@holds_router.post(
    "",
    status_code=201,
    dependencies=[rate_limit("hold")],
    openapi_extra=json_body(HoldIn),
    responses=error_responses(404, 409, 413, 422, 429, 503),
)
async def create_hold(
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """Hold a time for `HOLD_TTL_SECONDS` while the customer types; 409 if it is taken."""
    body = await parse_json(request, HoldIn)
    hold = await holds.create_hold(db, reservations, plans, settings, body.slot_id, body.service_id)
    return private_json(
        {
            "hold_token": hold.token,
            "expires_at": to_local_iso(hold.expires_at, settings.timezone),
            "slot_ids": list(hold.slot_ids),
        },
        201,
    )


@holds_router.delete("/{hold_token}", status_code=204)
async def release_hold(hold_token: str, db: DatabaseDep, reservations: ReservationsDep) -> Response:
    await holds.release_hold(db, reservations, hold_token)
    return Response(status_code=204)


manage_router = APIRouter(prefix="/api/manage", tags=["bookings"])


@manage_router.get("/{cancel_token}", responses=error_responses(404, 503))
async def get_managed_booking(
    cancel_token: str, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """The booking behind a customer's manage/cancel link."""
    async with db.read() as conn:
        booking_id = await service.booking_id_for_cancel_token(conn, cancel_token)
        return private_json(await service.get_booking(conn, settings, booking_id))


@manage_router.post(
    "/{cancel_token}/cancel",
    dependencies=[rate_limit("cancel")],
    responses=error_responses(404, 409, 429, 503),
)
async def cancel_managed_booking(
    cancel_token: str, db: DatabaseDep, reservations: ReservationsDep, settings: SettingsDep
) -> Response:
    async with db.read() as conn:
        booking_id = await service.booking_id_for_cancel_token(conn, cancel_token)
    return private_json(await service.cancel(db, reservations, settings, booking_id))


class RescheduleIn(BaseModel):
    """A booking for a time moves to another `slot_id`; a drop-off to another `day`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    slot_id: Id | None = None
    day: IsoDate | None = None

    @model_validator(mode="after")
    def _one_of_them(self) -> RescheduleIn:
        if (self.slot_id is None) == (self.day is None):
            raise ValueError("give the new time as slot_id, or a drop-off's new day: one of them")
        return self


async def _reschedule(
    request: Request,
    booking_id: str,
    db: Database,
    reservations: ReservationStore,
    plans: PlanCache,
    settings: Settings,
) -> Response:
    body = await parse_json(request, RescheduleIn)
    online = not _is_admin(request, settings)
    if body.day is not None:
        moved = await move_drop_off(db, settings, booking_id, body.day, online=online)
    else:
        assert body.slot_id is not None  # RescheduleIn has one of the two
        moved = await reschedule(
            db, reservations, plans, settings, booking_id, body.slot_id, online=online
        )
    return private_json(moved)


@manage_router.post(
    "/{cancel_token}/reschedule",
    dependencies=[rate_limit("booking")],
    openapi_extra=json_body(RescheduleIn),
    responses=error_responses(404, 409, 413, 422, 429, 503),
)
async def reschedule_managed_booking(
    cancel_token: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """Move the booking behind a customer's link to another time (the link keeps working)."""
    async with db.read() as conn:
        booking_id = await service.booking_id_for_cancel_token(conn, cancel_token)
    return await _reschedule(request, booking_id, db, reservations, plans, settings)


@router.post(
    "/{booking_id}/reschedule",
    dependencies=[rate_limit("booking")],
    openapi_extra=json_body(RescheduleIn),
    responses=error_responses(401, 403, 404, 409, 413, 422, 429, 503),
)
async def reschedule_booking(
    booking_id: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """Move a booking to another time, keeping its id, reference and manage link. Authorised
    by `Authorization: Bearer <token>`: the booking's own cancel (manage) token, or the admin
    token (staff, back office)."""
    await _may_manage(request, booking_id, db, settings)
    return await _reschedule(request, booking_id, db, reservations, plans, settings)


def _is_admin(request: Request, settings: Settings) -> bool:
    """Whether the request carries the admin token (a booking by the garage itself: not capped,
    and its vehicle data replaces the car's record). Any other Authorization is ignored here."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (
        scheme.lower() == "bearer"
        and settings.admin_token is not None
        and hmac.compare_digest(
            token.strip().encode(), settings.admin_token.get_secret_value().encode()
        )
    )


async def _may_manage(request: Request, booking_id: str, db: Database, settings: Settings) -> None:
    """Who may read, cancel or move a booking by its id: the holder of its manage token, or of
    the admin token (staff, back office). 401 without a Bearer token. The admin token gets the
    route's own answer, 404 for an unknown id. Any other token opens only its own booking: for
    every other id, another booking's or one that does not exist, the answer is the same 403,
    so a token cannot be used to find out which ids exist. Compared in constant time; manage
    tokens are stored hashed."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated(
            "Send the booking's manage token (or the admin token) as a Bearer token."
        )
    if settings.admin_token is not None and hmac.compare_digest(
        token.encode(), settings.admin_token.get_secret_value().encode()
    ):
        if len(booking_id) > _BOOKING_ID_MAX:
            raise BookingNotFound()
        return
    stored = None
    if len(booking_id) <= _BOOKING_ID_MAX:
        async with db.read() as conn:
            stored = await conn.scalar(
                select(bookings.c.cancel_token_hash).where(bookings.c.id == booking_id)
            )
    if not hmac.compare_digest(stored or _NO_TOKEN_HASH, service.hash_token(token)):
        raise Forbidden("That token is not this booking's manage token.")


# Compared against when the id is unknown, so that path does the same work as a wrong token.
_NO_TOKEN_HASH = "0" * 64
_PRIVATE = {"Cache-Control": "no-store"}


def private_json(
    content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """An answer with a customer's personal data (or a token): never stored by browsers or
    proxies."""
    return json_response(content, status_code, {**_PRIVATE, **(headers or {})})
