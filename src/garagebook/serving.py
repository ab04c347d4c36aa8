"""How `garagebook serve` runs uvicorn: bounded headers, bounded reads, a long keep-alive, a
cap on concurrency, and client addresses from a proxy only when told to trust it.

What uvicorn itself offers, and what it does not (uvicorn 0.3x–0.5x):
- header size: only its h11 protocol bounds it (`h11_max_incomplete_event_size`); the
  httptools protocol reads a header block of any size (a 64 MB header was answered 200). h11
  costs ~0.09 ms more CPU per request than httptools here (0.37 against 0.28 ms for a bare
  404, measured with wrk), a third of our whole rejection path, so we keep httptools and bound
  the header block ourselves.
- keep-alive: `timeout_keep_alive` closes a connection idle *after a response*. A connection
  that never sends a byte, or sends a request slowly, is never timed out (slowloris).
- `limit_concurrency`: past that many open connections or running requests, new requests get
  503 at once.

`BoundedHttpToolsProtocol` adds what is missing, as three different bounds:
- header block: more than MAX_HEADER_BYTES (32 KiB) still without its end is answered 431 and
  the connection closed. Counted per read after the one where the request began, so a refused
  request really had that much header, and memory stays within the limit plus one read.
- idle (no byte of a request yet, on a fresh connection as after a response): the keep-alive
  timeout, long on purpose (KEEP_ALIVE_TIMEOUT_SECONDS, 75 s) so that clients and load
  balancers, which reuse idle connections for up to 60 s, close first and never send into a
  connection we are closing. An idle connection costs a socket and a few KiB; the number of
  them is capped by MAX_CONCURRENCY.
- reading a request (from its first byte until its headers and body are in):
  HTTP_READ_TIMEOUT_SECONDS (15 s), whatever the pace — a client trickling a byte a second
  is cut off there: 408 while still in the headers, else the connection is closed (the app,
  waiting for the body, sees a disconnect).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from garagebook.config import Settings

# Nothing else of garagebook is imported at module level, on purpose: with `--workers N` uvicorn
# pickles this class into each worker's config, so every worker imports this module before it
# answers its supervisor's 5 s health pings; importing the settings (pydantic, e-mail
# validation…) there made workers miss them on a busy machine, and be killed as dead.


def _answer(status: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: " + str(len(text)).encode() + b"\r\n\r\n" + text
    )


_REQUEST_TIMEOUT = _answer(b"408 Request Timeout", b"Request read timed out.\n")
_HEADERS_TOO_LARGE = _answer(b"431 Request Header Fields Too Large", b"Headers too large.\n")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the header block, a deadline on reading
    each request, and the keep-alive timeout applied to a fresh connection too (see the module
    docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from garagebook.config import get_settings  # see the imports above

        # From the settings of this process (each `--workers` process imports this afresh).
        settings = get_settings()
        self.read_timeout = settings.http_read_timeout_seconds
        self.max_header_bytes = settings.max_header_bytes
        self._in_headers = False
        self._header_bytes = 0
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
        began_earlier = self._in_headers
        super().data_received(data)
        if self._in_headers and began_earlier and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._close_with(_HEADERS_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_read_deadline()
        super().on_message_complete()

    def _stop_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self._in_headers:
            self._close_with(_REQUEST_TIMEOUT)  # nothing answered yet: say why
        elif not self.transport.is_closing():
            self.transport.close()

    def _close_with(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()
        self._stop_read_deadline()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The server settings `garagebook serve` passes to uvicorn.run."""
    forwarded = settings.forwarded_allow_ips.strip()
    return {
        "http": BoundedHttpToolsProtocol,
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "limit_concurrency": settings.max_concurrency,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 unless told otherwise: only from
        # FORWARDED_ALLOW_IPS here, and from nobody when it is empty (the default).
        "proxy_headers": bool(forwarded),
        "forwarded_allow_ips": forwarded or None,
        "server_header": False,
        **_worker_healthcheck(),
    }


def _worker_healthcheck() -> dict[str, Any]:
    """With `--workers N`, uvicorn (0.3x and later) pings each worker and kills one that does
    not answer within 5 s — also while it is still starting. On a busy machine (CI, or a host
    already at full load) a starting worker misses that and is killed and restarted in a loop,
    so the server never answers (seen at load 10 on 2 cores, with or without this module's
    changes). 30 s still finds a hung worker; older uvicorns have no such check."""
    if "timeout_worker_healthcheck" not in inspect.signature(uvicorn.Config).parameters:
        return {}
    return {"timeout_worker_healthcheck": 30}
