"""`make fuzz`, second half: the schemathesis CLI (every phase, `--checks all`) against a real
`garagebook serve` on PostgreSQL + Redis, as an outside client would run it.

    .venv/bin/python -m tests.schemathesis_cli [extra schemathesis options]

It creates its own database (migrated and seeded with the demo garage) and Redis key prefix,
starts the server on a free port, runs `schemathesis run` bounded by SCHEMATHESIS_CLI_EXAMPLES
cases per operation and SCHEMATHESIS_CLI_SECONDS in all, then stops the server by its pid and
drops what it made. The exit status is schemathesis'. The admin token goes with every request
(admin routes, and booking reads and cancels authorised by it): the fuzzer is the operator."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import asyncpg
import httpx
import redis

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_TOKEN = "fuzz-admin-token"
EXAMPLES = os.environ.get("SCHEMATHESIS_CLI_EXAMPLES", "50")
SECONDS = os.environ.get("SCHEMATHESIS_CLI_SECONDS", "600")
BIN = os.path.dirname(sys.executable)
CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemathesis.toml")


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=5
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(url: str, server: subprocess.Popen[bytes], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited before it answered /health")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"the server did not answer /health within {within}s")


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group (it was started in a new session), then
    SIGKILL if it does not stop: only the processes this script started."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(5)


def main(extra: list[str]) -> int:
    run_id = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    database = f"garagebook_fuzzcli_{run_id}"
    prefix = f"gbfuzzcli:{run_id}:"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    env.update(
        DATABASE_URL=f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}",
        REDIS_URL=REDIS_URL,
        REDIS_KEY_PREFIX=prefix,
        ADMIN_TOKEN=ADMIN_TOKEN,
        SESSION_SECRET="fuzz-session-secret",
        EMBEDDED_WORKER="false",
        MAIL_DROP_DIR=tempfile.mkdtemp(prefix="garagebook-fuzz-mail-"),
        LOG_LEVEL="WARNING",
    )
    garagebook = os.path.join(BIN, "garagebook")
    asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    server: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([garagebook, "migrate"], env=env, check=True)
        subprocess.run([garagebook, "seed"], env=env, check=True)
        server = subprocess.Popen(
            [garagebook, "serve", "--port", str(port)], env=env, start_new_session=True
        )
        _wait_healthy(url, server, 30)
        command = [
            os.path.join(BIN, "schemathesis"),
            "--config-file",
            CONFIG,
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            EXAMPLES,
            "--max-time",
            SECONDS,
            "--header",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            "--request-timeout",
            "10",
            "--workers",
            "2",
            "--seed",
            os.environ.get("SCHEMATHESIS_CLI_SEED", "1"),
            *extra,
        ]
        print("$", " ".join(command), flush=True)
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        if server is not None:
            _stop(server)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
