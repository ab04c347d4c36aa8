"""Simultaneous requests: every connection is opened first, then all requests are written at
one instant, so they really overlap at the server (no client-side queueing or pooling)."""

from __future__ import annotations

import asyncio
import errno
import resource
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11


@dataclass(frozen=True)
class Target:
    """One request to send: where, and what body."""

    url: str  # base URL, e.g. http://127.0.0.1:3000
    path: str
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int | None  # None: no HTTP response (timeout, connection error)
    body: bytes
    latency: float  # seconds from the common release to the complete response
    error: str | None = None  # what went wrong when status is None
    client_side: bool = False  # the client failed (could not open a connection)


def raise_fd_limit(wanted: int) -> int:
    """Lift the soft open-files limit towards `wanted` (up to the hard limit); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


async def fire_together(targets: list[Target], time_limit: float) -> list[Response]:
    raise_fd_limit(len(targets) + 256)
    gate = asyncio.Event()
    released_at: list[float] = []
    connections = await asyncio.gather(
        *(_open(t.url, time_limit) for t in targets), return_exceptions=True
    )
    try:
        tasks = [
            asyncio.create_task(_exchange(target, connection, gate, released_at, time_limit))
            for target, connection in zip(targets, connections, strict=True)
        ]
        await asyncio.sleep(0)  # let every task reach the gate
        released_at.append(time.perf_counter())
        gate.set()
        return list(await asyncio.gather(*tasks))
    finally:
        for connection in connections:
            if not isinstance(connection, BaseException):
                connection[1].close()


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _open(url: str, time_limit: float) -> _Connection:
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    context = ssl.create_default_context() if secure else None
    return await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, port, ssl=context), time_limit
    )


def _request_bytes(client: h11.Connection, target: Target) -> bytes:
    parts = urlsplit(target.url)
    headers = [
        ("Host", parts.netloc),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(target.body))),
        ("Connection", "close"),
        ("User-Agent", "garagebook-concurrency-test"),
    ]
    return b"".join(
        client.send(event) or b""
        for event in (
            h11.Request(method="POST", target=target.path, headers=headers),
            h11.Data(data=target.body),
            h11.EndOfMessage(),
        )
    )


async def _exchange(
    target: Target,
    connection: _Connection | BaseException,
    gate: asyncio.Event,
    released_at: list[float],
    time_limit: float,
) -> Response:
    client = h11.Connection(h11.CLIENT)
    request = _request_bytes(client, target)  # prepared before the gate opens
    await gate.wait()
    start = released_at[0]
    if isinstance(connection, BaseException):
        client_side = isinstance(connection, OSError) and connection.errno in (
            errno.EMFILE,
            errno.ENFILE,
            errno.EADDRNOTAVAIL,
        )
        return Response(None, b"", 0.0, _describe(connection), client_side)
    reader, writer = connection
    try:
        writer.write(request)
        status, body = await asyncio.wait_for(_read_response(client, reader, writer), time_limit)
    except TimeoutError:
        return Response(None, b"", time.perf_counter() - start, f"timeout after {time_limit:g}s")
    except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as exc:
        return Response(None, b"", time.perf_counter() - start, _describe(exc))
    return Response(status, body, time.perf_counter() - start)


async def _read_response(
    client: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[int, bytes]:
    await writer.drain()
    status = 0
    body = bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await reader.read(65536))  # b"" at EOF: h11 then decides
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, bytes(body)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return "client could not open a connection: too many open files"
    if isinstance(exc, TimeoutError):
        return "timeout while connecting"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
