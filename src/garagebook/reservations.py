"""The reservation layer: a fast, non-authoritative claim on slots before the database is asked.

`reserve` takes one key per slot, all or nothing, in one round trip. The first request for a
slot wins; the others are turned away without touching the database. A bay's slot is keyed by
its id; a technician's time by `technician_key` (issue 15). `reserve_first` takes the first
of several candidate key sets that is wholly free (a bay and a technician, then the next
qualified pair), still all or nothing and in one round trip. It is a speed-up only:
keys may expire early, vanish, or be skipped entirely while Redis is down, and the database's
unique index still decides. So every failure here degrades to "skipped", never to an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from garagebook.config import Settings
from garagebook.metrics import RESERVATION_BREAKER_OPENS, RESERVATION_LAYER_SKIPPED

log = logging.getLogger(__name__)
T = TypeVar("T")

LayerStatus = Literal["ok", "degraded", "local"]


# A bay slot's id, or a technician's time as `technician_key` makes it.
Key = int | str


def technician_key(technician_id: int, starts_at: datetime) -> str:
    """A technician's slot starting at `starts_at`: named by the technician and the instant,
    so a plan knows the key without reading the slot's id."""
    return f"t{technician_id}:{int(starts_at.timestamp())}"


class Outcome(enum.Enum):
    TAKEN = "taken"  # we hold every key
    CONFLICT = "conflict"  # someone else holds at least one key: reject at once
    SKIPPED = "skipped"  # the layer is unavailable: let the database decide


class ReservationStore(Protocol):
    @property
    def status(self) -> LayerStatus: ...

    async def reserve(self, slot_ids: Sequence[Key], token: str, ttl_ms: int) -> Outcome:
        """Take every key for `token` for `ttl_ms`, or none. Keys `token` already holds count as
        free and are never shortened: a hold's holder booking it keeps the hold's time."""

    async def reserve_first(
        self, candidates: Sequence[Sequence[Key]], token: str, ttl_ms: int
    ) -> tuple[Outcome, int]:
        """`reserve` the first candidate whose keys are all free, and say which (its index;
        0 when SKIPPED). CONFLICT: every candidate has a key someone else holds."""

    async def confirm(
        self, slot_ids: Sequence[Key], token: str, ttl_ms: int, release: Sequence[Key] = ()
    ) -> None:
        """The booking committed: its keys (ours, or gone) now live `ttl_ms`, so the booked
        slots are turned away fast; `release`'s keys still holding `token` go. One round trip."""

    async def release(self, slot_ids: Sequence[Key], token: str) -> None:
        """Delete the keys still holding `token`, so a failed attempt frees its slots at once."""

    async def forget(self, slot_ids: Sequence[Key]) -> None:
        """Delete the keys whoever holds them: the slots were freed in the database."""

    async def close(self) -> None: ...


class LocalReservations:
    """In-process store with Redis's semantics, for the embedded single-process default."""

    status: LayerStatus = "local"
    _SWEEP_EVERY = 4096

    def __init__(self) -> None:
        self._keys: dict[Key, tuple[str, float]] = {}
        self._writes = 0

    def _holder(self, slot_id: Key, now: float) -> str | None:
        entry = self._keys.get(slot_id)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    async def reserve(self, slot_ids: Sequence[Key], token: str, ttl_ms: int) -> Outcome:
        return (await LocalReservations.reserve_first(self, [slot_ids], token, ttl_ms))[0]

    async def reserve_first(
        self, candidates: Sequence[Sequence[Key]], token: str, ttl_ms: int
    ) -> tuple[Outcome, int]:
        # No await in here: the check and the write are atomic on the event loop.
        now = time.monotonic()
        for index, slot_ids in enumerate(candidates):
            if all(self._holder(s, now) in (None, token) for s in slot_ids):
                self._take(slot_ids, token, now, ttl_ms)
                return Outcome.TAKEN, index
        return Outcome.CONFLICT, 0

    def _take(self, slot_ids: Sequence[Key], token: str, now: float, ttl_ms: int) -> None:
        for slot_id in slot_ids:
            self._set(slot_id, token, now, ttl_ms, keep_longer=True)
        self._writes += 1
        if self._writes % self._SWEEP_EVERY == 0:
            self._keys = {k: v for k, v in self._keys.items() if v[1] > now}

    def _set(self, slot_id: Key, token: str, now: float, ttl_ms: int, keep_longer: bool) -> None:
        expires = now + ttl_ms / 1000
        entry = self._keys.get(slot_id)
        if keep_longer and entry is not None and entry[0] == token:
            expires = max(expires, entry[1])
        self._keys[slot_id] = (token, expires)

    async def confirm(
        self, slot_ids: Sequence[Key], token: str, ttl_ms: int, release: Sequence[Key] = ()
    ) -> None:
        now = time.monotonic()
        for slot_id in slot_ids:
            if self._holder(slot_id, now) in (None, token):
                self._set(slot_id, token, now, ttl_ms, keep_longer=False)
        self._release(release, token, now)

    async def release(self, slot_ids: Sequence[Key], token: str) -> None:
        self._release(slot_ids, token, time.monotonic())

    def _release(self, slot_ids: Sequence[Key], token: str, now: float) -> None:
        for slot_id in slot_ids:
            if self._holder(slot_id, now) == token:
                del self._keys[slot_id]

    async def forget(self, slot_ids: Sequence[Key]) -> None:
        for slot_id in slot_ids:
            self._keys.pop(slot_id, None)

    async def close(self) -> None:
        self._keys.clear()


