"""What every page form does first, in one place: check its CSRF token, count it against the
client's rate limit (the API's limits apply to the pages' forms too), and read its fields."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import Response

from garagebook.config import Settings
from garagebook.errors import RateLimited
from garagebook.ratelimit import Action, RateLimiter
from garagebook.web.auth import CSRF_FIELD, csrf_valid
from garagebook.web.pages import render


def form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def form_int(form: FormData, name: str) -> int:
    value = form.get(name)
    if not isinstance(value, str) or not value.isdigit() or len(value) > 10:
        raise ValueError(name)
    return int(value)


def has_valid_csrf(request: Request, settings: Settings, form: FormData) -> bool:
    return csrf_valid(request, settings, form_text(form, CSRF_FIELD) or None)


async def is_over_limit(request: Request, action: Action) -> bool:
    limiter: RateLimiter = request.app.state.rate_limiter
    try:
        await limiter.check(action, request.client.host if request.client else None)
    except RateLimited:
        return True
    return False


async def checked_form(request: Request, settings: Settings, action: Action) -> FormData | Response:
    """The posted form, or the page that refuses it: 403 when its CSRF token is missing or
    stale, 429 when this client is over `action`'s limit."""
    form = await request.form()
    if not has_valid_csrf(request, settings, form):
        return expired_form(request, settings)
    if await is_over_limit(request, action):
        return render(
            request,
            settings,
            "message.html",
            {
                "title": "Please wait a moment",
                "message": "Too many tries from your connection in a short time. "
                "Wait a minute, then try again.",
            },
            429,
        )
    return form


def expired_form(request: Request, settings: Settings) -> Response:
    return render(
        request,
        settings,
        "message.html",
        {
            "title": "Please try again",
            "message": "This form had expired. Go back, reload the page and try again.",
        },
        403,
    )


async def staff_form(request: Request, settings: Settings) -> FormData | Response:
    """A signed-in staff form (the session is checked by its route's dependency): the posted
    form, or the 403 page when its CSRF token is missing or stale. Not rate-limited, as the
    day view's actions are not: only signed-in staff get here."""
    form = await request.form()
    if not has_valid_csrf(request, settings, form):
        return expired_form(request, settings)
    return form
