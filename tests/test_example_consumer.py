"""examples/consumer: another Pulumi project reuses the components with its own config, run under the mocks."""

from __future__ import annotations

import ast
import json
import runpy
import tomllib
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import settings

from components.mocks import RecordingMocks, install_mocks, resolve, run_program
from tests.gce_harness import AR_IMAGE_BY_DIGEST

ROOT = Path(__file__).resolve().parent.parent
CONSUMER = ROOT / "examples" / "consumer"
HF_TOKEN = "hf_FAKEconsumerTOKEN0123456789abcdefABCDEF"


CONSUMER_CONFIG = {
    "gcp:project": "consumer-project",
    "gcp:region": "us-central1",
    "vllm-consumer:hfToken": HF_TOKEN,
}


def _run_consumer(program: Path) -> tuple[RecordingMocks, dict[str, Any]]:
    """Run a consumer program as `pulumi up` would, under the recording mocks, with the consumer's config."""
    pulumi.runtime.set_all_config(CONSUMER_CONFIG, ["vllm-consumer:hfToken"])
    try:
        mocks = install_mocks(project="consumer-project", region="us-central1", stack="staging")
        run_program(lambda: runpy.run_path(str(program), run_name="__main__"))
        root = settings.get_root_resource()
        outputs = {key: resolve(value) for key, value in getattr(root, "outputs", {}).items()}
    finally:
        # Even when the program fails: later tests must not see the consumer's config (or its token).
        pulumi.runtime.set_all_config({}, [])
    return mocks, outputs


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> tuple[RecordingMocks, dict[str, Any]]:
    monkeypatch.chdir(CONSUMER)
    return _run_consumer(CONSUMER / "__main__.py")


def test_a_failing_consumer_run_leaves_no_config_behind(tmp_path: Path) -> None:
    failing = tmp_path / "__main__.py"
    failing.write_text("raise RuntimeError('consumer program failed')\n")
    with pytest.raises(Exception, match="consumer program failed"):
        _run_consumer(failing)
    assert all(pulumi.runtime.get_config(key) is None for key in CONSUMER_CONFIG)
    assert not pulumi.runtime.is_config_secret("vllm-consumer:hfToken")


def _inputs(mocks: RecordingMocks, type_: str) -> dict[str, Any]:
    (found,) = [r for r in mocks.resources if r.type == type_]
    return found.inputs


def test_consumer_deploys_a_service_with_its_own_config(
    consumer: tuple[RecordingMocks, dict[str, Any]],
) -> None:
    mocks, outputs = consumer
    components = {(r.type, r.name) for r in mocks.resources if not r.custom}
    assert {
        ("vllm-gcp:image:ServingImage", "team-llm"),
        ("vllm-gcp:gce:VllmService", "team-llm"),
        ("vllm-gcp:gce:LoadBalancer", "team-llm"),
    } <= components
    # The consumer's Python config, not this repo's stack files, shaped the resources.
    mig = _inputs(mocks, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager")
    assert mig["project"] == "consumer-project"
    assert mig["distributionPolicyZones"] == ["us-central1-a", "us-central1-b"]
    assert (
        _inputs(mocks, "gcp:compute/instanceTemplate:InstanceTemplate")["scheduling"]["provisioningModel"]
        == "SPOT"
    )
    policy = _inputs(mocks, "gcp:compute/regionAutoscaler:RegionAutoscaler")["autoscalingPolicy"]
    assert (policy["minReplicas"], policy["maxReplicas"]) == (1, 3)
    rules = _inputs(mocks, "gcp:compute/securityPolicy:SecurityPolicy")["rules"]
    assert any(r.get("match", {}).get("config", {}).get("srcIpRanges") == ["203.0.113.0/24"] for r in rules)
    assert outputs["servedModelName"] == "gemma-4-e2b"
    assert outputs["openaiBaseUrl"].startswith("http://") and outputs["openaiBaseUrl"].endswith("/v1")
    assert outputs["apiKey"] == "[secret]"
    assert AR_IMAGE_BY_DIGEST.fullmatch(outputs["imageRef"])
    assert HF_TOKEN not in json.dumps([r.as_dict() for r in mocks.resources])


def test_consumer_uses_only_the_packaged_components() -> None:
    """It imports `components.*` like an installed package: no path tricks, no files of this checkout."""
    tree = ast.parse((CONSUMER / "__main__.py").read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported == {"pulumi", "components"}
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    strings.discard(ast.get_docstring(tree, clean=False))
    assert "vllm-gcp" not in strings  # its own config: it never reads this repo's stack namespace
    assert not any(
        isinstance(n, ast.Attribute) and n.attr == "path" for n in ast.walk(tree)
    )  # no sys.path tricks


def test_consumer_installs_this_repository_as_a_package() -> None:
    requirements = [
        line.strip()
        for line in (CONSUMER / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    (requirement,) = requirements
    project = tomllib.loads((CONSUMER / requirement / "pyproject.toml").read_text())
    assert project["project"]["name"] == "vllm-gcp"
    setuptools = project["tool"]["setuptools"]
    assert "components" in setuptools["packages"]
    # Files the components read at run time must ship in the wheel (startup_script.py loads its template).
    assert "*.sh" in setuptools["package-data"]["components"]
    assert (ROOT / "components" / "startup-script.sh").exists()
    pulumi_yaml = yaml.safe_load((CONSUMER / "Pulumi.yaml").read_text())
    assert pulumi_yaml["name"] == "vllm-consumer" and pulumi_yaml["runtime"]["name"] == "python"
