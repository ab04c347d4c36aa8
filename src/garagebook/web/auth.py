"""Staff sign-in: argon2 password hashes, a signed session cookie, and CSRF tokens.

The session cookie holds only the staff user's id and name, signed (itsdangerous) with
SESSION_SECRET and timestamped, so it expires without server-side state. CSRF tokens are bound
to a random per-browser cookie: a form is accepted only when its hidden token is the HMAC of
that cookie, which another site can neither read nor set."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from garagebook.config import Settings
from garagebook.db import insert_ignoring_conflicts
from garagebook.schema import staff_users

log = logging.getLogger(__name__)

SESSION_COOKIE = "gb_staff"
CSRF_COOKIE = "gb_csrf"
SESSION_MAX_AGE_SECONDS = 12 * 3600  # one working day
CSRF_FIELD = "csrf_token"

_hasher = PasswordHasher()
# Verifying against this when the name is unknown makes both failures take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))
_process_secret = secrets.token_bytes(32)


@dataclass(frozen=True)
class StaffUser:
    id: int
    name: str


def session_secret(settings: Settings) -> bytes:
    """SESSION_SECRET, or a random one for this process (then sessions end on restart, and
    several server processes need SESSION_SECRET set so they accept each other's cookies)."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    return _process_secret


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def set_password(conn: AsyncConnection, name: str, password: str, now: datetime) -> bool:
    """Create the staff user, or change their password. True when the user is new."""
    password_hash = hash_password(password)
    created = await conn.scalar(
        insert_ignoring_conflicts(conn, staff_users)
        .values(name=name, password_hash=password_hash, created_at=now, updated_at=now)
        .returning(staff_users.c.id)
    )
    if created is not None:
        return True
    await conn.execute(
        update(staff_users)
        .where(staff_users.c.name == name)
        .values(password_hash=password_hash, updated_at=now)
    )
    return False


async def authenticate(conn: AsyncConnection, name: str, password: str) -> StaffUser | None:
    row = (
        await conn.execute(
            select(staff_users.c.id, staff_users.c.name, staff_users.c.password_hash).where(
                staff_users.c.name == name
            )
        )
    ).first()
    try:
        _hasher.verify(row.password_hash if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    return StaffUser(row.id, row.name)


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(session_secret(settings), salt="garagebook.staff-session")


def is_https(request: Request, settings: Settings) -> bool:
    """Cookies are Secure when the page is served over HTTPS, directly or (by PUBLIC_URL)
    behind a proxy that terminates TLS."""
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


def start_session(
    response: Response, request: Request, settings: Settings, user: StaffUser
) -> None:
    value = _serializer(settings).dumps({"id": user.id, "name": user.name})
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_MAX_AGE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=is_https(request, settings),
        path="/staff",
    )


def end_session(response: Response, request: Request, settings: Settings) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/staff",
        httponly=True,
        samesite="strict",
        secure=is_https(request, settings),
    )


def current_staff(request: Request, settings: Settings) -> StaffUser | None:
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        return None
    try:
        data = _serializer(settings).loads(value, max_age=SESSION_MAX_AGE_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), int):
        return None
    return StaffUser(data["id"], str(data.get("name", "")))


# --- CSRF ------------------------------------------------------------------------------------


def _csrf_for(settings: Settings, browser_id: str) -> str:
    key = hashlib.sha256(session_secret(settings) + b"garagebook.csrf").digest()
    return hmac.new(key, browser_id.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request, settings: Settings) -> tuple[str, str | None]:
    """The token for this browser's forms, and a new browser id to set as cookie (or None
    when the browser already has one)."""
    browser_id = request.cookies.get(CSRF_COOKIE)
    new_id = None
    if not browser_id or len(browser_id) > 64:
        browser_id = new_id = secrets.token_urlsafe(24)
    return _csrf_for(settings, browser_id), new_id


def set_csrf_cookie(
    response: Response, request: Request, settings: Settings, browser_id: str | None
) -> None:
    if browser_id is not None:
        response.set_cookie(
            CSRF_COOKIE,
            browser_id,
            httponly=True,
            samesite="strict",
            secure=is_https(request, settings),
            path="/",
        )


def csrf_valid(request: Request, settings: Settings, submitted: str | None) -> bool:
    browser_id = request.cookies.get(CSRF_COOKIE)
    if not browser_id or not submitted:
        return False
    return hmac.compare_digest(_csrf_for(settings, browser_id), submitted)
