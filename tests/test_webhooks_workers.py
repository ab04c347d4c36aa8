"""Webhooks with real processes: worker processes (`garagebook worker`) killed with -9 while a
receiver is still answering, 500 bookings on PostgreSQL, a slow receiver next to a fast one
behind a real server, and the SSRF check made again by the worker that delivers."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.garage.apply import apply_in
from garagebook.garage.demo import demo_document
from garagebook.timeutil import utcnow
from tests.support.api import book_slots, booking_body, free_slots, wait_until
from tests.support.mail import mail_env, running_app
from tests.support.processes import ServerProcess, WorkerProcess
from tests.support.stack import Stack
from tests.support.webhooks import AUTH, LOCAL, ReceiverProcess, deliveries, subscribe

SQL = Callable[..., Awaitable[list[Any]]]
StartWorker = Callable[..., WorkerProcess]
StartServer = Callable[..., ServerProcess]


def worker_env(stack: Stack, **overrides: str) -> dict[str, str]:
    """A worker of this stack with fast leases and retries that may deliver to 127.0.0.1
    (mail goes to the drop folder)."""
    return mail_env(stack, None, **{"WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8", **overrides})


async def hook_jobs(sql: SQL) -> list[tuple[int, str, str | None, dict[str, Any]]]:
    rows = await sql(
        "SELECT id, status, locked_by, payload FROM outbox WHERE kind = 'webhook_delivery'"
    )
    return [(i, status, by, orjson.loads(payload)) for i, status, by, payload in rows]


async def all_done(sql: SQL, count: int, within: float) -> None:
    async def check() -> bool:
        jobs = await hook_jobs(sql)
        return len(jobs) == count and all(status == "done" for _, status, _, _ in jobs)

    await wait_until(check, within, f"{count} webhook jobs done", every=0.2)


@pytest.mark.slow
async def test_a_worker_killed_mid_delivery_loses_nothing_and_repeats_the_event_id(
    stack: Stack, sql: SQL, start_worker: StartWorker, tmp_path: Path
) -> None:
    receiver = ReceiverProcess(tmp_path, delay=1.5)  # answers late: the kill falls mid-request
    receiver.start()
    try:
        async with running_app(stack.settings(**LOCAL)) as api:  # the server sends nothing
            await subscribe(api, receiver.url, ["booking.created"])
            bookings = await book_slots(api, (await free_slots(api, service_id=1))[:6])
        env = worker_env(stack)
        doomed = start_worker(env, concurrency=4)

        async def sending() -> bool:
            jobs = await hook_jobs(sql)
            held = [j for j in jobs if j[1] == "running" and j[2] == doomed.name]
            return bool(receiver.requests()) and bool(held)

        try:
            await wait_until(sending, 40, "the worker to be waiting for the receiver's answer")
        except TimeoutError:
            raise AssertionError(doomed.output()) from None
        doomed.kill()
        held = {
            job[3]["event_id"]
            for job in await hook_jobs(sql)
            if job[1] == "running" and job[2] == doomed.name
        }
        assert held  # it died holding deliveries the receiver had been sent
        start_worker(env, concurrency=4)
        await receiver.wait_for(6, within=30)
        await all_done(sql, 6, within=30)
        requests = receiver.requests()
    finally:
        receiver.close()

    events_by_booking: dict[str, set[str]] = defaultdict(set)
    for request in requests:
        event = request["event"]
        events_by_booking[event["data"]["booking"]["reference"]].add(event["id"])
    # Every booking's event arrived, and a repeat is the same event (one id per booking).
    assert set(events_by_booking) == {b["reference"] for b in bookings}
    assert all(len(ids) == 1 for ids in events_by_booking.values())
    repeated = {event_id for event_id, n in receiver.event_ids().items() if n > 1}
    assert repeated <= held  # only what the killed worker held can have come twice


@pytest.mark.slow
@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_500_bookings_make_500_created_deliveries(
    stack: Stack, sql: SQL, start_worker: StartWorker, tmp_path: Path
) -> None:
    engine = create_async_engine(stack.database_url)
    async with engine.begin() as conn:  # 45 days of slots: room for 500 bookings
        await apply_in(conn, demo_document(book_ahead_days=45), actor="tests", now=utcnow())
    await engine.dispose()
    receiver = ReceiverProcess(tmp_path)
    receiver.start()
    try:
        async with running_app(stack.settings(**LOCAL)) as api:
            hook = await subscribe(api, receiver.url, ["booking.created"])
            slots = (await free_slots(api, service_id=1))[:500]
            assert len(slots) == 500
            # Nobody is killed here: leases long enough that a starved heartbeat on a busy
            # machine does not hand a job to the other worker (that is the kill test's case).
            env = worker_env(stack, WORKER_LEASE_SECONDS="30")
            start_worker(env, 8), start_worker(env, 8)
            started = time.monotonic()
            bookings = await book_slots(api, slots, parallel=16)
            await receiver.wait_for(500, within=120)
            await all_done(sql, 500, within=60)
            elapsed = time.monotonic() - started
            log = await deliveries(api, hook["id"])  # the latest 100
            retried = await sql(
                "SELECT attempts, last_error FROM outbox "
                "WHERE kind = 'webhook_delivery' AND attempts > 1"
            )
    finally:
        receiver.close()
    events = [request["event"] for request in receiver.requests()]
    assert {e["type"] for e in events} == {"booking.created"}
    assert {e["data"]["booking"]["reference"] for e in events} == {b["reference"] for b in bookings}
    assert len(receiver.event_ids()) == 500
    assert len(events) == 500, f"sent more than once: {retried}"  # nobody died
    assert all(d["status"] == "delivered" for d in log)
    print(f"\n[postgres] 500 bookings → 500 booking.created deliveries in {elapsed:.2f}s")


async def booking_latencies(
    url: str, slots: list[dict[str, Any]], booked_at: dict[str, float]
) -> list[float]:
    """Each booking's 201 latency; `booked_at`: reference → when its 201 came (Unix time)."""
    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        await client.get("/health")
        for i, slot in enumerate(slots):
            body = booking_body(slot["id"])
            body["customer"] = {**body["customer"], "email": f"slow{i}@example.com"}
            started = time.perf_counter()
            response = await client.post("/api/bookings", json=body)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 201, response.text
            booked_at[response.json()["reference"]] = time.time()
    return latencies


