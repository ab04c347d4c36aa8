"""Technicians on the staff pages (issue 15): the reassign form of the day view's flagged
bookings and drop-offs (web/technician_day.py loads them), the drop-offs' move to another day,
and the absences page `/staff/absences`.

Reassigning, moving and absences go through the same functions as the admin API
(technicians/reassign.py, bookings/reschedule.py, technicians/absences.py), so a page can
never book a technician twice either. A garage that lists no technicians gets none of this
on its day view.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from garagebook.bookings.reschedule import move_drop_off
from garagebook.deps import DatabaseDep, ReservationsDep, SettingsDep
from garagebook.errors import DomainError, InvalidRequest, page_key, page_message_for_key
from garagebook.fields import DB_INT_MAX
from garagebook.schema import bookings, services, technicians
from garagebook.technicians.absences import enter_absence, list_absences, withdraw_absence
from garagebook.technicians.reassign import reassign
from garagebook.technicians.routes import check_range
from garagebook.timeutil import utcnow
from garagebook.web.auth import current_staff
from garagebook.web.choices import iso_day
from garagebook.web.forms import form_text
from garagebook.web.pages import render
from garagebook.web.staff import back_to_day, refused, staff_action

router = APIRouter(prefix="/staff", include_in_schema=False)

ABSENCE_DAYS = 60  # the absences page lists from today this far ahead
WITHDRAWN = "Absence withdrawn: they work those days again."


@router.post("/bookings/{booking_id}/reassign")
async def reassign_booking(
    booking_id: str,
    request: Request,
    db: DatabaseDep,
    reservations: ReservationsDep,
    settings: SettingsDep,
) -> Response:
    """The day view's reassign form: a technician and/or a bay, then back to the day; the
    drop-offs' forms are the same: a technician, or a bay and a time (`starts_at`)."""
    user, form, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    try:
        technician_id = _optional_id(form_text(form, "technician_id"))
        bay_id = _optional_id(form_text(form, "bay_id"))
        starts_at = _optional_time(form_text(form, "starts_at"))
        moved = await reassign(
            db,
            reservations,
            settings,
            booking_id[:32],
            technician_id=technician_id,
            bay_id=bay_id,
            starts_at=starts_at,
        )
    except DomainError as exc:
        return back_to_day(day, error=page_key(exc))
    if starts_at is not None:
        return back_to_day(day, done="placed_on_bay")
    return back_to_day(day, done="placed" if moved["slot_id"] is None else "reassigned")


@router.post("/bookings/{booking_id}/move-day")
async def move_drop_off_day(
    booking_id: str, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    """The drop-offs' "Move to" form: `move_drop_off` as staff (until collection, no notice),
    then the day it is on now; refused, back to the day it stays on, saying why."""
    user, form, day = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    new_day = iso_day(form_text(form, "day"))
    try:
        if new_day is None:
            raise InvalidRequest("Pick the day to move it to.")
        await move_drop_off(db, settings, booking_id[:32], new_day, online=False)
    except DomainError as exc:
        return back_to_day(day, error=page_key(exc))
    return back_to_day(new_day, done="moved_day")


@router.get("/absences")
async def absences_page(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    user = current_staff(request, settings)
    if user is None:
        return RedirectResponse("/staff/login", 303)
    return await _absences_page(request, db, settings, user)


async def _absences_page(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    user: Any,
    flagged: list[dict[str, Any]] | None = None,
    entered: Any = None,
    status_code: int = 200,
) -> Response:
    zone = settings.timezone
    today = utcnow().astimezone(zone).date()
    async with db.read() as conn:
        people = (await conn.execute(select(technicians).order_by(technicians.c.name))).all()
        listed = await list_absences(conn, today, today + timedelta(days=ABSENCE_DAYS))
    names = {p.id: p.name for p in people}
    error = request.query_params.get("error")
    done = request.query_params.get("done")
    return render(
        request,
        settings,
        "staff_absences.html",
        {
            "user": user,
            "technicians": [p for p in people if p.active],
            "absences": listed,
            "names": names,
            "today": today.isoformat(),
            "flagged": flagged,
            "entered": entered,
            "error": page_message_for_key(error[:20]) if error else None,
            "flash": "Absence withdrawn: they work those days again."
            if done == "withdrawn"
            else None,
        },
        status_code,
    )


@router.post("/absences")
async def enter_absence_page(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Enter an absence, then show the bookings it flagged, each linked to its day."""
    user, form, _ = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    zone = settings.timezone
    try:
        technician_id = _optional_id(form_text(form, "technician_id"))
        first = _form_day(form_text(form, "first_day"))
        last = _form_day(form_text(form, "last_day") or form_text(form, "first_day"))
        if technician_id is None:
            raise InvalidRequest("Pick a technician.")
        check_range(first, last, zone)
        async with db.transaction() as conn:
            entered = await enter_absence(
                conn,
                technician_id,
                first,
                last,
                form_text(form, "reason")[:200] or None,
                user.name,
                utcnow(),
                zone=zone,
            )
            flagged = []
            for booking_id in entered.flagged:
                row = (
                    await conn.execute(
                        select(
                            bookings.c.id,
                            bookings.c.reference,
                            bookings.c.starts_at,
                            bookings.c.ends_at,
                            bookings.c.vehicle_registration,
                            services.c.name.label("service"),
                        )
                        .join(services, services.c.id == bookings.c.service_id)
                        .where(bookings.c.id == booking_id)
                    )
                ).one()
                local = row.starts_at.astimezone(zone)
                flagged.append(
                    {
                        "reference": row.reference,
                        "when": f"{local:%a %d %b} {local:%H:%M}–"
                        f"{row.ends_at.astimezone(zone):%H:%M}",
                        "service": row.service,
                        "registration": row.vehicle_registration,
                        "day": local.date().isoformat(),
                    }
                )
    except DomainError as exc:
        return RedirectResponse(f"/staff/absences?{urlencode({'error': page_key(exc)})}", 303)
    return await _absences_page(request, db, settings, user, flagged, entered.absence, 201)


@router.post("/absences/{absence_id}/withdraw")
async def withdraw_absence_page(
    absence_id: int, request: Request, db: DatabaseDep, settings: SettingsDep
) -> Response:
    user, _, _ = await staff_action(request, settings)
    if user is None:
        return refused(request, settings)
    try:
        if not 1 <= absence_id <= DB_INT_MAX:
            raise InvalidRequest()
        async with db.transaction() as conn:
            await withdraw_absence(conn, absence_id, utcnow(), zone=settings.timezone)
    except DomainError as exc:
        return RedirectResponse(f"/staff/absences?{urlencode({'error': page_key(exc)})}", 303)
    return RedirectResponse("/staff/absences?done=withdrawn", 303)


def _optional_id(value: str) -> int | None:
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= DB_INT_MAX:
        raise InvalidRequest()
    return int(value)


def _optional_time(value: str) -> datetime | None:
    """The drop-offs' "On a bay" time: an ISO instant with its offset, as the form lists them."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest("Give the time as the form lists it.") from None
    if moment.tzinfo is None:
        raise InvalidRequest("Give the time as the form lists it.")
    return moment


def _form_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest("Give the days as dates.") from None
