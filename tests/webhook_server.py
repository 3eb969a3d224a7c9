"""A loopback Slack-style webhook with scripted answers: what the alert tests post to.

Each request takes the next scripted reply (`ok` when the script is empty) and is recorded with its
JSON body. `status(500)` answers with that code; `hang()` holds the request without answering until
the server stops (longer than any client timeout in the tests).

    server = WebhookServer().start()
    server.script(status(500), status(500))
    ...
    server.stop()
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator
from typing import Any

import pytest


@dataclass(frozen=True)
class Reply:
    kind: str = "ok"
    code: int = 200


def ok() -> Reply:
    return Reply()


def status(code: int) -> Reply:
    return Reply("status", code)


def hang() -> Reply:
    return Reply("hang")


@dataclass(frozen=True)
class Received:
    path: str
    body: Any
    answered: int | None
    """The status sent, None for a request held without an answer."""


class WebhookServer:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/services/T000/B000/secret-token"

    def start(self) -> WebhookServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def delivered(self) -> list[Any]:
        """The bodies answered with 2xx: what a chat channel would show."""
        return [r.body for r in self.received if r.answered is not None and 200 <= r.answered < 300]

    def _next(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else ok()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                reply = server._next()
                if reply.kind == "hang":
                    with server._lock:
                        server.received.append(Received(self.path, body, None))
                    server._stopping.wait()
                    return
                code = reply.code
                with server._lock:
                    server.received.append(Received(self.path, body, code))
                payload = b"ok" if code < 300 else b"server error"
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def refused_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    """A started webhook, stopped after the test (import it into a test module to use it)."""
    server = WebhookServer().start()
    yield server
    server.stop()
