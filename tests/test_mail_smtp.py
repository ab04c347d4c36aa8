"""SMTP_URL against a real aiosmtpd server with a real (self-signed) certificate: STARTTLS,
TLS from the first byte, credentials; which refusals are retried and which are final."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from garagebook.config import Settings, SmtpServer
from garagebook.jobs.mail import DeliveryFailed, SmtpMailer
from garagebook.jobs.messages import BookingMail, compose
from tests.support.processes import free_port
from tests.support.stack import service_missing

LONDON = ZoneInfo("Europe/London")


@dataclass
class Seen:
    mails: list[tuple[bool, str | None, list[str]]] = field(default_factory=list)


class Recorder:
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login.decode() if session.auth_data else None
        tls = server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or not
        self.seen.mails.append((tls, login, list(envelope.rcpt_tos)))
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"garage", b"s3cret")
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl tool."""
    openssl = shutil.which("openssl")
    if openssl is None:
        service_missing("openssl", FileNotFoundError("openssl"))
    assert openssl is not None
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def trust(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """The client trusts the test certificate the way an operator trusts a private CA:
    SSL_CERT_FILE. Returns the server's context."""
    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def start(controller: Controller) -> Iterator[None]:
    controller.start()
    yield
    controller.stop()


def message() -> Any:
    start_at = datetime(2026, 6, 1, 9, tzinfo=LONDON).astimezone(UTC)
    booking = BookingMail(
        "bkid-1",
        "A1-7KQ2M9",
        "confirmed",
        "Ada Lovelace",
        "ada@example.com",
        "AB12 CDE",
        "MOT",
        "Bay 1",
        start_at,
        start_at + timedelta(hours=1),
        0,
    )
    return compose(booking, "confirmed", Settings(_env_file=None), datetime.now(UTC))  # type: ignore[call-arg]


async def send(url: str) -> None:
    await SmtpMailer(SmtpServer.from_url(url), timeout_seconds=5).send(message())


async def test_starttls_with_credentials(trust: ssl.SSLContext) -> None:
    seen, port = Seen(), free_port()
    controller = Controller(
        Recorder(seen),
        hostname="127.0.0.1",
        port=port,
        tls_context=trust,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticate,
    )
    for _ in start(controller):
        await send(f"smtp+starttls://garage:s3cret@127.0.0.1:{port}")
        await send(f"smtp://garage:s3cret@127.0.0.1:{port}")  # upgrades when offered
        with pytest.raises(DeliveryFailed) as refused:
            await send(f"smtp+starttls://garage:wrong@127.0.0.1:{port}")
    assert seen.mails == [(True, "garage", ["ada@example.com"])] * 2
    assert "535" in str(refused.value)
    assert not refused.value.permanent  # a configuration to fix: the mail waits, and retries


async def test_tls_from_the_first_byte(trust: ssl.SSLContext) -> None:
    seen, port = Seen(), free_port()
    controller = Controller(Recorder(seen), hostname="127.0.0.1", port=port, ssl_context=trust)
    for _ in start(controller):
        await send(f"smtps://127.0.0.1:{port}")
    assert seen.mails == [(True, None, ["ada@example.com"])]


async def test_untrusted_certificate_is_refused_and_retried(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    controller = Controller(Recorder(Seen()), hostname="127.0.0.1", port=port, ssl_context=context)
    for _ in start(controller):
        with pytest.raises(DeliveryFailed) as failed:
            await send(f"smtps://127.0.0.1:{port}")
    assert not failed.value.permanent


async def test_server_down_is_retried() -> None:
    with pytest.raises(DeliveryFailed) as failed:
        await send(f"smtp://127.0.0.1:{free_port()}")
    assert not failed.value.permanent
    assert "SMTPConnectError" in str(failed.value)
