"""MOT reminders (issue 8), on both stacks: `remind-mot` queues one `mot_reminder` job per
vehicle and expiry date within MOT_REMINDER_DAYS, however often and however concurrently it
runs; the worker mails the owner a link to the earliest free MOT time before the expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson

from garagebook.vehicles.reminders import run_remind_mot
from tests.support.api import book_slots, free_slots, service_id_named, wait_until
from tests.support.mail import SmtpSink, mail_settings, running_app
from tests.support.stack import ADMIN_TOKEN, Stack
from tests.test_jobs_delivery import garagebook
from tests.test_vehicles import book, set_mot

SQL = Callable[..., Awaitable[list[Any]]]
ZONE = ZoneInfo("Europe/London")
PUBLIC_URL = "http://127.0.0.1:3000"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def in_days(days: int) -> date:
    return datetime.now(ZONE).date() + timedelta(days=days)


async def mot_jobs(sql: SQL) -> list[tuple[str, str, str]]:
    """(registration, expires_on, status) of every mot_reminder job, oldest first."""
    rows = await sql("SELECT payload, status FROM outbox WHERE kind = 'mot_reminder' ORDER BY id")
    return [
        (orjson.loads(p)["registration"], orjson.loads(p)["expires_on"], status)
        for p, status in rows
    ]


async def mot_jobs_settled(sql: SQL) -> bool:
    """Every queued MOT reminder has been queued (remind-mot ran) and sent or skipped."""
    jobs = await mot_jobs(sql)
    return bool(jobs) and all(status in ("done", "skipped") for *_, status in jobs)


async def only_mot_mail_to_send(sql: SQL) -> None:
    """The bookings' own mails are not what these tests are about: mark them sent."""
    await sql("UPDATE outbox SET status = 'done' WHERE kind <> 'mot_reminder'")


async def test_one_reminder_per_expiry_within_the_window_however_often_it_runs(
    api: httpx.AsyncClient, stack: Stack, sql: SQL
) -> None:
    vehicles = {  # registration: MOT expiry in days from today (None: not recorded)
        "AB12 CDE": 20,
        "ED6E AAA": 30,  # the last day of the window
        "TODAY AA": 0,  # runs out today: still time
        "OUT1 AAA": 31,  # outside the window
        "OLD1 AAA": -3,  # expired already: no reminder
        "NONE AAA": None,
    }
    for i, (registration, days) in enumerate(vehicles.items()):
        await book(api, "Oil change", registration, index=i)
        if days is not None:
            await set_mot(api, registration, in_days(days))
    settings = stack.settings()

    assert await run_remind_mot(settings) == 3
    assert await run_remind_mot(settings) == 0
    assert sorted(await mot_jobs(sql)) == [
        ("AB12 CDE", in_days(20).isoformat(), "pending"),
        ("ED6E AAA", in_days(30).isoformat(), "pending"),
        ("TODAY AA", in_days(0).isoformat(), "pending"),
    ]
    reminded = dict(await sql("SELECT registration, mot_reminded_for FROM vehicles"))
    assert reminded["OUT1 AAA"] is None
    assert reminded["OLD1 AAA"] is None

    # Ten days later the next one comes into the window (MOT_REMINDER_DAYS=40 says the same).
    assert await run_remind_mot(stack.settings(mot_reminder_days=40)) == 1
    assert len(await mot_jobs(sql)) == 4


async def test_concurrent_runs_queue_each_reminder_once(
    api: httpx.AsyncClient, stack: Stack, sql: SQL
) -> None:
    for i in range(5):
        registration = f"CC{i}1 CCC"
        await book(api, "Oil change", registration, index=i)
        await set_mot(api, registration, in_days(10 + i))
    settings = stack.settings()
    queued = await asyncio.gather(*(run_remind_mot(settings) for _ in range(6)))
    assert sum(queued) == 5
    jobs = await mot_jobs(sql)
    assert len(jobs) == 5
    assert len({registration for registration, _, _ in jobs}) == 5


async def test_a_new_expiry_is_reminded_again_and_the_old_reminder_is_dropped(
    api: httpx.AsyncClient, stack: Stack, sql: SQL, smtp_sink: SmtpSink
) -> None:
    await book(api, "Oil change")
    await set_mot(api, "AB12 CDE", in_days(20))
    assert await run_remind_mot(stack.settings()) == 1
    await set_mot(api, "AB12 CDE", in_days(25))  # before the first reminder went out
    assert await run_remind_mot(stack.settings()) == 1
    assert await run_remind_mot(stack.settings()) == 0

    await only_mot_mail_to_send(sql)
    async with running_app(mail_settings(stack, smtp_sink)):

        async def finished() -> bool:
            return {status for _, _, status in await mot_jobs(sql)} <= {"done", "skipped"}

        await wait_until(finished, 15, "both MOT jobs to finish")
        await asyncio.sleep(0.3)  # a second mail, if one were sent, would be here by now
    assert await mot_jobs(sql) == [
        ("AB12 CDE", in_days(20).isoformat(), "skipped"),
        ("AB12 CDE", in_days(25).isoformat(), "done"),
    ]
    [mail] = smtp_sink.mails
    assert mail.message_id == f"<mot-AB12CDE-{in_days(25).isoformat()}@garagebook.localhost>"
    expires = in_days(25)
    assert f"{expires:%A} {expires.day} {expires:%B %Y}" in mail.text()


