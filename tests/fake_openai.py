"""A fake vLLM OpenAI-compatible server for offline tests: stdlib only, 127.0.0.1 only, bounded.

Two listeners share one state:
- `public`: what the load balancer exposes. Like the LB's Cloud Armor policy it routes only `/v1/...` and `/health`;
  everything else is denied with 404.
- `internal`: what the VM's port 8000 serves, including `/metrics`.

It mimics vLLM's wire format where the client code depends on it: the `--api-key` check on `/v1` (401
`{"error": "Unauthorized"}`), a role-only first stream chunk, `finish_reason` on the last token chunk, and a trailing
usage chunk when `stream_options.include_usage` is set. Latency is deterministic: request k (in arrival order of
successful chat requests) waits `ttft_schedule_s[k % len]` before its first chunk and `itl_s` between tokens, so tests
know the true latency distribution.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERTEX_PREFIX = "/v1/projects/test-project/locations/us-central1/endpoints/1234567890/invoke"


@dataclass
class FakeBehaviour:
    served_model_name: str = "gemma-4-26b"
    model_root: str = "google/gemma-4-26B-A4B-it"
    # gce: vLLM's --api-key. None: no key is required.
    api_key: str | None = "test-api-key"
    # vertex: the bearer tokens Google would accept; overrides api_key when set.
    accepted_tokens: set[str] | None = None
    # vertex serves the OpenAI routes under .../invoke/v1.
    path_prefix: str = ""
    output_tokens: int = 8
    ttft_schedule_s: tuple[float, ...] = (0.0,)
    # Per-prompt first-token delay (by the last user message); overrides the schedule for those prompts.
    ttft_by_prompt_s: dict[str, float] = field(default_factory=dict)
    itl_s: float = 0.0
    # Status codes returned, in order, by the next chat requests (before any latency): 429/500/503 injection.
    faults: deque[int] = field(default_factory=deque)
    retry_after_s: int | None = None
    # Bounded: more concurrent chat requests than this get 503, like an overloaded backend.
    max_in_flight: int = 64
    # Simulate a misconfigured LB that forwards every path (the smoke check must catch it).
    expose_internal_publicly: bool = False
    # Simulate a misconfigured vLLM without --api-key behind the LB (the smoke check must catch it).
    skip_auth: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    listener: str
    method: str
    path: str
    status: int
    authorization: str | None
    user_text: str | None
    stream: bool
    ttft_s: float | None


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
    return ""


def reply_tokens(user_text: str, count: int) -> list[str]:
    """The fake's deterministic reply: 'echo:' plus the prompt's words, padded with '~', cut to `count` tokens."""
    words = ["echo:", *user_text.split()]
    return [words[i] if i < len(words) else "~" for i in range(count)]


class _State:
    def __init__(self, behaviour: FakeBehaviour) -> None:
        self.behaviour = behaviour
        self.lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self.chat_counter = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.success_total = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Like uvicorn: without TCP_NODELAY, Nagle + delayed ACKs hold small stream chunks back ~40 ms.
    disable_nagle_algorithm = True
    timeout = 10  # an idle or stuck client cannot hold a thread for long
    raw_body = b""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    # --- plumbing -------------------------------------------------------------------------------------------
    @property
    def state(self) -> _State:
        return self.server.state

    def _record(
        self, status: int, user_text: str | None = None, stream: bool = False, ttft: float | None = None
    ):
        with self.state.lock:
            self.state.requests.append(
                RecordedRequest(
                    listener=self.server.listener,
                    method=self.command,
                    path=self.path,
                    status=status,
                    authorization=self.headers.get("Authorization"),
                    user_text=user_text,
                    stream=stream,
                    ttft_s=ttft,
                )
            )

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        # Always consume the body, even for a request that is rejected, or keep-alive would parse it as the
        # next request line.
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1_000_000:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length else b""

    def _read_json(self) -> dict[str, Any]:
        if len(self.raw_body) == 0 and int(self.headers.get("Content-Length") or 0) > 0:
            raise ValueError("request body too large")
        body = json.loads(self.raw_body or b"{}")
        if not isinstance(body, dict):
            raise ValueError("request body must be a JSON object")
        return body

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _sse(self, payload: Any) -> None:
        self._write_chunk(f"data: {json.dumps(payload)}\n\n".encode())

    # --- routing --------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self.raw_body = self._read_body()
        path = self.path.split("?", 1)[0]
        behaviour = self.state.behaviour
        public = self.server.listener == "public" and not behaviour.expose_internal_publicly
        v1 = behaviour.path_prefix + "/v1/"
        try:
            if path == "/health":
                self._record(200)
                self._send_text(200, "")
            elif path.startswith(v1):
                self._v1("/v1/" + path[len(v1) :])
            elif public:
                # The LB's Cloud Armor policy denies everything outside /v1/ and /health with 404.
                self._record(404)
                self._send_text(404, "denied by security policy")
            elif path == "/metrics" and self.command == "GET":
                self._record(200)
                self._send_text(200, self._metrics())
            else:
                self._record(404)
                self._send_json(404, {"detail": "Not Found"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-response (e.g. an interrupted batch); nothing to clean up

    def _authorized(self) -> bool:
        behaviour = self.state.behaviour
        if behaviour.skip_auth:
            return True
        header = self.headers.get("Authorization") or ""
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        if behaviour.accepted_tokens is not None:
            return token in behaviour.accepted_tokens
        return behaviour.api_key is None or token == behaviour.api_key

    def _v1(self, route: str) -> None:
        if not self._authorized():
            self._record(401)
            self._send_json(401, {"error": "Unauthorized"})
            return
        if route == "/v1/models" and self.command == "GET":
            self._record(200)
            self._send_json(200, self._models())
        elif route == "/v1/chat/completions" and self.command == "POST":
            self._chat()
        else:
            self._record(404)
            self._send_json(404, {"detail": "Not Found"})

    def _models(self) -> dict[str, Any]:
        b = self.state.behaviour
        model = {
            "id": b.served_model_name,
            "object": "model",
            "created": 1_700_000_000,
            "owned_by": "vllm",
            "root": b.model_root,
            "parent": None,
            "max_model_len": 8192,
        }
        return {"object": "list", "data": [model]}

    def _metrics(self) -> str:
        s = self.state
        name = s.behaviour.served_model_name
        return (
            "# TYPE vllm:num_requests_running gauge\n"
            f'vllm:num_requests_running{{model_name="{name}"}} {s.in_flight}\n'
            "# TYPE vllm:request_success_total counter\n"
            f'vllm:request_success_total{{finished_reason="stop",model_name="{name}"}} {s.success_total}\n'
        )

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        phrase = HTTPStatus(status).phrase.replace(" ", "")
        self._send_json(
            status, {"error": {"message": message, "type": phrase, "param": None, "code": status}}, headers
        )

    # --- chat completions -----------------------------------------------------------------------------------
    def _chat(self) -> None:
        state, behaviour = self.state, self.state.behaviour
        try:
            body = self._read_json()
        except (ValueError, json.JSONDecodeError) as error:
            self._record(400)
            self._error(400, str(error))
            return
        user_text = _last_user_text(body)
        stream = bool(body.get("stream"))
        if body.get("model") != behaviour.served_model_name:
            self._record(404, user_text, stream)
            self._error(404, f"The model `{body.get('model')}` does not exist.")
            return
        with state.lock:
            fault = behaviour.faults.popleft() if behaviour.faults else None
            overloaded = fault is None and state.in_flight >= behaviour.max_in_flight
            if fault is None and not overloaded:
                ttft = behaviour.ttft_by_prompt_s.get(
                    user_text, behaviour.ttft_schedule_s[state.chat_counter % len(behaviour.ttft_schedule_s)]
                )
                state.chat_counter += 1
                state.in_flight += 1
                state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        if fault is not None or overloaded:
            status = fault or 503
            self._record(status, user_text, stream)
            headers = (
                {"Retry-After": str(behaviour.retry_after_s)}
                if status == 429 and behaviour.retry_after_s
                else None
            )
            self._error(status, f"injected fault {status}", headers)
            return
        try:
            self._record(200, user_text, stream, ttft)
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            count = (
                behaviour.output_tokens if limit is None else max(1, min(int(limit), behaviour.output_tokens))
            )
            finish = "length" if limit is not None and count == int(limit) else "stop"
            tokens = reply_tokens(user_text, count)
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": count,
                "total_tokens": prompt_tokens + count,
            }
            if stream:
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._stream(tokens, ttft, finish, usage if include_usage else None)
            else:
                time.sleep(ttft + behaviour.itl_s * (count - 1))
                self._send_json(200, self._completion(tokens, finish, usage))
            with state.lock:
                state.success_total += 1
        finally:
            with state.lock:
                state.in_flight -= 1

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{threading.get_ident()}-{time.monotonic_ns()}",
            "object": obj,
            "created": int(time.time()),
            "model": self.state.behaviour.served_model_name,
        }

    def _completion(self, tokens: list[str], finish: str, usage: dict[str, int]) -> dict[str, Any]:
        message = {"role": "assistant", "content": " ".join(tokens)}
        choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": usage}

    def _stream(self, tokens: list[str], ttft: float, finish: str, usage: dict[str, int] | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        envelope = self._envelope("chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return {**envelope, "choices": [choice]}

        time.sleep(ttft)
        # vLLM sends a role-only chunk right before the first token.
        self._sse(chunk({"role": "assistant", "content": ""}, None))
        for i, token in enumerate(tokens):
            if i:
                time.sleep(self.state.behaviour.itl_s)
            last = i == len(tokens) - 1
            self._sse(chunk({"content": token if i == 0 else " " + token}, finish if last else None))
        if usage is not None:
            self._sse({**envelope, "choices": [], "usage": usage})
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # end of chunked body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog of 5 overflows when a test opens 10+ connections at once; a dropped SYN is
    # retransmitted after 1 s, which would show up as a fake latency outlier.
    request_queue_size = 128

    def __init__(self, state: _State, listener: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.listener = listener


class FakeOpenAIServer:
    """Use as a context manager; `base_url` is what a stack would export as `openaiBaseUrl`."""

    def __init__(self, behaviour: FakeBehaviour | None = None) -> None:
        self.behaviour = behaviour or FakeBehaviour()
        self._state = _State(self.behaviour)
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> FakeOpenAIServer:
        for listener in ("public", "internal"):
            server = _Server(self._state, listener)
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _url(self, index: int) -> str:
        port = self._servers[index].server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def public_url(self) -> str:
        return self._url(0)

    @property
    def internal_url(self) -> str:
        return self._url(1)

    @property
    def base_url(self) -> str:
        return f"{self.public_url}{self.behaviour.path_prefix}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def chat_requests(self) -> Iterator[RecordedRequest]:
        return (r for r in self.requests if r.path.endswith("/chat/completions"))

    @property
    def peak_in_flight(self) -> int:
        with self._state.lock:
            return self._state.peak_in_flight

    def mutate(self, change: Callable[[FakeBehaviour], None]) -> None:
        """Change behaviour while serving (under the state lock)."""
        with self._state.lock:
            change(self.behaviour)

    def gce_outputs(self) -> dict[str, Any]:
        return {
            "platform": "gce",
            "openaiBaseUrl": self.base_url,
            "servedModelName": self.behaviour.served_model_name,
            "apiKey": self.behaviour.api_key,
            "loadBalancerIp": "127.0.0.1",
        }

    def vertex_outputs(self) -> dict[str, Any]:
        return {
            "platform": "vertex",
            "openaiBaseUrl": self.base_url,
            "servedModelName": self.behaviour.served_model_name,
            "endpointId": "1234567890",
            "endpointName": "projects/test-project/locations/us-central1/endpoints/1234567890",
            "dedicatedEndpointDns": "1234567890.us-central1-000000.prediction.vertexai.goog",
            "project": "test-project",
            "region": "us-central1",
        }


class FakeOpenAIServerProcess:
    """The same fake in a child process, so it does not compete with the client under test for the GIL: timing
    tests then measure the client, not the fake's threads. `requests` and `peak_in_flight` are read on exit."""

    def __init__(self, behaviour: FakeBehaviour | None = None) -> None:
        self.behaviour = behaviour or FakeBehaviour()
        self.requests: list[RecordedRequest] = []
        self.peak_in_flight = 0
        self.base_url = ""
        self._outputs: dict[str, Any] = {}

    def __enter__(self) -> FakeOpenAIServerProcess:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # no fork of a threaded test process
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_in_child, args=(self.behaviour, child), daemon=True)
        self._process.start()
        if not self._conn.poll(30):
            self._process.kill()
            raise RuntimeError("the fake server process did not start within 30 s")
        self.base_url, self._outputs = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send("stop")
            if self._conn.poll(30):
                self.requests, self.peak_in_flight = self._conn.recv()
        finally:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()

    def gce_outputs(self) -> dict[str, Any]:
        return dict(self._outputs)

    def chat_requests(self) -> Iterator[RecordedRequest]:
        return (r for r in self.requests if r.path.endswith("/chat/completions"))


def _serve_in_child(behaviour: FakeBehaviour, conn: Any) -> None:
    with FakeOpenAIServer(behaviour) as server:
        conn.send((server.base_url, server.gce_outputs()))
        conn.poll(600)  # bounded: the parent sends "stop" when done, or the child gives up after 10 minutes
        conn.send((server.requests, server.peak_in_flight))
