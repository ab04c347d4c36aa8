"""Rate limits per client address on booking, hold, cancel and staff sign-in, so one client
hammering cannot stop the others (or guess a staff password at leisure). Kept in Redis when
it is configured (shared by every server process), in memory otherwise. Fails open: with
Redis degraded, requests are not limited rather than refused — availability of booking
matters more than throttling."""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Literal

import limits
import redis.asyncio as redis
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from garagebook.config import Settings
from garagebook.errors import RateLimited
from garagebook.reservations import ReservationStore

log = logging.getLogger(__name__)

Action = Literal["booking", "hold", "cancel", "sign_in"]


class RateLimiter:
    def __init__(self, settings: Settings, reservations: ReservationStore) -> None:
        storage: Storage
        self._pool: redis.ConnectionPool | None = None
        if settings.redis_url:
            timeout = settings.redis_timeout_ms / 1000
            self._pool = redis.BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=settings.redis_pool_size,
                timeout=2.0,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            storage = RedisStorage(
                f"async+{settings.redis_url}",
                implementation="redispy",
                key_prefix=f"{settings.redis_key_prefix}limits",
                connection_pool=self._pool,  # type: ignore[arg-type]  # passed through to redis-py
            )
        else:
            storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(storage)
        self._reservations = reservations
        self._rates: dict[str, list[limits.RateLimitItem]] = {
            "booking": [limits.parse(settings.rate_limit_bookings)],
            "hold": [
                limits.parse(settings.rate_limit_holds),
                limits.RateLimitItemPerSecond(
                    settings.max_holds_per_client, settings.hold_ttl_seconds
                ),
            ],
            "cancel": [limits.parse(settings.rate_limit_cancels)],
            "sign_in": [limits.parse(settings.rate_limit_sign_in)],
        }
        self._exempt_cache: dict[str, bool] = {}
        self._exempt = [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in settings.rate_limit_exempt.split(",")
            if part.strip()
        ]

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def _is_exempt(self, client: str) -> bool:
        exempt = self._exempt_cache.get(client)
        if exempt is None:
            try:
                address = ipaddress.ip_address(client)
            except ValueError:
                exempt = False
            else:
                exempt = any(address in network for network in self._exempt)
            if len(self._exempt_cache) > 10_000:
                self._exempt_cache.clear()
            self._exempt_cache[client] = exempt
        return exempt

    async def check(self, action: Action, client: str | None) -> None:
        """Count one `action` for `client`; RateLimited (429) when over any of its limits."""
        if client is None or self._is_exempt(client) or self._reservations.status == "degraded":
            return
        for rate in self._rates[action]:
            try:
                allowed = await self._limiter.hit(rate, action, client)
                if allowed:
                    continue
                stats = await self._limiter.get_window_stats(rate, action, client)
            except Exception as exc:  # any storage failure: fail open (see module docstring)
                log.warning("rate limiter unavailable (%s): not limiting", type(exc).__name__)
                return
            raise RateLimited(retry_after=max(1, int(stats.reset_time - time.time()) + 1))
