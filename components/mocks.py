"""Pulumi mocks that record every registered resource, for the offline plan and for unit tests.

The mocks run in non-preview mode and fill in the computed outputs that other resources consume (emails, self links,
image digests, endpoint ids and DNS names) in the provider's real formats, so every recorded input is concrete.
Recorded inputs keep Pulumi's secret marking: a secret becomes "[secret]", an unknown "[unknown]".
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime.mocks import MockMonitor

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
SIG_KEY = "4dabf18193072939515e22adb298388d"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64  # an obvious placeholder: the real digest exists only after a push
PLACEHOLDER_IP = "203.0.113.10"  # RFC 5737 documentation range
PROJECT_NUMBER = "123456789012"


_REGIONAL = {"Subnetwork", "Router", "RouterNat", "Address"}
_COLLECTIONS = {"ManagedSslCertificate": "sslCertificates", "GlobalAddress": "addresses"}


def compute_collection(kind: str) -> str:
    """The Compute API collection of a pulumi-gcp compute type: URLMap -> urlMaps, SSLPolicy -> sslPolicies."""
    if kind in _COLLECTIONS:
        return _COLLECTIONS[kind]
    kind = re.sub(r"^(Region|Global)(?=[A-Z])", "", kind)
    head = re.match(r"[A-Z]+(?=[A-Z][a-z]|$)|[A-Z]", kind)
    size = len(head.group(0)) if head else 1
    camel = kind[:size].lower() + kind[size:]
    if camel.endswith("y") and not camel.endswith(("ay", "ey", "oy")):
        return camel[:-1] + "ies"
    return camel + ("es" if camel.endswith(("s", "x")) else "s")


@dataclass
class RecordedResource:
    urn: str
    type: str
    name: str
    parent: str
    inputs: dict[str, Any]
    custom: bool
    # Resource options the engine acts on (not part of the plan contract): ignoreChanges, customTimeouts, ...
    options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "inputs": self.inputs,
        }


def redact(value: Any) -> Any:
    """Wire-format property values -> plain JSON: secrets and unknowns become markers, refs become URNs."""
    if isinstance(value, dict):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG:
            return "[secret]"
        if sig == RESOURCE_SIG:
            return value.get("urn", "[resource]")
        return {k: redact(v) for k, v in value.items() if k != "__provider"} | (
            {"__provider": "[dynamic provider]"} if "__provider" in value else {}
        )
    if isinstance(value, list):
        return [redact(v) for v in value]
    if value == UNKNOWN:
        return "[unknown]"
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf Struct carries every number as a double
    return value


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:7]


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    project: str = "mock-project"
    region: str = "us-central1"
    resources: list[RecordedResource] = field(default_factory=list)
    # What each component passed to register_outputs, by URN (secrets and unknowns marked as in `inputs`).
    component_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    # -- computed outputs, in each provider's real format ------------------------------------------------------
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = dict(args.inputs)
        kind = args.typ.split(":")[-1]
        project = inputs.get("project", self.project)
        region = inputs.get("region") or inputs.get("location") or self.region
        name = inputs.get("name") or f"{args.name}-{_short_hash(args.typ, args.name)}"  # provider auto-naming
        out: dict[str, Any] = {"name": name, "project": project}
        if args.typ.startswith("gcp:compute/"):
            scope = f"regions/{region}" if kind.startswith("Region") or kind in _REGIONAL else "global"
            collection = compute_collection(kind)
            out["selfLink"] = (
                f"https://www.googleapis.com/compute/v1/projects/{project}/{scope}/{collection}/{name}"
            )
            resource_id = f"projects/{project}/{scope}/{collection}/{name}"
        else:
            resource_id = name
        if kind == "Account":
            email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
            out |= {"email": email, "member": f"serviceAccount:{email}", "uniqueId": "1" + "0" * 20}
            resource_id = f"projects/{project}/serviceAccounts/{email}"
        elif kind in ("GlobalAddress", "Address"):
            out["address"] = PLACEHOLDER_IP
        elif kind == "Secret":
            resource_id = out["name"] = f"projects/{PROJECT_NUMBER}/secrets/{inputs['secretId']}"
        elif kind == "SecretVersion":
            resource_id = out["name"] = f"{inputs['secret']}/versions/1"
            out["version"] = "1"
        elif kind == "Repository" and args.typ.startswith("gcp:artifactregistry"):
            repo = inputs["repositoryId"]
            resource_id = out["name"] = f"projects/{project}/locations/{region}/repositories/{repo}"
            out["registryUri"] = f"{region}-docker.pkg.dev/{project}/{repo}"
        elif kind in ("RemoteImage", "RegistryImage", "Image") and args.typ.startswith("docker:"):
            image = inputs.get("imageName") or inputs.get("name") or name
            out["repoDigest"] = f"{image.split(':')[0]}@{PLACEHOLDER_DIGEST}"
            out["sha256Digest"] = PLACEHOLDER_DIGEST
            out["imageId"] = PLACEHOLDER_DIGEST
        elif kind == "AiEndpoint":
            endpoint_id = inputs.get("name") or str(int(_short_hash(args.name), 16) % 10**19).rjust(19, "1")
            resource_id = f"projects/{project}/locations/{region}/endpoints/{endpoint_id}"
            out["name"] = endpoint_id
            # https://cloud.google.com/vertex-ai/docs/predictions/choose-endpoint-type: dedicated endpoint DNS
            out["dedicatedEndpointDns"] = f"{endpoint_id}.{region}-{PROJECT_NUMBER}.prediction.vertexai.goog"
        elif kind == "RegionInstanceGroupManager":
            out["instanceGroup"] = (
                f"https://www.googleapis.com/compute/v1/projects/{project}/regions/{region}/instanceGroups/{name}"
            )
        elif args.typ.startswith("random:"):
            out["result"] = f"mock-{args.name}-0000000000000000"
        return resource_id, inputs | out

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": PROJECT_NUMBER, "projectId": self.project, "name": self.project}, []
        if args.token == "gcp:compute/getZones:getZones":
            return {"names": [f"{self.region}-{z}" for z in "abc"]}, []
        if args.token == "docker:index/getRegistryImage:getRegistryImage":
            return {"name": args.args.get("name"), "sha256Digest": PLACEHOLDER_DIGEST}, []
        return {}, []


def _options(request: Any) -> dict[str, Any]:
    timeouts = request.customTimeouts
    return {
        "ignoreChanges": list(request.ignoreChanges),
        "replaceOnChanges": list(request.replaceOnChanges),
        "deleteBeforeReplace": bool(request.deleteBeforeReplace),
        "customTimeouts": {"create": timeouts.create, "update": timeouts.update, "delete": timeouts.delete},
    }


class RecordingMonitor(MockMonitor):
    """A MockMonitor that also records the parent and the secret-aware inputs of each registration."""

    mocks: RecordingMocks

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
            self.mocks.resources.append(
                RecordedResource(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent,
                    inputs=redact(raw),
                    custom=bool(request.custom),
                    options=_options(request),
                )
            )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:  # gRPC method name
        outputs = json_format.MessageToDict(request.outputs, preserving_proto_field_name=True)
        self.mocks.component_outputs[request.urn] = redact(outputs)
        return super().RegisterResourceOutputs(request)


def install_mocks(
    project: str = "mock-project", region: str = "us-central1", stack: str = "test"
) -> RecordingMocks:
    """Point the Pulumi runtime at a fresh recording mock (and a fresh root stack)."""
    from pulumi.runtime import settings
    from pulumi.runtime.sync_await import _ensure_event_loop

    _ensure_event_loop()  # asyncio.run() elsewhere (e.g. the client tools) leaves the thread without a loop
    mocks = RecordingMocks(project=project, region=region)
    settings.ROOT.set(None)
    quiet = logging.getLogger("vllm-gcp.mocks")  # the plan prints warnings itself
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    pulumi.runtime.set_mocks(
        mocks, project="vllm-gcp", stack=stack, preview=False, monitor=RecordingMonitor(mocks), logger=quiet
    )
    return mocks


def run_program(program: Callable[[], object]) -> None:
    """Run `program` under the installed mocks and wait until every registration and output has settled."""
    from pulumi.runtime import settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()

    def body() -> None:
        program()

    _sync_await(run_pulumi_func(body))


def resolve(value: Any) -> Any:
    """An Output's value for assertions and plan outputs: "[secret]" / "[unknown]" where it is one."""
    from pulumi.runtime.sync_await import _sync_await

    output = pulumi.Output.from_input(value)
    if _sync_await(output.is_secret()):
        return "[secret]"
    if not _sync_await(output.is_known()):
        return "[unknown]"
    return _sync_await(output.future())