async def test_the_mail_links_the_earliest_free_mot_time_to_the_latest_owner(
    api: httpx.AsyncClient, stack: Stack, sql: SQL, smtp_sink: SmtpSink
) -> None:
    mot_id = await service_id_named(api, "MOT")
    await book(api, "Oil change", index=30)  # Ada's, long ago in booking terms…
    await book(api, "Full service", index=40, email="bob@example.com")  # …Bob booked it last
    await set_mot(api, "AB12 CDE", in_days(20))
    earliest = (await free_slots(api, mot_id))[0]
    await book(api, "MOT", "XY34 ZZZ", email="eve@example.com")  # someone takes the earliest
    expected = (await free_slots(api, mot_id))[0]
    assert expected["id"] != earliest["id"]

    # The embedded default runs remind-mot itself when it starts, then sends.
    await only_mot_mail_to_send(sql)
    async with running_app(mail_settings(stack, smtp_sink)):
        [mail] = await smtp_sink.wait_for(1, within=15)
    assert mail.recipients == ["bob@example.com"]
    link = f"{PUBLIC_URL}/?service={mot_id}&slot={expected['id']}"
    assert link in mail.text()
    html = mail.message.get_body(("html",))
    assert html is not None
    assert link.replace("&", "&amp;") in str(html.get_content())  # type: ignore[attr-defined]
    starts = datetime.fromisoformat(expected["starts_at"])
    assert f"{starts:%A} {starts.day} {starts:%B %Y} at {starts:%H:%M}" in mail.text()
    assert starts.date() <= in_days(20)
    assert await mot_jobs(sql) == [("AB12 CDE", in_days(20).isoformat(), "done")]


async def test_with_no_free_mot_time_before_the_expiry_the_mail_says_so(
    api: httpx.AsyncClient, stack: Stack, sql: SQL, smtp_sink: SmtpSink
) -> None:
    mot_id = await service_id_named(api, "MOT")
    await book(api, "Oil change", index=200)
    expires = in_days(1)
    await set_mot(api, "AB12 CDE", expires)
    before = [
        s
        for s in await free_slots(api, mot_id)
        if datetime.fromisoformat(s["starts_at"]).date() <= expires
    ]
    if before:
        await book_slots(api, before, service_id=mot_id, vehicle={"registration": "XY34 ZZZ"})
    await only_mot_mail_to_send(sql)
    async with running_app(mail_settings(stack, smtp_sink)):
        [mail] = await smtp_sink.wait_for(1, within=15)
    assert "no free MOT time left before it runs out" in mail.text()
    assert f"{PUBLIC_URL}/?service={mot_id}" in mail.text()
    assert "slot=" not in mail.text()


async def test_garagebook_remind_mot_on_the_command_line(
    api: httpx.AsyncClient, stack: Stack, sql: SQL
) -> None:
    await book(api, "Oil change")
    await set_mot(api, "AB12 CDE", in_days(20))
    env = stack.env()

    narrow = await garagebook({**env, "MOT_REMINDER_DAYS": "10"}, "remind-mot")
    assert narrow.returncode == 0, narrow.stderr
    assert narrow.stdout.strip() == "0 MOT reminder(s) queued"
    first = await garagebook(env, "remind-mot")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "1 MOT reminder(s) queued"
    again = await garagebook(env, "remind-mot")
    assert again.stdout.strip() == "0 MOT reminder(s) queued"
    assert await mot_jobs(sql) == [("AB12 CDE", in_days(20).isoformat(), "pending")]

    down = await garagebook(
        {**env, "DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}, "remind-mot"
    )
    assert down.returncode == 1
    assert "cannot be reached" in down.stderr


async def test_a_later_booker_of_the_car_does_not_get_its_reminders(
    api: httpx.AsyncClient, stack: Stack, sql: SQL, smtp_sink: SmtpSink
) -> None:
    """Issue 18, finding 8: the reminder went to whoever booked the car last, and that person's
    manage token could set the date. Ada brought the car (a completed booking); Eve books with
    its registration later and gives a date of her own: the reminder of the car's date goes to
    Ada, and Eve's date, with the car's record set, reminds nobody."""
    ada = await book(api, "Oil change", index=30)
    done = await api.post(f"/api/bookings/{ada['id']}/complete", headers=ADMIN)
    assert done.status_code == 200, done.text
    await set_mot(api, "AB12 CDE", in_days(20))
    eve = await book(api, "Full service", index=40, email="eve@example.com")
    mine = await api.post(
        f"/api/manage/{eve['cancel_token']}/mot", json={"expires_on": in_days(5).isoformat()}
    )
    assert mine.status_code == 200

    await only_mot_mail_to_send(sql)
    async with running_app(mail_settings(stack, smtp_sink)):
        await wait_until(lambda: mot_jobs_settled(sql), 15, "the MOT reminders sent")
    assert [m.recipients for m in smtp_sink.mails] == [["ada@example.com"]]
    assert await mot_jobs(sql) == [("AB12 CDE", in_days(20).isoformat(), "done")]


async def test_a_customers_own_date_reminds_that_customer(
    api: httpx.AsyncClient, stack: Stack, sql: SQL, smtp_sink: SmtpSink
) -> None:
    ada = await book(api, "Oil change", index=30)
    given = await api.post(
        f"/api/manage/{ada['cancel_token']}/mot", json={"expires_on": in_days(15).isoformat()}
    )
    assert given.status_code == 200
    await book(api, "Full service", index=40, email="eve@example.com")  # booked the car last

    await only_mot_mail_to_send(sql)
    async with running_app(mail_settings(stack, smtp_sink)):
        await wait_until(lambda: mot_jobs_settled(sql), 15, "the MOT reminders sent")
    assert [m.recipients for m in smtp_sink.mails] == [["ada@example.com"]]
    assert await mot_jobs(sql) == [("AB12 CDE", in_days(15).isoformat(), "done")]
    assert await run_remind_mot(stack.settings()) == 0  # once per date
