"""The web front end: the customer's booking page and the staff day view, server-rendered."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from garagebook.web.booking_page import router as booking_page_router
from garagebook.web.manage import router as manage_router
from garagebook.web.no_script import router as no_script_router
from garagebook.web.outside_hours import router as outside_hours_router
from garagebook.web.pages import STATIC
from garagebook.web.security import SecurityHeaders
from garagebook.web.staff import router as staff_router
from garagebook.web.vehicles import router as vehicles_router
from garagebook.web.waitlist import router as waitlist_router


def install_web(app: FastAPI) -> None:
    """Pages, their static files and their security headers, on the API's app."""
    app.add_middleware(SecurityHeaders)
    app.include_router(booking_page_router)
    app.include_router(manage_router)
    app.include_router(no_script_router)
    app.include_router(staff_router)
    app.include_router(outside_hours_router)
    app.include_router(vehicles_router)
    app.include_router(waitlist_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
