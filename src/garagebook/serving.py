"""How `garagebook serve` runs uvicorn: bounded headers, bounded reads, a long keep-alive, a
cap on concurrency, and client addresses from a proxy only when told to trust it.

What uvicorn itself offers, and what it does not (uvicorn 0.3x–0.5x):
- header size: only its h11 protocol bounds it (`h11_max_incomplete_event_size`, answered
  400); the httptools protocol reads headers of any size. So we serve with h11.
- keep-alive: `timeout_keep_alive` closes a connection idle *after a response*. A connection
  that never sends a byte, or sends a request slowly, is never timed out (slowloris).
- `limit_concurrency`: past that many open connections or running requests, new requests get
  503 at once.

`BoundedH11Protocol` adds the two missing bounds on reading, which are different things:
- idle (no byte of a request yet, on a fresh connection as after a response): the keep-alive
  timeout, long on purpose (KEEP_ALIVE_TIMEOUT_SECONDS, 75 s) so that clients and load
  balancers, which reuse idle connections for up to 60 s, close first and never send into a
  connection we are closing. An idle connection costs a socket and a few KiB; the number of
  them is capped by MAX_CONCURRENCY.
- reading a request (from its first byte until its headers and body are in):
  HTTP_READ_TIMEOUT_SECONDS (15 s), whatever the pace — a client trickling a byte a second
  is cut off there, answered 408 while no response has started.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from garagebook.config import Settings, get_settings

_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 24\r\n\r\nRequest read timed out.\n"
)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on reading each request, and the keep-alive
    timeout applied to a fresh connection too (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # From the settings of this process (each `--workers` process imports this afresh).
        self.read_timeout = get_settings().http_read_timeout_seconds
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's own narrower signature
        super().connection_made(transport)
        # Idle until the first byte: the same bound as between requests.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_reading()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_reading()  # a pipelined request may already be half in

    def _watch_reading(self) -> None:
        """Start the deadline when a request has begun to arrive, stop it once it is in."""
        if self.transport.is_closing():
            self._stop_read_deadline()
            return
        state = self.conn.their_state
        buffered, _ = self.conn.trailing_data
        reading = state is h11.SEND_BODY or (state is h11.IDLE and bool(buffered))
        if not reading:
            self._stop_read_deadline()
        elif self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _stop_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_REQUEST_TIMEOUT)  # still in the headers: nothing answered
        # Otherwise the app is waiting for the body: closing makes it see a disconnect.
        self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The server settings `garagebook serve` passes to uvicorn.run."""
    forwarded = settings.forwarded_allow_ips.strip()
    return {
        "http": BoundedH11Protocol,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "limit_concurrency": settings.max_concurrency,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise: only from
        # FORWARDED_ALLOW_IPS here, and from nobody when it is empty (the default).
        "proxy_headers": bool(forwarded),
        "forwarded_allow_ips": forwarded or None,
        "server_header": False,
    }
