"""vLLM argument rendering: the flags we own, quantization methods that exist in 0.33, and extraArgs clashes."""

from __future__ import annotations

import pytest

from components.config import ConfigError
from components.vllm_args import render_vllm_args
from tests.conftest import make_config

A100_80 = {"machineType": "a2-ultragpu-1g", "gpuType": "nvidia-a100-80gb", "gpuCount": 1}
# vLLM 0.33.0's --quantization choices, from shared/reference/vllm-0.33.0-metrics.txt.
VLLM_033_QUANTIZATION = {
    "fp8",
    "int8_per_channel_weight_only",
    "experts_int8",
    "compressed-tensors",
    "awq",
    "gptq",
}


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_renders_the_owned_flags_with_an_explicit_model() -> None:
    args = render_vllm_args(make_config(model={"servedName": "gemma", "maxModelLen": 4096}).model)
    assert flag(args, "--model") == "google/gemma-4-E4B-it"
    assert flag(args, "--served-model-name") == "gemma"
    assert flag(args, "--max-model-len") == "4096"
    assert flag(args, "--gpu-memory-utilization") == "0.9"
    assert flag(args, "--tensor-parallel-size") == "1"
    assert flag(args, "--port") == "8000"
    assert "--quantization" not in args and "--load-format" not in args and "--api-key" not in args


@pytest.mark.parametrize(
    ("model_id", "quant", "method"),
    [
        ("google/gemma-4-E4B-it", "fp8", "fp8"),
        ("google/gemma-4-E4B-it", "int8", "int8_per_channel_weight_only"),
        ("google/gemma-4-26B-A4B-it", "int8", "experts_int8"),  # MoE: quantize the experts
        ("acme/gemma-w4a16", "int4", "compressed-tensors"),
        ("acme/gemma-awq", "awq", "awq"),
        ("acme/gemma-gptq", "gptq", "gptq"),
    ],
)
def test_quantization_maps_to_real_vllm_methods(model_id: str, quant: str, method: str) -> None:
    config = make_config(model={"id": model_id, "quantization": quant, "paramsBillions": 8}, hardware=A100_80)
    rendered = flag(render_vllm_args(config.model), "--quantization")
    assert rendered == method
    assert rendered in VLLM_033_QUANTIZATION


def test_gcs_weights_stream_with_runai() -> None:
    config = make_config(model={"id": "gs://bucket/gemma-4-e4b", "paramsBillions": 5})
    args = render_vllm_args(config.model)
    assert flag(args, "--load-format") == "runai_streamer"
    assert flag(args, "--model") == "gs://bucket/gemma-4-e4b"
    assert flag(args, "--served-model-name") == "gemma-4-e4b"


def test_spare_gpus_become_data_parallel_engines() -> None:
    config = make_config(hardware={"machineType": "g2-standard-24", "gpuType": "nvidia-l4", "gpuCount": 2})
    assert flag(render_vllm_args(config.model, gpu_count=2), "--data-parallel-size") == "2"


def test_extra_args_are_appended() -> None:
    config = make_config(model={"extraArgs": ["--enable-prefix-caching", "--max-num-seqs", "64"]})
    assert render_vllm_args(config.model)[-3:] == ["--enable-prefix-caching", "--max-num-seqs", "64"]


@pytest.mark.parametrize(
    "arg",
    ["--max-model-len", "--max-model-len=4096", "--max_model_len", "-tp", "--api-key", "--port", "--model"],
)
def test_extra_args_cannot_override_owned_flags(arg: str) -> None:
    with pytest.raises(ConfigError, match=r"vllm-gcp:model.extraArgs: .* which the stack sets from"):
        make_config(model={"extraArgs": [arg, "1"]})  # caught at config validation, i.e. at preview
    unchecked = make_config().model.model_copy(update={"extra_args": [arg, "1"]})
    with pytest.raises(ConfigError, match=r"vllm-gcp:model.extraArgs: .* which the stack sets from"):
        render_vllm_args(unchecked)  # and again by the renderer, for components built from Python