@pytest.mark.slow
async def test_a_slow_receiver_slows_neither_bookings_nor_another_receiver(
    stack: Stack, start_server: StartServer, tmp_path: Path
) -> None:
    """A real server running its own worker (the embedded default, here on both databases):
    one receiver takes 5 s to answer, the other answers at once. The bounds are well under
    those 5 s, with room for a busy machine: waiting for the slow receiver would exceed them."""
    slow = ReceiverProcess(tmp_path, delay=5.0)
    fast = ReceiverProcess(tmp_path)
    slow.start()
    fast.start()
    try:
        env = worker_env(stack, EMBEDDED_WORKER="true", WORKER_CONCURRENCY="8")
        server = start_server(env)
        async with httpx.AsyncClient(base_url=server.url) as client:
            await subscribe(client, slow.url, ["booking.created"])
            await subscribe(client, fast.url, ["booking.created"])
            slots = await free_slots(client, service_id=1)
        booked_at: dict[str, float] = {}
        latencies = await booking_latencies(server.url, slots[:5], booked_at)
        await fast.wait_for(5, within=10)
        await slow.wait_for(5, within=20)  # it was sent everything too
    finally:
        slow.close()
        fast.close()
    assert max(latencies) < 2.0, f"slowest 201: {max(latencies):.3f}s"
    # Each booking reached the fast receiver well before the slow one could answer for it.
    waited = {r["event"]["data"]["booking"]["reference"]: r["received_at"] for r in fast.requests()}
    lags = [waited[reference] - at for reference, at in booked_at.items()]
    assert max(lags) < 3.0, f"the fast receiver waited up to {max(lags):.1f}s after a 201: {lags}"
    print(
        f"\n[{stack.name}] slow receiver (5 s) + fast one: slowest 201 "
        f"{max(latencies) * 1000:.0f} ms; the fast receiver got each event at most "
        f"{max(lags):.2f}s after its 201"
    )


@pytest.mark.slow
async def test_the_worker_checks_the_address_again_and_refuses_to_send(
    stack: Stack, sql: SQL, start_worker: StartWorker, tmp_path: Path
) -> None:
    """Subscribed while 127.0.0.0/8 was allowed; the delivering worker's own setting no longer
    allows it (as when a name's DNS answer changes to an inside address): the delivery is
    refused, logged, and nothing reaches the receiver. The control: a worker that allows it
    delivers the same event when it is replayed."""
    receiver = ReceiverProcess(tmp_path)
    receiver.start()
    try:
        async with running_app(stack.settings(**LOCAL)) as api:
            hook = await subscribe(api, receiver.url, ["booking.created"])
            slot = (await free_slots(api, service_id=1))[0]
            await book_slots(api, [slot])
            strict = start_worker(worker_env(stack, WEBHOOK_ALLOW_NETWORKS=""), 2)

            async def dead() -> bool:
                return [job[1] for job in await hook_jobs(sql)] == ["dead"]

            await wait_until(dead, 20, "the delivery to be refused")
            strict.stop()
            (refused,) = await deliveries(api, hook["id"])
            assert refused["status"] == "refused"
            assert refused["status_code"] is None
            assert "127.0.0.1 is not a public address" in refused["error"]
            await asyncio.sleep(0.5)
            assert receiver.requests() == []  # not sent, not even tried

            start_worker(worker_env(stack), 2)  # the control: allowed, it is sent
            replay = await api.post(
                f"/api/admin/webhooks/{hook['id']}/deliveries/{refused['id']}/replay",
                headers=AUTH,
            )
            assert replay.status_code == 202
            (request,) = await receiver.wait_for(1, within=20)
    finally:
        receiver.close()
    assert request["event"]["id"] == refused["event_id"]
