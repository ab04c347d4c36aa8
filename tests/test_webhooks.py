"""Webhooks (issue 16): subscriptions through the admin API, events written to the outbox with
each booking change, signed deliveries to a real receiver process (tests/support/receiver.py)
by the worker, retries, the delivery log and replays, and the SSRF check at both ends."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager

from garagebook.app import create_app
from garagebook.config import Settings
from garagebook.web.auth import OWNER, STAFF
from garagebook.webhooks import sealing
from tests.support.api import book_as, booking_body, free_slots, free_slots_ahead, wait_until
from tests.support.mail import FAST_JOBS, running_app
from tests.support.processes import WorkerProcess
from tests.support.stack import Stack
from tests.support.webhooks import (
    ALL_EVENTS,
    AUTH,
    LOCAL,
    ReceiverProcess,
    deliveries,
    readme_receiver,
    subscribe,
)
from tests.test_round_trips import record_statements
from tests.test_staff_roles import add_account, sign_in_as
from tests.test_web_pages import csrf_of

SQL = Callable[..., Awaitable[list[Any]]]
StartWorker = Callable[..., WorkerProcess]


def delivering(stack: Stack, **overrides: Any) -> Settings:
    """A server that runs its own worker (fast retries) and may deliver to 127.0.0.1."""
    return stack.settings(**{"embedded_worker": True, **FAST_JOBS, **LOCAL, **overrides})


async def hook_jobs(sql: SQL) -> list[dict[str, Any]]:
    rows = await sql("SELECT payload FROM outbox WHERE kind = 'webhook_delivery' ORDER BY id")
    return [orjson.loads(payload) for (payload,) in rows]


async def finished(sql: SQL, count: int, status: str = "done") -> None:
    """Wait until the `count` webhook jobs are all in `status` (their attempts logged)."""

    async def check() -> bool:
        rows = await sql("SELECT status FROM outbox WHERE kind = 'webhook_delivery'")
        return [found for (found,) in rows] == [status] * count

    await wait_until(check, 20, f"{count} webhook job(s) {status}")


async def test_subscriptions_through_the_admin_api(stack: Stack) -> None:
    async with running_app(stack.settings(**LOCAL)) as api:
        made = await subscribe(api, "http://127.0.0.1:9/hook", ["booking.created"])
        assert made["secret"].startswith("whsec_")
        assert len(made["secret"]) > 40
        assert made["events"] == ["booking.created"]
        assert made["enabled"] is True

        listed = (await api.get("/api/admin/webhooks", headers=AUTH)).json()
        assert [hook["id"] for hook in listed] == [made["id"]]
        assert "secret" not in listed[0]  # shown once

        path = f"/api/admin/webhooks/{made['id']}"
        paused = await api.patch(path, json={"enabled": False}, headers=AUTH)
        assert paused.status_code == 200
        assert paused.json()["enabled"] is False
        assert (await api.get(path, headers=AUTH)).json()["enabled"] is False
        assert await deliveries(api, made["id"]) == []

        assert (await api.get("/api/admin/webhooks")).status_code == 401
        bad = await api.post(
            "/api/admin/webhooks",
            json={"url": "http://127.0.0.1:9/", "events": ["booking.exploded"]},
            headers=AUTH,
        )
        assert bad.status_code == 422, bad.text
        assert (await api.delete(path, headers=AUTH)).status_code == 204
        assert (await api.get(path, headers=AUTH)).status_code == 404
        assert (await api.delete(path, headers=AUTH)).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",  # the cloud's metadata service
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "ftp://example.com/hook",
        "http://user:pass@example.com/hook",
        "http://no-such-host.invalid/hook",
    ],
)
async def test_a_url_into_a_private_network_is_refused_at_subscription(
    stack: Stack, url: str
) -> None:
    async with running_app(stack.settings()) as api:  # WEBHOOK_ALLOW_NETWORKS unset
        response = await api.post(
            "/api/admin/webhooks", json={"url": url, "events": ALL_EVENTS}, headers=AUTH
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "webhook_url_refused"
        assert (await api.get("/api/admin/webhooks", headers=AUTH)).json() == []


async def test_the_allow_list_lets_a_local_receiver_in(stack: Stack) -> None:
    async with running_app(stack.settings(webhook_allow_networks="127.0.0.0/8")) as api:
        await subscribe(api, "http://127.0.0.1:8080/hook")
        refused = await api.post(
            "/api/admin/webhooks",
            json={"url": "http://10.1.2.3/hook", "events": ALL_EVENTS},
            headers=AUTH,
        )
        assert refused.status_code == 422  # only what the list names


async def test_each_change_writes_its_events_in_its_own_transaction(stack: Stack, sql: SQL) -> None:
    """One job per enabled subscription that wants the event, with one event id; nothing for a
    booking the database turned away (its transaction rolled back)."""
    async with running_app(stack.settings(**LOCAL)) as api:
        everything = await subscribe(api, "http://127.0.0.1:9/all")
        created_only = await subscribe(api, "http://127.0.0.1:9/new", ["booking.created"])
        await subscribe(api, "http://127.0.0.1:9/off", ALL_EVENTS, enabled=False)
        slots = await free_slots(api, service_id=1)

        booking = await book_as(api, slots[0]["id"], "ada@example.com")
        jobs = await hook_jobs(sql)
        assert sorted(job["webhook_id"] for job in jobs) == sorted(
            [everything["id"], created_only["id"]]
        )
        assert {job["type"] for job in jobs} == {"booking.created"}
        assert len({job["event_id"] for job in jobs}) == 1  # one event, to each receiver
        assert jobs[0]["booking_id"] == booking["id"]
        assert jobs[0]["sequence"] == 0
        assert "ada@example.com" not in str(jobs)  # ids only: no personal data in the outbox

        taken = await api.post("/api/bookings", json=booking_body(slots[0]["id"]))
        assert taken.status_code == 409
        assert len(await hook_jobs(sql)) == 2

        moved = await api.post(
            f"/api/bookings/{booking['id']}/reschedule",
            json={"slot_id": slots[3]["id"]},
            headers=AUTH,
        )
        assert moved.status_code == 200, moved.text
        cancelled = await api.post(f"/api/bookings/{booking['id']}/cancel", headers=AUTH)
        assert cancelled.status_code == 200, cancelled.text

        other = await book_as(api, slots[1]["id"], "grace@example.com")
        done = await api.post(f"/api/bookings/{other['id']}/complete", headers=AUTH)
        assert done.status_code == 200, done.text

        jobs = await hook_jobs(sql)
        by_type = [(job["type"], job["webhook_id"]) for job in jobs[2:]]
        assert by_type[:2] == [
            ("booking.rescheduled", everything["id"]),
            ("booking.cancelled", everything["id"]),
        ]
        assert sorted(by_type[2:4]) == sorted(
            [("booking.created", everything["id"]), ("booking.created", created_only["id"])]
        )
        assert by_type[4:] == [("booking.completed", everything["id"])]
        rescheduled = jobs[2]
        assert rescheduled["sequence"] == 1  # the booking's first move
        assert jobs[2]["created_at"] < jobs[3]["created_at"]  # what a receiver orders by


async def test_a_delivery_is_signed_as_the_readme_verifies_it(
    stack: Stack, sql: SQL, tmp_path: Path
) -> None:
    receiver = ReceiverProcess(tmp_path)
    receiver.start()
    try:
        async with running_app(delivering(stack)) as api:
            hook = await subscribe(api, receiver.url)
            slot = (await free_slots(api, service_id=1))[0]
            booking = await book_as(api, slot["id"], "ada@example.com")
            await api.post(f"/api/bookings/{booking['id']}/cancel", headers=AUTH)
            requests = await receiver.wait_for(2, within=20)
            await finished(sql, 2)
            log = await deliveries(api, hook["id"])
    finally:
        receiver.close()

    verify = readme_receiver()["verify"]
    assert len(requests) == 2
    for request in requests:
        header = request["headers"]["Garagebook-Signature"]
        assert verify(hook["secret"], header, request["raw"])
        assert not verify(hook["secret"], header, request["raw"] + b" ")  # tampered body
        assert not verify("whsec_another", header, request["raw"])
        stamp = int(header.split(",")[0].removeprefix("t="))
        assert abs(stamp - time.time()) < 60
        assert not verify(hook["secret"], header, request["raw"], now=stamp + 301)  # too old
        assert request["path"] == "/hooks/garagebook"
    events = sorted((r["event"] for r in requests), key=lambda e: e["created_at"])
    assert [e["type"] for e in events] == ["booking.created", "booking.cancelled"]
    for event in events:
        assert event["id"].startswith("evt_")
        assert set(event) == {"id", "type", "created_at", "data"}
        shown = event["data"]["booking"]
        assert shown["id"] == booking["id"]
        assert shown["reference"] == booking["reference"]
        assert shown["customer"]["email"] == "ada@example.com"
        assert "cancel_token" not in shown
    assert sorted((d["event"], d["status"], d["status_code"]) for d in log) == [
        ("booking.cancelled", "delivered", 200),
        ("booking.created", "delivered", 200),
    ]
    assert {d["event_id"] for d in log} == {e["id"] for e in events}


async def test_a_receiver_down_gets_everything_once_it_is_back(
    stack: Stack, sql: SQL, tmp_path: Path
) -> None:
    receiver = ReceiverProcess(tmp_path)  # its port is chosen, nothing listens yet
    try:
        async with running_app(delivering(stack)) as api:
            hook = await subscribe(api, receiver.url, ["booking.created"])
            slots = (await free_slots(api, service_id=1))[:3]
            booked = [await book_as(api, s["id"], f"c{i}@example.com") for i, s in enumerate(slots)]

            async def failed_twice() -> bool:
                failed = Counter(d["event_id"] for d in await deliveries(api, hook["id"]))
                return len(failed) == 3 and min(failed.values()) >= 2

            await wait_until(failed_twice, 20, "each delivery to fail at least twice")
            assert receiver.requests() == []
            receiver.start()
            requests = await receiver.wait_for(3, within=20)
            await finished(sql, 3)
            log = await deliveries(api, hook["id"])
    finally:
        receiver.close()
    shown = {r["event"]["data"]["booking"]["reference"] for r in requests}
    assert shown == {b["reference"] for b in booked}
    failed = [d for d in log if d["status"] == "failed"]
    assert all(d["status_code"] is None and d["error"] for d in failed)  # no answer at all
    assert sum(1 for d in log if d["status"] == "delivered") == 3
    rows = await sql("SELECT status, attempts FROM outbox WHERE kind = 'webhook_delivery'")
    assert {status for status, _ in rows} == {"done"}
    assert all(attempts >= 3 for _, attempts in rows)


async def test_an_answer_other_than_2xx_is_retried_then_dead(
    stack: Stack, sql: SQL, tmp_path: Path
) -> None:
    receiver = ReceiverProcess(tmp_path, status=500)
    receiver.start()
    try:
        async with running_app(delivering(stack, job_max_attempts=3)) as api:
            hook = await subscribe(api, receiver.url, ["booking.created"])
            slot = (await free_slots(api, service_id=1))[0]
            await book_as(api, slot["id"], "ada@example.com")
            await finished(sql, 1, "dead")  # after its 3 attempts
            log = await deliveries(api, hook["id"])
    finally:
        receiver.close()
    assert [(d["attempt"], d["status"], d["status_code"]) for d in log] == [
        (3, "failed", 500),
        (2, "failed", 500),
        (1, "failed", 500),
    ]
    assert list(receiver.event_ids().values()) == [3]  # each attempt the same event id


async def test_replay_sends_the_same_event_again(stack: Stack, sql: SQL, tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path)
    receiver.start()
    try:
        async with running_app(delivering(stack)) as api:
            hook = await subscribe(api, receiver.url, ["booking.created"])
            slot = (await free_slots(api, service_id=1))[0]
            await book_as(api, slot["id"], "ada@example.com")
            first = await receiver.wait_for(1, within=20)
            await finished(sql, 1)
            (delivery,) = await deliveries(api, hook["id"])
            replayed = await api.post(
                f"/api/admin/webhooks/{hook['id']}/deliveries/{delivery['id']}/replay",
                headers=AUTH,
            )
            assert replayed.status_code == 202, replayed.text
            assert replayed.json()["event_id"] == first[0]["event"]["id"]

            async def twice() -> bool:
                return len(receiver.requests()) == 2

            await wait_until(twice, 20, "the replay to arrive")
            missing = await api.post(
                f"/api/admin/webhooks/{hook['id']}/deliveries/999999/replay", headers=AUTH
            )
            assert missing.status_code == 404
    finally:
        receiver.close()
    assert receiver.event_ids() == {first[0]["event"]["id"]: 2}


async def test_a_disabled_subscription_gets_nothing(stack: Stack, sql: SQL, tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path)
    receiver.start()
    try:
        async with running_app(delivering(stack)) as api:
            hook = await subscribe(api, receiver.url, ["booking.created"])
            await api.patch(
                f"/api/admin/webhooks/{hook['id']}", json={"enabled": False}, headers=AUTH
            )
            slot = (await free_slots(api, service_id=1))[0]
            await book_as(api, slot["id"], "ada@example.com")
            await api.patch(
                f"/api/admin/webhooks/{hook['id']}", json={"enabled": True}, headers=AUTH
            )
            other = (await free_slots(api, service_id=1))[1]
            await book_as(api, other["id"], "grace@example.com")
            requests = await receiver.wait_for(1, within=20)
    finally:
        receiver.close()
    assert [r["event"]["data"]["booking"]["slot_id"] for r in requests] == [other["id"]]
    assert len(await hook_jobs(sql)) == 1


def test_secrets_are_sealed_with_the_configured_key() -> None:
    sealed_by = Settings(_env_file=None, webhook_secret_key="k1")  # type: ignore[call-arg]
    secret = sealing.new_secret()
    stored = sealing.seal(secret, sealed_by)
    assert secret not in stored
    assert stored.startswith("sealed:")
    assert sealing.unseal(stored, sealed_by) == secret
    with pytest.raises(sealing.SecretUnreadable):
        sealing.unseal(stored, Settings(_env_file=None, webhook_secret_key="k2"))  # type: ignore[call-arg]
    from_session = Settings(_env_file=None, session_secret="s")  # type: ignore[call-arg]
    assert sealing.unseal(sealing.seal(secret, from_session), from_session) == secret
    unset = Settings(_env_file=None)  # type: ignore[call-arg]
    assert sealing.seal(secret, unset) == f"plain:{secret}"  # the README says so


async def test_the_stored_secret_is_not_the_secret(stack: Stack, sql: SQL) -> None:
    async with running_app(stack.settings(webhook_secret_key="sealing-key", **LOCAL)) as api:
        made = await subscribe(api, "http://127.0.0.1:9/hook")
    (stored,) = (await sql("SELECT secret_sealed FROM webhooks"))[0]
    assert made["secret"] not in stored


async def test_subscriptions_add_no_round_trip_to_a_booking(stack: Stack) -> None:
    """PostgreSQL: still BEGIN, the one statement, COMMIT with receivers subscribed (their jobs
    are a CTE of it). SQLite: one more in-process INSERT … SELECT (and the setup's rules read
    in one SELECT, as without webhooks)."""
    app = create_app(stack.settings(**LOCAL))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as api,
    ):
        await subscribe(api, "http://127.0.0.1:9/a", ["booking.created"])
        await subscribe(api, "http://127.0.0.1:9/b")
        first, slot = (await free_slots_ahead(api, service_id=1))[:2]
        await book_as(api, first["id"], "first@example.com")  # the plan cache, Redis scripts
        statements = record_statements(app)
        await book_as(api, slot["id"], "second@example.com")
    writes = ["WITH"] if stack.is_postgres else ["SELECT", *["INSERT"] * 7]  # with a reminder
    assert [s for s in statements if s not in ("BEGIN", "COMMIT")] == ["SELECT", *writes]


async def test_the_owner_manages_webhooks_on_the_settings_page(stack: Stack) -> None:
    app = create_app(stack.settings(**LOCAL))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as page,
    ):
        await add_account(app, "olive", OWNER)
        await add_account(app, "sam", STAFF)
        await sign_in_as(page, "olive")
        shown = await page.get("/staff/webhooks")
        assert shown.status_code == 200
        assert "No webhooks yet" in shown.text
        form = {"csrf_token": csrf_of(shown.text), "url": "http://127.0.0.1:9/hook"}
        added = await page.post("/staff/webhooks", data={**form, "booking.created": "on"})
        assert added.status_code == 200, added.text
        secret = re.search(r'id="webhook-secret">(whsec_[^<]+)<', added.text)
        assert secret is not None
        (hook,) = (await page.get("/api/admin/webhooks", headers=AUTH)).json()
        assert hook["events"] == ["booking.created"]
        assert hook["enabled"] is True
        again = await page.get("/staff/webhooks")
        assert secret.group(1) not in again.text  # shown once
        assert "http://127.0.0.1:9/hook" in again.text

        refused = await page.post(
            "/staff/webhooks",
            data={**form, "url": "http://10.0.0.1/hook", "booking.created": "on"},
        )
        assert refused.status_code == 422
        assert "webhooks-error" in refused.text
        nothing_ticked = await page.post("/staff/webhooks", data=form)
        assert nothing_ticked.status_code == 422

        token = {"csrf_token": csrf_of(again.text)}
        off = await page.post(f"/staff/webhooks/{hook['id']}/disable", data=token)
        assert off.status_code == 303
        assert off.headers["location"].endswith("done=disabled")
        got = await page.get(f"/api/admin/webhooks/{hook['id']}", headers=AUTH)
        assert got.json()["enabled"] is False
        log = await page.get(f"/staff/webhooks/{hook['id']}")
        assert log.status_code == 200
        assert "Nothing sent yet" in log.text
        stale = await page.post(f"/staff/webhooks/{hook['id']}/enable", data={})
        assert stale.status_code == 403  # no CSRF token: refused
        gone = await page.post(f"/staff/webhooks/{hook['id']}/delete", data=token)
        assert gone.status_code == 303
        assert (await page.get("/api/admin/webhooks", headers=AUTH)).json() == []

        await page.post("/staff/logout", data={"csrf_token": csrf_of(again.text)})
        await sign_in_as(page, "sam")
        assert (await page.get("/staff/webhooks")).status_code == 403  # owners only


async def test_a_time_staff_closed_is_not_sent_as_a_booking(
    stack: Stack, sql: SQL, tmp_path: Path
) -> None:
    receiver = ReceiverProcess(tmp_path)
    receiver.start()
    try:
        settings = delivering(stack)
        async with running_app(settings) as api:
            await subscribe(api, receiver.url, ["booking.created"])
            closed, booked = (await free_slots(api, service_id=1))[:2]
            closure = await api.post(
                "/api/admin/closures",
                json={
                    "bay_id": closed["bay_id"],
                    "starts_at": closed["starts_at"],
                    "ends_at": closed["ends_at"],
                    "reason": "closed by staff",
                },
                headers=AUTH,
            )
            assert closure.status_code == 201, closure.text
            real = await book_as(api, booked["id"], "ada@example.com")

            async def settled() -> bool:
                rows = await sql("SELECT status FROM outbox WHERE kind = 'webhook_delivery'")
                return [status for (status,) in rows] == ["done"]

            await wait_until(settled, 20, "one delivery done, none for the closed time")
    finally:
        receiver.close()
    references = [r["event"]["data"]["booking"]["reference"] for r in receiver.requests()]
    assert references == [real["reference"]]
