"""Issue 17: each server process keeps its own availability cache (slots/cache.py), and every
change — made through another process, or by no process at all (SQL) — is in the next answer
of every process. Two apps on one database stand for two processes (each has its own cache);
the race runs two real `garagebook serve` processes. The truth each answer is held to is
`list_slots`, computed afresh on its own connection."""

from __future__ import annotations

import asyncio
import copy
import itertools
import re
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from garagebook.app import create_app
from garagebook.errors import DatabaseUnavailable
from garagebook.garage.demo import demo_document
from garagebook.garage.document import to_json
from garagebook.slots import cache as cache_module
from garagebook.slots.cache import _Read, _Reads
from garagebook.slots.service import list_slots, local_day_bounds
from garagebook.timeutil import utcnow
from tests.support.api import booking_body, free_slots
from tests.support.mail import running_app
from tests.support.processes import ServerProcess
from tests.support.stack import ADMIN_TOKEN, Stack, reset_database
from tests.support.technicians import add_technicians

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MOT, INTERIM = 1, 3  # the demo garage's one-hour and two-hour services


def client_of(stack: Stack) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """A server process of its own, in-process: its own app, so its own cache."""
    return running_app(stack.settings())


async def offered(client: httpx.AsyncClient, service_id: int, day: str) -> set[int]:
    response = await client.get(
        "/api/slots", params={"date": day, "service_id": service_id, "available": "true"}
    )
    assert response.status_code == 200, response.text
    return {s["id"] for s in response.json()}


async def truth(stack: Stack, service_id: int, day: str) -> set[int]:
    """What `list_slots` finds now, with no cache anywhere."""
    zone = stack.settings().timezone
    start, end = local_day_bounds(datetime.fromisoformat(day).date(), zone)
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            listed = await list_slots(
                conn, start=start, end=end, now=utcnow(), zone=zone, service_id=service_id
            )
    finally:
        await engine.dispose()
    return {a.slot.id for a in listed if a.available}


async def a_later_day(client: httpx.AsyncClient) -> str:
    """The first day after today with free times (all of its hours still ahead)."""
    today = utcnow().date().isoformat()
    later = [s["starts_at"][:10] for s in await free_slots(client)]
    return str(min(d for d in later if d > today))


Check = Callable[[str], Awaitable[set[int]]]


