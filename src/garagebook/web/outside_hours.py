"""`/staff/outside-hours`: future bookings a setup change left outside the hours (or on a
closed day, or a retired bay). They stay confirmed; staff keep them or move them with the
existing move. The day view flags the same bookings and links here."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from garagebook.deps import DatabaseDep, SettingsDep
from garagebook.garage.calendar import outside_hours
from garagebook.schema import bookings
from garagebook.timeutil import utcnow
from garagebook.web.auth import current_staff
from garagebook.web.pages import render

router = APIRouter(prefix="/staff", include_in_schema=False)


@router.get("/outside-hours")
async def outside_hours_page(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    user = current_staff(request, settings)
    if user is None:
        return RedirectResponse("/staff/login", 303)
    zone = settings.timezone
    async with db.read() as conn:
        found = await outside_hours(conn, utcnow())
        ids = [b.id for b in found]
        details = {
            r.id: r
            for r in await conn.execute(
                select(
                    bookings.c.id, bookings.c.customer_name, bookings.c.vehicle_registration
                ).where(bookings.c.id.in_(ids))
            )
        }
    rows = [
        {
            "id": b.id,
            "reference": b.reference,
            "when": f"{b.starts_at.astimezone(zone):%A %d %B %Y, %H:%M}",
            "day": b.starts_at.astimezone(zone).date().isoformat(),
            "customer": details[b.id].customer_name,
            "registration": details[b.id].vehicle_registration,
            "reason": b.reason,
        }
        for b in found
    ]
    return render(request, settings, "staff_outside_hours.html", {"user": user, "rows": rows})
