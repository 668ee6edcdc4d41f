"""No secret value in the plan: the whole dev and prod programs, run offline with distinctive fake secrets.

The HF token and API key go in as `secure:` stack values; the test then searches the entire plan JSON (resources,
inputs, outputs, warnings) for them, raw and base64-encoded, and checks that the VM metadata names the secrets only
by their Secret Manager resource names.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from typing import Any

import pytest

from components.plan import run_plan
from tests.gce_harness import SECRET_VERSION

HF_TOKEN = "hf_FAKEplanTOKENnotREAL0123456789abcdefXYZ"
API_KEY = "sk-FAKE-plan-key-not-real-0123456789"
SECRET_VALUES = {"vllm-gcp:hfToken": HF_TOKEN, "vllm-gcp:apiKeys": [API_KEY]}


def _plan(stack: str) -> dict[str, Any]:
    plan = run_plan(stack, secret_values=SECRET_VALUES)
    types = {r["type"] for r in plan["resources"]}
    assert "vllm-gcp:gce:VllmService" in types, (
        "__main__.py does not build the gce platform yet; wire ServingImage, VllmGceService and VllmLoadBalancer "
        "(docs/gce.md, 'Using the components')"
    )
    return plan


def _forms(value: str) -> list[str]:
    """The value and the encodings a leak could take (Secret Manager payloads are base64)."""
    return [value, base64.b64encode(value.encode()).decode(), json.dumps(value)[1:-1]]


def _of_type(plan: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    return [r for r in plan["resources"] if r["type"] == type_]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_secret_value_anywhere_in_the_plan(stack: str) -> None:
    plan = _plan(stack)
    text = json.dumps(plan)
    leaks = [form for value in (HF_TOKEN, API_KEY) for form in _forms(value) if form in text]
    # A generated key (dev has no apiKeys) must not leak either: the mocks return it as `mock-<name>-0...0`.
    generated = [
        f"mock-{r['name']}-0000000000000000"
        for r in _of_type(plan, "random:index/randomPassword:RandomPassword")
    ]
    leaks += [value for value in generated if value in text]
    assert leaks == []
    assert plan["outputs"]["apiKey"] == "[secret]"
    versions = _of_type(plan, "gcp:secretmanager/secretVersion:SecretVersion")
    assert len(versions) == 2 and all(v["inputs"]["secretData"] == "[secret]" for v in versions)


def test_dev_generates_the_api_key_and_prod_uses_the_configured_one() -> None:
    assert len(_of_type(_plan("dev"), "random:index/randomPassword:RandomPassword")) == 1
    assert _of_type(_plan("prod"), "random:index/randomPassword:RandomPassword") == []


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_startup_script_names_secrets_only_by_resource_name(stack: str) -> None:
    plan = _plan(stack)
    (template,) = _of_type(plan, "gcp:compute/instanceTemplate:InstanceTemplate")
    metadata = template["inputs"]["metadata"]
    script = metadata["startup-script"]
    assert script not in ("[secret]", "[unknown]")  # the whole script is concrete and reviewable in the plan
    assert not any(form in json.dumps(metadata) for value in (HF_TOKEN, API_KEY) for form in _forms(value))
    names = {
        shlex.split(value)[0]
        for value in re.findall(r"^readonly (?:API_KEY|HF_TOKEN)_SECRET_VERSION=(.*)$", script, re.M)
    }
    assert len(names) == 2
    assert all(SECRET_VERSION.fullmatch(name) for name in names), names
    secret_ids = {r["inputs"]["secretId"] for r in _of_type(plan, "gcp:secretmanager/secret:Secret")}
    assert {name.split("/")[3] for name in names} == secret_ids
    # Nothing else in the metadata is secret-shaped: only the documented keys.
    assert set(metadata) == {
        "startup-script",
        "enable-oslogin",
        "block-project-ssh-keys",
        "install-nvidia-driver",
    }
