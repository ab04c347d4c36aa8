"""Rate limits per client address on booking, hold, cancel, staff sign-in and a customer's
data (export, erasure), so one client hammering cannot stop the others (or guess a staff
password at leisure, or walk the customer list). Kept in Redis when
it is configured (shared by every server process), in memory otherwise. With Redis degraded
or failing, the limits are counted in this process's memory instead: per process rather than
shared (N processes let N times through), but never off — sign-in most of all must not become
unlimited password guessing because Redis is away.

An IPv6 client is counted by its /64: one subscriber line or host gets a whole /64, so keying
on the full address would give one client 2^64 fresh limits."""

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

Action = Literal["booking", "hold", "cancel", "sign_in", "personal_data"]


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
        # Counts here while Redis is degraded or failing (see the module docstring).
        self._fallback = (
            MovingWindowRateLimiter(MemoryStorage()) if self._pool is not None else None
        )
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
            "personal_data": [limits.parse(settings.rate_limit_personal_data)],
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
        if client is None or self._is_exempt(client):
            return
        key = client_key(client)
        limiter = self._limiter
        if self._fallback is not None and self._reservations.status == "degraded":
            limiter = self._fallback  # Redis is known to be away: do not wait for its timeout
        try:
            await self._hit(limiter, action, key)
        except RateLimited:
            raise
        except Exception as exc:  # any storage failure: count in this process instead
            if self._fallback is None or limiter is self._fallback:
                raise
            log.warning("rate limiter storage failed (%s): counting in-process", type(exc).__name__)
            await self._hit(self._fallback, action, key)

    async def _hit(self, limiter: MovingWindowRateLimiter, action: Action, key: str) -> None:
        for rate in self._rates[action]:
            if await limiter.hit(rate, action, key):
                continue
            stats = await limiter.get_window_stats(rate, action, key)
            raise RateLimited(retry_after=max(1, int(stats.reset_time - time.time()) + 1))


def client_key(client: str) -> str:
    """What a client is counted by: its IPv4 address, or its IPv6 /64 (an IPv4-mapped IPv6
    address counts as the IPv4 address it carries)."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
