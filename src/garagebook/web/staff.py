"""The staff day view at `/staff`: sign-in, the day's grid (refreshed by `static/staff.js`
every few seconds), and the actions. Every action goes through the same booking path as the
API (`bookings.service.book` / `cancel`, `bookings.reschedule.reschedule` for a move), so the
staff view can never double-book either.

Closing a slot is a closure (`closures.service`), not a booking: it claims the slot under the
same database rule as bookings, and reopening ends the claim."""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from garagebook.bookings import service as bookings
from garagebook.bookings.reschedule import reschedule
from garagebook.bookings.schemas import BookingIn
from garagebook.closures import service as closures
from garagebook.config import Settings
from garagebook.deps import DatabaseDep, PlansDep, ReservationsDep, SettingsDep
from garagebook.errors import (
    BayNotFound,
    BookingNotFound,
    DomainError,
    InvalidRequest,
    closed_because,
    page_key,
    page_message,
    page_message_for_key,
)
from garagebook.fields import DB_INT_MAX
from garagebook.schema import bays, services, slots
from garagebook.slots.service import create_slot, list_slots, local_day_bounds
from garagebook.timeutil import utcnow
from garagebook.web.auth import (
    CSRF_FIELD,
    StaffUser,
    authenticate,
    csrf_token,
    current_staff,
    end_session,
    start_session,
)
from garagebook.web.day import load_day
from garagebook.web.forms import form_text, has_valid_csrf, is_over_limit
from garagebook.web.pages import duration, env, render
from garagebook.web.technician_day import hours_and_minutes, load_technician_day

log = logging.getLogger(__name__)
router = APIRouter(prefix="/staff", include_in_schema=False)

# Refresh interval of the day view, in milliseconds (staff.js polls the grid fragment).
REFRESH_MS = 2000
_MESSAGES = {
    "cancelled": "Booking cancelled: the time is free again.",
    "walk_in": "Walk-in booked.",
    "closed": "Slot closed.",
    "reopened": "Slot reopened.",
    "opened": "Extra slot opened.",
    "moved": "Booking moved: the customer gets an email with the new time.",
    "completed": "Booking marked done. Pressed by mistake? Its Undo button takes it back.",
    "uncompleted": "Done taken back: the booking is open again.",
    "reassigned": "Booking reassigned: same time, the technician or bay you picked.",
    "placed": "Drop-off placed on the technician you picked: same day.",
    "placed_on_bay": "Drop-off placed on the bay and time you picked: it is in the bay's column.",
    "moved_day": "Drop-off moved to this day: the customer gets an email with the new day.",
    "walk_in_drop_off": "Car taken in for the day: it is under Drop-offs.",
}
# The move page offers free start times from the day shown for this many days.
MOVE_DAYS = 7


def refused(request: Request, settings: Settings) -> Response:
    """403 for a staff form without a session or a valid CSRF token (see `staff_action`)."""
    return render(
        request,
        settings,
        "message.html",
        {
            "title": "Please try again",
            "message": "This form had expired or did not come from this site. "
            "Reload the page and try again.",
        },
        403,
    )


def _day(value: str | None, settings: Settings) -> date:
    today = utcnow().astimezone(settings.timezone).date()
    if not value:
        return today
    try:
        return date.fromisoformat(value)
    except ValueError:
        return today


def back_to_day(day: date, done: str | None = None, error: str | None = None) -> Response:
    """After a staff action: back to the day view of `day`, with a `done` or `error` key."""
    query: dict[str, str] = {"date": day.isoformat()}
    if done:
        query["done"] = done
    if error:
        query["error"] = error
    return RedirectResponse(f"/staff?{urlencode(query)}", 303)


# --- sign-in -----------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, settings: SettingsDep) -> Response:
    if current_staff(request, settings) is not None:
        return RedirectResponse("/staff", 303)
    return render(request, settings, "staff_login.html", {"error": None, "name": ""})


