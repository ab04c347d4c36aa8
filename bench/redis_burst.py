"""Where a burst of `reserve` calls from one process spends its time (issue 19).

    .venv/bin/python -m bench.redis_burst [--calls 1000] [--rounds 5] [--burners 2]

Runs `calls` concurrent reservations of one slot against Redis (REDIS_URL, default the local
one) with `burners` CPU-burning processes alongside, and splits each call's time into
  pool wait   — waiting for one of the pool's connections (our own queue),
  wire        — from the command's send to its answer being read (Redis + our event loop),
and, for every call that timed out, whether Redis's answer was already in the socket's buffer
when the timeout fired: then the timeout measured our event loop, not Redis. It also reports
the event loop's lag (how late a 5 ms timer fired) and Redis's own time per call
(INFO commandstats). Prints one line per round and the outcome counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import BlockingConnectionPool, Connection, ConnectionPool

from garagebook.reservations import RedisReservations

BURN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"


class Probe:
    def __init__(self) -> None:
        self.pool_wait: list[float] = []
        self.wire: list[float] = []
        self.timeouts_answered = 0  # the answer was waiting in the socket when time ran out
        self.timeouts_unanswered = 0
        self.errors: Counter[str] = Counter()
        self.connect: list[float] = []
        self.queue_wait: list[float] = []

    def install(self) -> None:
        probe = self
        get_connection = ConnectionPool.get_connection
        blocking_get = BlockingConnectionPool.get_connection
        read_from_parser = Connection._read_response_from_parser

        async def timed_get(self: BlockingConnectionPool, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                if isinstance(self, BlockingConnectionPool):
                    return await blocking_get(self, *args, **kwargs)  # type: ignore[no-untyped-call]
                return await get_connection(self, *args, **kwargs)
            finally:
                probe.pool_wait.append(time.perf_counter() - started)

        async def timed_read(self: Connection, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await read_from_parser(self, *args, **kwargs)
            except asyncio.CancelledError:
                # The read's timeout fired: was Redis's answer already here?
                buffered = bool(getattr(self._reader, "_buffer", b""))
                sock = self._writer.transport.get_extra_info("socket") if self._writer else None
                readable = sock is not None and bool(select.select([sock], [], [], 0)[0])
                if buffered or readable:
                    probe.timeouts_answered += 1
                else:
                    probe.timeouts_unanswered += 1
                raise
            finally:
                probe.wire.append(time.perf_counter() - started)

        failed = RedisReservations._failed
        connect = Connection.connect

        def counted_failure(self: RedisReservations, exc: BaseException) -> None:
            probe.errors[f"{type(exc).__name__}: {exc}"] += 1
            failed(self, exc)

        async def timed_connect(self: Connection) -> None:
            started = time.perf_counter()
            try:
                await connect(self)  # type: ignore[no-untyped-call]
            finally:
                probe.connect.append(time.perf_counter() - started)

        RedisReservations._failed = counted_failure  # type: ignore[method-assign]
        Connection.connect = timed_connect  # type: ignore[method-assign,assignment]
        BlockingConnectionPool.get_connection = timed_get  # type: ignore[method-assign]
        ConnectionPool.get_connection = timed_get  # type: ignore[method-assign,assignment]
        Connection._read_response_from_parser = timed_read  # type: ignore[method-assign,assignment]


def quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    pick = [ordered[int(q * (len(ordered) - 1))] * 1000 for q in (0.5, 0.99, 1.0)]
    return "p50 {:.1f} p99 {:.1f} max {:.1f} ms".format(*pick)


async def loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.005)
        samples.append(time.perf_counter() - started - 0.005)


async def one_round(url: str, calls: int, timeout_ms: int, probe: Probe) -> Counter[str]:
    store = RedisReservations(
        url, timeout_ms=timeout_ms, key_prefix=f"gbprobe:{uuid.uuid4().hex}:", retry_seconds=1
    )
    admit = getattr(store, "_admit", None)
    if admit is not None:  # our own queue in front of the pool (since issue 19)
        acquire = admit.acquire

        async def timed_acquire() -> bool:
            started = time.perf_counter()
            try:
                return bool(await acquire())
            finally:
                probe.queue_wait.append(time.perf_counter() - started)

        admit.acquire = timed_acquire
    lag: list[float] = []
    stop = asyncio.Event()
    lag_task = asyncio.create_task(loop_lag(lag, stop))
    try:
        outcomes = await asyncio.gather(
            *(store.reserve([7], f"t{i}", 60_000) for i in range(calls))
        )
    finally:
        stop.set()
        await lag_task
        breaker = store.status
        await store.close()
    counts = Counter(o.name for o in outcomes)
    counts[f"breaker {breaker}"] += 1
    print(f"  loop lag {quantiles(lag)}")
    return counts


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--timeout-ms", type=int, default=250)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    admin = redis.Redis.from_url(url)
    before = await admin.info("commandstats")
    burners = [
        subprocess.Popen(  # noqa: S603, ASYNC220  # our own burner, started before the rounds
            [sys.executable, "-c", BURN.format(seconds=60 * args.rounds)]
        )
        for _ in range(args.burners)
    ]
    try:
        probe = Probe()
        probe.install()
        for n in range(args.rounds):
            probe.__init__()  # type: ignore[misc]  # fresh figures per round
            counts = await one_round(url, args.calls, args.timeout_ms, probe)
            print(
                f"round {n + 1}: {dict(counts)}\n  queue wait {quantiles(probe.queue_wait)}\n"
                f"  pool wait {quantiles(probe.pool_wait)}\n"
                f"  connect (new connections: {len(probe.connect)}) {quantiles(probe.connect)}\n"
                f"  wire {quantiles(probe.wire)}\n  failures counted: {dict(probe.errors)}\n"
                "  read timeouts: "
                f"{probe.timeouts_answered} with Redis's answer already in the socket, "
                f"{probe.timeouts_unanswered} without"
            )
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    after = await admin.info("commandstats")
    # The shared Redis's counters are not reset (other users): the difference is ours.
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        old, new = before.get(name, {"calls": 0, "usec": 0}), after.get(name)
        if new is not None and new["calls"] > old["calls"]:
            calls = new["calls"] - old["calls"]
            usec = (new["usec"] - old["usec"]) / calls
            print(f"Redis's own time: {name} {calls} calls, {usec:.1f} µs each")
    await admin.aclose()


if __name__ == "__main__":
    asyncio.run(main())
