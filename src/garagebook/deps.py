"""What routes get injected: the stores created in the app's lifespan, and the admin guard.

All `async def`: FastAPI runs a plain `def` dependency in a thread pool, a thread hop per
dependency per request (it was the largest cost on the hot path)."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Request

from garagebook.config import Settings
from garagebook.db import Database
from garagebook.errors import AdminNotConfigured, Forbidden, NotAuthenticated
from garagebook.ratelimit import Action, RateLimiter
from garagebook.reservations import ReservationStore
from garagebook.slots.cache import AvailabilityCache
from garagebook.slots.service import PlanCache


async def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


async def _reservations(request: Request) -> ReservationStore:
    store: ReservationStore = request.app.state.reservations
    return store


async def _plans(request: Request) -> PlanCache:
    plans: PlanCache = request.app.state.plans
    return plans


async def _availability(request: Request) -> AvailabilityCache:
    cache: AvailabilityCache = request.app.state.availability
    return cache


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


DatabaseDep = Annotated[Database, Depends(_db)]
ReservationsDep = Annotated[ReservationStore, Depends(_reservations)]
SettingsDep = Annotated[Settings, Depends(_settings)]
PlansDep = Annotated[PlanCache, Depends(_plans)]
AvailabilityDep = Annotated[AvailabilityCache, Depends(_availability)]


async def require_admin(request: Request, settings: SettingsDep) -> None:
    if settings.admin_token is None:
        raise AdminNotConfigured()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthenticated()
    expected = settings.admin_token.get_secret_value().encode()
    if not hmac.compare_digest(token.strip().encode(), expected):
        raise Forbidden()


AdminDep = Depends(require_admin)


def rate_limit(action: Action) -> Any:
    """A route dependency: 429 once this client address has done `action` too often."""

    async def check(request: Request) -> None:
        limiter: RateLimiter = request.app.state.rate_limiter
        await limiter.check(action, request.client.host if request.client else None)

    return Depends(check)
