"""Webhook tests' helpers: a real receiver process (tests/support/receiver.py), subscribing
through the admin API, and the README's receiver snippet loaded as the code it shows."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import ROOT, free_port, port_open, wait_for
from tests.support.stack import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ALL_EVENTS = ["booking.created", "booking.cancelled", "booking.rescheduled", "booking.completed"]
# Tests deliver to 127.0.0.1, which the SSRF check refuses unless allowed.
LOCAL = {"webhook_allow_networks": "127.0.0.0/8"}


class ReceiverProcess:
    """The receiver as its own process on a free 127.0.0.1 port; stopped (or killed) by pid.
    It may be restarted on the same port: a receiver that was down comes back."""

    def __init__(self, directory: Path, status: int = 200, delay: float = 0.0) -> None:
        self.port = free_port()
        self.status = status
        self.delay = delay
        self.log = directory / f"receiver-{self.port}.jsonl"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/garagebook"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "support" / "receiver.py"),
                str(self.port),
                str(self.log),
                "--status",
                str(self.status),
                "--delay",
                str(self.delay),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), 10, "the webhook receiver to listen")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far: headers, raw body (bytes) and parsed event."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        found = []
        for line in lines:
            record = json.loads(line)
            raw = base64.b64decode(record["body"])
            found.append({**record, "raw": raw, "event": json.loads(raw)})
        return found

    def event_ids(self) -> Counter[str]:
        return Counter(request["event"]["id"] for request in self.requests())

    async def wait_for(self, distinct: int, within: float) -> list[dict[str, Any]]:
        """Wait until `distinct` different events have arrived."""
        deadline = time.monotonic() + within
        while len(self.event_ids()) < distinct:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.event_ids())} of {distinct} events in {within}s")
            await asyncio.sleep(0.05)
        return self.requests()

    def close(self) -> None:
        self.stop()  # the log stays for the test to read


async def subscribe(
    client: httpx.AsyncClient, url: str, events: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/api/admin/webhooks",
        json={"url": url, "events": events or ALL_EVENTS, **extra},
        headers=AUTH,
    )
    assert response.status_code == 201, response.text
    made: dict[str, Any] = response.json()
    return made


async def deliveries(client: httpx.AsyncClient, webhook_id: int) -> list[dict[str, Any]]:
    response = await client.get(f"/api/admin/webhooks/{webhook_id}/deliveries", headers=AUTH)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def readme_receiver() -> dict[str, Any]:
    """The README's receiver snippet, run as written (not as __main__: its server part does not
    start); its namespace, with `verify`."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Webhooks", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(code) == 1, "the README's Webhooks section shows one Python receiver"
    namespace: dict[str, Any] = {"__name__": "readme_receiver"}
    exec(compile(code[0], "README.md#webhooks", "exec"), namespace)  # noqa: S102 (our README)
    return namespace
