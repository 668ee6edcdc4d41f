"""Loopback fakes of the GCE metadata server, Secret Manager and a file download host, for boot-script tests.

Each fake is an HTTP server on 127.0.0.1 with an ephemeral port, served from a daemon thread and shut down by
its context manager. They record every request (method, path, headers) so a test can check what the script
sent: the metadata flavour header, the bearer token, which secret versions it read.

The metadata server and Secret Manager follow the real wire formats that the script relies on:
- ``GET /computeMetadata/v1/instance/service-accounts/default/token`` needs ``Metadata-Flavor: Google``
  (the real server answers 403 without it) and returns ``{"access_token", "expires_in", "token_type"}``;
- ``GET /v1/projects/P/secrets/S/versions/V:access`` needs ``Authorization: Bearer <token>`` and returns
  ``{"name", "payload": {"data": <base64>}}``; 401 without the token, 403 for a denied secret, 404 for an
  unknown one.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"


def _json(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload).encode())


class _LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1:0 that records requests and delegates answers to ``respond``."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request = RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()})
                with fake._lock:
                    fake.requests.append(request)
                answer = fake.respond(request)
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def respond(self, request: RecordedRequest) -> Response:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class FakeMetadataServer(_LoopbackServer):
    """The instance's service-account token endpoint."""

    def __init__(self, access_token: str) -> None:
        super().__init__()
        self.access_token = access_token

    def respond(self, request: RecordedRequest) -> Response:
        if request.headers.get("metadata-flavor") != "Google":
            return Response(HTTPStatus.FORBIDDEN, b"Missing Metadata-Flavor:Google header.", "text/plain")
        if request.path == TOKEN_PATH:
            return _json(200, {"access_token": self.access_token, "expires_in": 3599, "token_type": "Bearer"})
        return Response(HTTPStatus.NOT_FOUND, b"not found", "text/plain")


class FakeSecretManager(_LoopbackServer):
    """``versions/V:access`` for the secrets it holds, served only to the expected bearer token."""

    def __init__(
        self, expected_token: str, secrets: dict[str, bytes], denied: set[str] | None = None
    ) -> None:
        super().__init__()
        self.expected_token = expected_token
        self.secrets = secrets
        self.denied = denied or set()

    def respond(self, request: RecordedRequest) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.expected_token}":
            return _json(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        prefix, suffix = "/v1/", ":access"
        if not (request.path.startswith(prefix) and request.path.endswith(suffix)):
            return _json(404, {"error": {"code": 404, "status": "NOT_FOUND"}})
        resource = request.path[len(prefix) : -len(suffix)]
        if resource in self.denied:
            return _json(403, {"error": {"code": 403, "status": "PERMISSION_DENIED"}})
        if resource not in self.secrets:
            return _json(404, {"error": {"code": 404, "status": "NOT_FOUND"}})
        payload = base64.b64encode(self.secrets[resource]).decode()
        return _json(200, {"name": resource, "payload": {"data": payload}})

    def accessed(self) -> list[str]:
        """Resource names of the secret versions read successfully or not, in request order."""
        return [r.path[len("/v1/") : -len(":access")] for r in self.requests if r.path.endswith(":access")]


class FakeFileServer(_LoopbackServer):
    """Static files by path, e.g. a stand-in for Google's Ops Agent repo installer script."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__()
        self.files = files

    def respond(self, request: RecordedRequest) -> Response:
        if request.path in self.files:
            return Response(200, self.files[request.path], "text/x-shellscript")
        return Response(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
