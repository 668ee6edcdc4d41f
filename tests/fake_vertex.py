"""A fake Vertex AI REST API (v1) on 127.0.0.1 for driving the real google-cloud-aiplatform client.

It implements only what components/vertex_provider.py uses, with the real API's rules that matter for
correctness: long-running operations, traffic splits that must add up to 100, a model that cannot be
deleted while deployed, invoke-enabled models only on dedicated endpoints, and a fixed set of fields that
mutateDeployedModel may change. Faults (HTTP errors, failed operations) can be injected per method.

Every request body is recorded (`requests`), and every state change is appended to `events`, so tests can
assert the order of operations and the traffic split after each step.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# gRPC status codes as the API reports them in an operation's `error` and in HTTP error bodies.
_GRPC_CODE = {
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "UNAVAILABLE": 14,
}
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "NOT_FOUND": 404,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# Fields of a DeployedModel that mutateDeployedModel accepts (the real API rejects the rest).
_MUTABLE_DEPLOYED_MODEL_FIELDS = {
    "dedicatedResources.minReplicaCount",
    "dedicatedResources.maxReplicaCount",
    "dedicatedResources.autoscalingMetricSpecs",
    "dedicatedResources.requiredReplicaCount",
    "disableContainerLogging",
    "enableAccessLogging",
}
_TYPE_PREFIX = "type.googleapis.com/google.cloud.aiplatform.v1."


class ApiError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Fault:
    """Fail the next `times` calls of `method` (e.g. "deployModel", "getModel", "deleteModel").

    in_operation=False: the HTTP call itself fails. in_operation=True: the call returns an operation that
    finishes with this error and changes nothing (how Vertex reports quota or stockout on deploy)."""

    method: str
    status: str
    message: str
    in_operation: bool = False
    times: int = 1


def _camel(path: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), path)


@dataclass
class FakeVertex:
    project: str = "test-project"
    project_number: str = "123456789012"
    region: str = "us-central1"
    # How many GETs of an operation answer done=false before it completes. 0 = done in the first
    # response (the client then does not poll, which keeps most tests fast).
    operation_polls: int = 0
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1000)
        self._pending_polls: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None

    # ---- test helpers ------------------------------------------------------------------------------
    @property
    def location_path(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def add_endpoint(self, endpoint_id: str = "1234567890", *, dedicated: bool = True) -> str:
        name = f"{self.location_path}/endpoints/{endpoint_id}"
        self.endpoints[name] = {
            "name": name,
            "displayName": "vllm",
            "deployedModels": [],
            "trafficSplit": {},
            "dedicatedEndpointEnabled": dedicated,
            "dedicatedEndpointDns": (
                f"{endpoint_id}.{self.region}-{self.project_number}.prediction.vertexai.goog"
                if dedicated
                else ""
            ),
        }
        return name

    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    def traffic_split(self, endpoint: str) -> dict[str, int]:
        return dict(self.endpoints[endpoint]["trafficSplit"])

    def deployed_ids(self, endpoint: str) -> list[str]:
        return [dm["id"] for dm in self.endpoints[endpoint]["deployedModels"]]

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method]

    def event_names(self) -> list[str]:
        return [e[0] for e in self.events]

    def everything_stored(self) -> str:
        """All state and every request body, as text: for asserting a secret appears nowhere."""
        with self._lock:
            return json.dumps([self.models, self.endpoints, self.operations, self.requests], sort_keys=True)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeVertex:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeVertex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- dispatch ----------------------------------------------------------------------------------
    def handle(
        self, verb: str, path: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> dict[str, Any]:
        # The client's operations transport polls under /ui/ (an alias the real API serves too).
        path = re.sub(r"^/ui/", "/v1/", path)
        routes: list[tuple[str, str, str]] = [
            ("POST", r"^/v1/(?P<parent>projects/[^/]+/locations/[^/]+)/models:upload$", "uploadModel"),
            ("GET", r"^/v1/(?P<parent>projects/[^/]+/locations/[^/]+)/models$", "listModels"),
            ("GET", r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/models/[^/:]+)$", "getModel"),
            ("PATCH", r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/models/[^/:]+)$", "updateModel"),
            ("DELETE", r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/models/[^/:]+)$", "deleteModel"),
            ("GET", r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/endpoints/[^/:]+)$", "getEndpoint"),
            ("PATCH", r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/endpoints/[^/:]+)$", "updateEndpoint"),
            (
                "POST",
                r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/endpoints/[^/:]+):deployModel$",
                "deployModel",
            ),
            (
                "POST",
                r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/endpoints/[^/:]+):undeployModel$",
                "undeployModel",
            ),
            (
                "POST",
                r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/endpoints/[^/:]+):mutateDeployedModel$",
                "mutateDeployedModel",
            ),
            ("GET", r"^/v1/(?P<name>projects/[^/]+/locations/[^/]+/operations/[^/:]+)$", "getOperation"),
        ]
        for route_verb, pattern, method in routes:
            match = re.match(pattern, path)
            if route_verb == verb and match:
                with self._lock:
                    self.requests.append({"method": method, "path": path, "query": query, "body": body})
                    fault = self._take_fault(method)
                    if fault is not None and not fault.in_operation:
                        raise ApiError(fault.status, fault.message)
                    handler = getattr(self, f"_{method}")
                    return handler(fault=fault, query=query, body=body, **match.groupdict())  # type: ignore[no-any-return]
        raise ApiError("NOT_FOUND", f"fake Vertex has no route for {verb} {path}")

    def _take_fault(self, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.method == method and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def _operation(self, kind: str, response: dict[str, Any] | None, fault: Fault | None) -> dict[str, Any]:
        name = f"{self.location_path}/operations/{next(self._ids)}"
        op: dict[str, Any] = {"name": name, "metadata": {"@type": _TYPE_PREFIX + kind + "OperationMetadata"}}
        if fault is not None:
            op["error"] = {"code": _GRPC_CODE[fault.status], "message": fault.message}
        else:
            op["response"] = response or {"@type": "type.googleapis.com/google.protobuf.Empty"}
        self.operations[name] = op
        self._pending_polls[name] = self.operation_polls
        return self._operation_view(name)

    def _operation_view(self, name: str) -> dict[str, Any]:
        op = self.operations[name]
        if self._pending_polls.get(name, 0) > 0:
            return {"name": name, "metadata": op["metadata"], "done": False}
        return {**op, "done": True}

    def _getOperation(self, *, name: str, **_: Any) -> dict[str, Any]:
        if name not in self.operations:
            raise ApiError("NOT_FOUND", f"operation {name} not found")
        view = self._operation_view(name)
        self._pending_polls[name] = max(0, self._pending_polls.get(name, 0) - 1)
        return view

    # ---- models ------------------------------------------------------------------------------------
    def _model(self, name: str) -> dict[str, Any]:
        base = name.split("@", 1)[0]
        if base not in self.models:
            raise ApiError("NOT_FOUND", f"Model {base} not found")
        return self.models[base]

    def _uploadModel(
        self, *, parent: str, body: dict[str, Any], fault: Fault | None, **_: Any
    ) -> dict[str, Any]:
        model = copy.deepcopy(body["model"])
        spec = model.get("containerSpec", {})
        if spec.get("invokeRoutePrefix") and spec.get("predictRoute"):
            raise ApiError("INVALID_ARGUMENT", "Only one of predictRoute or invokeRoutePrefix can be set.")
        if spec.get("invokeRoutePrefix") not in (None, "/*"):
            raise ApiError("INVALID_ARGUMENT", '"/*" is the only allowed value for invokeRoutePrefix.')
        if fault is not None:
            return self._operation("UploadModel", None, fault)
        model_id = str(next(self._ids))
        name = f"{parent}/models/{model_id}"
        model.update(
            {
                "name": name,
                "versionId": "1",
                "supportedDeploymentResourcesTypes": ["DEDICATED_RESOURCES"],
                "deployedModels": [],
            }
        )
        self.models[name] = model
        self.events.append(("uploadModel", name))
        response = {"@type": _TYPE_PREFIX + "UploadModelResponse", "model": name, "modelVersionId": "1"}
        return self._operation("UploadModel", response, None)

    def _getModel(self, *, name: str, **_: Any) -> dict[str, Any]:
        return copy.deepcopy(self._model(name))

    def _listModels(self, *, query: dict[str, list[str]], **_: Any) -> dict[str, Any]:
        wanted: dict[str, str] = {}
        for clause in re.split(r"\s+AND\s+", query.get("filter", [""])[0].strip()):
            if not clause:
                continue
            match = re.fullmatch(r'labels\.([a-z0-9_-]+)\s*=\s*"?([^"]*)"?', clause.strip())
            if not match:
                raise ApiError("INVALID_ARGUMENT", f"fake Vertex cannot parse filter clause {clause!r}")
            wanted[match.group(1)] = match.group(2)
        found = [
            copy.deepcopy(m)
            for m in self.models.values()
            if all(m.get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        return {"models": found}

    def _updateModel(
        self, *, name: str, query: dict[str, list[str]], body: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        model = self._model(name)
        paths = [_camel(p) for p in query.get("updateMask", [""])[0].split(",") if p]
        for path in paths:
            if path not in {"labels", "displayName", "description"}:
                raise ApiError("INVALID_ARGUMENT", f"field {path} of a Model cannot be updated")
            model[path] = copy.deepcopy(body.get(path))
        self.events.append(("updateModel", (name, paths)))
        return copy.deepcopy(model)

    def _deleteModel(self, *, name: str, fault: Fault | None, **_: Any) -> dict[str, Any]:
        model = self._model(name)
        if model["deployedModels"]:
            raise ApiError(
                "FAILED_PRECONDITION",
                f"The Model {name} is deployed or being deployed at the following Endpoint(s): "
                + ", ".join(d["endpoint"] for d in model["deployedModels"]),
            )
        if fault is not None:
            return self._operation("Delete", None, fault)
        del self.models[model["name"]]
        self.events.append(("deleteModel", model["name"]))
        return self._operation("Delete", None, None)

    # ---- endpoints ---------------------------------------------------------------------------------
    def _endpoint(self, name: str) -> dict[str, Any]:
        if name not in self.endpoints:
            raise ApiError("NOT_FOUND", f"Endpoint {name} not found")
        return self.endpoints[name]

    def _set_split(self, endpoint: dict[str, Any], split: dict[str, int]) -> None:
        deployed = {dm["id"] for dm in endpoint["deployedModels"]}
        unknown = set(split) - deployed
        if unknown:
            raise ApiError("INVALID_ARGUMENT", f"traffic split names undeployed models {sorted(unknown)}")
        total = sum(split.values())
        if deployed and total != 100:
            raise ApiError("INVALID_ARGUMENT", f"traffic split must add up to 100, got {total}")
        if not deployed and split:
            raise ApiError("INVALID_ARGUMENT", "traffic split must be empty when nothing is deployed")
        endpoint["trafficSplit"] = {k: int(v) for k, v in split.items()}
        self.events.append(("trafficSplit", dict(endpoint["trafficSplit"])))

    def _getEndpoint(self, *, name: str, **_: Any) -> dict[str, Any]:
        return copy.deepcopy(self._endpoint(name))

    def _updateEndpoint(
        self, *, name: str, query: dict[str, list[str]], body: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        endpoint = self._endpoint(name)
        paths = [_camel(p) for p in query.get("updateMask", [""])[0].split(",") if p]
        for path in paths:
            if path == "trafficSplit":
                self._set_split(endpoint, body.get("trafficSplit", {}))
            elif path in {"labels", "displayName", "description"}:
                endpoint[path] = copy.deepcopy(body.get(path))
            else:
                raise ApiError("INVALID_ARGUMENT", f"field {path} of an Endpoint cannot be updated here")
        return copy.deepcopy(endpoint)

    def _deployModel(
        self, *, name: str, body: dict[str, Any], fault: Fault | None, **_: Any
    ) -> dict[str, Any]:
        endpoint = self._endpoint(name)
        dm = copy.deepcopy(body["deployedModel"])
        model = self._model(dm["model"])
        if (
            model.get("containerSpec", {}).get("invokeRoutePrefix")
            and not endpoint["dedicatedEndpointEnabled"]
        ):
            raise ApiError(
                "FAILED_PRECONDITION", "Invoke enabled models can only be deployed to dedicated endpoint."
            )
        if fault is not None:
            return self._operation("DeployModel", None, fault)
        dm_id = str(next(self._ids))
        dm.update({"id": dm_id, "model": model["name"], "modelVersionId": "1"})
        previous = copy.deepcopy(endpoint)
        endpoint["deployedModels"].append(dm)
        split = {(dm_id if k == "0" else k): int(v) for k, v in body.get("trafficSplit", {}).items()}
        try:
            self._set_split(endpoint, split)
        except ApiError:
            self.endpoints[name] = previous
            raise
        model["deployedModels"].append({"endpoint": name, "deployedModelId": dm_id})
        self.events.append(("deployModel", (model["name"], dm_id)))
        return self._operation(
            "DeployModel", {"@type": _TYPE_PREFIX + "DeployModelResponse", "deployedModel": dm}, None
        )

    def _undeployModel(
        self, *, name: str, body: dict[str, Any], fault: Fault | None, **_: Any
    ) -> dict[str, Any]:
        endpoint = self._endpoint(name)
        dm_id = body["deployedModelId"]
        matches = [dm for dm in endpoint["deployedModels"] if dm["id"] == dm_id]
        if not matches:
            raise ApiError("NOT_FOUND", f"DeployedModel {dm_id} not found on {name}")
        if fault is not None:
            return self._operation("UndeployModel", None, fault)
        previous = copy.deepcopy(endpoint)
        endpoint["deployedModels"] = [dm for dm in endpoint["deployedModels"] if dm["id"] != dm_id]
        new_split = body.get("trafficSplit")
        if new_split is None:
            new_split = {k: v for k, v in endpoint["trafficSplit"].items() if k != dm_id}
        try:
            self._set_split(endpoint, dict(new_split))
        except ApiError:
            self.endpoints[name] = previous
            raise
        model = self._model(matches[0]["model"])
        model["deployedModels"] = [d for d in model["deployedModels"] if d["deployedModelId"] != dm_id]
        self.events.append(("undeployModel", dm_id))
        return self._operation("UndeployModel", {"@type": _TYPE_PREFIX + "UndeployModelResponse"}, None)

    def _mutateDeployedModel(
        self, *, name: str, body: dict[str, Any], fault: Fault | None, **_: Any
    ) -> dict[str, Any]:
        endpoint = self._endpoint(name)
        wanted = body["deployedModel"]
        matches = [dm for dm in endpoint["deployedModels"] if dm["id"] == wanted.get("id")]
        if not matches:
            raise ApiError("NOT_FOUND", f"DeployedModel {wanted.get('id')} not found on {name}")
        paths = [_camel(p) for p in str(body.get("updateMask", "")).split(",") if p]
        bad = [p for p in paths if p not in _MUTABLE_DEPLOYED_MODEL_FIELDS]
        if bad or not paths:
            raise ApiError("INVALID_ARGUMENT", f"mutateDeployedModel cannot change {bad or 'nothing'}")
        if fault is not None:
            return self._operation("MutateDeployedModel", None, fault)
        dm = matches[0]
        for path in paths:
            parent_key, _, leaf = path.rpartition(".")
            source = wanted.get(parent_key, {}) if parent_key else wanted
            target = dm.setdefault(parent_key, {}) if parent_key else dm
            target[leaf] = copy.deepcopy(source.get(leaf))
        self.events.append(("mutateDeployedModel", (dm["id"], paths)))
        response = {"@type": _TYPE_PREFIX + "MutateDeployedModelResponse", "deployedModel": dm}
        return self._operation("MutateDeployedModel", response, None)


def _handler_for(fake: FakeVertex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, verb: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
                payload, status = fake.handle(verb, parts.path, parse_qs(parts.query), body), 200
            except ApiError as err:
                status = _HTTP_STATUS.get(err.status, 400)
                payload = {"error": {"code": status, "message": err.message, "status": err.status}}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read `requests` instead
            pass

    return Handler


def iter_strings(value: Any) -> Iterator[str]:
    """Every string inside a nested structure (for secret scans of provider outputs)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from iter_strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from iter_strings(v)
