"""The web front end: the customer's booking page and the staff day view, server-rendered."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from garagebook.errors import OwnerOnly, StaffSignInRequired
from garagebook.web.booking_page import router as booking_page_router
from garagebook.web.forms import expired_form
from garagebook.web.manage import router as manage_router
from garagebook.web.no_script import router as no_script_router
from garagebook.web.outside_hours import router as outside_hours_router
from garagebook.web.pages import STATIC, error_page
from garagebook.web.privacy import router as privacy_router
from garagebook.web.security import SecurityHeaders
from garagebook.web.settings_pages import router as settings_router
from garagebook.web.staff import router as staff_router
from garagebook.web.staff_accounts import router as staff_accounts_router
from garagebook.web.technicians import router as technicians_router
from garagebook.web.vehicles import router as vehicles_router
from garagebook.web.waitlist import router as waitlist_router
from garagebook.web.webhooks import router as webhooks_router


def install_web(app: FastAPI) -> None:
    """Pages, their static files and their security headers, on the API's app."""
    app.add_middleware(SecurityHeaders)
    app.include_router(booking_page_router)
    app.include_router(manage_router)
    app.include_router(no_script_router)
    app.include_router(staff_router)
    app.include_router(technicians_router)
    app.include_router(outside_hours_router)
    app.include_router(staff_accounts_router)
    app.include_router(settings_router)
    app.include_router(privacy_router)
    app.include_router(vehicles_router)
    app.include_router(waitlist_router)
    app.include_router(webhooks_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(StaffSignInRequired, _sign_in_first)
    app.add_exception_handler(OwnerOnly, _owners_only)


async def _sign_in_first(request: Request, exc: Exception) -> Response:
    """`require_staff` without a session: a page goes to the sign-in, a form is refused."""
    if request.method in ("GET", "HEAD"):
        return RedirectResponse("/staff/login", 303)
    return expired_form(request, request.app.state.settings)


async def _owners_only(request: Request, exc: Exception) -> Response:
    """`require_owner` for a staff account: the 403 page, for a page and a form alike."""
    assert isinstance(exc, OwnerOnly)  # registered for OwnerOnly only
    return error_page(request, request.app.state.settings, "Owners only", exc)