@router.post("/login")
async def login(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    form = await request.form()
    if not has_valid_csrf(request, settings, form):
        return refused(request, settings)
    name = form_text(form, "name")[:100]
    if await is_over_limit(request, "sign_in"):
        log.warning("staff sign-in rate-limited")
        error = "Too many sign-in attempts from your connection. Wait a minute, then try again."
        return render(request, settings, "staff_login.html", {"error": error, "name": name}, 429)
    password = form.get("password")
    user = None
    if name and isinstance(password, str) and password:
        async with db.read() as conn:
            user = await authenticate(conn, name, password[:1024])
    if user is None:
        log.info("staff sign-in refused")
        return render(
            request,
            settings,
            "staff_login.html",
            {"error": "That name and password do not match.", "name": name},
            401,
        )
    response = RedirectResponse("/staff", 303)
    start_session(response, request, settings, user)
    return response


@router.post("/logout")
async def logout(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    form = await request.form()
    if not has_valid_csrf(request, settings, form):
        return refused(request, settings)
    response = RedirectResponse("/staff/login", 303)
    await end_session(response, request, settings, db)
    return response


# --- the day -----------------------------------------------------------------------------------


async def _grid_context(
    request: Request, db: DatabaseDep, settings: Settings, day: date
) -> dict[str, Any]:
    zone = settings.timezone
    now = utcnow()
    async with db.read() as conn:
        grid = await load_day(conn, day, zone, now)
        technician_day = await load_technician_day(conn, day, zone)
        service_rows = (await conn.execute(select(services).order_by(services.c.id))).all()
        fits = await _walk_in_fits(conn, day, zone, now, [s.id for s in service_rows])
    local_day = datetime.combine(day, time(), zone)
    minutes = {s.id: s.duration_minutes for s in service_rows}
    return {
        "grid": grid,
        "technician_day": technician_day,
        "hours_and_minutes": hours_and_minutes,
        "services": service_rows,
        "fits": fits,
        "longest": {
            slot_id: duration(max(minutes[i] for i in ids)) for slot_id, ids in fits.items()
        },
        "day": day,
        "day_label": f"{local_day:%A} {day.day} {local_day:%B %Y}",
        "previous": (day - timedelta(days=1)).isoformat(),
        "next": (day + timedelta(days=1)).isoformat(),
        "today": utcnow().astimezone(zone).date().isoformat(),
    }


async def _walk_in_fits(
    conn: AsyncConnection, day: date, zone: ZoneInfo, now: datetime, service_ids: list[int]
) -> dict[int, list[int]]:
    """For each free start slot of the day, the services that fit from it (the whole service
    on that bay, back to back, before anything booked and before the day ends there): the
    walk-in form offers only those times for the chosen service."""
    start, end = local_day_bounds(day, zone)
    fits: dict[int, list[int]] = {}
    for service_id in service_ids:
        listed = await list_slots(
            conn, start=start, end=end, now=now, zone=zone, service_id=service_id, online=False
        )
        for a in listed:
            if a.available:
                fits.setdefault(a.slot.id, []).append(service_id)
    return fits


async def _why_no_fit(
    conn: AsyncConnection, settings: Settings, slot_id: int, service_id: int, now: datetime
) -> str:
    """Why `service_id` does not fit from `slot_id`, in the words staff think in."""
    zone = settings.timezone
    service = (await conn.execute(select(services).where(services.c.id == service_id))).first()
    slot = (await conn.execute(select(slots).where(slots.c.id == slot_id))).first()
    if service is None or slot is None:
        return "That time or service no longer exists. Pick another."
    start, end = local_day_bounds(slot.starts_at.astimezone(zone).date(), zone)
    listed = await list_slots(
        conn, start=start, end=end, now=now, zone=zone, service_id=None, online=False
    )
    on_bay = [
        a for a in listed if a.slot.bay_id == slot.bay_id and a.slot.starts_at >= slot.starts_at
    ]
    free_until = slot.starts_at
    blocked_by = "the end of the day"
    for a in on_bay:
        if a.slot.starts_at != free_until:
            blocked_by = "a gap in the slots"
            break
        if not a.available:
            blocked_by = "the next booking"
            break
        free_until = a.slot.ends_at
    bay = await conn.scalar(select(bays.c.name).where(bays.c.id == slot.bay_id))
    what = f"{service.name} takes {duration(service.duration_minutes)}"
    since = f"{slot.starts_at.astimezone(zone):%H:%M}"
    if free_until == slot.starts_at:
        return f"{bay} is no longer free at {since}. Pick another time."
    return (
        f"A {what}, but from {since} {bay} is free only until "
        f"{free_until.astimezone(zone):%H:%M} ({blocked_by}). "
        "Pick one of the times offered for it."
    )


@router.get("")
async def day_view(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    day: Annotated[str | None, Query(alias="date", max_length=10)] = None,
    done: Annotated[str | None, Query(max_length=20)] = None,
    error: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    user = current_staff(request, settings)
    if user is None:
        return RedirectResponse("/staff/login", 303)
    context = await _grid_context(request, db, settings, _day(day, settings))
    context.update(
        user=user,
        flash=_MESSAGES.get(done or ""),
        error=page_message_for_key(error),
        refresh_ms=REFRESH_MS,
        walk_in={},
        walk_in_error=None,
    )
    return render(request, settings, "staff_day.html", context)


@router.get("/grid")
async def day_grid(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    day: Annotated[str | None, Query(alias="date", max_length=10)] = None,
) -> Response:
    """The grid alone, for the page's polling: it changes when a booking arrives from anywhere."""
    if current_staff(request, settings) is None:
        return HTMLResponse("", 401)
    context = await _grid_context(request, db, settings, _day(day, settings))
    token, _ = csrf_token(request, settings)  # the page has set the cookie already
    html = env.get_template("_grid.html").render(csrf_field=CSRF_FIELD, csrf_token=token, **context)
    return HTMLResponse(html)


# --- actions -----------------------------------------------------------------------------------

# A form field that is not what it should be (not a number, not a time): as the API's 422.
_INVALID = page_key(InvalidRequest())


async def staff_action(
    request: Request, settings: Settings
) -> tuple[StaffUser | None, FormData, date]:
    """A staff action's posted form and the day it came from (its `date` field). The user is
    None without a session or a valid CSRF token: answer `refused`."""
    form = await request.form()
    day = _day(form_text(form, "date"), settings)
    user = current_staff(request, settings)
    if user is None or not has_valid_csrf(request, settings, form):
        return None, form, day
    return user, form, day


@router.post("/bookings/{booking_id}/cancel")
async def cancel_booking(
    booking_id: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    settings: SettingsDep,
) -> Response:
    user, _, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    try:
        await bookings.cancel(db, reservations, settings, booking_id[:64])
    except DomainError as exc:
        return back_to_day(day, error=page_key(exc))
    return back_to_day(day, done="cancelled")


@router.post("/walk-in")
async def walk_in(
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    user, form, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    body: dict[str, Any] = {
        "customer": _walk_in_customer(form, settings),
        "vehicle": {
            "registration": form_text(form, "registration"),
            "make": form_text(form, "make") or None,
            "model": form_text(form, "model") or None,
        },
        "notes": f"Walk-in, booked by {user.name}",
    }
    typed = {name: form_text(form, name) for name in _WALK_IN_FIELDS}
    try:
        body["slot_id"] = int(form_text(form, "slot_id"))
        body["service_id"] = int(form_text(form, "service_id"))
        request_in = BookingIn.model_validate(body)
    except (ValueError, ValidationError):
        return await _walk_in_again(
            request, db, settings, user, day, typed, page_message(InvalidRequest())
        )
    # A read, only to say why in staff's words; the booking path below still decides (a time
    # taken meanwhile is its 409, with what was typed kept as well).
    why = None
    async with db.read() as conn:
        fits = await _walk_in_fits(conn, day, settings.timezone, utcnow(), [request_in.service_id])
        if request_in.slot_id is not None and request_in.slot_id not in fits:
            why = await _why_no_fit(
                conn, settings, request_in.slot_id, request_in.service_id, utcnow()
            )
    if why is not None:
        return await _walk_in_again(request, db, settings, user, day, typed, why)
    try:
        await bookings.book(db, reservations, plans, settings, request_in, None, staff=True)
    except DomainError as exc:
        message = page_message(exc)
        return await _walk_in_again(request, db, settings, user, day, typed, message, 409)
    return back_to_day(day, done="walk_in")


_WALK_IN_FIELDS = ("slot_id", "service_id", "name", "registration", "email", "phone")


def _walk_in_customer(form: FormData, settings: Settings) -> dict[str, Any]:
    """The customer a walk-in form names: the garage's own address when they give none."""
    return {
        "name": form_text(form, "name"),
        "email": form_text(form, "email") or settings.walk_in_email,
        "phone": form_text(form, "phone") or None,
    }


@router.post("/walk-in-drop-off")
async def walk_in_drop_off(
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """A car brought in to be left for the day shown: a drop-off booked by staff (no notice,
    until collection) through the same booking path, the technician picked as for any."""
    user, form, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    try:
        request_in = BookingIn.model_validate(
            {
                "service_id": int(form_text(form, "service_id")),
                "day": day.isoformat(),
                "customer": _walk_in_customer(form, settings),
                "vehicle": {"registration": form_text(form, "registration")},
                "notes": f"Walk-in, left for the day, booked by {user.name}",
            }
        )
    except (ValueError, ValidationError):
        return back_to_day(day, error=_INVALID)
    try:
        await bookings.book(db, reservations, plans, settings, request_in, None, staff=True)
    except DomainError as exc:
        return back_to_day(day, error=page_key(exc))
    return back_to_day(day, done="walk_in_drop_off")


async def _walk_in_again(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    user: StaffUser,
    day: date,
    typed: dict[str, str],
    message: str,
    status_code: int = 422,
) -> Response:
    """The day again with the walk-in form as it was typed, and what was wrong with it: a
    redirect would lose the name and registration."""
    context = await _grid_context(request, db, settings, day)
    context.update(
        user=user,
        flash=None,
        error=None,
        walk_in_error=message,
        walk_in=typed,
        refresh_ms=REFRESH_MS,
    )
    return render(request, settings, "staff_day.html", context, status_code)


@router.post("/slots/{slot_id}/close")
async def close_slot(
    slot_id: int,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    settings: SettingsDep,
) -> Response:
    user, _, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    if not 1 <= slot_id <= DB_INT_MAX:
        return back_to_day(day, error=_INVALID)
    try:
        await closures.close_slot(db, reservations, settings, slot_id, by=user.name)
    except DomainError as exc:  # booked or held by anyone: "taken"
        return back_to_day(day, error=page_key(exc))
    return back_to_day(day, done="closed")


@router.post("/closures/{closure_id}/reopen")
async def reopen_closure(
    closure_id: int,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    settings: SettingsDep,
) -> Response:
    user, _, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    if not 1 <= closure_id <= DB_INT_MAX:
        return back_to_day(day, error=_INVALID)
    try:
        await closures.reopen(db, reservations, settings, closure_id, by=user.name)
    except DomainError as exc:
        return back_to_day(day, error=page_key(exc))
    return back_to_day(day, done="reopened")


@router.post("/slots")
async def open_slot(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    """An extra slot on a bay: `create_slot`, as `POST /api/admin/slots` does."""
    user, form, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    try:
        bay_id = int(form_text(form, "bay_id"))
        starts = time.fromisoformat(form_text(form, "starts"))
        minutes = int(form_text(form, "minutes") or "60")
        if not 15 <= minutes <= 12 * 60:
            raise ValueError("length out of range")
    except ValueError:
        return back_to_day(day, error=_INVALID)
    starts_at = datetime.combine(day, starts, settings.timezone)
    try:
        async with db.transaction() as conn:
            if await conn.scalar(select(bays.c.id).where(bays.c.id == bay_id)) is None:
                return back_to_day(day, error=page_key(BayNotFound(bay_id=bay_id)))
            await create_slot(
                conn, bay_id, starts_at, starts_at + timedelta(minutes=minutes), settings.timezone
            )
    except DomainError as exc:
        return back_to_day(day, error=page_key(exc))
    return back_to_day(day, done="opened")


# --- moving a booking --------------------------------------------------------------------------


@router.get("/bookings/{booking_id}/move")
async def move_page(
    booking_id: str,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    day: Annotated[str | None, Query(alias="date", max_length=10)] = None,
) -> Response:
    """The free start times (every bay) where the booking's service fits, from the day shown
    for MOVE_DAYS days; the booking's own slots count as free for it."""
    user = current_staff(request, settings)
    if user is None:
        return RedirectResponse("/staff/login", 303)
    zone = settings.timezone
    now = utcnow()
    back_day = _day(day, settings)
    first = max(back_day, now.astimezone(zone).date())
    try:
        async with db.read() as conn:
            booking = await bookings.get_booking(conn, settings, booking_id[:64])
            service_name = await conn.scalar(
                select(services.c.name).where(services.c.id == booking["service_id"])
            )
            bay_rows = (await conn.execute(select(bays.c.id, bays.c.name))).all()
            start, _ = local_day_bounds(first, zone)
            _, end = local_day_bounds(first + timedelta(days=MOVE_DAYS - 1), zone)
            listed = await list_slots(
                conn,
                start=start,
                end=end,
                now=now,
                zone=zone,
                service_id=booking["service_id"],
                own_slots=booking["slot_ids"],
                own_booking=booking["id"],
                online=False,
            )
    except BookingNotFound as exc:
        return back_to_day(back_day, error=page_key(exc))
    if booking["status"] != "confirmed":
        return back_to_day(back_day, error=page_key(closed_because(booking["status"])))
    bay_names = {b.id: b.name for b in bay_rows}
    current = datetime.fromisoformat(booking["starts_at"])
    options: dict[date, list[tuple[int, str]]] = {}
    for a in listed:
        if not a.available or a.slot.id == booking["slot_id"]:
            continue
        local = a.slot.starts_at.astimezone(zone)
        text = f"{local:%H:%M} · {bay_names.get(a.slot.bay_id, '')}"
        options.setdefault(local.date(), []).append((a.slot.id, text))
    context = {
        "user": user,
        "booking": booking,
        "service_name": service_name or "",
        "bay_name": bay_names.get(booking["bay_id"], ""),
        "current_label": f"{current:%A} {current.day} {current:%B %Y}, {current:%H:%M}",
        "options": [(f"{d:%A} {d.day} {d:%B}", choices) for d, choices in options.items()],
        "first_label": f"{first:%A} {first.day} {first:%B}",
        "move_days": MOVE_DAYS,
        "back_day": back_day.isoformat(),
    }
    return render(request, settings, "staff_move.html", context)


@router.post("/bookings/{booking_id}/move")
async def move_booking(
    booking_id: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """`reschedule()`, as the API's: a taken time leaves the booking where it was."""
    user, form, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    try:
        slot_id = int(form_text(form, "slot_id"))
    except ValueError:
        return back_to_day(day, error=_INVALID)
    try:
        moved = await reschedule(
            db, reservations, plans, settings, booking_id[:64], slot_id, online=False
        )
    except DomainError as exc:
        return back_to_day(day, error=page_key(exc))
    # The day the booking is on now, where staff look next.
    return back_to_day(datetime.fromisoformat(moved["starts_at"]).date(), done="moved")