# A key held by our own token counts as free, so a holder can renew or book its own hold; and
# it is never shortened, so booking a held time does not cut the hold down to a request's lease.
_RESERVE = """
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] then return 0 end
end
local ttl = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < ttl then
    redis.call('SET', key, ARGV[1], 'PX', ttl)
  end
end
return 1
"""

# KEYS: every candidate's keys, one after the other; ARGV: token, TTL, then each candidate's
# number of keys. Returns the 1-based index of the candidate taken, 0 when none is free.
_RESERVE_FIRST = """
local ttl = tonumber(ARGV[2])
local first = 1
for candidate = 3, #ARGV do
  local last = first + tonumber(ARGV[candidate]) - 1
  local free = true
  for i = first, last do
    local holder = redis.call('GET', KEYS[i])
    if holder and holder ~= ARGV[1] then free = false; break end
  end
  if free then
    for i = first, last do
      if redis.call('PTTL', KEYS[i]) < ttl then
        redis.call('SET', KEYS[i], ARGV[1], 'PX', ttl)
      end
    end
    return candidate - 2
  end
  first = last + 1
end
return 0
"""

# KEYS: the booked slots' keys, then those to release; ARGV: token, TTL, how many are booked.
# A booked key someone else took meanwhile (our lease ran out) is theirs: the database turns
# them away, and their failure releases it.
_CONFIRM = """
local booked = tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if i <= booked then
    if not holder or holder == ARGV[1] then
      redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    end
  elseif holder == ARGV[1] then
    redis.call('DEL', key)
  end
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


TIMEOUTS_TO_OPEN = 3
# Turns of the event loop that a call past its deadline may spend on one await (see
# _Deadline): an answer already in the socket is read in the next turn and resumes the call
# in the one after.
GRACE_TURNS = 3


def _awaiting(task: asyncio.Task[object]) -> object:
    """What the task's innermost coroutine is suspended on (documented `cr_await` chain)."""
    awaitable: object = task.get_coro()
    while (inner := getattr(awaitable, "cr_await", None)) is not None:
        awaitable = inner
    return awaitable


