"""Rendering pages: one Jinja2 environment with autoescaping on, and the CSRF cookie."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from garagebook.config import Settings
from garagebook.errors import DomainError, http_status, page_message
from garagebook.garage_info import garage_info
from garagebook.web.auth import CSRF_FIELD, csrf_token, set_csrf_cookie

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Autoescaping everywhere: whatever a customer typed is shown as text, never as markup.
env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def pounds(pence: int) -> str:
    return f"£{pence // 100}.{pence % 100:02d}"


def duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} hour{'s' if hours != 1 else ''}" if hours else f"{rest} min"


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%H:%M")


def long_date(moment: datetime, zone: ZoneInfo) -> str:
    local = moment.astimezone(zone)
    return f"{local:%A} {local.day} {local:%B %Y}"


env.filters["pounds"] = pounds
env.filters["duration"] = duration


def render(
    request: Request,
    settings: Settings,
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    token, new_browser_id = csrf_token(request, settings)
    html = env.get_template(template).render(
        garage_name=settings.garage_name,
        garage=garage_info(settings),
        csrf_field=CSRF_FIELD,
        csrf_token=token,
        **context,
    )
    response = HTMLResponse(html, status_code)
    set_csrf_cookie(response, request, settings, new_browser_id)
    return response


def error_page(
    request: Request, settings: Settings, title: str, error: DomainError
) -> HTMLResponse:
    """A page that refuses with a domain error: its status and page message from the one
    mapping (`errors.ANSWERS`), as the API answers it."""
    context = {"title": title, "message": page_message(error)}
    return render(request, settings, "message.html", context, http_status(error))
