"""The config contract: unknown keys, cross-field checks and error messages that name the key and the fix."""

from __future__ import annotations

import pytest

from components.config import ConfigError, parse_config
from tests.conftest import config_dict, make_config


def errors_of(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(config_dict(**overrides))
    return str(info.value)


def test_defaults_are_valid_and_derive_the_served_name() -> None:
    config = make_config()
    assert config.model.served_name == "gemma-4-e4b-it"
    assert config.scaling.min_replicas == 1
    # The contract's default: longer than the load balancer's 600 s backend keep-alive is not needed, equal is.
    assert config.gce.request_timeout_seconds == 600


@pytest.mark.parametrize(
    ("overrides", "key", "hint"),
    [
        ({"modle": {}}, "vllm-gcp:modle", "did you mean 'model'"),
        ({"model": {"maxModelLenn": 4096}}, "vllm-gcp:model.maxModelLenn", "did you mean 'maxModelLen'"),
        (
            {"gce": {"zones": ["us-central1-a"], "domian": "x.example.com"}},
            "vllm-gcp:gce.domian",
            "did you mean",
        ),
    ],
)
def test_unknown_keys_fail_with_a_suggestion(overrides: dict, key: str, hint: str) -> None:
    message = errors_of(**overrides)
    assert f"{key}: unknown key" in message
    assert hint in message


def test_tensor_parallel_size_must_divide_gpu_count() -> None:
    message = errors_of(
        hardware={"machineType": "g2-standard-24", "gpuType": "nvidia-l4", "gpuCount": 2},
        model={"tensorParallelSize": 4},
    )
    assert (
        "vllm-gcp:model.tensorParallelSize: 4 does not divide hardware.gpuCount 2; use one of [1, 2]"
        in message
    )


def test_gpu_type_must_match_the_machine_type() -> None:
    message = errors_of(hardware={"machineType": "a2-ultragpu-1g", "gpuType": "nvidia-l4", "gpuCount": 1})
    assert message.startswith("vllm-gcp:hardware.machineType: 'a2-ultragpu-1g' carries 1 x nvidia-a100-80gb")
    assert "Set gpuType nvidia-a100-80gb" in message
    assert "g2-standard-8" in message  # the machines that do carry an L4


def test_gpu_count_must_match_the_machine_type() -> None:
    message = errors_of(hardware={"machineType": "g2-standard-8", "gpuType": "nvidia-l4", "gpuCount": 2})
    assert "carries 1 x nvidia-l4, not 2 x nvidia-l4" in message
    assert "g2-standard-24" in message


def test_unknown_machine_type_lists_the_right_ones() -> None:
    message = errors_of(hardware={"machineType": "n1-standard-8", "gpuType": "nvidia-l4", "gpuCount": 1})
    assert "vllm-gcp:hardware.machineType: 'n1-standard-8' is not a GPU machine type" in message


def test_spot_only_machine_requires_spot() -> None:
    message = errors_of(
        hardware={"machineType": "a3-highgpu-1g", "gpuType": "nvidia-h100-80gb", "gpuCount": 1}
    )
    assert "vllm-gcp:hardware.spot:" in message


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"scaling": {"minReplicas": 1, "maxReplicas": 2}}, "vllm-gcp:scaling.minReplicas: 1 in prod"),
        ({"gce": {"zones": ["us-central1-a"], "domain": "a.example.com"}}, "prod needs >= 2 zones"),
        ({"gce": {"zones": ["us-central1-a", "us-central1-b"]}}, "vllm-gcp:gce.domain: not set in prod"),
    ],
)
def test_prod_guards(overrides: dict, needle: str) -> None:
    base = {
        "environment": "prod",
        "scaling": {"minReplicas": 2, "maxReplicas": 2},
        "gce": {"zones": ["us-central1-a", "us-central1-b"], "domain": "a.example.com"},
    }
    parse_config(config_dict(**base))  # the base itself is valid
    merged = {**base, **overrides}
    assert needle in errors_of(**merged)


@pytest.mark.parametrize("name", ["Gemma", "bad name", "-x", "a" * 65, "x/y"])
def test_served_name_must_be_valid(name: str) -> None:
    assert "vllm-gcp:model.servedName:" in errors_of(model={"servedName": name})


@pytest.mark.parametrize("name", ["gemma-4-26b", "g", "gemma_4.e4b"])
def test_served_name_accepts_valid_names(name: str) -> None:
    assert make_config(model={"servedName": name}).model.served_name == name


def test_seed_alias_resolves_with_a_warning() -> None:
    config = make_config(
        model={"id": "google/gemma-4-26b"},
        hardware={"machineType": "a2-ultragpu-1g", "gpuType": "nvidia-a100-80gb", "gpuCount": 1},
    )
    assert config.model.id == "google/gemma-4-26B-A4B-it"
    assert any("google/gemma-4-26b" in w and "does not exist" in w for w in config.warnings)


def test_model_outside_the_catalog_needs_params() -> None:
    assert "vllm-gcp:model.paramsBillions: required" in errors_of(model={"id": "acme/llm-7b"})
    assert make_config(model={"id": "acme/llm-7b", "paramsBillions": 7}).model.params_billions == 7


def test_prequantized_methods_need_a_prequantized_checkpoint() -> None:
    assert "vllm-gcp:model.quantization: 'int4' needs a checkpoint" in errors_of(
        model={"quantization": "int4"}
    )


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"platform": "gke"}, "vllm-gcp:platform"),
        ({"project": "p"}, "gcp:project: 'p' is not a project id"),
        ({"model": {"dtype": "fp32"}}, "vllm-gcp:model.dtype"),
        ({"model": {"image": "vllm/vllm-openai:latest"}}, "vllm-gcp:model.image"),
        ({"model": {"image": "vllm/vllm-openai"}}, "vllm-gcp:model.image"),
        ({"model": {"maxModelLen": 1_000_000}}, "vllm-gcp:model.maxModelLen"),
        ({"scaling": {"minReplicas": 3, "maxReplicas": 2}}, "vllm-gcp:scaling.maxReplicas"),
        ({"gce": {"zones": ["europe-west4-a"]}}, "vllm-gcp:gce.zones"),
        ({"gce": {"zones": []}}, "vllm-gcp:gce.zones"),
        ({"gce": {"zones": ["us-central1-a"], "allowedSourceRanges": ["10.0.0.1/8"]}}, "allowedSourceRanges"),
        ({"gce": {"zones": ["us-central1-a"], "requestTimeoutSeconds": 30}}, "requestTimeoutSeconds"),
        ({"gce": {"zones": ["us-central1-a"], "domain": "https://x.example.com"}}, "vllm-gcp:gce.domain"),
    ],
)
def test_bad_values_name_their_key(overrides: dict, key: str) -> None:
    assert key in errors_of(**overrides)


def test_vertex_does_not_need_zones() -> None:
    assert make_config(platform="vertex", gce={"zones": []}).platform == "vertex"
