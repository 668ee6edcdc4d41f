"""Pulumi.yaml follows the rules the pulumi CLI enforces before any program runs (there is no CLI here to ask).

Rules from pulumi/pulumi sdk/go/common/workspace (project.json schema and ValidateStackConfigAndApplyProjectConfig):
a declared type is one of string/integer/boolean/array; a declared key without a default must be set by every
stack ("Stack 'dev' is missing configuration value ..."); a `secret: true` key must be encrypted in every stack and
may not have a default; keys of other namespaces may not declare a type.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROJECT = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
STACKS = {
    p.name: yaml.safe_load(p.read_text())["config"] for p in sorted((ROOT / "stacks").glob("Pulumi.*.yaml"))
}
DECLARED = PROJECT.get("config") or {}


def stack_value(config: dict, key: str) -> object:
    return config.get(f"{PROJECT['name']}:{key}", config.get(key))


def test_project_basics() -> None:
    assert PROJECT["name"] == "vllm-gcp"
    assert PROJECT["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}
    assert (ROOT / PROJECT["stackConfigDir"]).is_dir()


@pytest.mark.parametrize("key", sorted(DECLARED))
def test_declared_keys_use_types_the_cli_accepts(key: str) -> None:
    spec = DECLARED[key]
    assert ":" not in key or key.startswith(f"{PROJECT['name']}:"), "other namespaces may not declare a type"
    assert spec["type"] in ("string", "integer", "boolean", "array")
    assert spec.get("description")
    if spec["type"] == "array":
        assert "items" in spec


@pytest.mark.parametrize("stack", sorted(STACKS))
@pytest.mark.parametrize("key", sorted(DECLARED))
def test_every_stack_satisfies_the_declarations(stack: str, key: str) -> None:
    spec, value = DECLARED[key], stack_value(STACKS[stack], key)
    if spec.get("secret"):
        assert "default" not in spec and isinstance(value, dict) and "secure" in value
    elif "default" not in spec:
        assert value is not None, f"{stack} is missing {key}, which Pulumi.yaml declares without a default"
    if isinstance(value, str) and spec["type"] == "string":
        assert value in ("gce", "vertex", "dev", "staging", "prod")


def test_declared_defaults_match_the_config_models() -> None:
    from components.config import StackConfig

    for key, spec in DECLARED.items():
        assert StackConfig.model_fields[key].default == spec["default"]
