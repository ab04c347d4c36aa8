"""Vehicle pages and forms: the staff's vehicle history at `/staff/vehicles/{registration}`
with its MOT expiry form, marking a booking done from the day view, and the customer's MOT
expiry form on their manage page. Sessions, CSRF and redirects are the staff and customer
pages' own helpers; the work is `vehicles.service`, as for the API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from garagebook.config import Settings
from garagebook.deps import DatabaseDep, SettingsDep
from garagebook.errors import (
    BookingNotFound,
    DomainError,
    InvalidRequest,
    VehicleNotFound,
    page_key,
    page_message_for_key,
)
from garagebook.timeutil import utcnow
from garagebook.vehicles.service import (
    complete_booking,
    local_today,
    registration_of,
    set_customer_mot_expiry,
    set_mot_expiry,
    undo_complete,
    vehicle_history,
)
from garagebook.web.auth import current_staff
from garagebook.web.forms import checked_form, form_text
from garagebook.web.manage import manage_booking_id, not_found_page
from garagebook.web.pages import error_page, local_time, long_date, render
from garagebook.web.staff import back_to_day, refused, staff_action

router = APIRouter(include_in_schema=False)

_MESSAGES = {"mot": "MOT expiry saved."}
# This page's own word for the one mapping's "invalid" (InvalidRequest): the MOT date.
_INVALID = page_key(InvalidRequest())
_ERRORS = {_INVALID: "That is not a date an MOT certificate can carry; nothing was changed."}
_TOKEN_MAX = 128


def vehicle_url(registration: str) -> str:
    return f"/staff/vehicles/{quote(registration)}"


def _when(iso: str, settings: Settings) -> str:
    moment = datetime.fromisoformat(iso)
    return f"{long_date(moment, settings.timezone)}, {local_time(moment, settings.timezone)}"


def _form_date(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        return None


@router.get("/staff/vehicles/{registration}")
async def vehicle_page(
    registration: str,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    done: Annotated[str | None, Query(max_length=20)] = None,
    error: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    user = current_staff(request, settings)
    if user is None:
        return RedirectResponse("/staff/login", 303)
    try:
        key = registration_of(registration)
        async with db.read() as conn:
            history = await vehicle_history(conn, settings, key, utcnow())
    except VehicleNotFound:
        return render(
            request,
            settings,
            "message.html",
            {"title": "Vehicle not found", "message": "No booking here was ever for that car."},
            404,
        )
    for booking in (*history["upcoming"], *history["past"]):
        booking["when"] = _when(booking["starts_at"], settings)
        booking["day"] = booking["starts_at"][:10]
        booking["done_when"] = (
            _when(booking["completed_at"], settings) if booking["completed_at"] else ""
        )
    for service in history["services_done"]:
        service["done_when"] = _when(service["completed_at"], settings)
    expires = history["mot_expires_on"]
    context = {
        "user": user,
        "vehicle": history,
        "url": vehicle_url(history["registration"]),
        "mot_label": long_date(datetime.fromisoformat(expires), settings.timezone)
        if expires
        else None,
        "flash": _MESSAGES.get(done or ""),
        "error": _ERRORS.get(error or "") or page_message_for_key(error),
    }
    return render(request, settings, "staff_vehicle.html", context)


@router.post("/staff/vehicles/{registration}/mot")
async def staff_set_mot(
    registration: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    user, form, _ = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    try:
        key = registration_of(registration)
    except VehicleNotFound:
        return RedirectResponse("/staff", 303)
    expires_on = _form_date(form_text(form, "expires_on"))
    if expires_on is None:
        return RedirectResponse(f"{vehicle_url(key)}?error={_INVALID}", 303)
    now = utcnow()
    try:
        async with db.transaction() as conn:
            await set_mot_expiry(conn, key, expires_on, now, local_today(settings, now))
    except VehicleNotFound:
        return RedirectResponse("/staff", 303)
    except DomainError as exc:
        return RedirectResponse(f"{vehicle_url(key)}?error={page_key(exc)}", 303)
    return RedirectResponse(f"{vehicle_url(key)}?done=mot", 303)


@router.post("/staff/bookings/{booking_id}/complete")
async def staff_complete_booking(
    booking_id: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """The day view's "Done" button; back to the day (`?done=completed`). A booking on a later
    day than today is refused (`?error=not_due`): the grid offers no Done there."""
    user, _, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    try:
        await complete_booking(db, settings, booking_id[:64], not_after=local_today(settings))
    except DomainError as exc:  # a later day's booking: NotDueYet's "not_due"
        return back_to_day(day, error=page_key(exc))
    return back_to_day(day, done="completed")


@router.post("/staff/bookings/{booking_id}/undo-complete")
async def staff_undo_complete(
    booking_id: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """The grid's "Undo" on a booking marked done: back to confirmed (`?done=uncompleted`)."""
    user, _, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    try:
        await undo_complete(db, settings, booking_id[:64])
    except DomainError as exc:  # nothing to undo: NotCompleted's "not_done"
        return back_to_day(day, error=page_key(exc))
    return back_to_day(day, done="uncompleted")


@router.post("/manage/{token}/mot")
async def customer_set_mot(
    token: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """The manage page's MOT form (`expires_on`): the vehicle of this booking."""
    form = await checked_form(request, settings, "cancel")
    if isinstance(form, Response):
        return form
    if len(token) > _TOKEN_MAX:
        return not_found_page(request, settings)
    expires_on = _form_date(form_text(form, "expires_on"))
    now = utcnow()
    try:
        if expires_on is None:
            raise InvalidRequest()  # not a date: the same page as a date out of range
        async with db.transaction() as conn:
            booking_id = await manage_booking_id(conn, settings, token)
            await set_customer_mot_expiry(conn, booking_id, expires_on, local_today(settings, now))
    except BookingNotFound:
        return not_found_page(request, settings)
    except InvalidRequest:
        return render(
            request,
            settings,
            "message.html",
            {
                "title": "MOT date not saved",
                "message": "Enter the expiry date printed on the MOT certificate "
                "(within a year before and three years after today). Go back and try again.",
            },
            422,
        )
    except DomainError as exc:
        return error_page(request, settings, "Not saved", exc)
    return RedirectResponse(f"/manage/{token}", 303)
