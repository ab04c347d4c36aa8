"""The mails themselves: what they say (in the garage's local time, across clock changes),
their headers, the stable Message-ID, and the .eml drop folder as a person finds it."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from garagebook.config import Settings, SmtpServer
from garagebook.jobs.mail import DropFolderMailer, redact
from garagebook.jobs.messages import BookingMail, compose
from garagebook.jobs.queue import retry_delay
from garagebook.manage_links import MANAGE_LINK_VALID_AFTER, booking_id_of, manage_token
from tests.support.api import booking_body, free_slots, wait_until
from tests.support.mail import mail_settings, running_app
from tests.support.stack import ADMIN_TOKEN, Stack

SQL = Callable[..., Awaitable[list[Any]]]
LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def booking_at(local_start: datetime, reference: str = "A1-7KQ2M9") -> BookingMail:
    return BookingMail(
        booking_id="bkid-123",
        reference=reference,
        status="confirmed",
        customer_name="Ada Lovelace",
        customer_email="ada@example.com",
        vehicle_registration="AB12 CDE",
        service="MOT",
        bay="Bay 2",
        starts_at=local_start.astimezone(UTC),
        ends_at=(local_start + timedelta(hours=1)).astimezone(UTC),
        sequence=0,
    )


def settings(**overrides: Any) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("local_day", "zone_name"),
    [
        # Clocks go forward on Sunday 29 March 2026 and back on Sunday 25 October 2026.
        (date(2026, 3, 28), "GMT"),
        (date(2026, 3, 30), "BST"),
        (date(2026, 10, 24), "BST"),
        (date(2026, 10, 26), "GMT"),
    ],
)
def test_mail_shows_garage_local_time_across_clock_changes(local_day: date, zone_name: str) -> None:
    start = datetime(local_day.year, local_day.month, local_day.day, 9, tzinfo=LONDON)
    message = compose(booking_at(start), "confirmed", settings(), NOW)
    text, html = parts(message)
    when = f"{start:%A} {local_day.day} {start:%B %Y}, 09:00–10:00 ({zone_name})"
    assert when in text
    assert when in html
    assert "at 09:00 (A1-7KQ2M9)" in str(message["Subject"])


def test_headers_and_both_parts() -> None:
    config = settings(
        garage_name="Kwik Garage",
        mail_from="bookings@kwik.example",
        public_url="https://book.kwik.example/",
    )
    start = datetime(2026, 6, 1, 14, tzinfo=LONDON)
    confirmed = compose(booking_at(start), "confirmed", config, NOW)
    # Text and HTML as alternatives, then the calendar entry as an attachment.
    assert confirmed.get_content_type() == "multipart/mixed"
    body, calendar = confirmed.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert calendar.get_content_type() == "text/calendar"
    assert str(confirmed["From"]) == "Kwik Garage <bookings@kwik.example>"
    assert str(confirmed["To"]) == "Ada Lovelace <ada@example.com>"
    assert confirmed["Message-ID"] == "<A1-7KQ2M9.confirmed@kwik.example>"
    assert confirmed["Auto-Submitted"] == "auto-generated"
    text, html = parts(confirmed)
    for part in (text, html):
        for detail in ("Kwik Garage", "A1-7KQ2M9", "MOT", "AB12 CDE", "Bay 2", "14:00"):
            assert detail in part
        assert "Manage your booking" in part
        assert "https://book.kwik.example/manage/" in part
        assert "/api/" not in part
        assert "curl" not in part

    ics = calendar.get_content()
    ics = ics.decode() if isinstance(ics, bytes) else ics
    assert "https://book.kwik.example/manage/" in "".join(ics.split("\r\n "))  # unfolded

    cancelled = compose(booking_at(start), "cancelled", config, NOW)
    assert cancelled["Message-ID"] == "<A1-7KQ2M9.cancelled@kwik.example>"
    assert cancelled["In-Reply-To"] == "<A1-7KQ2M9.confirmed@kwik.example>"
    assert "cancelled" in str(cancelled["Subject"])
    assert "has been cancelled" in parts(cancelled)[0]


def test_message_id_is_the_same_for_every_send_of_a_mail() -> None:
    start = datetime(2026, 6, 1, 14, tzinfo=LONDON)
    first = compose(booking_at(start), "confirmed", settings(), NOW)
    later = compose(booking_at(start), "confirmed", settings(), NOW + timedelta(hours=5))
    other = compose(booking_at(start, "B2-XXXXXX"), "confirmed", settings(), NOW)
    assert first["Message-ID"] == later["Message-ID"]
    assert first["Message-ID"] != other["Message-ID"]


def test_customer_text_is_escaped_in_html_and_kept_on_one_header_line() -> None:
    booking = booking_at(datetime(2026, 6, 1, 14, tzinfo=LONDON))
    booking = BookingMail(**{**booking.__dict__, "customer_name": "Eve <b>\r\nBcc: x@y.z"})
    message = compose(booking, "confirmed", settings(), NOW)
    assert "\n" not in str(message["To"])
    assert message["Bcc"] is None
    assert "&lt;b&gt;" in parts(message)[1]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", ("mail.example.com", None, "opportunistic", None, None)),
        (
            "smtp+starttls://u%40x:s3cret%2F@mail.example.com",
            ("mail.example.com", 587, "starttls", "u@x", "s3cret/"),
        ),
        (
            "smtps://u:s3cret@mail.example.com:2465",
            ("mail.example.com", 2465, "tls", "u", "s3cret"),
        ),
    ],
)
def test_smtp_url(url: str, expected: tuple[Any, ...]) -> None:
    server = SmtpServer.from_url(url)
    assert (server.host, server.port, server.security, server.username, server.password) == expected
    assert "s3cret" not in server.describe()
    assert "s3cret" not in repr(settings(smtp_url=url))


@pytest.mark.parametrize("url", ["http://mail.example.com", "smtp://", "smtp://host:notaport"])
def test_bad_smtp_url_stops_the_start_without_echoing_it(url: str) -> None:
    with pytest.raises(ValueError, match="SMTP_URL") as raised:
        settings(smtp_url=url.replace("//", "//user:s3cret@", 1) if "host" in url else url)
    assert "s3cret" not in str(raised.value)


def test_errors_lose_addresses() -> None:
    assert redact("550 5.1.1 <ada@example.com>: no") == "550 5.1.1 <<address>>: no"


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    for attempts, ceiling in [(1, 10.0), (2, 20.0), (3, 40.0), (8, 900.0), (30, 900.0)]:
        delays = [retry_delay(attempts, 10.0, 900.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, so workers do not retry in step


async def test_drop_folder_writes_whole_files_and_replaces_a_repeat(tmp_path: Path) -> None:
    mailer = DropFolderMailer(tmp_path / "mail")
    message = compose(
        booking_at(datetime(2026, 6, 1, 14, tzinfo=LONDON)), "confirmed", settings(), NOW
    )
    await mailer.send(message)
    await mailer.send(message)
    files = sorted(os.listdir(tmp_path / "mail"))
    assert files == ["A1-7KQ2M9.confirmed.eml"]  # one file per message, no temporary left
    path = tmp_path / "mail" / files[0]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert b"\r\n" in path.read_bytes()


async def test_drop_folder_mail_as_a_person_finds_it(
    stack: Stack, tmp_path: Path, sql: SQL
) -> None:
    """No SMTP_URL: the booking's confirmation appears as a readable .eml file, and a repeated
    send (an operator's `jobs retry`) rewrites the same message, not a second one."""
    config = mail_settings(
        stack,
        None,
        mail_drop_dir=tmp_path,
        garage_name="Kwik Garage",
        mail_from="Kwik Garage <hello@kwik.example>",
        public_url="https://book.kwik.example",
    )
    async with running_app(config) as api:
        slot = (await free_slots(api))[0]
        created = await api.post("/api/bookings", json=booking_body(slot["id"]))
        assert created.status_code == 201
        booking = created.json()
        path = tmp_path / f"{booking['reference']}.confirmed.eml"

        async def written() -> bool:
            return path.exists()

        await wait_until(written, 5, "the .eml file")
        first = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(first, EmailMessage)
        start = datetime.fromisoformat(booking["starts_at"])
        assert str(first["From"]) == "Kwik Garage <hello@kwik.example>"
        assert first["To"].addresses[0].addr_spec == "ada@example.com"
        assert booking["reference"] in str(first["Subject"])
        assert first["Message-ID"] == f"<{booking['reference']}.confirmed@kwik.example>"
        assert first["Date"] is not None
        text, html = parts(first)
        for part in (text, html):
            assert "Kwik Garage" in part
            assert booking["reference"] in part
            assert "MOT" in part
            assert "AB12 CDE" in part
            assert f"{start.day} {start:%B %Y}, {start:%H:%M}" in part
            assert "Manage your booking" in part
            assert "/api/" not in part
            assert "curl" not in part
        assert "<html" in html
        # The button is a signed link to the booking's own page; nothing stored opens it.
        [link] = set(re.findall(r'href="https://book\.kwik\.example(/manage/[^"]+)"', html))
        assert link in text
        page = await api.get(link)
        assert page.status_code == 200
        assert booking["reference"] in page.text
        assert "Move to another time" in page.text
        token = link.removeprefix("/manage/")
        payloads = await sql("SELECT payload FROM outbox")
        assert payloads
        for (payload,) in payloads:  # the job names the booking; it carries no key to it
            assert token not in str(payload)
            assert booking["cancel_token"] not in str(payload)
        forged = link[:-2] + ("AA" if not link.endswith("AA") else "BB")
        assert (await api.get(forged)).status_code == 404

        async def marked_done() -> bool:  # the file is written before the job is marked done
            return bool(await sql("SELECT 1 FROM outbox WHERE status = 'done'"))

        await wait_until(marked_done, 5, "the job marked done")
        [(job_id, done_at)] = await sql("SELECT id, done_at FROM outbox WHERE status = 'done'")
        await sql(
            "UPDATE outbox SET status = 'pending', attempts = 0, run_at = created_at "
            "WHERE id = :id",
            id=job_id,
        )

        async def sent_again() -> bool:
            rows = await sql("SELECT status, done_at FROM outbox WHERE id = :id", id=job_id)
            return rows[0][0] == "done" and rows[0][1] != done_at

        await wait_until(sent_again, 5, "the repeated send")
    again = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert again["Message-ID"] == first["Message-ID"]
    assert parts(again)[0] == text
    assert sorted(os.listdir(tmp_path)) == [path.name]


def next_clock_change(after: date) -> date:
    """The first day whose 09:00 has another UTC offset than the day before's."""
    day = after
    while True:
        before = datetime(day.year, day.month, day.day, 9, tzinfo=LONDON).utcoffset()
        day += timedelta(days=1)
        if datetime(day.year, day.month, day.day, 9, tzinfo=LONDON).utcoffset() != before:
            return day


async def test_mails_around_the_next_clock_change_say_nine_oclock(
    stack: Stack, tmp_path: Path
) -> None:
    """Booked through the API on both sides of the next clock change: both mails say 09:00."""
    change = next_clock_change(datetime.now(LONDON).date())
    days = [change - timedelta(days=2), change + timedelta(days=1)]
    async with running_app(mail_settings(stack, None, mail_drop_dir=tmp_path)) as api:
        references = []
        for day in days:
            start = datetime(day.year, day.month, day.day, 9, tzinfo=LONDON)
            slot = await api.post(
                "/api/admin/slots",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                json={
                    "bay_id": 1,
                    "starts_at": start.isoformat(),
                    "ends_at": (start + timedelta(hours=1)).isoformat(),
                },
            )
            assert slot.status_code == 201, slot.text
            booked = await api.post("/api/bookings", json=booking_body(slot.json()["id"]))
            assert booked.status_code == 201, booked.text
            references.append(booked.json()["reference"])

        async def both_written() -> bool:
            return all((tmp_path / f"{r}.confirmed.eml").exists() for r in references)

        await wait_until(both_written, 5, "two .eml files")
    zones = []
    for reference, day in zip(references, days, strict=True):
        mail = BytesParser(policy=policy.default).parsebytes(
            (tmp_path / f"{reference}.confirmed.eml").read_bytes()
        )
        assert isinstance(mail, EmailMessage)
        text = parts(mail)[0]
        assert f"{day.day} {day:%B %Y}, 09:00–10:00" in text
        zones.append(datetime(day.year, day.month, day.day, 9, tzinfo=LONDON).tzname())
        assert f"({zones[-1]})" in text
    assert zones[0] != zones[1]


def test_a_move_is_a_new_message_each_time_threaded_under_the_confirmation() -> None:
    booking = booking_at(datetime(2026, 12, 1, 9, 0, tzinfo=LONDON))
    first = compose(
        BookingMail(**{**booking.__dict__, "sequence": 1}), "rescheduled", settings(), NOW
    )
    again = compose(
        BookingMail(**{**booking.__dict__, "sequence": 1}), "rescheduled", settings(), NOW
    )
    second = compose(
        BookingMail(**{**booking.__dict__, "sequence": 2}), "rescheduled", settings(), NOW
    )
    assert first["Subject"].startswith("Booking moved: ")
    assert first["Message-ID"] == again["Message-ID"]  # a repeated send of one move
    assert first["Message-ID"] != second["Message-ID"]  # another move
    assert first["In-Reply-To"] == compose(booking, "confirmed", settings(), NOW)["Message-ID"]
    text, html = parts(first)
    assert "has moved to a new time" in html
    assert "has moved to a new time" in text
    assert "09:00" in text


def test_manage_links_are_signed_stable_expiring_and_keyed_by_their_own_secret() -> None:
    start = datetime(2026, 6, 1, 14, tzinfo=LONDON)
    booking = booking_at(start)
    config = settings(manage_link_secret="m" * 32, session_secret="s" * 32)
    first = manage_token(config, booking.booking_id, booking.ends_at)
    # The same mail sent again carries the same link (at-least-once delivery repeats it).
    assert manage_token(config, booking.booking_id, booking.ends_at) == first
    assert booking_id_of(config, first, now=NOW) == "bkid-123"
    # Valid until MANAGE_LINK_VALID_AFTER past the booking's end, then not found.
    assert booking_id_of(config, first, now=booking.ends_at + MANAGE_LINK_VALID_AFTER) == "bkid-123"
    late = booking.ends_at + MANAGE_LINK_VALID_AFTER + timedelta(seconds=1)
    assert booking_id_of(config, first, now=late) is None
    # Another secret (rotated, or another garage's) opens nothing; SESSION_SECRET alone is
    # a fallback, not the same key.
    assert booking_id_of(settings(manage_link_secret="n" * 32), first, now=NOW) is None
    derived = settings(session_secret="s" * 32)
    assert booking_id_of(derived, first, now=NOW) is None
    assert booking_id_of(derived, manage_token(derived, "x", booking.ends_at), now=NOW) == "x"
    assert booking_id_of(config, first[:-1] + ("A" if first[-1] != "A" else "B"), now=NOW) is None


@pytest.mark.parametrize("event", ["confirmed", "rescheduled", "reminder"])
def test_every_booking_mail_has_the_manage_button_and_the_garages_details(event: str) -> None:
    config = settings(
        public_url="https://book.kwik.example",
        garage_address="12 Mill Lane, Kwikton KW1 2AB",
        garage_phone="01632 960123",
    )
    message = compose(booking_at(datetime(2026, 6, 1, 14, tzinfo=LONDON)), event, config, NOW)
    for part in parts(message):
        assert "Manage your booking" in part
        assert "https://book.kwik.example/manage/" in part
        assert "/api/" not in part
        assert "curl" not in part
        assert "POST" not in part
        assert "12 Mill Lane, Kwikton KW1 2AB" in part
        assert "01632 960123" in part
        assert "Monday–Saturday 08:00–17:00" in part


@pytest.mark.parametrize("event", ["confirmed", "reminder", "rescheduled", "cancelled"])
def test_a_drop_off_mail_says_when_to_bring_the_car_and_when_to_collect_it(event: str) -> None:
    """A drop-off has no bay, and its `ends_at` is collection time, not the end of a slot."""
    opens = datetime(2026, 12, 3, 8, tzinfo=LONDON)
    booking = BookingMail(
        **{
            **booking_at(opens).__dict__,
            "bay": None,
            "ends_at": datetime(2026, 12, 3, 16, 30, tzinfo=LONDON).astimezone(UTC),
            "drop_off": True,
        }
    )
    text, html = parts(compose(booking, event, settings(), NOW))
    when = "Drop off Thursday 3 December 2026 from 08:00; collect from 16:30"
    label = "Was:" if event == "cancelled" else "When:"
    assert f"  {label:<12}{when}\n  Vehicle:    AB12 CDE\n\n" in text
    assert f'<td style="padding:4px 0;">{when}</td>' in html
    assert "Bay" not in text
    assert "Bay" not in html
    assert "08:00–16:30" not in text + html
    if event == "rescheduled":  # a drop-off moves to another day, never to a time
        assert "has moved to another day" in text
        assert "has moved to another day" in html
    if event != "cancelled":
        assert "move it to another day, or cancel it" in text
        assert "Move it to another day, or cancel it (the day is then free" in html
        assert "another time" not in text + html
