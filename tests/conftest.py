"""Shared fixtures: a recording Pulumi mock and a factory for valid stack configs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components.config import StackConfig, parse_config
from components.mocks import RecordingMocks, install_mocks

BASE_CONFIG: dict[str, Any] = {
    "project": "test-project",
    "region": "us-central1",
    "platform": "gce",
    "environment": "dev",
    "model": {"id": "google/gemma-4-E4B-it"},
    "hardware": {"machineType": "g2-standard-8", "gpuType": "nvidia-l4", "gpuCount": 1},
    "gce": {"zones": ["us-central1-a", "us-central1-b"]},
}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_dict(**overrides: Any) -> dict[str, Any]:
    """BASE_CONFIG with nested overrides, in stack-file (camelCase) shape."""
    return _merge(BASE_CONFIG, overrides)


def make_config(**overrides: Any) -> StackConfig:
    return parse_config(config_dict(**overrides))


@pytest.fixture
def mocks() -> RecordingMocks:
    """A fresh recording mock; build resources inside components.mocks.run_program(...) and inspect .resources."""
    return install_mocks(project="test-project", region="us-central1")
