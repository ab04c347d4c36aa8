"""Reminders: due REMINDER_HOURS_BEFORE hours of wall-clock time before the appointment, in the
garage's zone, across both of Europe/London's clock changes; sent once per booking and time;
a moved booking is reminded of its new time only, a cancelled one not at all.

The end-to-end tests freeze the clock (time-machine) and let the real worker, embedded in the
app, send to a real SMTP server: the reminder arrives when the clock reaches its due time, not
a minute before.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine

from garagebook.bookings.reminders import reminder_due
from garagebook.config import Settings
from tests.support.api import book_as, open_admin_slot, wait_until
from tests.support.mail import ReceivedMail, SmtpSink, mail_settings, running_app
from tests.support.stack import ADMIN_TOKEN, Stack

SQL = Callable[..., Awaitable[list[Any]]]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("appointment", "reminder", "real_hours"),
    [
        # Spring forward (28 March 2027, 01:00 GMT → 02:00 BST): 09:00 BST Sunday is reminded
        # 09:00 GMT Saturday, 23 real hours before.
        ("2027-03-28T09:00+01:00", "2027-03-27T09:00+00:00", 23),
        ("2027-03-29T09:00+01:00", "2027-03-28T09:00+01:00", 24),
        ("2027-03-27T09:00+00:00", "2027-03-26T09:00+00:00", 24),
        # Fall back (31 October 2027, 02:00 BST → 01:00 GMT): 25 real hours.
        ("2027-10-31T09:00+00:00", "2027-10-30T09:00+01:00", 25),
        ("2027-11-01T09:00+00:00", "2027-10-31T09:00+00:00", 24),
        # The reminder's wall-clock time falls in the spring gap (01:30 does not exist that
        # day): read on the clock before the change, it is 02:30 BST.
        ("2027-03-29T01:30+01:00", "2027-03-28T02:30+01:00", 23),
    ],
)
def test_the_reminder_is_due_at_the_same_local_time_the_day_before(
    appointment: str, reminder: str, real_hours: int
) -> None:
    due = reminder_due(utc(appointment), SETTINGS)
    assert due == utc(reminder)
    assert utc(appointment) - due == timedelta(hours=real_hours)


def test_reminders_can_be_turned_off_or_moved() -> None:
    assert reminder_due(utc("2027-03-28T09:00+01:00"), Settings(reminder_hours_before=0)) is None
    two_days = Settings(reminder_hours_before=48)
    assert reminder_due(utc("2027-03-29T09:00+01:00"), two_days) == utc("2027-03-27T09:00+00:00")


def as_utc(value: datetime | str) -> datetime:
    """A timestamp as the stack's driver returns it (SQLite: naive UTC text)."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC)


def reminders(sink: SmtpSink) -> list[ReceivedMail]:
    return [m for m in sink.mails if str(m.message["Subject"]).startswith("Reminder:")]


async def settle(seconds: float = 0.8) -> None:
    """Long enough for the embedded worker (polling every 0.1 s) to claim anything due."""
    await asyncio.sleep(seconds)


@pytest.mark.parametrize(
    ("clock", "appointment", "due", "local_text", "zone"),
    [
        (
            "2027-03-26T12:00Z",
            "2027-03-28T09:00+01:00",
            "2027-03-27T09:00Z",
            "Sunday 28 March 2027, 09:00–10:00",
            "BST",
        ),
        (
            "2027-10-29T12:00Z",
            "2027-10-31T09:00+00:00",
            "2027-10-30T08:00Z",
            "Sunday 31 October 2027, 09:00–10:00",
            "GMT",
        ),
    ],
    ids=["spring-forward", "fall-back"],
)
async def test_the_reminder_arrives_at_the_right_local_time_across_a_clock_change(
    stack: Stack,
    smtp_sink: SmtpSink,
    sql: SQL,
    clock: str,
    appointment: str,
    due: str,
    local_text: str,
    zone: str,
) -> None:
    with time_machine.travel(utc(clock), tick=True) as traveller:
        async with running_app(mail_settings(stack, smtp_sink)) as api:
            slot_id = await open_admin_slot(api, appointment)
            booking = await book_as(api, slot_id, "dst@example.com")
            assert booking["starts_at"] == datetime.fromisoformat(appointment).isoformat()
            [(run_at,)] = await sql(
                "SELECT run_at FROM outbox WHERE kind = 'booking_reminder' AND payload LIKE :p",
                p=f'%"{booking["id"]}"%',
            )
            assert as_utc(run_at) == utc(due)

            await smtp_sink.wait_for(1, 10)  # the confirmation, at once
            traveller.move_to(utc(due) - timedelta(minutes=1))
            await settle()
            assert reminders(smtp_sink) == [], "a minute early"

            traveller.move_to(utc(due) + timedelta(seconds=1))
            await smtp_sink.wait_for(2, 10)
            [mail] = reminders(smtp_sink)
            sent = email.utils.parsedate_to_datetime(str(mail.message["Date"]))
            assert timedelta(0) <= sent - utc(due) < timedelta(seconds=30)
            assert mail.recipients == ["dst@example.com"]
            assert f"{local_text} ({zone})" in mail.text()
            assert mail.message_id.startswith(f"<{booking['reference']}.reminder-0@")
            assert mail.message["In-Reply-To"].startswith(f"<{booking['reference']}.confirmed@")


