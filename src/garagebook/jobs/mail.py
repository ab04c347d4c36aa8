"""Sending a finished message: over SMTP (aiosmtplib) when SMTP_URL is set, otherwise as one
`.eml` file per message in a drop folder that a person can open in any mail program."""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Protocol

import aiosmtplib

from garagebook.config import Settings, SmtpServer

_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
_HEADER_START = re.compile(rb"^([!-9;-~]+):")


class DeliveryFailed(Exception):
    """A send that failed; `permanent` when retrying cannot help (e.g. the server refused the
    recipient with a 5xx). The text is safe to store and show: addresses are redacted."""

    def __init__(self, text: str, *, permanent: bool = False) -> None:
        super().__init__(redact(text))
        self.permanent = permanent


def redact(text: str) -> str:
    """Servers echo recipients in their errors ("550 <ada@example.com> unknown"): errors are
    stored and logged, customer addresses must not be."""
    return _ADDRESS.sub("<address>", text)


def checked_bytes(message: EmailMessage) -> bytes:
    """The message as it goes on the wire (CRLF line ends), after checking that its header block
    is exactly the headers that were set, in order, each a header line or its folded
    continuation: no CR or LF on its own, no header added, no early blank line. Python before
    3.11.10 / 3.12.5 (CVE-2024-6923) writes a header whose value decodes to CR/LF as is, so a
    name with an encoded word could add a Reply-To:, a Bcc: or body text; this refuses such a
    message whatever the Python. Permanent: sending it again would be the same message."""
    data = message.as_bytes(policy=SMTP)
    head, blank, _ = data.partition(b"\r\n\r\n")
    names: list[str] = []
    for line in head.split(b"\r\n") if blank else [b"\n"]:
        if b"\r" in line or b"\n" in line:
            names.append("\n")  # a bare line break: never a header of ours
        elif line[:1] in (b" ", b"\t"):
            continue  # a folded continuation of the header above
        else:
            match = _HEADER_START.match(line)
            names.append(match.group(1).decode("ascii").lower() if match else "?")
    expected = [name.lower() for name in message]  # header names, in order
    if names != expected:
        raise DeliveryFailed(
            f"refused to send: the message's headers are not the ones set "
            f"({len(names)} header lines for {len(expected)} headers)",
            permanent=True,
        )
    return data


def envelope(message: EmailMessage) -> tuple[str, list[str]]:
    """Sender and recipients from the headers as set (their parsed addresses), never from the
    written text: what the SMTP envelope says is what the garage meant to send."""
    sender = message["From"].addresses[0].addr_spec
    recipients = [address.addr_spec for address in message["To"].addresses]
    return sender, recipients


class Mailer(Protocol):
    def describe(self) -> str:
        """Where mail goes, for the logs: never credentials."""

    async def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    def __init__(self, server: SmtpServer, timeout_seconds: float) -> None:
        self.server = server
        self.timeout = timeout_seconds

    def describe(self) -> str:
        return self.server.describe()

    async def send(self, message: EmailMessage) -> None:
        server = self.server
        data = checked_bytes(message)
        sender, recipients = envelope(message)
        try:
            await aiosmtplib.send(
                data,
                sender=sender,
                recipients=recipients,
                hostname=server.host,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.security == "tls",
                start_tls=True if server.security == "starttls" else None,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            raise DeliveryFailed(
                f"recipient refused: {detail}", permanent=all(c >= 500 for c in codes)
            ) from None
        # A 5xx to RCPT or DATA: this message will never be accepted (no such mailbox, content
        # rejected). Other refusals (auth, sender, 4xx) are passing or configuration: retry.
        except aiosmtplib.SMTPRecipientRefused as exc:
            raise DeliveryFailed(
                f"recipient refused: {exc.code} {exc.message}", permanent=exc.code >= 500
            ) from None
        except aiosmtplib.SMTPDataError as exc:
            raise DeliveryFailed(
                f"message refused: {exc.code} {exc.message}", permanent=exc.code >= 500
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None


class DropFolderMailer:
    """One file per message, named after its Message-ID: a repeated send replaces the file
    with the same message. Written to a temporary file, synced, then renamed, so a reader (or
    a crash) never sees half a mail."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def describe(self) -> str:
        return f"drop folder {self.directory}"

    def path_for(self, message: EmailMessage) -> Path:
        message_id = str(message["Message-ID"] or "").strip("<> ")
        if not message_id:
            raise ValueError("a message for the drop folder needs a Message-ID")
        stem = _UNSAFE_FILENAME.sub("_", message_id.split("@", 1)[0])
        return self.directory / f"{stem}.eml"

    async def send(self, message: EmailMessage) -> None:
        data = checked_bytes(message)  # CRLF line ends, as on the wire
        try:
            await asyncio.to_thread(self._write, self.path_for(message), data)
        except OSError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc.strerror or exc}") from None

    def _write(self, target: Path, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o644)  # mkstemp makes it 0600; people read these
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)


def create_mailer(settings: Settings) -> Mailer:
    server = settings.smtp
    if server is not None:
        return SmtpMailer(server, settings.smtp_timeout_seconds)
    return DropFolderMailer(settings.mail_drop_dir)
