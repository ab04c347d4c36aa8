"""The booking's own page at `/manage/{cancel_token}` with its calendar entry, "Move to another
time" and the cancel link; a drop-off shows its day, when to bring the car and when to collect
it, and "Change the day" (the days with room, until its window opens; then: call the garage).
The address is the cancel token or a signed link from a mail (`manage_booking_id`); the
page's MOT form posts to `web.vehicles`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import RedirectResponse, Response

from garagebook.bookings import service as bookings
from garagebook.bookings.reschedule import move_drop_off, reschedule
from garagebook.calendar import booking_ics, ics_filename
from garagebook.config import Settings
from garagebook.deps import DatabaseDep, PlansDep, ReservationsDep, SettingsDep
from garagebook.errors import (
    BookingClosed,
    BookingNotFound,
    DomainError,
    ServiceNotFound,
    SlotInPast,
    SlotNotFound,
    SlotUnavailable,
    page_message,
)
from garagebook.garage.apply import current_document
from garagebook.manage_links import booking_id_of as signed_booking_id
from garagebook.manage_links import is_signed_link
from garagebook.schema import bays, services
from garagebook.schema import bookings as bookings_table
from garagebook.technicians.drop_offs import window
from garagebook.timeutil import utcnow
from garagebook.web.choices import (
    Day,
    DropOffDay,
    Time,
    day_choices,
    day_label,
    drop_off_choices,
    iso_day,
    times_of,
)
from garagebook.web.forms import checked_form, form_int, form_text
from garagebook.web.pages import error_page, local_time, long_date, render

router = APIRouter(include_in_schema=False)

_TOKEN_MAX = 128


async def manage_booking_id(conn: AsyncConnection, settings: Settings, token: str) -> str:
    """The booking behind a manage page address: the cancel token (the confirmation page's,
    stored hashed) or a signed link from a mail (`garagebook.manage_links`). Either opens the
    same page, with the same powers; a forged, altered or expired link is not found."""
    if len(token) > _TOKEN_MAX:
        raise BookingNotFound()
    if is_signed_link(token):
        booking_id = signed_booking_id(settings, token)
        if booking_id is None:
            raise BookingNotFound()
        return booking_id
    return await bookings.booking_id_for_cancel_token(conn, token)


async def _booking_by_token(db: DatabaseDep, settings: Settings, token: str) -> dict[str, Any]:
    async with db.read() as conn:
        booking_id = await manage_booking_id(conn, settings, token)
        booking = await bookings.get_booking(conn, settings, booking_id)
        service = (
            await conn.execute(
                select(services.c.name, services.c.price_pence).where(
                    services.c.id == booking["service_id"]
                )
            )
        ).first()
        bay_name = await conn.scalar(select(bays.c.name).where(bays.c.id == booking["bay_id"]))
        sequence = await conn.scalar(
            select(bookings_table.c.sequence).where(bookings_table.c.id == booking_id)
        )
        booking["drop_off_until"] = None
        if booking["slot_id"] is None:  # a drop-off: its window closes as the setup says now
            document = await current_document(conn)
            if document.drop_off is not None:
                day = datetime.fromisoformat(booking["starts_at"]).date()
                booking["drop_off_until"] = window(document, day).drop_off_until
    booking["service_name"] = service.name if service else ""
    booking["price_pence"] = service.price_pence if service else 0
    booking["bay_name"] = bay_name or ""
    booking["sequence"] = sequence or 0
    return booking


def _view(booking: dict[str, Any], settings: Settings) -> dict[str, Any]:
    zone = settings.timezone
    starts = datetime.fromisoformat(booking["starts_at"])
    ends = datetime.fromisoformat(booking["ends_at"])
    view: dict[str, Any] = {
        "booking": booking,
        "date_label": long_date(starts, zone),
        "time_label": f"{local_time(starts, zone)}–{local_time(ends, zone)}",
        "drop_off": None,
    }
    if booking["slot_id"] is None:  # a drop-off: starts_at opens its window, ends_at collects
        until = booking["drop_off_until"]
        view["drop_off"] = {
            "bring": local_time(starts, zone)
            + (f"–{local_time(until, zone)}" if until is not None else ""),
            "collect": local_time(ends, zone),
        }
        view["time_label"] = (
            f"drop off from {local_time(starts, zone)}, collect from {local_time(ends, zone)}"
        )
    return view


def not_found_page(request: Request, settings: Settings) -> Response:
    return render(
        request,
        settings,
        "message.html",
        {
            "title": "Booking not found",
            "message": "This link does not match a booking. Check that you copied all of it.",
        },
        404,
    )


async def _manage(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    token: str,
    booking: dict[str, Any],
    move_day: date | None,
    message: str | None = None,
    status_code: int = 200,
) -> Response:
    """The booking's page, with "Move to another time": the next days where its service fits
    (its own current slots count as free for it) and, for `move_day`, the free start times."""
    now = utcnow()
    starts = datetime.fromisoformat(booking["starts_at"])
    confirmed = booking["status"] == "confirmed" and starts > now
    movable = confirmed and booking["slot_id"] is not None
    days: list[Day] = []
    times: list[Time] = []
    other_days: list[DropOffDay] = []
    if confirmed and booking["slot_id"] is None:  # a drop-off: the other days with room
        async with db.read() as conn:
            offered = await drop_off_choices(conn, settings, booking["service_id"], now)
        other_days = [d for d in offered if d.day != starts.astimezone(settings.timezone).date()]
    if movable:
        async with db.read() as conn:
            days, listed = await day_choices(
                conn,
                settings,
                booking["service_id"],
                now,
                booking["slot_ids"],
                starts,
                own_booking=booking["id"],
            )
        if move_day is not None and any(d.day == move_day for d in days):
            times = times_of(listed.get(move_day, []), settings)
        else:
            move_day = None
    context = {
        **_view(booking, settings),
        "token": token,
        "movable": movable,
        "day_movable": confirmed and booking["slot_id"] is None,
        "other_days": other_days,
        "move_days": days,
        "move_day": move_day,
        "move_day_label": day_label(move_day, settings) if move_day else "",
        "move_times": times,
        "moved": request.query_params.get("moved") == "1",
        "move_error": message,
    }
    return render(request, settings, "manage.html", context, status_code)


@router.get("/manage/{token}")
async def manage_page(
    token: str,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    day: str | None = None,
) -> Response:
    """The confirmation page, and later the customer's way back to their booking: move it
    (`?day=` lists that day's free times, without JavaScript too) or cancel it."""
    try:
        booking = await _booking_by_token(db, settings, token)
    except BookingNotFound:
        return not_found_page(request, settings)
    return await _manage(request, db, settings, token, booking, iso_day(day))


@router.post("/manage/{token}/reschedule")
async def reschedule_booking(
    token: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    plans: PlansDep,
    settings: SettingsDep,
) -> Response:
    """The move form's post: `bookings.reschedule`, as `POST /api/manage/{token}/reschedule`.
    A taken time leaves the booking where it was, and the page says so."""
    form = await checked_form(request, settings, "booking")
    if isinstance(form, Response):
        return form
    try:
        booking = await _booking_by_token(db, settings, token)
    except BookingNotFound:
        return not_found_page(request, settings)
    move_day = iso_day(form_text(form, "day"))
    if booking["slot_id"] is None:  # a drop-off moves to another day
        return await _move_drop_off(request, db, settings, token, booking, move_day)
    try:
        slot_id = form_int(form, "slot_id")
    except ValueError:
        return await _manage(
            request, db, settings, token, booking, move_day, "Pick a new time first.", 422
        )
    try:
        await reschedule(db, reservations, plans, settings, booking["id"], slot_id)
    except (SlotUnavailable, SlotNotFound, ServiceNotFound):
        message = (
            "Sorry, that time has just been taken by someone else. Your booking has not "
            "changed. Pick another time below."
        )
        return await _manage(request, db, settings, token, booking, move_day, message, 409)
    except SlotInPast as exc:
        message = page_message(exc)
        return await _manage(request, db, settings, token, booking, move_day, message, 409)
    except (BookingNotFound, BookingClosed):
        return RedirectResponse(f"/manage/{token}", 303)  # the page shows what it is now
    except DomainError as exc:
        return error_page(request, settings, "Not moved", exc)
    return RedirectResponse(f"/manage/{token}?moved=1", 303)


async def _move_drop_off(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    token: str,
    booking: dict[str, Any],
    day: date | None,
) -> Response:
    """The "Change the day" form's post: `move_drop_off`, as the API's. A day that filled up
    meanwhile leaves the booking where it was, and the page says so."""
    if day is None:
        message = "Pick a new day first."
        return await _manage(request, db, settings, token, booking, None, message, 422)
    try:
        await move_drop_off(db, settings, booking["id"], day)
    except SlotUnavailable as exc:  # its own words: the day filled up, or its window opened
        message = f"Sorry: {exc.message} Your booking has not changed."
        return await _manage(request, db, settings, token, booking, None, message, 409)
    except (BookingNotFound, BookingClosed):
        return RedirectResponse(f"/manage/{token}", 303)  # the page shows what it is now
    except DomainError as exc:
        return error_page(request, settings, "Not moved", exc)
    return RedirectResponse(f"/manage/{token}?moved=1", 303)


@router.get("/manage/{token}/calendar.ics")
async def calendar_file(token: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    try:
        booking = await _booking_by_token(db, settings, token)
    except BookingNotFound:
        return Response("No such booking.\n", 404, media_type="text/plain")
    body = booking_ics(
        settings,
        reference=booking["reference"],
        service=booking["service_name"],
        bay=booking["bay_name"],
        starts_at=datetime.fromisoformat(booking["starts_at"]),
        ends_at=datetime.fromisoformat(booking["ends_at"]),
        status=booking["status"],
        sequence=booking["sequence"],
        registration=booking["vehicle"]["registration"],
        manage_url=f"{settings.public_url}/manage/{token}",
    )
    filename = ics_filename(booking["reference"])
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/manage/{token}/cancel")
async def cancel_page(
    token: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """Asks first: a cancel link opened by a mail scanner must not cancel anything."""
    try:
        booking = await _booking_by_token(db, settings, token)
    except BookingNotFound:
        return not_found_page(request, settings)
    return render(request, settings, "cancel.html", {**_view(booking, settings), "token": token})


@router.post("/manage/{token}/cancel")
async def cancel_booking(
    token: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    settings: SettingsDep,
) -> Response:
    form = await checked_form(request, settings, "cancel")
    if isinstance(form, Response):
        return form
    try:
        booking = await _booking_by_token(db, settings, token)
        await bookings.cancel(db, reservations, settings, booking["id"])
    except BookingNotFound:
        return not_found_page(request, settings)
    except BookingClosed:
        pass  # the page shows it is cancelled (or done)
    except DomainError as exc:
        return error_page(request, settings, "Not cancelled", exc)
    return RedirectResponse(f"/manage/{token}", 303)
