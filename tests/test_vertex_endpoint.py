"""VertexVllmEndpoint under the recording mocks: the registered inputs of every child, and the outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from components.config import ConfigError, StackConfig
from components.cost import estimate_cost
from components.mocks import PROJECT_NUMBER, RecordedResource, RecordingMocks, resolve, run_program
from components.vertex_endpoint import (
    VertexVllmEndpoint,
    deployment_key,
    endpoint_numeric_id,
    openai_base_url,
    shared_memory_mb,
)
from components.vertex_provider import VertexModelDeploymentInputs, input_errors
from components.vllm_args import render_vllm_args
from tests.conftest import make_config

HF_TOKEN = "hf_COMPONENTtokenABCDEFGHIJKLMNOPQRSTU"
IMAGE = "us-central1-docker.pkg.dev/test-project/vllm/vllm-openai@sha256:" + "0" * 64
DEPLOYMENT_TYPE = "pulumi-python:dynamic/vertex:ModelDeployment"
ROOT = Path(__file__).resolve().parents[1]


def vertex_config(**overrides: Any) -> StackConfig:
    base: dict[str, Any] = {
        "platform": "vertex",
        "environment": "prod",
        "model": {"id": "google/gemma-4-26B-A4B-it", "servedName": "gemma-4-26b", "maxModelLen": 32768},
        "hardware": {"machineType": "a2-ultragpu-1g", "gpuType": "nvidia-a100-80gb", "gpuCount": 1},
        "scaling": {"minReplicas": 2, "maxReplicas": 4, "targetWaitingRequestsPerReplica": 10},
    }
    return make_config(**(base | overrides))


def build(mocks: RecordingMocks, config: StackConfig, hf_token: str | None = HF_TOKEN) -> dict[str, Any]:
    holder: dict[str, Any] = {}

    def program() -> None:
        holder["component"] = VertexVllmEndpoint("vllm", config, IMAGE, hf_token)

    run_program(program)
    component = holder["component"]
    names = (
        "openai_base_url",
        "served_model_name",
        "endpoint_id",
        "endpoint_name",
        "dedicated_endpoint_dns",
        "estimated_monthly_cost_usd",
    )
    return {name: resolve(getattr(component, name)) for name in names}


def one(mocks: RecordingMocks, type_token: str) -> RecordedResource:
    found = [r for r in mocks.resources if r.type == type_token]
    assert len(found) == 1, [r.type for r in mocks.resources]
    return found[0]


def test_children_are_parented_and_named_after_the_component(mocks: RecordingMocks) -> None:
    build(mocks, vertex_config())
    component = one(mocks, "vllm-gcp:vertex:VllmEndpoint")
    secret = one(mocks, "vllm-gcp:secrets:ManagedSecret")
    children = {r.type for r in mocks.resources if r.parent == component.urn}
    assert children == {
        "gcp:vertex/aiEndpoint:AiEndpoint",
        "gcp:serviceaccount/account:Account",
        "vllm-gcp:secrets:ManagedSecret",
        DEPLOYMENT_TYPE,
    }
    assert {r.type for r in mocks.resources if r.parent == secret.urn} == {
        "gcp:secretmanager/secret:Secret",
        "gcp:secretmanager/secretVersion:SecretVersion",
        "gcp:secretmanager/secretIamMember:SecretIamMember",
    }
    assert all(r.name.startswith("vllm-") for r in mocks.resources if r is not component)


def test_endpoint_is_dedicated_regional_and_labelled(mocks: RecordingMocks) -> None:
    build(mocks, vertex_config())
    inputs = one(mocks, "gcp:vertex/aiEndpoint:AiEndpoint").inputs
    assert inputs["dedicatedEndpointEnabled"] is True
    assert inputs["location"] == inputs["region"] == "us-central1"
    assert inputs["project"] == "test-project"
    assert re.fullmatch(r"[1-9][0-9]{9}", inputs["name"])  # the API's rule for endpoint ids
    assert inputs["labels"] == {
        "app": "vllm-gcp",
        "vllm-gcp-stack": "test",
        "vllm-gcp-component": "vllm",
        "environment": "prod",
        "served-model": "gemma-4-26b",
    }
    assert "trafficSplit" not in inputs  # the deployment owns the split; the endpoint must not fight it


def test_deployment_inputs_carry_the_machine_accelerator_image_and_vllm_args(mocks: RecordingMocks) -> None:
    config = vertex_config()
    build(mocks, config)
    inputs = one(mocks, DEPLOYMENT_TYPE).inputs
    assert inputs["machineType"] == "a2-ultragpu-1g"
    assert (inputs["acceleratorType"], inputs["acceleratorCount"]) == ("NVIDIA_A100_80GB", 1)
    assert inputs["imageUri"] == IMAGE
    assert inputs["vllmArgs"] == render_vllm_args(config.model, 1)
    assert inputs["vllmArgs"][:2] == ["--model", "google/gemma-4-26B-A4B-it"]
    assert (inputs["minReplicas"], inputs["maxReplicas"], inputs["targetWaitingRequests"]) == (2, 4, 10)
    assert (inputs["containerPort"], inputs["healthRoute"], inputs["invokeRoutePrefix"]) == (
        8000,
        "/health",
        "/*",
    )
    assert inputs["spot"] is False
    account = one(mocks, "gcp:serviceaccount/account:Account").inputs
    assert inputs["serviceAccount"] == f"{account['accountId']}@test-project.iam.gserviceaccount.com"
    endpoint = one(mocks, "gcp:vertex/aiEndpoint:AiEndpoint")
    assert re.fullmatch(r"projects/test-project/locations/us-central1/endpoints/\d+", inputs["endpointName"])
    assert inputs["deploymentKey"] == "vllm-gcp-test-vllm"  # Pulumi project, stack, component
    assert endpoint.inputs["labels"] == inputs["labels"]
    assert 60 <= inputs["deploymentTimeoutSeconds"] <= 7200


def test_deployment_inputs_satisfy_the_providers_declared_schema(mocks: RecordingMocks) -> None:
    build(mocks, vertex_config())
    inputs = {k: v for k, v in one(mocks, DEPLOYMENT_TYPE).inputs.items() if k != "__provider"}
    assert set(inputs) == set(typing.get_type_hints(VertexModelDeploymentInputs))
    assert input_errors(inputs) == []


def test_hf_token_is_only_in_the_secret_version_and_marked_secret(mocks: RecordingMocks) -> None:
    outputs = build(mocks, vertex_config())
    everything = json.dumps([r.as_dict() for r in mocks.resources]) + json.dumps(outputs)
    assert HF_TOKEN not in everything
    assert one(mocks, "gcp:secretmanager/secretVersion:SecretVersion").inputs["secretData"] == "[secret]"
    secret_id = one(mocks, "gcp:secretmanager/secret:Secret").inputs["secretId"]
    deployment = one(mocks, DEPLOYMENT_TYPE).inputs
    assert deployment["hfTokenSecretVersion"] == f"projects/{PROJECT_NUMBER}/secrets/{secret_id}/versions/1"
    assert deployment["__provider"] == "[dynamic provider]"


def test_only_the_serving_account_may_read_the_token(mocks: RecordingMocks) -> None:
    build(mocks, vertex_config())
    grant = one(mocks, "gcp:secretmanager/secretIamMember:SecretIamMember").inputs
    account = one(mocks, "gcp:serviceaccount/account:Account").inputs
    assert grant["role"] == "roles/secretmanager.secretAccessor"
    assert grant["member"] == f"serviceAccount:{account['accountId']}@test-project.iam.gserviceaccount.com"
    assert grant["secretId"] == one(mocks, "gcp:secretmanager/secret:Secret").inputs["secretId"]
    assert not [r for r in mocks.resources if "projectIamMember" in r.type or "IAMMember" in r.type]


def test_without_an_hf_token_there_is_no_secret(mocks: RecordingMocks) -> None:
    build(mocks, vertex_config(), hf_token=None)
    assert not [r for r in mocks.resources if r.type.startswith("gcp:secretmanager")]
    assert "hfTokenSecretVersion" not in one(mocks, DEPLOYMENT_TYPE).inputs


def test_outputs_give_the_openai_base_url_on_the_dedicated_dns(mocks: RecordingMocks) -> None:
    config = vertex_config()
    outputs = build(mocks, config)
    endpoint_id, dns = outputs["endpoint_id"], outputs["dedicated_endpoint_dns"]
    assert outputs["endpoint_name"] == f"projects/test-project/locations/us-central1/endpoints/{endpoint_id}"
    assert dns == f"{endpoint_id}.us-central1-{PROJECT_NUMBER}.prediction.vertexai.goog"
    assert outputs["openai_base_url"] == (
        f"https://{dns}/v1/projects/test-project/locations/us-central1/endpoints/{endpoint_id}/invoke/v1"
    )
    assert outputs["served_model_name"] == "gemma-4-26b"
    assert outputs["estimated_monthly_cost_usd"] == estimate_cost(config)["monthlyUsd"] > 0


def test_spot_and_multi_gpu_reach_the_deployment(mocks: RecordingMocks) -> None:
    config = vertex_config(
        environment="dev",
        model={"id": "google/gemma-4-31B-it", "tensorParallelSize": 2, "maxModelLen": 8192},
        hardware={
            "machineType": "a2-ultragpu-2g",
            "gpuType": "nvidia-a100-80gb",
            "gpuCount": 2,
            "spot": True,
        },
        scaling={"minReplicas": 1, "maxReplicas": 1, "targetWaitingRequestsPerReplica": 2.4},
    )
    build(mocks, config)
    inputs = one(mocks, DEPLOYMENT_TYPE).inputs
    assert (inputs["acceleratorCount"], inputs["spot"], inputs["targetWaitingRequests"]) == (2, True, 2)
    assert inputs["sharedMemorySizeMb"] == 16384
    assert "--tensor-parallel-size" in inputs["vllmArgs"]


def test_a_shared_endpoint_is_rejected_with_the_fix(mocks: RecordingMocks) -> None:
    with pytest.raises(
        ConfigError, match=r"vertex\.dedicatedEndpoint: false .* Set vertex\.dedicatedEndpoint: true"
    ):
        build(mocks, vertex_config(vertex={"dedicatedEndpoint": False}))


# ---- pure helpers ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("project", "region", "stack", "name"),
    [
        ("p", "us-central1", "dev", "vllm"),
        ("my-project-prod", "europe-west4", "prod", "x"),
        ("a", "b", "c", "d"),
    ],
)
def test_endpoint_ids_are_ten_digits_stable_and_distinct(
    project: str, region: str, stack: str, name: str
) -> None:
    endpoint_id = endpoint_numeric_id(project, region, "vllm-gcp", stack, name)
    assert re.fullmatch(r"[1-9][0-9]{9}", endpoint_id)
    assert endpoint_id == endpoint_numeric_id(project, region, "vllm-gcp", stack, name)
    assert endpoint_id != endpoint_numeric_id(project, region, "vllm-gcp", stack + "-2", name)
    assert endpoint_id != endpoint_numeric_id(project, region, "other-program", stack, name)


@pytest.mark.parametrize(
    ("dns", "expected_host"),
    [
        ("1.us-central1-9.prediction.vertexai.goog", "1.us-central1-9.prediction.vertexai.goog"),
        ("https://1.us-central1-9.prediction.vertexai.goog/", "1.us-central1-9.prediction.vertexai.goog"),
    ],
)
def test_openai_base_url_shape(dns: str, expected_host: str) -> None:
    url = openai_base_url(dns, "projects/p/locations/us-central1/endpoints/1")
    assert url == f"https://{expected_host}/v1/projects/p/locations/us-central1/endpoints/1/invoke/v1"


@pytest.mark.parametrize(
    ("stack", "name", "expected"),
    [
        ("dev", "vllm", "p-dev-vllm"),
        ("Org.Prod", "vllm", "p-org_prod-vllm"),
        ("s" * 80, "vllm", "p-" + "s" * 61),
    ],
)
def test_deployment_key_is_a_valid_label_value(stack: str, name: str, expected: str) -> None:
    assert deployment_key("p", stack, name) == expected


def test_shared_memory_grows_with_gpus() -> None:
    assert shared_memory_mb(vertex_config()) < shared_memory_mb(
        vertex_config(
            hardware={"machineType": "a2-ultragpu-2g", "gpuType": "nvidia-a100-80gb", "gpuCount": 2}
        )
    )


@pytest.mark.parametrize("bad", ["Vllm", "a" * 31, "1vllm", "vllm-"])
def test_component_names_that_would_break_derived_ids_are_rejected(mocks: RecordingMocks, bad: str) -> None:
    def program() -> None:
        VertexVllmEndpoint(bad, vertex_config(), IMAGE, None)

    with pytest.raises(ConfigError, match=f"VertexVllmEndpoint name {bad!r} is not usable"):
        run_program(program)


def test_planning_gce_stacks_and_building_the_vertex_component_do_not_import_aiplatform() -> None:
    # google.cloud.aiplatform costs ~2.5 s and ~190 MB: only the provider's methods (run at `pulumi up`) import it.
    code = """
import sys
from components.plan import run_plan
for stack in ("dev", "prod"):
    run_plan(stack)
from components.mocks import install_mocks, run_program
from components.vertex_endpoint import VertexVllmEndpoint
from tests.test_vertex_endpoint import IMAGE, vertex_config
install_mocks(project="test-project", region="us-central1")
run_program(lambda: VertexVllmEndpoint("vllm", vertex_config(), IMAGE, "hf_x"))
print(sorted(m for m in sys.modules if m.startswith("google.cloud.aiplatform")))
"""
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(("min_replicas", "warned"), [(1, True), (2, False)])
def test_fewer_than_two_replicas_warns_about_the_sla(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch, min_replicas: int, warned: bool
) -> None:
    import pulumi

    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warnings.append(message))
    config = vertex_config(environment="dev", scaling={"minReplicas": min_replicas, "maxReplicas": 2})
    build(mocks, config, hf_token=None)
    assert any("2 or more nodes" in w for w in warnings) is warned
