"""Confirmations and cancellations delivered by the worker to a real SMTP server (aiosmtpd),
on SQLite and on PostgreSQL: every booking its mail, through outages and retries."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from garagebook.jobs.worker import Worker
from tests.support.api import book_slots, booking_body, free_slots, wait_until
from tests.support.mail import SmtpSink, mail_env, mail_settings, running_app
from tests.support.stack import ADMIN_TOKEN, Stack

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

SQL = Callable[..., Awaitable[list[Any]]]


async def outbox_states(sql: SQL) -> dict[str, int]:
    return dict(
        await sql(
            "SELECT status, count(*) FROM outbox WHERE kind <> 'booking_reminder' GROUP BY status"
        )
    )


async def cancel_all(api: httpx.AsyncClient, bookings: list[dict[str, Any]]) -> None:
    gate = asyncio.Semaphore(8)

    async def one(booking: dict[str, Any]) -> None:
        async with gate:
            response = await api.post(f"/api/bookings/{booking['id']}/cancel", headers=ADMIN_AUTH)
        assert response.status_code == 200, response.text

    await asyncio.gather(*(one(b) for b in bookings))


async def test_200_bookings_200_confirmations_then_50_cancellations(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    started = time.monotonic()
    async with running_app(mail_settings(stack, smtp_sink, worker_concurrency=8)) as api:
        slots = (await free_slots(api, service_id=1))[:200]
        assert len(slots) == 200
        bookings = await book_slots(api, slots)
        mails = await smtp_sink.wait_for(200, within=60)
        confirmed_at = time.monotonic()

        assert len(mails) == 200  # one each: nobody was killed, so nothing was sent twice
        by_reference = {mail.reference: mail for mail in mails}
        assert set(by_reference) == {b["reference"] for b in bookings}
        for i, booking in enumerate(bookings):
            mail = by_reference[booking["reference"]]
            assert mail.recipients == [f"customer{i}@example.com"]
            assert mail.message_id.startswith(f"<{booking['reference']}.confirmed@")
            start = datetime.fromisoformat(booking["starts_at"])  # local, with its offset
            assert f"{start:%A} {start.day} {start:%B %Y}, {start:%H:%M}–" in mail.text()

        cancelled = bookings[:50]
        await cancel_all(api, cancelled)
        mails = await smtp_sink.wait_for(250, within=60)
    finished = time.monotonic()

    cancellations = [m for m in mails if ".cancelled@" in m.message_id]
    assert len(cancellations) == 50
    assert {m.reference for m in cancellations} == {b["reference"] for b in cancelled}
    assert all("has been cancelled" in m.text() for m in cancellations)
    assert max(smtp_sink.copies().values()) == 1
    assert await outbox_states(sql) == {"done": 250}
    print(
        f"\n[{stack.name}] 200 bookings → 200 confirmations in {confirmed_at - started:.2f}s; "
        f"+ 50 cancellations, all delivered, in {finished - started:.2f}s total"
    )


async def test_a_booking_cancelled_before_its_confirmation_went_out_gets_only_the_cancellation(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    async with running_app(stack.settings()) as api:  # no worker yet: the jobs wait
        slot = (await free_slots(api))[0]
        booking = (await api.post("/api/bookings", json=booking_body(slot["id"]))).json()
        assert (
            await api.post(f"/api/bookings/{booking['id']}/cancel", headers=ADMIN_AUTH)
        ).status_code == 200
        await asyncio.sleep(0.2)
        backlog = (await api.get("/health")).json()["backlog"]
        assert backlog["pending"] == 2
        assert backlog["oldest_due_seconds"] >= 0.2

    async with running_app(mail_settings(stack, smtp_sink)):

        async def finished() -> bool:
            states = await outbox_states(sql)
            return set(states) <= {"done", "skipped"}

        await wait_until(finished, 10, "both jobs to finish")
        await asyncio.sleep(0.3)  # a stale confirmation, if one were sent, would be here by now
    [mail] = smtp_sink.mails
    assert mail.message_id.startswith(f"<{booking['reference']}.cancelled@")
    assert await sql(
        "SELECT kind, status FROM outbox WHERE kind <> 'booking_reminder' ORDER BY id"
    ) == [
        ("booking_confirmed", "skipped"),
        ("booking_cancelled", "done"),
    ]


async def test_mail_server_down_for_a_while_then_every_mail_arrives(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    smtp_sink.stop()
    limit = 60
    # No reminder jobs: a booking more than a day off (a Saturday afternoon's first free slot
    # is Monday's) would add one, not due, to the outbox this test counts.
    quiet = mail_settings(stack, smtp_sink, job_max_attempts=limit, reminder_hours_before=0)
    async with running_app(quiet) as api:
        slots = (await free_slots(api))[:5]
        bookings = await book_slots(api, slots)

        async def retried_a_few_times() -> bool:
            rows = await sql("SELECT min(attempts) FROM outbox WHERE status = 'pending'")
            return (rows[0][0] or 0) >= 5

        await wait_until(retried_a_few_times, 15, "every job to have failed 5 times")
        rows = await sql("SELECT status, attempts, last_error FROM outbox")
        assert {status for status, _, _ in rows} <= {"pending", "running"}  # nothing dead
        assert all("Connect" in (error or "") for status, _, error in rows if status == "pending")
        health = (await api.get("/health")).json()
        assert health["status"] == "ok"
        # Between attempts a job waits for its retry time: scheduled, not due.
        backlog = health["backlog"]
        assert backlog["due"] + backlog["scheduled"] + backlog["running"] == 5
        assert health["backlog"]["dead"] == 0

        smtp_sink.start()
        mails = await smtp_sink.wait_for(5, within=15)
        assert {m.reference for m in mails} == {b["reference"] for b in bookings}

        async def all_done() -> bool:
            return await outbox_states(sql) == {"done": 5}

        await wait_until(all_done, 5, "the jobs to be marked done")
        attempts = [a for (a,) in await sql("SELECT attempts FROM outbox")]
        assert 5 < max(attempts) < limit
        health = (await api.get("/health")).json()
        assert health["backlog"] == {
            "pending": 0,
            "due": 0,
            "scheduled": 0,
            "running": 0,
            "dead": 0,
            "oldest_due_seconds": 0,
        }


async def garagebook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "garagebook.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_dead_after_the_retry_limit_then_put_back_from_the_cli(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    smtp_sink.stop()
    settings = mail_settings(stack, smtp_sink, job_max_attempts=3, reminder_hours_before=0)
    async with running_app(settings) as api:
        slots = (await free_slots(api))[:2]
        bookings = await book_slots(api, slots)
        bounced = await api.post(
            "/api/bookings",
            json=booking_body(
                (await free_slots(api))[0]["id"],
                customer={"name": "Bo Unce", "email": "bounce@example.com"},
            ),
        )
        assert bounced.status_code == 201

        async def all_dead() -> bool:
            return await outbox_states(sql) == {"dead": 3}

        await wait_until(all_dead, 15, "3 dead jobs")
        assert (await api.get("/health")).json()["backlog"]["dead"] == 3
    rows = await sql("SELECT attempts, last_error FROM outbox ORDER BY id")
    assert [attempts for attempts, _ in rows] == [3, 3, 3]  # down: every attempt used
    assert all("SMTPConnectError" in error for _, error in rows)

    env = mail_env(stack, smtp_sink)
    shown = await garagebook(env, "jobs")
    assert shown.returncode == 0, shown.stderr
    assert "dead            3" in shown.stdout
    for booking in bookings:
        assert booking["reference"] in shown.stdout
    assert "SMTPConnectError" in shown.stdout

    smtp_sink.start()
    assert (await garagebook(env, "jobs", "retry", "--all-dead")).stdout.strip() == (
        "3 job(s) back in the queue"
    )
    unknown = await garagebook(env, "jobs", "retry", "999999")
    assert unknown.returncode == 1
    assert "No such job" in unknown.stderr
    async with running_app(settings):
        mails = await smtp_sink.wait_for(2, within=15)

        async def settled() -> bool:
            return await outbox_states(sql) == {"done": 2, "dead": 1}

        await wait_until(settled, 10, "two done, the bounce dead again")
    assert {m.reference for m in mails} == {b["reference"] for b in bookings}
    # The mailbox does not exist (550): dead at the first attempt, no address in the error.
    [(attempts, error)] = await sql("SELECT attempts, last_error FROM outbox WHERE status='dead'")
    assert attempts == 1
    assert "550" in error
    assert "bounce@" not in error


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_listen_notify_wakes_the_worker_at_once(stack: Stack, smtp_sink: SmtpSink) -> None:
    """The worker polls only every 30 s here, so a mail within a second means NOTIFY woke it."""
    async with running_app(mail_settings(stack, smtp_sink, worker_poll_seconds=30)) as api:
        await asyncio.sleep(0.5)  # the worker is idle, waiting
        slots = await free_slots(api)
        waits = []
        for i, slot in enumerate(slots[:3]):
            response = await api.post("/api/bookings", json=booking_body(slot["id"]))
            assert response.status_code == 201
            booked = time.monotonic()
            await smtp_sink.wait_for(i + 1, within=1.0)
            waits.append(time.monotonic() - booked)
    assert max(waits) < 1.0
    print(f"\n[postgres] NOTIFY: mail {max(waits) * 1000:.0f} ms at most after the 201")


async def test_a_worker_whose_lease_ran_out_does_not_take_its_own_running_job_again(
    stack: Stack, sql: SQL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a starved event loop the heartbeat can miss a lease while the job is still being
    sent. The worker then saw its own job as abandoned, claimed it again and sent it twice
    (found as 201–204 mails for 200 bookings on SQLite). Only another worker may take it over."""

    async def starved_heartbeat(self: Worker) -> None:
        await asyncio.Event().wait()  # never renews a lease

    monkeypatch.setattr(Worker, "_heartbeat", starved_heartbeat)
    slow = SmtpSink(delay=1.5)  # each send outlives the 0.3 s lease several times over
    slow.start()
    try:
        settings = mail_settings(stack, slow, worker_lease_seconds=0.3)
        async with running_app(settings) as api:
            [booking] = await book_slots(api, (await free_slots(api))[:1])
            await slow.wait_for(1, within=10)
            await asyncio.sleep(2.0)  # a second copy, if one were sent, arrives by now
    finally:
        slow.stop()
    assert slow.copies() == {f"<{booking['reference']}.confirmed@garagebook.localhost>": 1}
    assert await outbox_states(sql) == {"done": 1}


