"""The reservation layer: a fast, non-authoritative claim on slots before the database is asked.

`reserve` takes one key per slot, all or nothing, in one round trip. The first request for a
slot wins; the others are turned away without touching the database. It is a speed-up only:
keys may expire early, vanish, or be skipped entirely while Redis is down, and the database's
unique index still decides. So every failure here degrades to "skipped", never to an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Sequence
from typing import Literal, Protocol

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from garagebook.config import Settings
from garagebook.metrics import RESERVATION_BREAKER_OPENS, RESERVATION_LAYER_SKIPPED

log = logging.getLogger(__name__)

LayerStatus = Literal["ok", "degraded", "local"]


class Outcome(enum.Enum):
    TAKEN = "taken"  # we hold every key
    CONFLICT = "conflict"  # someone else holds at least one key: reject at once
    SKIPPED = "skipped"  # the layer is unavailable: let the database decide


class ReservationStore(Protocol):
    @property
    def status(self) -> LayerStatus: ...

    async def reserve(self, slot_ids: Sequence[int], token: str, ttl_ms: int) -> Outcome: ...

    async def release(self, slot_ids: Sequence[int], token: str) -> None:
        """Delete the keys still holding `token`, so a failed attempt frees its slots at once."""

    async def forget(self, slot_ids: Sequence[int]) -> None:
        """Delete the keys whoever holds them: the slots were freed in the database."""

    async def close(self) -> None: ...


class LocalReservations:
    """In-process store with Redis's semantics, for the embedded single-process default."""

    status: LayerStatus = "local"
    _SWEEP_EVERY = 4096

    def __init__(self) -> None:
        self._keys: dict[int, tuple[str, float]] = {}
        self._writes = 0

    def _holder(self, slot_id: int, now: float) -> str | None:
        entry = self._keys.get(slot_id)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    async def reserve(self, slot_ids: Sequence[int], token: str, ttl_ms: int) -> Outcome:
        # No await in here: the check and the write are atomic on the event loop.
        now = time.monotonic()
        if any(self._holder(s, now) not in (None, token) for s in slot_ids):
            return Outcome.CONFLICT
        for slot_id in slot_ids:
            self._keys[slot_id] = (token, now + ttl_ms / 1000)
        self._writes += 1
        if self._writes % self._SWEEP_EVERY == 0:
            self._keys = {k: v for k, v in self._keys.items() if v[1] > now}
        return Outcome.TAKEN

    async def release(self, slot_ids: Sequence[int], token: str) -> None:
        now = time.monotonic()
        for slot_id in slot_ids:
            if self._holder(slot_id, now) == token:
                del self._keys[slot_id]

    async def forget(self, slot_ids: Sequence[int]) -> None:
        for slot_id in slot_ids:
            self._keys.pop(slot_id, None)

    async def close(self) -> None:
        self._keys.clear()


# A key held by our own token counts as free, so a holder can renew or book its own hold.
_RESERVE = """
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return 1
"""

_RELEASE = """
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    released = released + redis.call('DEL', key)
  end
end
return released
"""


_POOL_WAIT_SECONDS = 2.0
TIMEOUTS_TO_OPEN = 3


class RedisReservations:
    """Redis store behind a circuit breaker.

    A refused or broken connection opens the breaker at once; timeouts (short, no retries)
    open it after a few in a row, because under a burst the event loop itself can be late
    enough to time out a healthy Redis. Once open, every call is skipped at no cost and a
    background task pings Redis until it answers: a dead Redis costs a few timeouts, not one
    per request. Every failed call is skipped (the database decides), open or not.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_ms: int,
        key_prefix: str,
        retry_seconds: float,
        pool_size: int = 64,
    ) -> None:
        timeout = timeout_ms / 1000
        # A burst of requests waits its turn for one of `pool_size` connections (local
        # congestion, not a Redis failure) instead of failing; Redis itself gets short timeouts.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=_POOL_WAIT_SECONDS,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self._client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._prefix = key_prefix
        self._retry_seconds = retry_seconds
        self._reserve = self._client.register_script(_RESERVE)
        self._release = self._client.register_script(_RELEASE)
        self._open = False
        self._timeouts_in_a_row = 0
        self._probe: asyncio.Task[None] | None = None

    @property
    def status(self) -> LayerStatus:
        return "degraded" if self._open else "ok"

    def _keys(self, slot_ids: Sequence[int]) -> list[str]:
        return [f"{self._prefix}slot:{slot_id}" for slot_id in slot_ids]

    async def reserve(self, slot_ids: Sequence[int], token: str, ttl_ms: int) -> Outcome:
        if self._open:
            RESERVATION_LAYER_SKIPPED.inc()
            return Outcome.SKIPPED
        try:
            taken = await self._reserve(keys=self._keys(slot_ids), args=[token, ttl_ms])
        except Exception as exc:  # whatever the client raises, the layer is skipped, never a 500
            self._failed(exc)
            RESERVATION_LAYER_SKIPPED.inc()
            return Outcome.SKIPPED
        self._timeouts_in_a_row = 0
        return Outcome.TAKEN if taken == 1 else Outcome.CONFLICT

    async def release(self, slot_ids: Sequence[int], token: str) -> None:
        await self._call_quietly(self._release(keys=self._keys(slot_ids), args=[token]))

    async def forget(self, slot_ids: Sequence[int]) -> None:
        await self._call_quietly(self._client.delete(*self._keys(slot_ids)))

    async def _call_quietly(self, call: object) -> None:
        if self._open:
            # Left to expire by its TTL; the database decides meanwhile.
            if asyncio.iscoroutine(call):
                call.close()
            return
        try:
            await call  # type: ignore[misc]  # a redis-py awaitable
        except Exception as exc:  # as in reserve: never an error for the request
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError | RedisTimeoutError):
            self._timeouts_in_a_row += 1
            if self._timeouts_in_a_row < TIMEOUTS_TO_OPEN:
                return
        self._trip(exc)

    def _trip(self, exc: BaseException) -> None:
        if not self._open:
            log.warning("reservation layer degraded: Redis unavailable (%s)", type(exc).__name__)
            RESERVATION_BREAKER_OPENS.inc()
        self._open = True
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        # Drop every pooled connection: after a Redis restart each stale one would fail once
        # more and open the breaker again (seen as minutes of flapping with a full pool).
        with contextlib.suppress(Exception):
            # Idle ones only: cutting a connection mid-command breaks that command in ways
            # redis-py does not always turn into a RedisError.
            await self._client.connection_pool.disconnect(inuse_connections=False)
        while self._open:
            await asyncio.sleep(self._retry_seconds)
            with contextlib.suppress(Exception):  # any failure: try again later
                await self._client.ping()
                self._timeouts_in_a_row = 0
                self._open = False
                log.warning("reservation layer restored: Redis answers again")

    async def ping(self) -> None:
        """Check Redis once; trips the breaker if it does not answer."""
        try:
            await self._client.ping()
        except Exception as exc:  # as in reserve
            self._failed(exc)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._client.aclose(close_connection_pool=True)


def create_reservations(settings: Settings) -> ReservationStore:
    if settings.redis_url is None:
        return LocalReservations()
    return RedisReservations(
        settings.redis_url,
        timeout_ms=settings.redis_timeout_ms,
        key_prefix=settings.redis_key_prefix,
        retry_seconds=settings.redis_retry_seconds,
        pool_size=settings.redis_pool_size,
    )
