"""The server's own bounds, against a real `garagebook serve` (security review, finding 5;
issue 12, point 1): a huge header is refused without growing the process, slow headers, slow
bodies and idle connections are closed within a bound, the keep-alive outlasts clients' pools
(a client reusing one connection at 4.9–5.5 s gaps, and a burst after a pause, get every
answer), and X-Forwarded-For is believed only from FORWARDED_ALLOW_IPS (finding 11)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServerProcess
from tests.support.stack import Stack

# The server behaves the same whatever the stores: one stack is enough.
pytestmark = [pytest.mark.slow, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]

StartServer = Callable[..., ServerProcess]
READ_TIMEOUT = 2.0
KEEP_ALIVE = 3


def rss_kib(server: ServerProcess) -> int:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Read until the server closes; how long that took and what it said."""
    started = time.monotonic()
    sock.settimeout(seconds)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, answer


@pytest.fixture
def bounded(stack: Stack, start_server: StartServer) -> ServerProcess:
    """Short bounds, so that the test takes seconds."""
    return start_server(
        stack.env(
            HTTP_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT), KEEP_ALIVE_TIMEOUT_SECONDS=str(KEEP_ALIVE)
        )
    )


def test_a_64_mb_header_is_refused_without_growing_the_server(bounded: ServerProcess) -> None:
    before = rss_kib(bounded)
    sock = connect(bounded)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    chunk = b"a" * 65536
    sent = 0
    try:
        while sent < 64 * 1024 * 1024:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    _, answer = closed_within(sock, 10)
    sock.close()
    assert sent < 64 * 1024 * 1024, "the server kept reading"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert rss_kib(bounded) - before < 20 * 1024
    assert httpx.get(f"{bounded.url}/health", timeout=10).status_code == 200


def test_slow_headers_are_cut_off(bounded: ServerProcess) -> None:
    sock = connect(bounded)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    answer = b""
    sock.settimeout(0.5)
    while time.monotonic() - started < 30:
        try:
            sock.sendall(b"X-Slow: 1\r\n")
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if not chunk:
            break
        answer += chunk
    took = time.monotonic() - started
    sock.close()
    assert READ_TIMEOUT - 0.5 < took < READ_TIMEOUT + 8
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_a_slow_body_is_cut_off(bounded: ServerProcess) -> None:
    sock = connect(bounded)
    sock.sendall(
        b"POST /api/bookings HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: 1000\r\n\r\n{"
    )
    started = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - started < 30:
        try:
            sock.sendall(b" ")
            if not sock.recv(65536):
                break
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    took = time.monotonic() - started
    sock.close()
    assert READ_TIMEOUT - 0.5 < took < READ_TIMEOUT + 8


def test_idle_connections_are_closed_fresh_or_after_a_response(bounded: ServerProcess) -> None:
    fresh = connect(bounded)
    took, answer = closed_within(fresh, 30)
    fresh.close()
    assert answer == b""
    assert KEEP_ALIVE - 0.5 < took < KEEP_ALIVE + 8

    used = connect(bounded)
    used.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    took, answer = closed_within(used, 30)
    used.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert KEEP_ALIVE - 0.5 < took < KEEP_ALIVE + 8


def test_a_request_sent_in_pieces_within_the_bound_is_answered(bounded: ServerProcess) -> None:
    sock = connect(bounded)
    for piece in (b"GET /health HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
        sock.sendall(piece)
        time.sleep(0.3)
    sock.settimeout(10)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.close()


def _local_port(response: httpx.Response) -> int:
    stream = response.extensions["network_stream"]
    port: int = stream.get_extra_info("socket").getsockname()[1]
    return port


def test_keep_alive_outlasts_a_clients_pool_at_5_second_gaps(
    stack: Stack, start_server: StartServer
) -> None:
    """Issue 12, point 1: httpx reuses an idle connection for 5 s, and uvicorn used to close
    it after 5 s. With the default keep-alive, every request at gaps around 5 s is answered,
    on the one connection the client opened."""
    server = start_server(stack.env())
    ports = []
    limits = httpx.Limits(max_connections=1, keepalive_expiry=60)
    with httpx.Client(base_url=server.url, limits=limits, timeout=10) as client:
        for gap in (0, 4.9, 5.0, 5.05, 5.1, 5.2, 5.5):
            time.sleep(gap)
            response = client.post("/api/holds", json={"slot_id": 0, "service_id": 0})
            assert response.status_code == 422
            ports.append(_local_port(response))
    assert len(set(ports)) == 1, ports


async def test_a_burst_after_a_pause_gets_every_answer(
    stack: Stack, start_server: StartServer
) -> None:
    server = start_server(stack.env())
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=20, keepalive_expiry=60)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=20) as client:

        async def burst() -> set[int]:
            answers = await asyncio.gather(*(client.get("/health") for _ in range(20)))
            assert [a.status_code for a in answers] == [200] * 20
            return {_local_port(a) for a in answers}

        first = await burst()
        await asyncio.sleep(5.2)
        second = await burst()
    assert second <= first  # the same pooled connections, none closed by the server


def _limited_after(server: ServerProcess, forwarded_for: str) -> list[int]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        return [
            client.post(
                "/api/holds", json={}, headers={"X-Forwarded-For": forwarded_for}
            ).status_code
            for _ in range(3)
        ]


def test_x_forwarded_for_is_believed_only_from_forwarded_allow_ips(
    stack: Stack, start_server: StartServer
) -> None:
    """The test client is 127.0.0.1, which is exempt from the limits. A forged
    X-Forwarded-For must not make it someone else (nor let anyone pick their address)."""
    env = {k: v for k, v in stack.env(RATE_LIMIT_HOLDS="2/minute").items()}
    env.pop("FORWARDED_ALLOW_IPS", None)
    default = start_server(env)
    assert _limited_after(default, "203.0.113.9") == [422, 422, 422]
    trusting = start_server({**env, "FORWARDED_ALLOW_IPS": "127.0.0.1"})
    assert _limited_after(trusting, "203.0.113.9") == [422, 422, 429]


def test_headers_just_under_the_limit_are_read(bounded: ServerProcess) -> None:
    """The bound refuses only what is really over it: 30 KiB of headers in many small reads."""
    sock = connect(bounded)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for i in range(30):
        sock.sendall(f"X-Filler-{i}: ".encode() + b"a" * 1000 + b"\r\n")
        time.sleep(0.01)
    sock.sendall(b"\r\n")
    sock.settimeout(10)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.close()
