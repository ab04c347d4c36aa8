"""The booking journey without JavaScript: the booking page's time buttons post to
`/book/hold`, which holds the time and shows the details form, and that form posts to `/book`.
They call the same functions as the JSON API behind `static/book.js` (`create_hold`, `book`),
with the same validation and errors: the page works either way.

A drop-off (issue 15) has no hold: the booking page's details form posts its `day` to `/book`,
and a refusal shows the same details page with that day."""

from __future__ import annotations

import secrets
from datetime import date
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from garagebook.bookings import service as bookings
from garagebook.bookings.holds import create_hold
from garagebook.bookings.schemas import IDEMPOTENCY_KEY, BookingIn, normalise_registration
from garagebook.config import Settings
from garagebook.deps import DatabaseDep, PlansDep, ReservationsDep, SettingsDep
from garagebook.errors import (
    BookingLimitReached,
    DomainError,
    IdempotentBookingClosed,
    InvalidRequest,
    ServiceNotFound,
    SlotInPast,
    SlotNotFound,
    SlotUnavailable,
    http_status,
    page_message,
)
from garagebook.garage.apply import current_document
from garagebook.schema import services, slots
from garagebook.technicians.drop_offs import window
from garagebook.timeutil import utcnow
from garagebook.web.choices import day_label, drop_off_times, iso_day
from garagebook.web.forms import checked_form, form_int, form_text
from garagebook.web.pages import error_page, long_date, render

router = APIRouter(include_in_schema=False)

_FIELD_OF = {
    ("customer", "name"): "name",
    ("customer", "email"): "email",
    ("customer", "phone"): "phone",
    ("vehicle", "registration"): "registration",
    ("vehicle", "make"): "make",
    ("vehicle", "model"): "model",
    ("notes",): "notes",
}


async def _details_page(
    request: Request,
    db: DatabaseDep,
    plans: PlansDep,
    settings: Settings,
    form_values: dict[str, Any],
    status_code: int = 200,
) -> Response:
    zone = settings.timezone
    slot_id, service_id = form_values["slot_id"], form_values["service_id"]
    day: date | None = form_values.get("day")
    async with db.read() as conn:
        service = (await conn.execute(select(services).where(services.c.id == service_id))).first()
        document = await current_document(conn) if day is not None else None
    if day is not None:
        when = day_label(day, settings)
        if service is not None and service.mode == "drop_off" and document and document.drop_off:
            when += f": {drop_off_times(window(document, day), zone)}"
        back = f"/?service={service_id}"
    else:
        plan = await plans.get(db, slot_id, service_id)
        local = plan.start.starts_at.astimezone(zone)
        when = f"{long_date(local, zone)} at {local:%H:%M}"
        back = f"/?service={service_id}&date={local.date().isoformat()}"
    context = {
        "held": bool(form_values.get("hold_token")),
        "service": service,
        "service_name": service.name if service else "",
        "when": when,
        "back": back,
        "idempotency_key": secrets.token_hex(16),
        "message": None,
        "values": {},
        "errors": {},
        **form_values,
    }
    response = render(request, settings, "book_details.html", context, status_code)
    response.headers["Cache-Control"] = "no-store"  # the customer's details, typed or kept
    return response


