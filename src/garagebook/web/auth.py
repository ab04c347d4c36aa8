"""Staff sign-in: argon2 password hashes, a signed session cookie that can be ended, and CSRF
tokens bound to the session.

The session cookie holds the staff user's id, the user's session version when it was issued,
and a random session id, signed (itsdangerous) with SESSION_SECRET and timestamped. Every
request under /staff checks the version against the database (`StaffSessions`): sign-out and a
password change add one to it, and removing the user removes the row, so old cookies open
nothing. CSRF tokens are the HMAC of the session id for a signed-in user — a cookie planted by
someone else cannot carry a token that fits — and of a random per-browser cookie before
sign-in. With an https PUBLIC_URL both cookies are `__Host-` cookies (Secure, Path=/, no
Domain: no subdomain or plain-http page can set them); over plain http (development on
127.0.0.1) the browser would refuse `__Host-`, so they keep their plain names."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from garagebook.config import Settings
from garagebook.db import Database, insert_ignoring_conflicts
from garagebook.deps import SettingsDep
from garagebook.errors import DatabaseUnavailable, OwnerOnly, StaffSignInRequired
from garagebook.schema import staff_users

log = logging.getLogger(__name__)

SESSION_COOKIE = "gb_staff"
CSRF_COOKIE = "gb_csrf"
_HOST_PREFIX = "__Host-"
_SCOPE_KEY = "garagebook.staff"  # the verified staff user of this request, set by StaffSessions
SESSION_MAX_AGE_SECONDS = 12 * 3600  # one working day
CSRF_FIELD = "csrf_token"

_hasher = PasswordHasher()
# Verifying against this when the name is unknown makes both failures take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))
_process_secret = secrets.token_bytes(32)


Role = Literal["owner", "staff"]
OWNER: Role = "owner"
STAFF: Role = "staff"
ROLES: tuple[Role, ...] = (OWNER, STAFF)


@dataclass(frozen=True)
class StaffUser:
    id: int
    name: str
    session_version: int
    session_id: str = ""  # set once signed in: what this session's CSRF tokens are bound to
    role: Role = STAFF

    @property
    def is_owner(self) -> bool:
        return self.role == OWNER


def session_secret(settings: Settings) -> bytes:
    """SESSION_SECRET, or a random one for this process (then sessions end on restart, and
    several server processes need SESSION_SECRET set so they accept each other's cookies)."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value().encode()
    return _process_secret


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def as_role(value: object) -> Role:
    """A role read from the database or a form; anything else is a ValueError."""
    for role in ROLES:
        if value == role:
            return role
    raise ValueError(f"not a role: {value!r}")


async def set_password(
    conn: AsyncConnection, name: str, password: str, now: datetime, role: Role | None = None
) -> bool:
    """Create the staff user, or change their password. True when the user is new. A new user
    without a `role` is an owner when nobody is one yet (the first account of an install runs
    the garage), else staff; an existing user keeps their role (see `accounts.change_role`)."""
    password_hash = hash_password(password)
    if role is None:
        owners = await conn.scalar(
            select(func.count()).select_from(staff_users).where(staff_users.c.role == OWNER)
        )
        role = STAFF if owners else OWNER
    created = await conn.scalar(
        insert_ignoring_conflicts(conn, staff_users)
        .values(name=name, password_hash=password_hash, created_at=now, updated_at=now, role=role)
        .returning(staff_users.c.id)
    )
    if created is not None:
        return True
    await change_password(conn, name, password, now, password_hash)
    return False


async def change_password(
    conn: AsyncConnection, name: str, password: str, now: datetime, password_hash: str = ""
) -> bool:
    """A new password for an existing user, ending every session they have. False when there
    is no such user."""
    changed = await conn.execute(
        update(staff_users)
        .where(staff_users.c.name == name)
        .values(
            password_hash=password_hash or hash_password(password),
            updated_at=now,
            session_version=staff_users.c.session_version + 1,
        )
    )
    return changed.rowcount > 0


async def authenticate(conn: AsyncConnection, name: str, password: str) -> StaffUser | None:
    row = (
        await conn.execute(
            select(
                staff_users.c.id,
                staff_users.c.name,
                staff_users.c.password_hash,
                staff_users.c.session_version,
                staff_users.c.role,
            ).where(staff_users.c.name == name)
        )
    ).first()
    try:
        _hasher.verify(row.password_hash if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    return StaffUser(row.id, row.name, row.session_version, role=as_role(row.role))


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(session_secret(settings), salt="garagebook.staff-session")


def is_https(request: HTTPConnection, settings: Settings) -> bool:
    """Cookies are Secure when the page is served over HTTPS, directly or (by PUBLIC_URL)
    behind a proxy that terminates TLS."""
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


def _host_cookies(settings: Settings) -> bool:
    """`__Host-` cookies need Secure, which browsers honour only over https: so only with an
    https PUBLIC_URL. Decided by the setting, not per request, so the name never changes."""
    return settings.public_url.startswith("https://")


def session_cookie_name(settings: Settings) -> str:
    return _HOST_PREFIX + SESSION_COOKIE if _host_cookies(settings) else SESSION_COOKIE


def csrf_cookie_name(settings: Settings) -> str:
    return _HOST_PREFIX + CSRF_COOKIE if _host_cookies(settings) else CSRF_COOKIE


def _session_path(settings: Settings) -> str:
    return "/" if _host_cookies(settings) else "/staff"  # `__Host-` requires Path=/


def start_session(
    response: Response, request: Request, settings: Settings, user: StaffUser
) -> None:
    value = _serializer(settings).dumps(
        {"id": user.id, "v": user.session_version, "sid": secrets.token_urlsafe(18)}
    )
    response.set_cookie(
        session_cookie_name(settings),
        value,
        max_age=SESSION_MAX_AGE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=is_https(request, settings) or _host_cookies(settings),
        path=_session_path(settings),
    )


async def end_session(
    response: Response, request: Request, settings: Settings, db: Database
) -> None:
    """Sign-out: the cookie is deleted, and — in case a copy of it lives on elsewhere — every
    session of this user ends (their session version moves on)."""
    user = current_staff(request, settings)
    if user is not None:
        async with db.transaction() as conn:
            await conn.execute(
                update(staff_users)
                .where(staff_users.c.id == user.id)
                .where(staff_users.c.session_version == user.session_version)
                .values(session_version=staff_users.c.session_version + 1)
            )
    response.delete_cookie(
        session_cookie_name(settings),
        path=_session_path(settings),
        httponly=True,
        samesite="strict",
        secure=is_https(request, settings) or _host_cookies(settings),
    )


def current_staff(request: HTTPConnection, settings: Settings) -> StaffUser | None:
    """The signed-in staff user, as `StaffSessions` verified it for this request (None outside
    /staff, without a cookie, or with one that was ended)."""
    user = request.scope.get(_SCOPE_KEY)
    return user if isinstance(user, StaffUser) else None


def _session_claim(settings: Settings, value: str) -> tuple[int, int, str] | None:
    try:
        data = _serializer(settings).loads(value, max_age=SESSION_MAX_AGE_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    user_id, version, session_id = data.get("id"), data.get("v"), data.get("sid")
    if not (isinstance(user_id, int) and isinstance(version, int) and isinstance(session_id, str)):
        return None
    return user_id, version, session_id


async def verified_staff(
    connection: HTTPConnection, settings: Settings, db: Database
) -> StaffUser | None:
    """The user of this request's session cookie, if its signature, age and session version
    hold: one indexed read per staff request."""
    value = connection.cookies.get(session_cookie_name(settings))
    claim = _session_claim(settings, value) if value else None
    if claim is None:
        return None
    user_id, version, session_id = claim
    try:
        async with db.read() as conn:
            row = (
                await conn.execute(
                    select(
                        staff_users.c.name, staff_users.c.session_version, staff_users.c.role
                    ).where(staff_users.c.id == user_id)
                )
            ).first()
    except DatabaseUnavailable:
        return None  # not signed in while the database is away: nothing would work anyway
    if row is None or row.session_version != version:
        return None
    return StaffUser(user_id, row.name, version, session_id, as_role(row.role))


class StaffSessions:
    """Checks the staff session of every request under /staff before the route runs, so every
    staff page and form sees only a session that has not been ended."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/staff"):
            state = scope["app"].state
            scope[_SCOPE_KEY] = await verified_staff(
                HTTPConnection(scope), state.settings, state.db
            )
        await self.app(scope, receive, send)


async def require_staff(request: Request, settings: SettingsDep) -> StaffUser:
    """Any signed-in staff user (a dependency): without a session, `StaffSignInRequired`,
    which the pages answer with the sign-in page (GET) or a 403 (a form)."""
    user = current_staff(request, settings)
    if user is None:
        raise StaffSignInRequired()
    return user


async def require_owner(request: Request, settings: SettingsDep) -> StaffUser:
    """The one check of every owner-only page and form (a dependency: `OwnerDep`): the signed-in
    user if they are an owner; a staff user gets `OwnerOnly`, a 403 page. The role is read with
    the session on every request, and a role change ends that user's sessions anyway."""
    user = await require_staff(request, settings)
    if not user.is_owner:
        raise OwnerOnly()
    return user


StaffDep = Annotated[StaffUser, Depends(require_staff)]
OwnerDep = Annotated[StaffUser, Depends(require_owner)]


# --- CSRF ------------------------------------------------------------------------------------


def _csrf_for(settings: Settings, binding: str) -> str:
    key = hashlib.sha256(session_secret(settings) + b"garagebook.csrf").digest()
    return hmac.new(key, binding.encode(), hashlib.sha256).hexdigest()


def _binding(request: HTTPConnection, settings: Settings) -> str | None:
    """What this request's forms are bound to: the signed-in staff session, else the browser's
    CSRF cookie (None when it has none)."""
    user = current_staff(request, settings)
    if user is not None:
        return f"session:{user.session_id}"
    browser_id = request.cookies.get(csrf_cookie_name(settings))
    if not browser_id or len(browser_id) > 64:
        return None
    return f"browser:{browser_id}"


def csrf_token(request: Request, settings: Settings) -> tuple[str, str | None]:
    """The token for this page's forms, and a new browser id to set as cookie (or None when
    the browser has one, or the token is bound to the staff session)."""
    binding = _binding(request, settings)
    new_id = None
    if binding is None:
        new_id = secrets.token_urlsafe(24)
        binding = f"browser:{new_id}"
    return _csrf_for(settings, binding), new_id


def set_csrf_cookie(
    response: Response, request: Request, settings: Settings, browser_id: str | None
) -> None:
    if browser_id is not None:
        response.set_cookie(
            csrf_cookie_name(settings),
            browser_id,
            httponly=True,
            samesite="strict",
            secure=is_https(request, settings) or _host_cookies(settings),
            path="/",
        )


def csrf_valid(request: Request, settings: Settings, submitted: str | None) -> bool:
    binding = _binding(request, settings)
    if binding is None or not submitted:
        return False
    return hmac.compare_digest(_csrf_for(settings, binding), submitted)
