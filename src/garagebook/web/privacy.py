"""The owner's pages for calendar feeds (`/staff/feeds`) and a customer's data
(`/staff/customers`), owners only (`OwnerDep`). The work is `feeds.service` and
`customers.service`, as for the admin API; the audit names the signed-in owner.

A customer's address never goes into a URL here (URLs end up in logs, browser history and
proxies): it is posted in a form, and the pages answer those posts directly."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from sqlalchemy import select
from starlette.responses import RedirectResponse, Response

from garagebook.config import Settings
from garagebook.customers.service import erase_customer, export_customer, remove_mail_files
from garagebook.db import Database
from garagebook.deps import DatabaseDep, SettingsDep
from garagebook.errors import (
    CustomerHasFutureBooking,
    DomainError,
    RateLimited,
    http_status,
    page_message,
)
from garagebook.feeds.service import create_feed, list_feeds, revoke_feed
from garagebook.schema import bays
from garagebook.timeutil import utcnow
from garagebook.web.auth import OwnerDep, StaffUser
from garagebook.web.forms import form_text, is_over_limit, staff_form
from garagebook.web.pages import render

router = APIRouter(prefix="/staff", include_in_schema=False)

_FEED_DONE = {"revoked": "Feed revoked: its address no longer works in any calendar."}
_EMAIL_MAX = 254


# --- calendar feeds --------------------------------------------------------------------------


async def _feeds_page(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    user: StaffUser,
    *,
    flash: str | None = None,
    error: str | None = None,
    new_url: str | None = None,
    status_code: int = 200,
) -> Response:
    async with db.read() as conn:
        feeds = await list_feeds(conn)
        bay_rows = (await conn.execute(select(bays.c.id, bays.c.name).order_by(bays.c.id))).all()
    context = {
        "user": user,
        "feeds": feeds,
        "bays": bay_rows,
        "flash": flash,
        "error": error,
        "new_url": new_url,
    }
    return render(request, settings, "staff_feeds.html", context, status_code)


@router.get("/feeds")
async def feeds_page(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    user: OwnerDep,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    return await _feeds_page(request, db, settings, user, flash=_FEED_DONE.get(done or ""))


@router.post("/feeds")
async def add_feed(
    request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    """A new feed; its address is shown on the page this once (only its hash is kept)."""
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return form
    label = form_text(form, "label").strip()[:100] or "Whole garage"
    bay = form_text(form, "bay_id")
    try:
        bay_id = int(bay) if bay else None
        async with db.transaction() as conn:
            feed = await create_feed(
                conn, settings, label=label, bay_id=bay_id, created_by=user.name, now=utcnow()
            )
    except ValueError:
        return await _feeds_page(request, db, settings, user, error="Pick a bay.", status_code=422)
    except DomainError as exc:
        message = page_message(exc)
        return await _feeds_page(
            request, db, settings, user, error=message, status_code=http_status(exc)
        )
    return await _feeds_page(request, db, settings, user, new_url=feed["url"], status_code=201)


@router.post("/feeds/{feed_id}/revoke")
async def revoke(
    feed_id: int, request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return form
    try:
        async with db.transaction() as conn:
            await revoke_feed(conn, feed_id, utcnow())
    except DomainError as exc:
        message = page_message(exc)
        return await _feeds_page(
            request, db, settings, user, error=message, status_code=http_status(exc)
        )
    return RedirectResponse("/staff/feeds?done=revoked", 303)


# --- a customer's data -----------------------------------------------------------------------


def _customer_page(
    request: Request,
    settings: Settings,
    user: StaffUser,
    *,
    email: str = "",
    data: dict[str, Any] | None = None,
    erased: dict[str, Any] | None = None,
    error: str | None = None,
    booking: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    context = {
        "user": user,
        "email": email,
        "data": data,
        "erased": erased,
        "error": error,
        "booking": booking,
    }
    return render(request, settings, "staff_customer.html", context, status_code)


@router.get("/customers")
async def customers_page(request: Request, settings: SettingsDep, user: OwnerDep) -> Response:
    return _customer_page(request, settings, user)


async def _customer_form(
    request: Request, settings: Settings, user: StaffUser
) -> tuple[str, Response | None]:
    """The posted address, or the page that refuses the form (CSRF, rate limit, no address)."""
    form = await staff_form(request, settings)
    if isinstance(form, Response):
        return "", form
    email = form_text(form, "email").strip()[:_EMAIL_MAX]
    if await is_over_limit(request, "personal_data"):
        limited = page_message(RateLimited(60))
        return email, _customer_page(
            request, settings, user, email=email, error=limited, status_code=429
        )
    if "@" not in email:
        message = "Enter the customer's e-mail address."
        return email, _customer_page(request, settings, user, error=message, status_code=422)
    return email, None


@router.post("/customers/lookup")
async def lookup(
    request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    """Everything held about them, on the page (an export: audited)."""
    exported = await _export(request, db, settings, user)
    if isinstance(exported, Response):
        return exported
    email, data = exported
    return _customer_page(request, settings, user, email=email, data=data)


async def _export(
    request: Request, db: Database, settings: Settings, user: StaffUser
) -> tuple[str, dict[str, Any]] | Response:
    """The form's customer exported (audited), or the page that says why not."""
    email, refused = await _customer_form(request, settings, user)
    if refused is not None:
        return refused
    try:
        async with db.transaction() as conn:
            data = await export_customer(conn, settings, email, actor=user.name, now=utcnow())
    except DomainError as exc:
        return _customer_page(
            request, settings, user, email=email, error=page_message(exc), status_code=404
        )
    return email, data


@router.post("/customers/export")
async def export_file(
    request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    """The same as a JSON file to hand to the customer (an export: audited)."""
    exported = await _export(request, db, settings, user)
    if isinstance(exported, Response):
        return exported
    _, data = exported
    return Response(
        orjson.dumps(data, option=orjson.OPT_INDENT_2),
        media_type="application/json",
        headers={
            "Content-Disposition": 'attachment; filename="customer-data.json"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/customers/erase")
async def erase(
    request: Request, db: DatabaseDep, settings: SettingsDep, user: OwnerDep
) -> Response:
    """Erase; refused while a confirmed booking is to come, with a link to its day."""
    email, refused = await _customer_form(request, settings, user)
    if refused is not None:
        return refused
    try:
        async with db.transaction() as conn:
            result = await erase_customer(conn, settings, email, actor=user.name, now=utcnow())
    except CustomerHasFutureBooking as exc:
        return _customer_page(
            request,
            settings,
            user,
            email=email,
            error=exc.message,
            booking=exc.data.get("booking"),
            status_code=409,
        )
    except DomainError as exc:
        return _customer_page(
            request, settings, user, email=email, error=page_message(exc), status_code=404
        )
    files = remove_mail_files(settings, email)
    erased = {
        "bookings": result.bookings,
        "waitlist_entries": result.waitlist_entries,
        "mail_files": files,
    }
    return _customer_page(request, settings, user, erased=erased)
