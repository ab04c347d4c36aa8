"""The server's bounds, measured against a real `garagebook serve` on a fresh SQLite file: a
64 MB header, a slow header, a slow body, idle connections (fresh and after an answer), and
server CPU per request under wrk. The README's figures come from:

    .venv/bin/python -m bench.server_limits now 38132
    PYTHONPATH=/tmp/old/src .venv/bin/python -m bench.server_limits before 38131  # older src

Idle waits are capped at 100 s; the four slow checks run at once (about 100 s in all)."""

# ruff: noqa: S603, S607  (a measurement tool: it starts this checkout's server and wrk)

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import httpx

CAP_SECONDS = 100.0


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        work = tempfile.mkdtemp(prefix="garagebook-limits-")
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "REDIS_", "FORWARDED_"))
        }
        self.env.update(
            DATABASE_URL=f"sqlite+aiosqlite:///{work}/garagebook.db",
            MAIL_DROP_DIR=f"{work}/mail",
            LOG_LEVEL="WARNING",
            EMBEDDED_WORKER="false",
        )
        command = [sys.executable, "-m", "garagebook.cli"]
        subprocess.run([*command, "migrate"], env=self.env, check=True, capture_output=True)
        self.process = subprocess.Popen(
            [*command, "serve", "--port", str(port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/health", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def rss_mb(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().split(")")[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(20)


def until_closed(sock: socket.socket, feed: bytes | None = None) -> tuple[float, str]:
    """Seconds until the server closed (feeding `feed` every 0.5 s meanwhile), and the start
    of what it answered."""
    started = time.monotonic()
    sock.settimeout(0.5)
    answer = b""
    while time.monotonic() - started < CAP_SECONDS:
        try:
            if feed:
                sock.sendall(feed)
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if not chunk:
            break
        answer += chunk
    sock.close()
    return round(time.monotonic() - started, 1), answer[:12].decode(errors="replace")


def huge_header(server: Server) -> dict[str, Any]:
    before = server.rss_mb()
    sock = server.connect()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        while sent < 64 << 20:
            sock.sendall(b"a" * 65536)
            sent += 65536
        sock.sendall(b"\r\n\r\n")
    except OSError:
        pass
    _, answer = until_closed(sock)
    after = server.rss_mb()
    return {"sent_MiB": round(sent / 2**20, 2), "answer": answer, "rss_MB": [before, after]}


def main() -> None:
    label, port = sys.argv[1], int(sys.argv[2])
    server = Server(port)
    results: dict[str, Any] = {"64 MB header": huge_header(server)}

    def slow_header() -> None:
        sock = server.connect()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        results["slow header (a line / 0.5 s)"] = until_closed(sock, b"X-A: b\r\n")

    def slow_body() -> None:
        sock = server.connect()
        sock.sendall(
            b"POST /api/holds HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 1000\r\n\r\n{"
        )
        results["slow body (a byte / 0.5 s)"] = until_closed(sock, b" ")

    def idle_fresh() -> None:
        results["idle, fresh connection"] = until_closed(server.connect())

    def idle_after_answer() -> None:
        sock = server.connect()
        sock.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        results["idle after an answer"] = until_closed(sock)

    threads = [
        threading.Thread(target=check)
        for check in (slow_header, slow_body, idle_fresh, idle_after_answer)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    cpu_before = server.cpu_seconds()
    wrk = subprocess.run(
        ["wrk", "-t1", "-c8", "-d10s", f"{server.url}/nothing"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu_used = server.cpu_seconds() - cpu_before
    requests = int(next(line for line in wrk.splitlines() if "requests in" in line).split()[0])
    results["wrk -t1 -c8 -d10s GET /nothing"] = {
        "requests": requests,
        "server_cpu_ms_per_request": round(cpu_used * 1000 / requests, 3),
    }
    server.stop()
    print(label, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
