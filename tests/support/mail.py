"""Mail and background jobs: an SMTP server that records what it receives, settings and
environments of servers and workers that send to it, the app running with its worker."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from asgi_lifespan import LifespanManager

from garagebook.app import create_app
from garagebook.config import Settings
from tests.support.processes import free_port
from tests.support.stack import Stack


@dataclass(frozen=True)
class ReceivedMail:
    recipients: list[str]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def reference(self) -> str:
        return str(self.message["X-Booking-Reference"])

    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        """Like a real server, refuse mailboxes that do not exist (here: `bounce…@`)."""
        if address.startswith("bounce"):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.sink.record(ReceivedMail(list(envelope.rcpt_tos), message))
        return "250 OK"


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a free port, in a thread of the test process. `stop()`
    closes the port, as when the mail server is down; `start()` opens it again on the same
    port. `delay` makes every message take that long to be accepted."""

    def __init__(self, delay: float = 0.0) -> None:
        self.port = free_port()
        self.delay = delay
        self._mails: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._controller = Controller(_SinkHandler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._mails.append(mail)

    @property
    def mails(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._mails)

    def copies(self) -> Counter[str]:
        """How many times each Message-ID arrived."""
        return Counter(mail.message_id for mail in self.mails)

    async def wait_for(self, distinct: int, within: float) -> list[ReceivedMail]:
        """Wait until `distinct` different messages have arrived."""
        deadline = time.monotonic() + within
        while len(self.copies()) < distinct:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.copies())} of {distinct} mails after {within}s")
            await asyncio.sleep(0.05)
        return self.mails


# Short leases, polls and backoff, so failure and recovery happen within seconds.
FAST_JOBS: dict[str, Any] = {
    "worker_poll_seconds": 0.1,
    "worker_lease_seconds": 2.0,
    "worker_shutdown_seconds": 3.0,
    "job_retry_base_seconds": 0.1,
    "job_retry_max_seconds": 0.5,
    "job_max_attempts": 100,
}


def mail_settings(stack: Stack, sink: SmtpSink | None, **overrides: Any) -> Settings:
    """Settings of a server that runs its own worker and sends to `sink` (None: drop folder)."""
    values: dict[str, Any] = {"embedded_worker": True, "smtp_url": sink.url if sink else None}
    values.update(FAST_JOBS)
    values.update(overrides)
    return stack.settings(**values)


def mail_env(stack: Stack, sink: SmtpSink | None, **overrides: str) -> dict[str, str]:
    """Environment of a server or worker process of this stack that sends to `sink`."""
    values = {name.upper(): str(value) for name, value in FAST_JOBS.items()}
    if sink is not None:
        values["SMTP_URL"] = sink.url
    values.update(overrides)
    return stack.env(**values)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process with its lifespan (and so its embedded worker, if on)."""
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://garagebook.test"
        ) as client,
    ):
        yield client
