"""The customer's pages: choose a service, a day and a time at `/`; the booking's own page at
`/manage/{cancel_token}` with its calendar entry, "Move to another time" and the cancel link.

With JavaScript, `static/book.js` holds a time and books through the JSON API (`/api/holds`,
`/api/bookings`), with a live countdown. Without it, the same buttons post to `/book/hold` and
`/book`, which call the same functions (`create_hold`, `book`): the page works either way."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import RedirectResponse, Response

from garagebook.bookings import service as bookings
from garagebook.bookings.holds import create_hold
from garagebook.bookings.reschedule import reschedule
from garagebook.bookings.schemas import IDEMPOTENCY_KEY, BookingIn, normalise_registration
from garagebook.calendar import booking_ics, ics_filename
from garagebook.config import Settings
from garagebook.deps import DatabaseDep, PlansDep, ReservationsDep, SettingsDep
from garagebook.errors import (
    BookingClosed,
    BookingLimitReached,
    BookingNotFound,
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
from garagebook.manage_links import booking_id_of as signed_booking_id
from garagebook.manage_links import is_signed_link
from garagebook.schema import bays, booking_slots, services, slots
from garagebook.schema import bookings as bookings_table
from garagebook.slots.service import list_slots, local_day_bounds
from garagebook.timeutil import utcnow
from garagebook.web.day import CLOSED_NAME
from garagebook.web.forms import checked_form, form_int, form_text
from garagebook.web.pages import error_page, local_time, long_date, render

router = APIRouter(include_in_schema=False)

BOOKING_DAYS = 14
_TOKEN_MAX = 128


@dataclass(frozen=True)
class Day:
    day: date
    label: str
    bookable: bool
    full: bool = False  # the garage is open that day but every time is taken: waitlist
    why: str = ""  # shown on a day that cannot be picked: "Closed", "Full", "No times left"


@dataclass(frozen=True)
class Time:
    slot_id: int
    label: str
    starts_at: str


def _positive_int(value: str | None) -> int | None:
    """A query value from a link someone may have mangled: an id, or None."""
    if value is None or not value.isdigit() or len(value) > 10:
        return None
    number = int(value)
    return number if 1 <= number <= 2**31 - 1 else None


def _iso_day(value: str | None) -> date | None:
    if not value or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


async def _day_choices(
    conn: AsyncConnection,
    settings: Settings,
    service_id: int,
    now: datetime,
    own_slots: list[int] | None = None,
    current_start: datetime | None = None,
) -> tuple[list[Day], list[Any]]:
    """The next BOOKING_DAYS days for a service, each bookable or not, and the listed slots.
    When moving a booking, its own slots count as free and its current start is no choice."""
    zone = settings.timezone
    today = now.astimezone(zone).date()
    start, _ = local_day_bounds(today, zone)
    _, end = local_day_bounds(today + timedelta(days=BOOKING_DAYS - 1), zone)
    listed = await list_slots(
        conn,
        start=start,
        end=end,
        now=now,
        zone=zone,
        service_id=service_id,
        own_slots=own_slots or (),
    )
    listed = [a for a in listed if a.slot.starts_at != current_start]
    closed_slots = await _closed_by_staff(conn, settings, start, end)
    open_days = {a.slot.starts_at.astimezone(zone).date() for a in listed if a.available}
    future: set[date] = set()  # days with a future time the garage has not closed
    for a in listed:
        if a.slot.starts_at > now and a.slot.id not in closed_slots:
            future.add(a.slot.starts_at.astimezone(zone).date())
    any_slots = {a.slot.starts_at.astimezone(zone).date() for a in listed}
    days = []
    for offset in range(BOOKING_DAYS):
        d = today + timedelta(days=offset)
        label = f"{d:%a} {d.day} {d:%b}"
        if d in open_days:
            days.append(Day(d, label, True))
        elif d in future:  # open, with times, none free for this service: full
            days.append(Day(d, label, False, full=True, why="Full"))
        elif d == today and d in any_slots:
            days.append(Day(d, label, False, why="No times left"))
        else:  # no opening hours that day, or every time closed by staff
            days.append(Day(d, label, False, why="Closed"))
    return days, listed


async def _closed_by_staff(
    conn: AsyncConnection, settings: Settings, start: datetime, end: datetime
) -> set[int]:
    """Slots staff closed (a booking for the garage itself, see `web.staff`): a day with
    nothing else is closed, not full, and has no waitlist."""
    rows = await conn.execute(
        select(booking_slots.c.slot_id)
        .join(bookings_table, bookings_table.c.id == booking_slots.c.booking_id)
        .join(slots, slots.c.id == booking_slots.c.slot_id)
        .where(
            booking_slots.c.active,
            bookings_table.c.customer_name == CLOSED_NAME,
            bookings_table.c.customer_email == settings.closed_slot_email,
            slots.c.starts_at >= start,
            slots.c.starts_at < end,
        )
    )
    return set(rows.scalars())


def _day_label(day: date, settings: Settings) -> str:
    return long_date(
        datetime.combine(day, datetime.min.time(), settings.timezone), settings.timezone
    )


@router.get("/")
async def booking_page(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    service: str | None = None,
    date_value: Annotated[str | None, Query(alias="date")] = None,
    day_value: Annotated[str | None, Query(alias="day")] = None,
    slot: str | None = None,
    taken: str | None = None,
) -> Response:
    """Service → day → time. Links and forms that work without JavaScript (the time buttons
    post to `/book/hold`); `book.js` turns the same buttons into a hold with a countdown.

    Deep links (a reminder mail's): `?service=ID&slot=ID` opens the slot's day with that time
    marked, so one click holds it; `?service=ID&day=YYYY-MM-DD` opens that day. Anything
    unknown or malformed is ignored: the page falls back to what it can show."""
    now = utcnow()
    service_id = _positive_int(service)
    day = _iso_day(day_value) or _iso_day(date_value)
    slot_id = _positive_int(slot)
    async with db.read() as conn:
        service_rows = (await conn.execute(select(services).order_by(services.c.id))).all()
        chosen = next((s for s in service_rows if s.id == service_id), None)
        days: list[Day] = []
        times: list[Time] = []
        if chosen is not None:
            if slot_id is not None:
                slot_start = await conn.scalar(
                    select(slots.c.starts_at).where(slots.c.id == slot_id)
                )
                if slot_start is None:
                    slot_id = None
                else:
                    day = slot_start.astimezone(settings.timezone).date()
            days, listed = await _day_choices(conn, settings, chosen.id, now)
            if day is not None and any(d.day == day for d in days):
                times = _times_of(listed, day, settings, prefer=slot_id)
            else:
                day = None
    suggested = next((t for t in times if t.slot_id == slot_id), None)
    context: dict[str, Any] = {
        "services": service_rows,
        "chosen": chosen,
        "days": days,
        "day": day,
        "day_label": _day_label(day, settings) if day else "",
        "times": times,
        "suggested": suggested,
        "link_taken": slot_id is not None and day is not None and suggested is None,
        "hold_ttl_seconds": settings.hold_ttl_seconds,
        "taken": taken == "true",
        "values": {},
        "errors": {},
    }
    return render(request, settings, "book.html", context)


def _times_of(
    listed: list[Any], day: date, settings: Settings, prefer: int | None = None
) -> list[Time]:
    """One button per start time: the first bay free then (customers do not choose bays),
    or the `prefer`red slot when it is free (the one a deep link named)."""
    zone = settings.timezone
    seen: dict[datetime, Time] = {}
    for a in listed:
        local = a.slot.starts_at.astimezone(zone)
        if not a.available or local.date() != day:
            continue
        if a.slot.starts_at not in seen or a.slot.id == prefer:
            seen[a.slot.starts_at] = Time(a.slot.id, local.strftime("%H:%M"), local.isoformat())
    return [seen[k] for k in sorted(seen)]


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
    booking["service_name"] = service.name if service else ""
    booking["price_pence"] = service.price_pence if service else 0
    booking["bay_name"] = bay_name or ""
    booking["sequence"] = sequence or 0
    return booking


def _view(booking: dict[str, Any], settings: Settings) -> dict[str, Any]:
    zone = settings.timezone
    starts = datetime.fromisoformat(booking["starts_at"])
    ends = datetime.fromisoformat(booking["ends_at"])
    return {
        "booking": booking,
        "date_label": long_date(starts, zone),
        "time_label": f"{local_time(starts, zone)}–{local_time(ends, zone)}",
    }


def _not_found(request: Request, settings: Settings) -> Response:
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
    movable = booking["status"] == "confirmed" and starts > now
    days: list[Day] = []
    times: list[Time] = []
    if movable:
        async with db.read() as conn:
            days, listed = await _day_choices(
                conn, settings, booking["service_id"], now, booking["slot_ids"], starts
            )
        if move_day is not None and any(d.day == move_day for d in days):
            times = _times_of(listed, move_day, settings)
        else:
            move_day = None
    context = {
        **_view(booking, settings),
        "token": token,
        "movable": movable,
        "move_days": days,
        "move_day": move_day,
        "move_day_label": _day_label(move_day, settings) if move_day else "",
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
        return _not_found(request, settings)
    return await _manage(request, db, settings, token, booking, _iso_day(day))


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
        return _not_found(request, settings)
    move_day = _iso_day(form_text(form, "day"))
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
        return _not_found(request, settings)
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
        return _not_found(request, settings)
    except BookingClosed:
        pass  # the page shows it is cancelled (or done)
    except DomainError as exc:
        return error_page(request, settings, "Not cancelled", exc)
    return RedirectResponse(f"/manage/{token}", 303)


# --- the same journey without JavaScript ------------------------------------------------------

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
    plan = await plans.get(db, slot_id, service_id)
    async with db.read() as conn:
        service = (await conn.execute(select(services).where(services.c.id == service_id))).first()
    local = plan.start.starts_at.astimezone(zone)
    context = {
        "held": bool(form_values.get("hold_token")),
        "service": service,
        "service_name": service.name if service else "",
        "when": f"{long_date(local, zone)} at {local:%H:%M}",
        "back": f"/?service={service_id}&date={local.date().isoformat()}",
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
    try:
        slot_id, service_id = form_int(form, "slot_id"), form_int(form, "service_id")
    except ValueError:
        return RedirectResponse("/", 303)
    values = {name: form_text(form, name) for name in _FIELD_OF.values()}
    values["registration"] = normalise_registration(values["registration"])
    hold_token = form_text(form, "hold_token") or None
    page_values: dict[str, Any] = {
        "slot_id": slot_id,
        "service_id": service_id,
        "hold_token": hold_token or "",
        "until": form_text(form, "held_until")[:5],
        "values": values,
    }
    key = form_text(form, "idempotency_key")
    try:
        request_in = BookingIn.model_validate(
            {
                "slot_id": slot_id,
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
        # The server's own rules beyond the form's: the garage's placeholder names and
        # addresses, the caps on live bookings; or this form was sent before, and that booking
        # is cancelled. The hold is kept: the customer may change a field.
        errors = {
            _FIELD_OF[path]: str(f["problem"])
            for f in exc.data.get("fields", [])
            if (path := tuple(str(f["field"]).split("."))) in _FIELD_OF
        }
        page_values.update(errors=errors, message=exc.message)
        return await _details_page(request, db, plans, settings, page_values, http_status(exc))
    except (SlotUnavailable, SlotInPast) as exc:
        message = (
            "Sorry, that time is no longer available: someone else booked it, or your hold ran "
            "out and the time was taken. Your details are still below."
            if isinstance(exc, SlotUnavailable)
            else page_message(exc)
        )
        page_values.update(hold_token="", message=message)
        return await _details_page(request, db, plans, settings, page_values, 409)
    except DomainError as exc:
        return error_page(request, settings, "Not booked", exc)
    booking = orjson.loads(result.body)
    return RedirectResponse(
        f"/manage/{booking['cancel_token']}", 303, headers={"Cache-Control": "no-store"}
    )