async def test_no_mail_goes_to_the_garages_own_placeholder_address_nor_for_a_closure(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    """Walk-ins booked without an address carry the garage's own placeholder address
    (walk-in@): their confirmations and cancellations are skipped, not sent to a mailbox nobody
    reads (they used to be sent). A closed time is a closure: closing and reopening it writes
    no job at all (it used to be a placeholder booking with a skipped job of its own)."""
    settings = mail_settings(stack, smtp_sink)
    async with running_app(settings) as api:
        walk_in, closing, real = (await free_slots(api))[:3]
        bookings = []
        for slot, address in ((walk_in, settings.walk_in_email), (real, "real@example.com")):
            body = booking_body(slot["id"])
            body["customer"] = {**body["customer"], "email": address}
            # The garage's own bookings (the public may not use its placeholder address).
            response = await api.post("/api/bookings", json=body, headers=ADMIN_AUTH)
            assert response.status_code == 201, response.text
            bookings.append(response.json())
        closure = await api.post(
            "/api/admin/closures",
            json={
                "bay_id": closing["bay_id"],
                "starts_at": closing["starts_at"],
                "ends_at": closing["ends_at"],
            },
            headers=ADMIN_AUTH,
        )
        assert closure.status_code == 201, closure.text
        reopened = await api.delete(
            f"/api/admin/closures/{closure.json()['id']}", headers=ADMIN_AUTH
        )
        assert reopened.status_code == 200, reopened.text
        assert (
            await api.post(f"/api/bookings/{bookings[0]['id']}/cancel", headers=ADMIN_AUTH)
        ).status_code == 200

        async def finished() -> bool:
            return set(await outbox_states(sql)) <= {"done", "skipped"}

        await wait_until(finished, 10, "every job to finish")
    assert [m.recipients for m in smtp_sink.mails] == [["real@example.com"]]
    assert await outbox_states(sql) == {"done": 1, "skipped": 2}