class _Deadline:
    """`asyncio.timeout` for one wait on Redis (a connect or an answer), except that an answer
    which reached us in time is never a timeout.

    Under a burst the event loop is busy: an answer Redis sent in microseconds sits in the
    socket until the loop gets round to it, and by then a plain timeout has fired too (issue
    19, shown by `bench/redis_burst.py`). So when time is up the wait is not cancelled at
    once: the loop gets turns to read what the sockets hold, and the wait is cancelled only
    once it has been stuck on the same await for GRACE_TURNS turns. On a loop that keeps up,
    turns take microseconds and this is a plain timeout; on a congested one, Redis is judged
    by whether it answered, not by how long our own queue of callbacks is.
    """

    def __init__(self, seconds: float, waiting_for: str = "an answer") -> None:
        self._seconds = seconds
        self._waiting_for = waiting_for  # said in the TimeoutError: a connect, or an answer
        self._began = 0.0
        self._late = 0.0  # how late the deadline's timer ran: time the loop was not looking
        self._expired = False
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.Handle | None = None
        self._cancelling = 0
        self._stuck_on: object = None
        self._stuck_turns = 0

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        assert self._task is not None
        self._cancelling = self._task.cancelling()
        loop = asyncio.get_running_loop()
        self._began = loop.time()
        self._handle = loop.call_later(self._seconds, self._watch)

    def _watch(self) -> None:
        """Once per turn past the deadline, until the call ends (aexit) or is cancelled."""
        assert self._task is not None
        if self._stuck_on is None:  # the deadline itself
            self._late = asyncio.get_running_loop().time() - self._began - self._seconds
        awaiting = _awaiting(self._task)
        if awaiting is self._stuck_on:
            self._stuck_turns += 1
            if self._stuck_turns >= GRACE_TURNS:
                self._expired = True
                self._task.cancel()
                return
        else:  # it moved on since the last turn (or this is the deadline)
            self._stuck_on, self._stuck_turns = awaiting, 0
        self._handle = asyncio.get_running_loop().call_soon(self._watch)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._handle is not None
        assert self._task is not None
        self._handle.cancel()
        # As asyncio.timeout does: our own cancel becomes a timeout, anyone else's goes on.
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            # The builtin, as asyncio.timeout's: redis-py turns it into its own on a connect
            # (any other exception there becomes a ConnectionError, which opens the breaker).
            # What it waited for and how long, in the breaker's log line: a timeout that the
            # loop's own lateness explains looks different from a Redis that was slow.
            waited = asyncio.get_running_loop().time() - self._began
            raise TimeoutError(
                f"Redis did not give {self._waiting_for} within its timeout: waited"
                f" {waited * 1000:.0f} ms, the deadline's timer ran {self._late * 1000:.0f} ms"
                f" late, {GRACE_TURNS} loop turns past it"
            ) from exc


class _MeasuresRedis(AbstractConnection):
    """Mixed into redis-py's connection class: its connect and read timeouts, but measured
    with `_Deadline` (redis-py's own socket timeouts are off)."""

    _redis_timeout: float

    async def _connect(self) -> None:
        async with _Deadline(self._redis_timeout, "a connection"):
            # The base class's TCP, TLS or Unix socket connect (untyped in redis-py).
            await super()._connect()  # type: ignore[safe-super,no-untyped-call]

    async def read_response(
        self,
        disable_decoding: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109  # redis-py's signature, overridden
        *,
        disconnect_on_error: bool = True,
        push_request: bool | None = False,
    ) -> Any:
        if timeout is not None:  # a caller's own timeout (not used here): redis-py's
            return await super().read_response(
                disable_decoding,
                timeout,
                disconnect_on_error=disconnect_on_error,
                push_request=push_request,
            )
        async with _Deadline(self._redis_timeout):
            # math.inf: redis-py's "no timeout of mine" (see its read_response).
            return await super().read_response(
                disable_decoding,
                math.inf,
                disconnect_on_error=disconnect_on_error,
                push_request=push_request,
            )


