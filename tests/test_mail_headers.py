"""Mail header injection (security review, finding 2): an RFC 2047 encoded word in a customer's
name decodes to CR/LF, and Python before 3.11.10 / 3.12.5 (CVE-2024-6923) writes it into the
To: header as is — an injected Reply-To:, Bcc: and body text, sent by the garage's server.

Refused at the door (every header-bound field), and checked again on the composed message
before any send, for a name that is already in the database."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from garagebook.config import Settings
from garagebook.jobs.mail import DeliveryFailed, DropFolderMailer, checked_bytes
from garagebook.jobs.messages import BookingMail, compose
from tests.support.api import booking_body, free_slots, wait_until
from tests.support.mail import SmtpSink, mail_env, mail_settings, running_app
from tests.support.processes import WorkerProcess
from tests.support.stack import Stack

SQL = Callable[..., Awaitable[list[Any]]]

# The review's payload, and variants: base64, upper case, bare LF, a Bcc, inside a longer name
# (so Python folds it onto a line of its own), in an e-mail address.
PAYLOAD = "=?utf-8?q?Eve=0D=0AReply-To=3A_x=40evil=2Eexample=0D=0A=0D=0APAY_AT_http=3A//evil?="
NAME_VARIANTS = [
    PAYLOAD,
    "=?UTF-8?B?RXZlDQpCY2M6IHhAZXZpbC5leGFtcGxlDQo=?=",  # "Eve\r\nBcc: x@evil.example\r\n"
    "=?utf-8?Q?Eve=0ABcc=3A_x=40evil=2Eexample?=",
    "Ada " + "Lovelace " * 8 + "=?utf-8?q?x=0D=0ABcc=3A_x=40evil=2Eexample?=",
    "Eve =?iso-8859-1?q?=0D=0AReply-To=3A_x=40evil=2Eexample?= Smith",
    "Eve\u2028Bcc: x@evil.example",  # a Unicode line separator
    "Eve\x85Bcc: x@evil.example",  # NEL
]


@pytest.mark.parametrize("name", NAME_VARIANTS)
async def test_encoded_words_and_line_breaks_in_a_name_are_refused(stack: Stack, name: str) -> None:
    async with running_app(stack.settings()) as api:
        slot = (await free_slots(api))[0]
        body = booking_body(slot["id"])
        body["customer"] = {**body["customer"], "name": name}
        answer = await api.post("/api/bookings", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "validation_error"

        waitlist = {
            "service_id": 1,
            "day": slot["starts_at"][:10],
            "customer": body["customer"],
            "vehicle": body["vehicle"],
        }
        answer = await api.post("/api/waitlist", json=waitlist)
        assert answer.status_code == 422, answer.text


async def test_an_encoded_word_in_an_email_address_is_refused(stack: Stack) -> None:
    async with running_app(stack.settings()) as api:
        slot = (await free_slots(api))[0]
        body = booking_body(slot["id"])
        body["customer"] = {**body["customer"], "email": "=?utf-8?q?x=0D=0ABcc=3A?=@example.com"}
        answer = await api.post("/api/bookings", json=body)
        assert answer.status_code == 422, answer.text


def _mail_for(name: str) -> Any:
    start = datetime.now(UTC) + timedelta(days=3)
    booking = BookingMail(
        "bkid-1", "A1-7KQ2M9", "confirmed", name, "ada@example.com", "AB12 CDE", "MOT",
        "Bay 1", start, start + timedelta(hours=1), 0,
    )  # fmt: skip
    return compose(booking, "confirmed", Settings(_env_file=None), datetime.now(UTC))  # type: ignore[call-arg]


@pytest.mark.parametrize("name", NAME_VARIANTS[:5])
def test_the_composer_refuses_injected_headers(name: str) -> None:
    with pytest.raises(DeliveryFailed, match="header") as refused:
        checked_bytes(_mail_for(name))
    assert refused.value.permanent


@pytest.mark.parametrize("name", ["Ada Lovelace", "Zoë Ångström-Øster " * 5, "O'Brien, Séan"])
def test_ordinary_names_pass_the_check(name: str) -> None:
    data = checked_bytes(_mail_for(name))
    assert b"\r\nReply-To:" not in data
    assert data.count(b"\r\nTo: ") == 1


async def _booked_then_poisoned(stack: Stack, sql: SQL) -> str:
    """A booking made with a clean name whose stored name is then the payload: what a row from
    before the fix (or written by anything but the booking path) looks like."""
    async with running_app(stack.settings()) as api:  # no worker: nothing sent yet
        slot = (await free_slots(api))[0]
        answer = await api.post("/api/bookings", json=booking_body(slot["id"]))
        assert answer.status_code == 201, answer.text
    reference: str = answer.json()["reference"]
    await sql("UPDATE bookings SET customer_name = :name", name=PAYLOAD)
    return reference


async def _confirmation_dead(sql: SQL) -> None:
    async def dead() -> bool:
        rows = await sql("SELECT status, last_error FROM outbox WHERE kind = 'booking_confirmed'")
        return len(rows) == 1 and rows[0][0] == "dead"

    await wait_until(dead, 30, "the poisoned confirmation to be refused")
    [(error,)] = await sql("SELECT last_error FROM outbox WHERE kind = 'booking_confirmed'")
    assert "header" in error


@pytest.mark.slow
async def test_payload_never_reaches_the_smtp_server(
    stack: Stack,
    smtp_sink: SmtpSink,
    sql: SQL,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    await _booked_then_poisoned(stack, sql)
    worker = start_worker(mail_env(stack, smtp_sink))
    await _confirmation_dead(sql)
    assert smtp_sink.mails == [], worker.output()


async def test_payload_never_reaches_the_drop_folder(
    stack: Stack, sql: SQL, tmp_path: Path
) -> None:
    await _booked_then_poisoned(stack, sql)
    async with running_app(mail_settings(stack, None, mail_drop_dir=tmp_path)):
        await _confirmation_dead(sql)
    assert sorted(path.name for path in os.scandir(tmp_path)) == []


async def test_drop_folder_writes_exactly_the_checked_bytes(tmp_path: Path) -> None:
    message = _mail_for("Ada Lovelace")
    mailer = DropFolderMailer(tmp_path)
    await mailer.send(message)
    assert mailer.path_for(message).read_bytes() == checked_bytes(message)
