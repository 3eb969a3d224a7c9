"""A loopback judge that speaks OpenAI's chat-completions protocol, with scriptable faults.

The judge tests and `benchmarks/bench_judge.py` talk to it through the real `openai` client, so
timeouts, retries, backoff and response parsing are the client's own. Each request takes the next
scripted `Reply` (or `ok` when the script is empty); every request is recorded. `script_for` keys
replies to one group (any request whose ids include the given trajectory id takes from its queue
first), so concurrent groups get their own replies in any arrival order. `answer(...)` and `body(...)`
send any text the tests choose (the hostile corpus); `drip_s` writes the whole response one byte at a
time, as a slow-drip server would.

    server = JudgeServer(latency_s=0.2).start()
    server.script(status(429), ok())
    server.script_for(ids[0], answer(lambda ids: "not json"), ok())
    ...
    server.stop()
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

ReplyKind = Literal[
    "ok", "status", "hang", "garbage", "malformed", "wrong_count", "unknown_ids", "out_of_range", "answer", "body"
]
Text = str | Callable[[list[str]], str]
"""Fixed text, or text made from the request's trajectory ids (in block order)."""
IDS_PATTERN = re.compile(r"<trajectory_ids>\s*(\{.*?\})\s*</trajectory_ids>", re.DOTALL)


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `latency_s` is added to the server's own latency."""

    kind: ReplyKind = "ok"
    latency_s: float = 0.0
    code: int = 200
    retry_after_ms: int | None = 20
    echo_auth: bool = False
    text: Text = ""
    """`answer`: the message content; `body`: the whole HTTP body; `status`: added to the error message."""
    drip_s: float | None = None
    """Write the response (status line, headers, body) one byte per `drip_s` seconds."""

    def dripping(self, seconds_per_byte: float) -> Reply:
        return replace(self, drip_s=seconds_per_byte)


def ok() -> Reply:
    return Reply("ok")


def latency(ms: float) -> Reply:
    return Reply("ok", latency_s=ms / 1000)


def status(code: int, *, retry_after_ms: int | None = 20, echo_auth: bool = False) -> Reply:
    """An error status. `retry_after_ms` is sent as `retry-after-ms`; `echo_auth` puts the caller's
    Authorization header into the error body, as careless proxies do."""
    return Reply("status", code=code, retry_after_ms=retry_after_ms, echo_auth=echo_auth)


def hang() -> Reply:
    """Answers only when the server stops: longer than any client timeout in the tests."""
    return Reply("hang")


def garbage() -> Reply:
    """A 200 whose body is not JSON at all (a proxy's error page)."""
    return Reply("garbage")


def malformed() -> Reply:
    return Reply("malformed")


def wrong_count() -> Reply:
    return Reply("wrong_count")


def unknown_ids() -> Reply:
    """Scores keyed by block number ("1", "2", ...) instead of the trajectory ids: a real judge's favourite mistake."""
    return Reply("unknown_ids")


def out_of_range() -> Reply:
    return Reply("out_of_range")


def answer(text: Text) -> Reply:
    """A well-formed completion whose message content is `text` (the judge's answer, any shape)."""
    return Reply("answer", text=text)


def body(text: Text) -> Reply:
    """A 200 `application/json` response whose whole body is `text` (the completion itself malformed)."""
    return Reply("body", text=text)


def drip(seconds_per_byte: float = 1.0) -> Reply:
    """A correct answer, sent one byte at a time: no read ever waits long, so only a deadline ends it."""
    return ok().dripping(seconds_per_byte)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    body: dict[str, Any]
    authorization: str | None
    received_at: float


def expected_score(block: int, n: int) -> float:
    """The `ok` rule: block k of n scores k/n, so the last block wins."""
    return round(block / n, 4)


def trajectory_ids(body: dict[str, Any]) -> list[str]:
    """The ids in block order, read from the first user message's `<trajectory_ids>` mapping."""
    for message in body.get("messages", []):
        if message.get("role") == "user" and (match := IDS_PATTERN.search(str(message.get("content", "")))):
            mapping = json.loads(match.group(1))
            return [mapping[k] for k in sorted(mapping, key=int)]
    raise ValueError("no <trajectory_ids> in the request")


def ok_content(ids: list[str]) -> str:
    """The content of an `ok` answer for these ids."""
    return _answer_content("ok", ids)