class RedisReservations:
    """Redis store behind a circuit breaker.

    A refused or broken connection opens the breaker at once; timeouts (short, no retries)
    open it after a few in a row. Once open, every call is skipped at no cost and a
    background task pings Redis until it answers: a dead Redis costs a few timeouts, not one
    per request. Every failed call is skipped (the database decides), open or not.

    The timeout measures Redis, not us (issue 19). A burst waits for one of `pool_size`
    connections in our own queue, which is never a failure and has no timeout of its own: it
    drains as fast as Redis answers, and at once when the breaker opens. Each wait on Redis
    itself (a connect, an answer after the command is sent) then has `timeout_ms`, judged by
    `_Deadline`, in place of redis-py's socket timeouts, which counted the event loop's
    lateness as Redis's.
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
        # Never more than `pool_size` callers at once (the semaphore), so the plain pool always
        # has a connection. Not redis-py's BlockingConnectionPool: its condition's lock is held
        # across awaits when a connection is handed back, so under a burst every release and
        # every take queue behind it one loop turn each.
        pool = redis.ConnectionPool.from_url(url, max_connections=pool_size)
        base = pool.connection_class  # TCP, TLS or Unix socket, as the URL says
        pool.connection_class = type(
            f"Measured{base.__name__}",
            (_MeasuresRedis, base),
            {"_redis_timeout": timeout_ms / 1000},
        )
        self._admit = asyncio.Semaphore(pool_size)
        self._client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._prefix = key_prefix
        self._retry_seconds = retry_seconds
        self._reserve = self._client.register_script(_RESERVE)
        self._reserve_first = self._client.register_script(_RESERVE_FIRST)
        self._confirm = self._client.register_script(_CONFIRM)
        self._release = self._client.register_script(_RELEASE)
        self._open = False
        self._timeouts_in_a_row = 0
        self._probe: asyncio.Task[None] | None = None

    @property
    def status(self) -> LayerStatus:
        return "degraded" if self._open else "ok"

    def _keys(self, slot_ids: Sequence[Key]) -> list[str]:
        return [f"{self._prefix}slot:{slot_id}" for slot_id in slot_ids]

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """One Redis call; None when skipped (breaker open, or the call failed)."""
        async with self._admit:  # our own queue: waiting here is never Redis's fault
            if self._open:
                return None
            try:
                result = await call()
            except Exception as exc:  # whatever the client raises: skipped, never a 500
                self._failed(exc)
                return None
        self._timeouts_in_a_row = 0
        return result

    async def reserve(self, slot_ids: Sequence[Key], token: str, ttl_ms: int) -> Outcome:
        keys = self._keys(slot_ids)
        taken = await self._call(lambda: self._reserve(keys=keys, args=[token, ttl_ms]))
        if taken is None:
            RESERVATION_LAYER_SKIPPED.inc()
            return Outcome.SKIPPED
        return Outcome.TAKEN if taken == 1 else Outcome.CONFLICT

    async def reserve_first(
        self, candidates: Sequence[Sequence[Key]], token: str, ttl_ms: int
    ) -> tuple[Outcome, int]:
        if len(candidates) == 1:  # the plain script: the common case stays as cheap as it was
            return await RedisReservations.reserve(self, candidates[0], token, ttl_ms), 0
        keys = self._keys([key for candidate in candidates for key in candidate])
        sizes = [len(candidate) for candidate in candidates]
        taken = await self._call(
            lambda: self._reserve_first(keys=keys, args=[token, ttl_ms, *sizes])
        )
        if taken is None:
            RESERVATION_LAYER_SKIPPED.inc()
            return Outcome.SKIPPED, 0
        return (Outcome.TAKEN, int(taken) - 1) if taken else (Outcome.CONFLICT, 0)

    async def confirm(
        self, slot_ids: Sequence[Key], token: str, ttl_ms: int, release: Sequence[Key] = ()
    ) -> None:
        # Skipped (breaker open or failed): the lease runs out and the database decides.
        keys = self._keys([*slot_ids, *release])
        await self._call(lambda: self._confirm(keys=keys, args=[token, ttl_ms, len(slot_ids)]))

    async def release(self, slot_ids: Sequence[Key], token: str) -> None:
        keys = self._keys(slot_ids)
        await self._call(lambda: self._release(keys=keys, args=[token]))

    async def forget(self, slot_ids: Sequence[Key]) -> None:
        keys = self._keys(slot_ids)
        await self._call(lambda: self._client.delete(*keys))

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError | RedisTimeoutError):
            self._timeouts_in_a_row += 1
            if self._timeouts_in_a_row < TIMEOUTS_TO_OPEN:
                return
        self._trip(exc)

    def _trip(self, exc: BaseException) -> None:
        if not self._open:
            log.warning(
                "reservation layer degraded: Redis unavailable (%s: %s)", type(exc).__name__, exc
            )
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
                async with self._admit:
                    await self._client.ping()
                self._timeouts_in_a_row = 0
                self._open = False
                log.warning("reservation layer restored: Redis answers again")

    async def ping(self) -> None:
        """Check Redis once; trips the breaker if it does not answer."""
        await self._call(self._client.ping)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        await self._client.aclose(close_connection_pool=True)


def lease_ms(settings: Settings) -> int:
    """How long an in-flight request's keys live, until `confirm` gives a committed booking's
    keys the whole RESERVATION_TTL_SECONDS: a request that dies (kill -9 of its process)
    blocks its slots for the lease, not the TTL (issue 12)."""
    return min(settings.reservation_lease_seconds, settings.reservation_ttl_seconds) * 1000


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
