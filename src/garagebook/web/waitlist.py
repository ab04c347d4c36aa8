"""The waitlist's pages: join a day's waitlist (`/waitlist/join?service=…&day=…`, linked from
the booking page when a day has no free time), leave it, and the offer's one-click page that
the offer mail links to (`/waitlist/offers/{token}`). Plain forms, no script needed; each calls
the same functions as `/api/waitlist`."""

from __future__ import annotations

import contextlib
from datetime import date
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from garagebook.deps import DatabaseDep, PlansDep, ReservationsDep, SettingsDep
from garagebook.errors import (
    DomainError,
    InvalidRequest,
    OfferNotFound,
    WaitlistEntryNotFound,
)
from garagebook.schema import services
from garagebook.timeutil import utcnow
from garagebook.waitlist import service as waitlist
from garagebook.waitlist.schemas import WaitlistIn
from garagebook.web.forms import checked_form, expired_form, form_text, has_valid_csrf
from garagebook.web.pages import error_page, local_time, long_date, render

router = APIRouter(prefix="/waitlist", include_in_schema=False)
_TOKEN_MAX = 128
_FIELDS = {("customer", "name"): "name", ("customer", "email"): "email"}
_FIELDS |= {("customer", "phone"): "phone", ("vehicle", "registration"): "registration"}


def _message(
    request: Request, settings: SettingsDep, title: str, text: str, status: int
) -> Response:
    return render(request, settings, "message.html", {"title": title, "message": text}, status)


async def _join_page(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    service_id: int,
    day: date,
    values: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> Response:
    async with db.read() as conn:
        service = (
            await conn.execute(
                select(services.c.name, services.c.mode).where(services.c.id == service_id)
            )
        ).first()
    if service is None:
        return _message(request, settings, "No such service", "Please pick a service.", 404)
    if service.mode == "drop_off":  # waitlist/service.py join: offers hold times, not days
        return _message(
            request,
            settings,
            "No waitlist for a drop-off",
            f"{service.name} is booked for a day: please choose another day.",
            404,
        )
    service_name = service.name
    context = {
        "service_id": service_id,
        "service_name": service_name,
        "day": day,
        "day_label": f"{day:%A} {day.day} {day:%B %Y}",
        "values": values,
        "errors": errors,
        "hold_minutes": settings.waitlist_hold_minutes,
    }
    return render(request, settings, "waitlist_join.html", context, status_code)


@router.get("/join")
async def join_page(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    service: Annotated[int, Query(ge=1, le=2**31 - 1)],
    day: date,
) -> Response:
    return await _join_page(request, db, settings, service, day, {}, {})


@router.post("/join")
async def join(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    form = await checked_form(request, settings, "hold")
    if isinstance(form, Response):
        return form
    values = {name: form_text(form, name) for name in _FIELDS.values()}
    try:
        service_id, day = (
            int(form_text(form, "service_id")),
            date.fromisoformat(form_text(form, "day")),
        )
    except ValueError:
        return _message(request, settings, "Not joined", "Please start from the booking page.", 422)
    try:
        body = WaitlistIn.model_validate(
            {
                "service_id": service_id,
                "day": day,
                "customer": {
                    "name": values["name"],
                    "email": values["email"],
                    "phone": values["phone"] or None,
                },
                "vehicle": {"registration": values["registration"]},
            }
        )
    except ValidationError as exc:
        errors = {
            _FIELDS[loc]: str(e["msg"])
            for e in exc.errors()
            if (loc := tuple(str(p) for p in e["loc"])) in _FIELDS
        }
        return await _join_page(request, db, settings, service_id, day, values, errors, 422)
    try:
        entry = await waitlist.join(db, settings, body)
    except InvalidRequest as exc:
        return await _join_page(
            request, db, settings, service_id, day, values, {"email": exc.message}, 422
        )
    except DomainError as exc:
        return error_page(request, settings, "Not joined", exc)
    context = {
        "entry": entry,
        "day_label": f"{day:%A} {day.day} {day:%B %Y}",
        "hold_minutes": settings.waitlist_hold_minutes,
    }
    return render(request, settings, "waitlist_joined.html", context, 201)


@router.post("/leave/{leave_token}")
async def leave(
    leave_token: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    settings: SettingsDep,
) -> Response:
    form = await request.form()
    if not has_valid_csrf(request, settings, form):
        return expired_form(request, settings)
    with contextlib.suppress(WaitlistEntryNotFound):  # already off the list: same answer
        await waitlist.leave(db, reservations, leave_token[:_TOKEN_MAX])
    return _message(
        request, settings, "You have left the waitlist", "We will not send you any offers.", 200
    )


def _offer_view(offer: waitlist.Offer, settings: SettingsDep) -> dict[str, Any]:
    zone = settings.timezone
    until = offer.expires_at
    return {
        "offer": offer,
        "is_open": offer.is_open(utcnow()),
        "date_label": long_date(offer.starts_at, zone),
        "time_label": f"{local_time(offer.starts_at, zone)}–{local_time(offer.ends_at, zone)}",
        "until_label": f"{local_time(until, zone)} on {long_date(until, zone)}",
    }


@router.get("/offers/{token}")
async def offer_page(
    token: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    try:
        offer = await waitlist.offer_for_link(db, token[:_TOKEN_MAX], settings)
    except OfferNotFound:
        return _message(
            request, settings, "Offer not found", "Check that you copied all of the link.", 404
        )
    context = {**_offer_view(offer, settings), "request_token": token}
    return render(request, settings, "waitlist_offer.html", context)


@router.post("/offers/{token}")
async def take_offer(
    token: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    form = await checked_form(request, settings, "booking")
    if isinstance(form, Response):
        return form
    try:
        result = await waitlist.accept(db, reservations, plans, settings, token[:_TOKEN_MAX])
    except OfferNotFound:
        return _message(
            request, settings, "Offer not found", "Check that you copied all of the link.", 404
        )
    except DomainError as exc:
        return error_page(request, settings, "Not booked", exc)
    cancel_token = _cancel_token_of(result.body)
    return RedirectResponse(f"/manage/{cancel_token}", 303)


def _cancel_token_of(body: bytes) -> str:
    token: str = orjson.loads(body)["cancel_token"]
    return token
