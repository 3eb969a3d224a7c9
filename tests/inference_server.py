"""A loopback inference server speaking vLLM's runtime-LoRA endpoints and chat completions, with faults.

`GET /v1/models` lists the base and every loaded adapter (with the base as `parent`);
`POST /v1/load_lora_adapter` answers 200 with vLLM's plain-text message when `lora_path` is one the
server can read (`publish`), 400 otherwise or when the name is taken; `POST /v1/unload_lora_adapter`
404s an unknown name; `POST /v1/chat/completions` answers a loaded adapter or the base by `model`,
404s any other name, and says `HOLD` unless told what to answer. Faults are scripted per endpoint
(`fail`, an error status whose body may echo the caller's Authorization header as careless proxies
do) and the answer text is settable (`answer`); `stop()` takes the server down. Every request is
recorded.

    server = InferenceServer(adapter_root="/adapters").start()
    server.publish("v1.0.0")
    server.fail("load_lora_adapter", 500)
    ...
    server.stop()
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

BASE = "babylon-base"
HOLD = 'Nothing here is worth the risk.\n{"action": "HOLD", "parameters": {}}'


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any]
    authorization: str | None


@dataclass(frozen=True)
class Fault:
    code: int
    echo_auth: bool = False
    html: bool = False  # a proxy's HTML page instead of the server's JSON


class InferenceServer:
    def __init__(self, adapter_root: str = "/adapters", base: str = BASE) -> None:
        self.adapter_root, self.base = adapter_root.rstrip("/"), base
        self.readable: set[str] = set()
        self.loaded: dict[str, str] = {}  # adapter name -> path
        self.requests: list[Request] = []
        self.answer_text = HOLD
        self.answer_model: str | None = None  # answer as this model instead of the one asked
        self._faults: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def publish(self, version: str) -> None:
        """The server can read `{adapter_root}/{version}` (the adapter was synced to its disk)."""
        self.readable.add(f"{self.adapter_root}/{version}")

    def fail(self, endpoint: str, code: int, *, times: int = 1, echo_auth: bool = False, html: bool = False) -> None:
        """The next `times` requests to `endpoint` (e.g. `load_lora_adapter`, `models`) answer `code`
        (`html`: with a proxy's HTML page as the body, even for 200)."""
        with self._lock:
            self._faults.setdefault(endpoint, deque()).extend([Fault(code, echo_auth, html)] * times)

    def answer(self, text: str) -> None:
        self.answer_text = text

    def paths(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def start(self) -> InferenceServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), name="inference-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(endpoint)
            return queue.popleft() if queue else None

    def handle(self, request: Request) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        with self._lock:
            self.requests.append(request)
        endpoint = request.path.removeprefix("/v1/")
        if (fault := self._fault(endpoint)) is not None:
            if fault.html:
                return fault.code, "text/html", b"<html><body>502 Bad Gateway</body></html>"
            message = f"scripted {fault.code}" + (f" for {request.authorization}" if fault.echo_auth else "")
            return _json(fault.code, {"error": {"message": message, "type": "scripted", "code": fault.code}})
        name = request.body.get("lora_name")
        with self._lock:
            if (request.method, endpoint) == ("GET", "models"):
                models = [{"id": self.base, "object": "model", "root": self.base, "parent": None}]
                models += [{"id": n, "object": "model", "root": p, "parent": self.base} for n, p in self.loaded.items()]
                return _json(200, {"object": "list", "data": models})
            if (request.method, endpoint) == ("POST", "load_lora_adapter"):
                path = request.body.get("lora_path")
                if not name or not path:
                    return _json(400, {"error": {"message": "lora_name and lora_path are required"}})
                if name in self.loaded:
                    return _json(400, {"error": {"message": f"The lora adapter '{name}' has already been loaded."}})
                if path not in self.readable:
                    message = f"Loading lora {name} failed: No adapter found for {path}"
                    return _json(400, {"error": {"message": message}})
                self.loaded[name] = path
                return 200, "text/plain", f"Success: LoRA adapter '{name}' added successfully.".encode()
            if (request.method, endpoint) == ("POST", "unload_lora_adapter"):
                if self.loaded.pop(name, None) is None:
                    return _json(404, {"error": {"message": f"The lora adapter '{name}' cannot be found."}})
                return 200, "text/plain", f"Success: LoRA adapter '{name}' removed successfully.".encode()
            if (request.method, endpoint) == ("POST", "chat/completions"):
                model = request.body.get("model")
                if model != self.base and model not in self.loaded:
                    return _json(404, {"error": {"message": f"The model `{model}` does not exist.",
                                                 "type": "NotFoundError"}})
                text = self.answer_text
                return _json(200, {
                    "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": self.answer_model or model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": len(text) // 4,
                              "total_tokens": 100 + len(text) // 4},
                })
        return _json(404, {"error": {"message": f"no route {request.method} {request.path}"}})


def _json(code: int, payload: dict[str, Any]) -> tuple[int, str, bytes]:
    return code, "application/json", json.dumps(payload).encode()


class _Handler(BaseHTTPRequestHandler):
    server_state: InferenceServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {}
        request = Request(method, self.path, body if isinstance(body, dict) else {}, self.headers.get("Authorization"))
        code, content_type, data = self.server_state.handle(request)
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def inference_server() -> Iterator[InferenceServer]:
    server = InferenceServer().start()
    yield server
    server.stop()
