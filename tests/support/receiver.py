"""A webhook receiver as its own process (standard library only): every POST is appended to a
JSON-lines file as it arrives — before the answer, so a test sees a request its sender never
got an answer to — then answered with STATUS after DELAY seconds.

    python tests/support/receiver.py PORT LOG_FILE [--status 200] [--delay 0]
"""

from __future__ import annotations

import argparse
import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_LOCK = threading.Lock()


def serve(port: int, log: Path, status: int, delay: float) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if len(body) < length:
                # The sender went away mid-body (a worker killed mid-delivery): no delivery, as
                # with any receiver, which cannot act on half a request.
                self.close_connection = True
                return
            record = {
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": base64.b64encode(body).decode(),
                "received_at": time.time(),
            }
            with _LOCK, log.open("a") as out:
                out.write(json.dumps(record) + "\n")
            time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log", type=Path)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.0)
    arguments = parser.parse_args()
    serve(arguments.port, arguments.log, arguments.status, arguments.delay)