async def test_a_moved_booking_is_reminded_of_its_new_time_only_and_a_cancelled_one_never(
    stack: Stack, smtp_sink: SmtpSink, sql: SQL
) -> None:
    with time_machine.travel(utc("2027-06-01T12:00Z"), tick=True) as traveller:
        async with running_app(mail_settings(stack, smtp_sink)) as api:
            # Outside the demo garage's hours (08:00–17:00): the calendar, which the worker
            # extends from the travelled-to day, has no slot there for these to overlap.
            first = await open_admin_slot(api, "2027-06-03T07:00+01:00")
            moved_to = await open_admin_slot(api, "2027-06-04T06:00+01:00")
            moved_again = await open_admin_slot(api, "2027-06-04T18:00+01:00")
            other = await open_admin_slot(api, "2027-06-03T19:00+01:00")
            mover = await book_as(api, first, "mover@example.com")
            canceller = await book_as(api, other, "canceller@example.com")
            for target in (moved_to, moved_again):
                response = await api.post(
                    f"/api/manage/{mover['cancel_token']}/reschedule", json={"slot_id": target}
                )
                assert response.status_code == 200, response.text
            cancelled = await api.post(f"/api/manage/{canceller['cancel_token']}/cancel")
            assert cancelled.status_code == 200

            async def other_mails_finished() -> bool:
                rows = await sql(
                    "SELECT count(*) FROM outbox WHERE kind <> 'booking_reminder' "
                    "AND status NOT IN ('done', 'skipped')"
                )
                return rows == [(0,)]

            await wait_until(other_mails_finished, 10, "the booking mails to be sent")
            before = len(smtp_sink.mails)

            # Past every due time, the old ones included (the new time's is 18:00 the day before).
            traveller.move_to(utc("2027-06-03T18:30+01:00"))
            await smtp_sink.wait_for(len(smtp_sink.copies()) + 1, 10)
            await settle()
            [mail] = reminders(smtp_sink)
            assert mail.recipients == ["mover@example.com"]
            assert "Friday 4 June 2027, 18:00–19:00 (BST)" in mail.text()
            assert mail.message_id.startswith(f"<{mover['reference']}.reminder-2@")
            assert sorted(
                await sql("SELECT status FROM outbox WHERE kind = 'booking_reminder'")
            ) == [("done",), ("skipped",), ("skipped",), ("skipped",)]
            assert len(smtp_sink.mails) == before + 1, "exactly once: nothing else was sent"


async def test_a_booking_made_less_than_a_day_ahead_gets_no_reminder(
    api: httpx.AsyncClient, sql: SQL
) -> None:
    with time_machine.travel(utc("2027-06-01T12:00Z"), tick=True):
        soon = await open_admin_slot(api, "2027-06-02T12:00+01:00")  # 23 hours ahead
        later = await open_admin_slot(api, "2027-06-02T14:00+01:00")  # 25 hours ahead
        await book_as(api, soon, "soon@example.com")
        await book_as(api, later, "later@example.com")
    kinds = await sql("SELECT kind, run_at FROM outbox ORDER BY id")
    assert [kind for kind, _ in kinds] == [
        "booking_confirmed",
        "booking_confirmed",
        "booking_reminder",
    ]
    assert as_utc(kinds[2][1]) == utc("2027-06-01T14:00+01:00")
