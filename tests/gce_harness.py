"""Helpers for the gce platform's mock-based tests: build components, find recorded resources, answer lookups."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from components.mocks import PLACEHOLDER_DIGEST, RecordedResource, RecordingMocks, run_program

REGISTRY_LOOKUP = "docker:index/getRegistryImage:getRegistryImage"
AR_IMAGE_BY_DIGEST = re.compile(
    r"[a-z0-9-]+-docker\.pkg\.dev/[a-z][a-z0-9-]{4,28}[a-z0-9]/[a-z][a-z0-9-]*/[a-z0-9._/-]+@sha256:[0-9a-f]{64}"
)
SECRET_VERSION = re.compile(r"projects/[0-9]+/secrets/[A-Za-z0-9_-]+/versions/[0-9]+")


def answer_registry_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answer pulumi-docker's registry digest lookup (as components/mocks.py does) and record the names looked up."""
    seen: list[str] = []
    original = RecordingMocks.call

    def call(self: RecordingMocks, args: Any) -> Any:
        if args.token == REGISTRY_LOOKUP:
            seen.append(args.args["name"])
            return {"name": args.args["name"], "sha256Digest": PLACEHOLDER_DIGEST}
        return original(self, args)

    monkeypatch.setattr(RecordingMocks, "call", call)
    return seen


def build(program: Callable[[], Any]) -> Any:
    """Run `program` under the installed mocks and return what it returned."""
    built: dict[str, Any] = {}
    run_program(lambda: built.setdefault("result", program()))
    return built["result"]


def of_type(mocks: RecordingMocks, type_: str) -> list[RecordedResource]:
    return [r for r in mocks.resources if r.type == type_]


def one(mocks: RecordingMocks, type_: str) -> dict[str, Any]:
    found = of_type(mocks, type_)
    assert len(found) == 1, f"expected one {type_}, found {[r.name for r in found]}"
    return found[0].inputs


def ancestors(mocks: RecordingMocks, resource: RecordedResource) -> list[str]:
    """The URNs of the resource's parents, nearest first (the stack's URN is not recorded)."""
    by_urn = {r.urn: r for r in mocks.resources}
    chain, parent = [], resource.parent
    while parent in by_urn:
        chain.append(parent)
        parent = by_urn[parent].parent
    return chain