def _answer_content(kind: ReplyKind, ids: list[str]) -> str:
    n = len(ids)
    scores = [{"trajectory_id": tid, "explanation": f"block {k}", "score": expected_score(k, n)} for k, tid in enumerate(ids, 1)]
    if kind == "malformed":
        return '{"scores": [{"trajectory_id": '
    if kind == "wrong_count":
        scores = scores[:-1]
    elif kind == "unknown_ids":
        scores = [{**s, "trajectory_id": str(k)} for k, s in enumerate(scores, 1)]
    elif kind == "out_of_range":
        scores[0]["score"], scores[-1]["score"] = -0.25, 1.5
    return json.dumps({"scores": scores})


class JudgeServer:
    """`POST /v1/chat/completions` on 127.0.0.1, a thread per request; `stop()` releases hung requests."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._script: deque[Reply] = deque()
        self._by_id: dict[str, deque[Reply]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def count(self) -> int:
        return len(self.requests)

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def script_for(self, trajectory_id: str, *replies: Reply) -> None:
        """Replies for the requests that judge `trajectory_id` (taken before the shared script)."""
        with self._lock:
            self._by_id.setdefault(trajectory_id, deque()).extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._by_id.clear()
            self.requests.clear()
            self.max_in_flight = 0

    def start(self) -> JudgeServer:
        handler = type("Handler", (_Handler,), {"judge": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name="judge-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _next(self, request: RecordedRequest, ids: list[str]) -> Reply:
        with self._lock:
            self.requests.append(request)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            for tid in ids:
                if self._by_id.get(tid):
                    return self._by_id[tid].popleft()
            return self._script.popleft() if self._script else ok()

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Handler(BaseHTTPRequestHandler):
    judge: JudgeServer
    _drip_s: float | None = None
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body, written apart, stall ~40 ms on delayed ACKs

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (its size cap or deadline)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = {}
        request = RecordedRequest(self.path, body, self.headers.get("Authorization"), time.monotonic())
        try:
            ids = trajectory_ids(body)
        except (ValueError, KeyError, AttributeError, TypeError):
            ids = []
        reply = self.judge._next(request, ids)
        self._drip_s = reply.drip_s
        try:
            self._serve(reply, request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to answer
        finally:
            self.judge._done()

    def _serve(self, reply: Reply, request: RecordedRequest) -> None:
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        self.judge._stopping.wait(self.judge.latency_s + reply.latency_s)
        if reply.kind == "hang":
            self.judge._stopping.wait(30)
            return
        if reply.kind == "status":
            message = f"scripted {reply.code}" + (f" for {request.authorization}" if reply.echo_auth else "")
            message += reply.text if isinstance(reply.text, str) else ""
            headers = {"retry-after-ms": str(reply.retry_after_ms)} if reply.retry_after_ms is not None else {}
            return self._send(reply.code, {"error": {"message": message, "type": "scripted"}}, headers)
        if reply.kind == "garbage":
            return self._send_bytes(200, b"<html>bad gateway</html>", "text/html")
        try:
            ids = trajectory_ids(request.body)
        except (ValueError, KeyError, AttributeError) as e:
            return self._send(400, {"error": {"message": f"unreadable judge request: {e}", "type": "invalid_request_error"}})
        if reply.kind == "body":
            text = reply.text(ids) if callable(reply.text) else reply.text
            return self._send_bytes(200, text.encode(), "application/json")
        if reply.kind == "answer":
            content = reply.text(ids) if callable(reply.text) else reply.text
        else:
            content = _answer_content(reply.kind, ids)
        prompt_chars = sum(len(str(m.get("content", ""))) for m in request.body.get("messages", []))
        usage = {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(content) // 4}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self._send(200, {
            "id": f"chatcmpl-{self.judge.count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.body.get("model", "judge"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": usage,
        })

    def _send(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_bytes(code, json.dumps(payload).encode(), "application/json", headers)

    def _send_bytes(self, code: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        if self._drip_s is not None:
            return self._drip(code, data, content_type)
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


    def _drip(self, code: int, data: bytes, content_type: str) -> None:
        head = (f"HTTP/1.1 {code} {self.responses[code][0]}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n")
        for byte in head.encode() + data:
            if self.judge._stopping.wait(self._drip_s):
                return
            self.wfile.write(bytes([byte]))
        self.close_connection = True


def unused_port_url() -> str:
    """A base URL on a loopback port nobody listens on: the judge is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def judge_server() -> Iterator[JudgeServer]:
    server = JudgeServer().start()
    yield server
    server.stop()