@router.post("/book/hold")
async def hold_without_script(
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    form = await checked_form(request, settings, "hold")
    if isinstance(form, Response):
        return form
    try:
        slot_id, service_id = form_int(form, "slot_id"), form_int(form, "service_id")
    except ValueError:
        return RedirectResponse("/", 303)
    try:
        hold = await create_hold(db, reservations, plans, settings, slot_id, service_id)
    except (SlotUnavailable, SlotInPast, SlotNotFound):
        plan_day = await _day_of(db, slot_id, settings)
        query = urlencode({"service": service_id, "date": plan_day, "taken": "true"})
        return RedirectResponse(f"/?{query}", 303)
    except ServiceNotFound:
        return RedirectResponse("/", 303)
    except DomainError as exc:
        return error_page(request, settings, "Not held", exc)
    until = hold.expires_at.astimezone(settings.timezone).strftime("%H:%M")
    values = {"slot_id": slot_id, "service_id": service_id, "hold_token": hold.token}
    return await _details_page(request, db, plans, settings, {**values, "until": until})


async def _day_of(db: DatabaseDep, slot_id: int, settings: Settings) -> str:
    async with db.read() as conn:
        starts_at = await conn.scalar(select(slots.c.starts_at).where(slots.c.id == slot_id))
    moment = starts_at or utcnow()
    return moment.astimezone(settings.timezone).date().isoformat()


@router.post("/book")
async def book_without_script(
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """The details form's post: the same booking path, validation and errors as the API."""
    form = await checked_form(request, settings, "booking")
    if isinstance(form, Response):
        return form
    day = iso_day(form_text(form, "day"))  # a drop-off's: booked by day, with no slot
    try:
        service_id = form_int(form, "service_id")
        slot_id = None if day is not None else form_int(form, "slot_id")
    except ValueError:
        return RedirectResponse("/", 303)
    values = {name: form_text(form, name) for name in _FIELD_OF.values()}
    values["registration"] = normalise_registration(values["registration"])
    hold_token = form_text(form, "hold_token") or None
    page_values: dict[str, Any] = {
        "slot_id": slot_id,
        "day": day,
        "service_id": service_id,
        "hold_token": hold_token or "",
        "until": form_text(form, "held_until")[:5],
        "values": values,
    }
    key = form_text(form, "idempotency_key")
    try:
        request_in = BookingIn.model_validate(
            {
                **({"day": day} if day is not None else {"slot_id": slot_id}),
                "service_id": service_id,
                "hold_token": hold_token,
                "customer": {
                    "name": values["name"],
                    "email": values["email"],
                    "phone": values["phone"] or None,
                },
                "vehicle": {
                    "registration": values["registration"],
                    "make": values["make"] or None,
                    "model": values["model"] or None,
                },
                "notes": values["notes"] or None,
            }
        )
        result = await bookings.book(
            db,
            reservations,
            plans,
            settings,
            request_in,
            key if IDEMPOTENCY_KEY.match(key) else None,
        )
    except ValidationError as exc:
        errors = {
            _FIELD_OF[tuple(str(p) for p in e["loc"])]: str(e["msg"])
            for e in exc.errors(include_input=False)
            if tuple(str(p) for p in e["loc"]) in _FIELD_OF
        }
        return await _details_page(
            request, db, plans, settings, {**page_values, "errors": errors}, 422
        )
    except (InvalidRequest, BookingLimitReached, IdempotentBookingClosed) as exc:
        # The server's own rules beyond the form's: the garage's placeholder address, the caps
        # on live bookings; or this form was sent before, and that booking is cancelled. The
        # hold is kept: the customer may change a field.
        errors = {
            _FIELD_OF[path]: str(f["problem"])
            for f in exc.data.get("fields", [])
            if (path := tuple(str(f["field"]).split("."))) in _FIELD_OF
        }
        page_values.update(errors=errors, message=exc.message)
        return await _details_page(request, db, plans, settings, page_values, http_status(exc))
    except (SlotUnavailable, SlotInPast) as exc:
        if day is not None:
            message = (
                f"Sorry, that day is no longer available. {exc.message} "
                "Your details are still below."
            )
        elif isinstance(exc, SlotUnavailable):
            message = (
                "Sorry, that time is no longer available: someone else booked it, or your hold "
                "ran out and the time was taken. Your details are still below."
            )
        else:
            message = page_message(exc)
        page_values.update(hold_token="", message=message)
        return await _details_page(request, db, plans, settings, page_values, 409)
    except DomainError as exc:
        return error_page(request, settings, "Not booked", exc)
    booking = orjson.loads(result.body)
    return RedirectResponse(
        f"/manage/{booking['cancel_token']}", 303, headers={"Cache-Control": "no-store"}
    )
