"""Breaking things on purpose, under load from many clients: whatever fails, no slot is booked
twice, no 201 is lost, every booking has its confirmation job, and nothing answers 500.

Each scenario has its own PostgreSQL cluster and its own Redis, so it may kill them. The
figures of each run are printed (`pytest -s tests/chaos`)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.config import Settings
from tests.chaos.harness import (
    SCENARIOS,
    Load,
    PostgresCluster,
    SlowProxy,
    assert_no_server_errors,
    audit,
    free_slot_ids,
    wait_healthy,
)
from tests.support.api import booking_body
from tests.support.processes import RedisProcess, ServerProcess
from tests.support.stack import Stack, reset_database

pytestmark = pytest.mark.slow
StartServer = Callable[..., ServerProcess]
SECONDS = float(os.environ.get("CHAOS_SECONDS", "6"))


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    pg = PostgresCluster()
    pg.create()
    yield pg
    pg.destroy()


@pytest.fixture
async def chaos(cluster: PostgresCluster, own_redis: RedisProcess) -> Stack:
    await reset_database(cluster.url)
    return Stack("chaos", cluster.url, own_redis.url, "chaos:")


SLOW_INSERT_FUNCTION = (
    "CREATE FUNCTION chaos_slow() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$"
)
SLOW_INSERT_TRIGGER = (
    "CREATE TRIGGER chaos_slow BEFORE INSERT ON bookings FOR EACH ROW EXECUTE FUNCTION chaos_slow()"
)


def report(name: str, load: Load, **figures: Any) -> None:
    counts = load.counts()
    row = {
        "scenario": name,
        "requests": len(load.outcomes),
        "201": counts[201],
        "409": counts[409],
        "503": counts[503],
        "no answer": counts[None],
        "p99 ms": round(load.p99() * 1000),
        "figures": ", ".join(f"{k} {v}" for k, v in figures.items()),
    }
    SCENARIOS.append(row)
    print(f"\n[chaos] {row}")


async def test_redis_flushed_then_killed_mid_burst(
    chaos: Stack, own_redis: RedisProcess, start_server: StartServer
) -> None:
    server = start_server(chaos.env(REDIS_RETRY_SECONDS="0.2"), workers=2)
    load = Load([server.url], await free_slot_ids(server.url, 30))
    running = asyncio.create_task(load.run(SECONDS))
    await asyncio.sleep(SECONDS * 0.2)
    client = redis.Redis.from_url(own_redis.url)
    await client.flushall()
    await client.aclose()
    await asyncio.sleep(SECONDS * 0.2)
    own_redis.stop()
    dead_at = len(load.outcomes)
    await asyncio.sleep(SECONDS * 0.3)
    async with httpx.AsyncClient() as http:
        during = (await http.get(f"{server.url}/health")).json()["reservations"]
    while_dead = Load([server.url], [])
    while_dead.outcomes = load.outcomes[dead_at:]
    own_redis.start()
    await running

    assert during == "degraded"
    deadline = time.monotonic() + 15
    in_a_row = 0  # both workers' breakers closed: several answers in a row say ok
    async with httpx.AsyncClient() as http:
        while in_a_row < 8 and time.monotonic() < deadline:
            answer = (await http.get(f"{server.url}/health")).json()["reservations"]
            in_a_row = in_a_row + 1 if answer == "ok" else 0
            await asyncio.sleep(0.05)
    assert in_a_row == 8
    assert_no_server_errors(load, allowed=(201, 409))
    # The breaker: a dead Redis costs nothing per request, so latency stays what it was
    # (relative, as a shared CI machine makes absolute bounds meaningless).
    before = Load([server.url], [])
    before.outcomes = load.outcomes[:dead_at]
    assert while_dead.p99() < max(1.0, 3 * before.p99())
    report("redis flushed + killed", load, p99_while_redis_dead_ms=round(while_dead.p99() * 1000))
    await audit(chaos.database_url, server.url, load.created_ids())


async def test_reservation_expires_before_the_commit(
    chaos: Stack, start_server: StartServer
) -> None:
    """Keys live 1 s, transactions take 1.5 s: the reservation layer lets rivals through
    while the first is still committing, and the unique index alone decides."""
    engine = create_async_engine(chaos.database_url)
    async with engine.begin() as conn:
        await conn.execute(text(SLOW_INSERT_FUNCTION.format(seconds=1.5)))
        await conn.execute(text(SLOW_INSERT_TRIGGER))
    await engine.dispose()
    server = start_server(chaos.env(RESERVATION_TTL_SECONDS="1"), workers=2)
    load = Load([server.url], await free_slot_ids(server.url, 5), clients=30)
    await load.run(SECONDS)

    assert_no_server_errors(load, allowed=(201, 409))
    by_database = sum(
        1 for o in load.outcomes if o.status == 409 and o.body["error"]["rejected_by"] == "database"
    )
    assert by_database > 0  # rivals did get past the expired keys, and the database said no
    report("reservation expired mid-transaction", load, rejected_by_database=by_database)
    await audit(chaos.database_url, server.url, load.created_ids())


async def test_database_connections_killed_under_load(
    chaos: Stack, cluster: PostgresCluster, start_server: StartServer
) -> None:
    server = start_server(chaos.env(), workers=2)
    load = Load([server.url], await free_slot_ids(server.url, 200))
    running = asyncio.create_task(load.run(SECONDS))
    engine = create_async_engine(chaos.database_url, isolation_level="AUTOCOMMIT")
    killed = 0
    for _ in range(2):
        await asyncio.sleep(SECONDS * 0.3)
        async with engine.connect() as conn:
            killed += len(
                (
                    await conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = 'garagebook' AND pid <> pg_backend_pid()"
                        )
                    )
                ).all()
            )
    await engine.dispose()
    await running
    assert killed > 0
    assert_no_server_errors(load, allowed=(201, 409, 503))
    # Recovered: the last second of the run booked normally.
    tail = load.outcomes[-50:]
    assert sum(o.status in (201, 409) for o in tail) >= 45
    report("database connections killed ×2", load, sessions_killed=killed)
    await audit(chaos.database_url, server.url, load.created_ids())


async def test_database_down_and_back(
    chaos: Stack, cluster: PostgresCluster, start_server: StartServer, tmp_path: Path
) -> None:
    mail = tmp_path / "mail"
    env = chaos.env(
        DATABASE_TIMEOUT_SECONDS="2",
        MAIL_DROP_DIR=str(mail),
        WORKER_POLL_SECONDS="0.2",
        # A job the worker held when the database vanished is taken up again after its lease.
        WORKER_LEASE_SECONDS="5",
    )
    server = start_server(env, workers=2)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "garagebook.cli",
        "worker",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    load = Load([server.url], await free_slot_ids(server.url, 300))
    running = asyncio.create_task(load.run(SECONDS * 1.5))
    await asyncio.sleep(SECONDS * 0.3)
    cluster.stop("fast")
    down_at = time.monotonic()
    await asyncio.sleep(SECONDS * 0.4)
    async with httpx.AsyncClient() as http:
        started = time.perf_counter()
        health = await http.get(f"{server.url}/health", timeout=10)
        health_seconds = time.perf_counter() - started
    cluster.start()
    up_at = time.monotonic()
    await asyncio.to_thread(wait_healthy, server.url)
    recovered = time.monotonic() - up_at
    await running

    assert health.status_code == 503
    assert health_seconds < 5  # no hang
    assert_no_server_errors(load, allowed=(201, 409, 503))
    assert load.counts()[503] > 0
    unavailable = [o for o in load.outcomes if o.status == 503]
    assert all(o.body["error"]["code"] == "database_unavailable" for o in unavailable)
    report(
        "database down and back",
        load,
        down_seconds=round(up_at - down_at, 1),
        recovered_within_s=round(recovered, 1),
    )
    await audit(chaos.database_url, server.url, load.created_ids())

    # The worker lived through the outage: every booking's confirmation arrives.
    engine = create_async_engine(chaos.database_url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                waiting = await conn.scalar(
                    # Reminders are due a day before each appointment: not yet.
                    text(
                        "SELECT count(*) FROM outbox WHERE status IN ('pending', 'running') "
                        "AND kind <> 'booking_reminder'"
                    )
                )
                references = set((await conn.scalars(text("SELECT reference FROM bookings"))).all())
            if waiting == 0:
                break
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 30)
    assert waiting == 0
    mailed = {path.name.split(".")[0] for path in mail.glob("*.confirmed.eml")}
    assert mailed == references


async def test_api_killed_mid_burst_and_restarted(
    chaos: Stack, own_redis: RedisProcess, start_server: StartServer
) -> None:
    """kill -9 of every server process mid-burst, with the default settings (issue 12): the
    keys of requests that died with them live RESERVATION_LEASE_SECONDS, not the 300 s of
    RESERVATION_TTL_SECONDS, so within 10 s of the crash every slot nobody booked is bookable;
    booked slots are still turned away fast by the reservation layer."""
    env = chaos.env()
    lease_ms = Settings(_env_file=None).reservation_lease_seconds * 1000  # type: ignore[call-arg]
    # Every booking's insert takes a second: at the kill, every client is mid-booking, its
    # keys taken and its transaction open (how the hidden run found 26 of 30 slots).
    engine = create_async_engine(chaos.database_url)
    async with engine.begin() as conn:
        await conn.execute(text(SLOW_INSERT_FUNCTION.format(seconds=1)))
        await conn.execute(text(SLOW_INSERT_TRIGGER))
    server = start_server(env, workers=2)
    # More slots than the burst can book: few clients want the same one.
    slots = await free_slot_ids(server.url, 1000)
    load = Load([server.url], slots)
    running = asyncio.create_task(load.run(SECONDS))
    await asyncio.sleep(max(3.0, SECONDS * 0.4))  # some bookings committed, many under way
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGKILL)  # the whole server, mid-burst
    killed_at = time.monotonic()
    server.process.wait(10)
    server.process = None
    load.stop()
    await running
    async with engine.begin() as conn:  # the database is quick again after the restart
        await conn.execute(text("DROP TRIGGER chaos_slow ON bookings"))

    # What the dead processes left behind: each key's time to live, then what was booked.
    client = redis.Redis.from_url(own_redis.url)
    try:
        keys = [key async for key in client.scan_iter("chaos:slot:*")]
        left = {int(key.rsplit(b":", 1)[1]): await client.pttl(key) for key in keys}
    finally:
        await client.aclose()
    looked_after = time.monotonic() - killed_at
    restarted = start_server(env, workers=2)  # as a supervisor would, at once
    up_after = time.monotonic() - killed_at
    async with engine.connect() as conn:
        booked = set(
            (await conn.execute(text("SELECT slot_id FROM booking_slots WHERE active"))).scalars()
        )
    await engine.dispose()
    stranded = sorted(slot for slot in left if slot not in booked)  # keys of requests that died
    confirmed = sorted(slot for slot, ttl in left.items() if slot in booked and ttl > lease_ms)
    assert stranded, f"no request was mid-booking ({len(left)} keys {looked_after:.1f} s after)"
    # They all run out within the lease of the crash, however long a restart takes...
    assert max(left[slot] for slot in stranded) <= lease_ms
    assert confirmed

    # ... and through the API: bookable within 10 s of the crash (on a machine so loaded that
    # the restart itself takes longer, on the first try once it is up).
    async with httpx.AsyncClient(base_url=restarted.url) as http:
        pending = list(stranded)
        deadline = max(killed_at + 10, time.monotonic())
        while True:  # at least one try, however late the restart
            still = []
            for slot_id in pending:
                response = await http.post("/api/bookings", json=booking_body(slot_id))
                assert response.status_code in (201, 409), response.text
                if response.status_code == 409:
                    still.append(slot_id)
            pending = still
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        all_free_after = round(time.monotonic() - killed_at, 1)
        assert pending == []
        for slot_id in confirmed[:30]:  # booked before the crash: still turned away fast
            response = await http.post("/api/bookings", json=booking_body(slot_id))
            assert response.status_code == 409
            assert response.json()["error"]["rejected_by"] == "reservation"
    await audit(chaos.database_url, restarted.url, load.created_ids())
    assert_no_server_errors(load, allowed=(201, 409, 503, None))
    report(
        "API killed -9 and restarted",
        load,
        keys_of_dead_requests=len(stranded),
        their_longest_ttl_ms=max(left[slot] for slot in stranded),
        restarted_after_s=round(up_after, 1),
        all_bookable_after_s=all_free_after,
        booked_still_409_by_reservation=min(len(confirmed), 30),
    )


async def test_redis_slow(chaos: Stack, own_redis: RedisProcess, start_server: StartServer) -> None:
    """Every Redis answer 2 s late: after a few short timeouts the breaker opens and the
    database decides, so no booking waits on Redis."""
    proxy = SlowProxy(own_redis.port, delay=2.0)
    await proxy.start()
    try:
        env = chaos.env(
            REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0",
            REDIS_TIMEOUT_MS="250",
            REDIS_RETRY_SECONDS="5",
        )
        server = start_server(env, workers=2)
        load = Load([server.url], await free_slot_ids(server.url, 30), clients=20)
        await load.run(SECONDS)
    finally:
        await proxy.stop()
    assert_no_server_errors(load, allowed=(201, 409))
    by_database = sum(
        1 for o in load.outcomes if o.status == 409 and o.body["error"]["rejected_by"] == "database"
    )
    assert by_database > 0
    # Requests do not wait on a slow Redis, counted rather than timed (a p99 bound failed on a
    # loaded machine, issue 19): no client waited the 2 s for an answer (each call was cut
    # off by its timeout), and once a few had timed out the breaker kept requests off Redis:
    # per process, the calls in flight when it opened (at most one per client), then only
    # the breaker's probe every REDIS_RETRY_SECONDS and /health's pings before it opened.
    assert proxy.awaited == 0
    assert proxy.sent <= load.clients + 2 * 10, proxy.sent  # broken: two per request (hundreds)
    report("redis 2 s slow", load, rejected_by_database=by_database, redis_commands=proxy.sent)
    await audit(chaos.database_url, server.url, load.created_ids())


async def test_graceful_shutdown_under_load(chaos: Stack, start_server: StartServer) -> None:
    """SIGTERM mid-burst: requests in flight finish (no connection cut mid-answer), new ones
    are refused at the door, and every 201 was committed."""
    server = start_server(chaos.env(), workers=2)
    load = Load([server.url], await free_slot_ids(server.url, 200))
    running = asyncio.create_task(load.run(SECONDS))
    await asyncio.sleep(SECONDS * 0.4)
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGTERM)
    server.process.wait(20)
    server.process = None
    await running
    cut = Counter(o.error for o in load.outcomes if o.status is None)
    # Refused at the door, or (rarely) a keep-alive connection the server closed just as the
    # client sent on it: the request was never read, which the audit below confirms.
    assert set(cut) <= {"ConnectError", "ReadError", "RemoteProtocolError"}, cut
    # A request uvicorn stopped reading at shutdown is told to retry (503), never 500.
    assert_no_server_errors(load, allowed=(201, 409, 503, None))
    retry = [o.body for o in load.outcomes if o.status == 503]
    assert all(body["error"]["code"] == "shutting_down" for body in retry)
    restarted = start_server(chaos.env(), workers=2)
    report("graceful shutdown (SIGTERM)", load, refused=cut["ConnectError"], cut=cut["ReadError"])
    await audit(chaos.database_url, restarted.url, load.created_ids())