async def changes_seen_by_the_other_process(
    stack: Stack, sql: Callable[..., Awaitable[list[Any]]]
) -> list[tuple[str, set[int], set[int]]]:
    """Warm process B's cache, change the day through process A or SQL, and ask B again after
    each change: (what changed, B's answer, the truth)."""
    seen: list[tuple[str, set[int], set[int]]] = []
    async with client_of(stack) as a, client_of(stack) as b:
        day = await a_later_day(a)

        async def look(what: str) -> set[int]:
            for service_id in (MOT, INTERIM):
                answer = await offered(b, service_id, day)
                seen.append(
                    (f"{what} (service {service_id})", answer, await truth(stack, service_id, day))
                )
            return await offered(b, MOT, day)

        first = await look("warm")
        chosen = min(first)
        booked = await a.post("/api/bookings", json=booking_body(chosen))
        assert booked.status_code == 201, booked.text
        booking = booked.json()
        await look("a booking through A")
        others = sorted((await offered(b, MOT, day)) - {chosen})
        moved = await a.post(
            f"/api/manage/{booking['cancel_token']}/reschedule", json={"slot_id": others[0]}
        )
        assert moved.status_code == 200, moved.text
        await look("the booking moved")
        cancelled = await a.post(f"/api/manage/{booking['cancel_token']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        await look("the booking cancelled")
        listed = (await a.get("/api/slots", params={"date": day, "limit": 1000})).json()
        slot = next(s for s in listed if s["id"] == others[1])
        closed = await a.post(
            "/api/admin/closures",
            json={
                "bay_id": slot["bay_id"],
                "starts_at": slot["starts_at"],
                "ends_at": slot["ends_at"],
                "reason": "ramp service",
            },
            headers=ADMIN,
        )
        assert closed.status_code == 201, closed.text
        await look("a closure")
        await sql("UPDATE slots SET open = false WHERE id = :id", id=others[2])
        await look("a slot closed in SQL, by no process")
        document = copy.deepcopy(to_json(demo_document()))
        document["bays"] = document["bays"][:2]  # the third bay retired
        applied = await a.put("/api/admin/garage", json=document, headers=ADMIN)
        assert applied.status_code == 200, applied.text
        await look("a setup change (a bay retired)")
        late = datetime.fromisoformat(f"{day}T17:00:00").replace(tzinfo=stack.settings().timezone)
        opened = await a.post(
            "/api/admin/slots",
            json={
                "bay_id": 1,
                "starts_at": late.isoformat(),
                "ends_at": (late + timedelta(hours=1)).isoformat(),
            },
            headers=ADMIN,
        )
        assert opened.status_code == 201, opened.text
        await look("an admin slot after hours")
    return seen


async def test_every_change_is_in_the_next_answer_of_another_process(
    stack: Stack, sql: Callable[..., Awaitable[list[Any]]]
) -> None:
    seen = await changes_seen_by_the_other_process(stack, sql)
    wrong = [what for what, answer, expected in seen if answer != expected]
    assert wrong == []
    # Every step changed what is offered (else it would prove nothing).
    answers = [answer for what, answer, _ in seen if "service 1" in what]
    assert len(answers) == 8
    assert all(before != after for before, after in itertools.pairwise(answers))


@pytest.fixture
async def pg(postgres_url: str, redis_available: str) -> Stack:
    """The PostgreSQL stack alone (SQLite keeps no cache: it always computes)."""
    await reset_database(postgres_url)
    return Stack("postgres", postgres_url, redis_available, f"gbtest:{uuid.uuid4().hex[:12]}:")


def sql_on(stack: Stack) -> Callable[..., Awaitable[list[Any]]]:
    async def query(statement: str, **params: Any) -> list[Any]:
        engine = create_async_engine(stack.database_url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(statement), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return query


async def stale_steps_with(
    pg: Stack, monkeypatch: pytest.MonkeyPatch, part: str, replacement: str
) -> list[str]:
    """The change-by-change steps run with `part` of the fingerprint statement replaced: the
    steps at which process B's answer was not the truth."""
    changed = cache_module._FINGERPRINTS.text.replace(part, replacement)
    assert changed != cache_module._FINGERPRINTS.text
    monkeypatch.setattr(cache_module, "_FINGERPRINTS", text(changed))
    seen = await changes_seen_by_the_other_process(pg, sql_on(pg))
    return [what for what, answer, expected in seen if answer != expected]


async def test_control_a_fingerprint_blind_to_claims_serves_a_stale_day(
    pg: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the same steps with the bay claims left out of the fingerprint. Process B
    then keeps offering the time A booked — what the test above would catch."""
    stale = await stale_steps_with(
        pg, monkeypatch, "(SELECT 1 FROM booking_slots c", "(SELECT NULL FROM booking_slots c"
    )
    assert "a booking through A (service 1)" in stale


async def test_control_a_snapshot_that_never_changes_serves_a_stale_day(
    pg: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control of the snapshot gate: with every statement's snapshot taken for the same
    one, a day once computed counts as unchanged and is never read again — B keeps offering
    the time A booked."""
    stale = await stale_steps_with(
        pg,
        monkeypatch,
        "SELECT pg_current_snapshot()::text AS snapshot",
        "SELECT '1:1:'::text AS snapshot",
    )
    assert "a booking through A (service 1)" in stale


async def test_a_day_unchanged_at_the_statements_snapshot_is_not_read_again(pg: Stack) -> None:
    """The gate itself: a day sent with the statement's own snapshot is not read (its
    fingerprint columns are not worked out), one sent with another is. Inside one REPEATABLE
    READ transaction every statement has the same snapshot, so the two reads below see one."""
    day = date.today() + timedelta(days=3)
    bounds = [local_day_bounds(d, pg.settings().timezone) for d in (day, day)]
    engine = create_async_engine(pg.database_url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                snapshot = await conn.scalar(text("SELECT pg_current_snapshot()::text"))
                rows = (
                    await conn.execute(
                        cache_module._FINGERPRINTS,
                        {
                            "service_id": MOT,
                            "i": [0, 1],
                            "starts": [start for start, _ in bounds],
                            "ends": [end for _, end in bounds],
                            "known": [snapshot, "1:1:"],
                            "zone": pg.settings().timezone.key,
                        },
                    )
                ).all()
    finally:
        await engine.dispose()
    assert [(row.i, row.read, row.snapshot) for row in rows] == [
        (0, False, snapshot),
        (1, True, snapshot),
    ]
    bay_slots = [tuple(row)[2] for row in rows]  # the count of the day's slots
    assert bay_slots[0] == 0  # not read: none counted
    assert bay_slots[1] > 0  # the same day, read: the demo garage's slots


async def test_technician_changes_are_in_the_next_answer(stack: Stack) -> None:
    """A technician's absence and its withdrawal, and a booking that takes the only
    technician: each in the other process's next answer."""
    ids = await add_technicians(stack.database_url, ("Sam", "general"))
    async with client_of(stack) as a, client_of(stack) as b:
        day = await a_later_day(a)
        before = await offered(b, MOT, day)
        assert before == await truth(stack, MOT, day)
        assert before
        absent = await a.post(
            "/api/admin/absences",
            json={"technician_id": ids["Sam"], "first_day": day, "last_day": day, "reason": "sick"},
            headers=ADMIN,
        )
        assert absent.status_code == 201, absent.text
        assert await offered(b, MOT, day) == set() == await truth(stack, MOT, day)
        withdrawn = await a.delete(f"/api/admin/absences/{absent.json()['id']}", headers=ADMIN)
        assert withdrawn.status_code in (200, 204), withdrawn.text
        assert await offered(b, MOT, day) == before
        # Sam takes the booking: at that hour no bay is offered any more (one technician).
        chosen = min(before)
        booked = await a.post("/api/bookings", json=booking_body(chosen))
        assert booked.status_code == 201, booked.text
        after = await offered(b, MOT, day)
        assert after == await truth(stack, MOT, day)
        hour = booked.json()["starts_at"]
        slots_then = {s["id"] for s in await free_slots(b) if s["starts_at"] == hour}
        assert not (after & slots_then)


async def test_a_race_of_bookings_and_cancellations_against_two_server_processes(
    pg: Stack, start_server: Callable[..., ServerProcess]
) -> None:
    """Two real server processes: bookings and cancellations through A, each followed at once
    by B's answer, while other clients keep B's cache busy for the same day. Every answer B
    gives after A's 201 leaves the time out; after A's cancel, it is back."""
    a_server, b_server = start_server(pg.env()), start_server(pg.env())
    async with (
        httpx.AsyncClient(base_url=a_server.url, timeout=30) as a,
        httpx.AsyncClient(base_url=b_server.url, timeout=30) as b,
    ):
        day = await a_later_day(a)
        times = sorted(await offered(b, MOT, day))
        assert len(times) >= 12
        stop = asyncio.Event()
        stale: list[str] = []

        async def keep_b_busy() -> None:
            while not stop.is_set():
                await offered(b, MOT, day)

        async def book_then_look(slot_id: int, then_cancel: bool) -> None:
            booked = await a.post("/api/bookings", json=booking_body(slot_id))
            assert booked.status_code == 201, booked.text
            if slot_id in await offered(b, MOT, day):
                stale.append(f"{slot_id} offered after its booking")
            if then_cancel:
                token = booked.json()["cancel_token"]
                assert (await a.post(f"/api/manage/{token}/cancel")).status_code == 200
                if slot_id not in await offered(b, MOT, day):
                    stale.append(f"{slot_id} not offered after its cancellation")

        busy = [asyncio.create_task(keep_b_busy()) for _ in range(4)]
        try:
            await asyncio.gather(
                *(book_then_look(slot_id, i % 2 == 0) for i, slot_id in enumerate(times[:12]))
            )
        finally:
            stop.set()
            await asyncio.gather(*busy)
        assert stale == []
        assert await offered(b, MOT, day) == await truth(pg, MOT, day)


async def test_the_next_free_times_without_a_service_are_what_the_slots_say(
    stack: Stack, api: httpx.AsyncClient, sql: Callable[..., Awaitable[list[Any]]]
) -> None:
    """`/api/slots` without a service is answered by one query that stops at `limit`
    (slots_listing): the same slots, in the same order, as working through every slot of the
    60 days with list_slots — with bookings, a closure, a closed slot and a retired bay."""
    free = await free_slots(api)
    for slot in free[:3]:
        assert (await api.post("/api/bookings", json=booking_body(slot["id"]))).status_code == 201
    await sql("UPDATE slots SET open = false WHERE id = :id", id=free[5]["id"])
    document = copy.deepcopy(to_json(demo_document()))
    document["bays"] = document["bays"][:2]
    assert (await api.put("/api/admin/garage", json=document, headers=ADMIN)).status_code == 200
    zone = stack.settings().timezone
    now = utcnow()
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            every = await list_slots(
                conn, start=now, end=now + timedelta(days=60), now=now, zone=zone, service_id=None
            )
    finally:
        await engine.dispose()
    for available, limit in ((True, 50), (False, 1000), (None, 30), (True, 1)):
        params: dict[str, Any] = {"limit": limit}
        if available is not None:
            params["available"] = str(available).lower()
        listed = (await api.get("/api/slots", params=params)).json()
        expected = [a for a in every if available in (None, a.available)][:limit]
        assert [(s["id"], s["available"]) for s in listed] == [
            (a.slot.id, a.available) for a in expected
        ], (available, limit)


async def test_an_answer_never_takes_a_read_that_started_before_it_arrived() -> None:
    """The fingerprint reads of one service are shared (slots/cache.py `_Reads`), but only by
    answers that arrived before the read started: one arriving while a read is in flight
    waits for the next, which reads the days of everyone waiting."""
    monday, tuesday = date(2031, 1, 6), date(2031, 1, 7)
    started: list[list[date]] = []
    gates = [asyncio.Event() for _ in range(3)]

    async def fetch(days: list[date]) -> _Read:
        started.append(days)
        n = len(started)
        await gates[n - 1].wait()
        if n == 3:
            raise DatabaseUnavailable()
        return _Read(f"{n}:{n}:", {day: (n,) for day in days}, 60, "timed", 0)

    reads = _Reads()
    first = asyncio.create_task(reads.read([monday], fetch))
    await asyncio.sleep(0)
    assert started == [[monday]]
    second = asyncio.create_task(reads.read([tuesday], fetch))
    third = asyncio.create_task(reads.read([monday], fetch))
    gone = asyncio.create_task(reads.read([monday], fetch))
    await asyncio.sleep(0)
    assert len(started) == 1  # they wait: the read in flight may predate what they know
    gone.cancel()  # a client that leaves takes nobody's read with it
    gates[0].set()
    assert (await first).prints == {monday: (1,)}
    await asyncio.sleep(0)
    assert started[1] == [monday, tuesday]  # one read for all who waited
    gates[1].set()
    assert (await second).prints == {monday: (2,), tuesday: (2,)}
    assert (await third).prints[monday] == (2,)  # not (1,): that read began before it came
    with pytest.raises(asyncio.CancelledError):
        await gone
    # A read that fails fails its waiters (503), and the next one reads again.
    failing = asyncio.create_task(reads.read([monday], fetch))
    await asyncio.sleep(0)
    gates[2].set()
    with pytest.raises(DatabaseUnavailable):
        await failing
    assert len(started) == 3


async def test_concurrent_answers_share_fingerprint_reads(
    pg: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty booking pages at once in one process: fewer fingerprint reads than pages, and
    every page the same as one asked alone."""
    reads = 0
    original = cache_module.AvailabilityCache._fingerprints

    async def counted(self: cache_module.AvailabilityCache, *args: Any) -> _Read:
        nonlocal reads
        reads += 1
        return await original(self, *args)

    monkeypatch.setattr(cache_module.AvailabilityCache, "_fingerprints", counted)
    async with client_of(pg) as client:
        alone = (await client.get("/", params={"service": MOT})).text
        reads = 0
        pages = await asyncio.gather(*(client.get("/", params={"service": MOT}) for _ in range(40)))
    assert all(page.status_code == 200 for page in pages)
    assert {_without_tokens(page.text) for page in pages} == {_without_tokens(alone)}
    assert 1 <= reads < 40


def _without_tokens(page: str) -> str:
    """A page with its per-render tokens (idempotency key, CSRF, nonce) blanked."""
    return re.sub(r'(value|nonce|content)="[0-9a-f_-]{16,}"', "", page)


async def test_service_ids_a_client_makes_up_leave_nothing_behind(pg: Stack) -> None:
    """404 for each unknown service, and the per-service read bookkeeping kept only while a
    read is shared: a client sending a thousand ids grows nothing."""
    app = create_app(pg.settings())
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app), base_url="http://t") as c,
    ):
        day = (utcnow() + timedelta(days=1)).date().isoformat()
        answers = await asyncio.gather(
            *(
                c.get("/api/availability", params={"service_id": 1000 + n, "date": day})
                for n in range(200)
            ),
            *(
                c.get("/api/slots", params={"service_id": 5000 + n, "date": day})
                for n in range(200)
            ),
        )
        assert {a.status_code for a in answers} == {404}
        assert (
            await c.get("/api/slots", params={"service_id": MOT, "date": day})
        ).status_code == 200
        cache = app.state.availability
        assert cache._reads == {}


async def test_a_kept_days_availability_still_leaves_out_the_starts_inside_the_notice(
    stack: Stack, api: httpx.AsyncClient
) -> None:
    """`GET /api/availability` answers from JSON kept per day, with no clock in it: the
    minimum notice (read with every answer) still takes out the starts it covers, in the very
    next answer of the same day."""
    day = (await free_slots(api))[0]["starts_at"][:10]
    query = {"service_id": MOT, "date": day}
    before = (await api.get("/api/availability", params=query)).json()
    assert len(before) >= 3
    third = datetime.fromisoformat(before[2]["starts_at"])
    minutes = int((third - utcnow()).total_seconds() // 60) + 1  # past the first three starts
    engine = create_async_engine(stack.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE garage SET min_notice_minutes = :m WHERE id = 1"), {"m": minutes}
            )
    finally:
        await engine.dispose()

    after = (await api.get("/api/availability", params=query)).json()

    assert after == before[3:]
