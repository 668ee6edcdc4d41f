"""The capacity planner reproduces the seed's GPU memory table and explains every misfit with a fix."""

from __future__ import annotations

import pytest

from components.capacity import OVERHEAD_GB_PER_GPU, kv_gb, plan_capacity, weights_gb
from components.config import ConfigError
from components.cost import estimate_cost
from tests.conftest import make_config

A100_80 = {"machineType": "a2-ultragpu-1g", "gpuType": "nvidia-a100-80gb", "gpuCount": 1}


# The seed's table: model, precision, min GB, recommended GB, max context.
SEED_TABLE = [
    ("google/gemma-4-E4B-it", "float16", None, 10, 16, 32_768),
    ("google/gemma-4-E4B-it", "bfloat16", "int8", 6, 10, 16_384),
    ("google/gemma-4-26B-A4B-it", "bfloat16", None, 52, 80, 32_768),
    ("google/gemma-4-26B-A4B-it", "bfloat16", "int8", 28, 40, 32_768),
    ("google/gemma-4-31B-it", "bfloat16", None, 62, 80, 32_768),
]


@pytest.mark.parametrize(("model", "dtype", "quant", "min_gb", "rec_gb", "context"), SEED_TABLE)
def test_seed_gpu_memory_table(
    model: str, dtype: str, quant: str | None, min_gb: int, rec_gb: int, context: int
):
    config = make_config(
        model={"id": model, "dtype": dtype, "quantization": quant, "maxModelLen": context}, hardware=A100_80
    )
    plan = plan_capacity(config)
    assert round(plan.min_gb) == min_gb  # minimum = the weights
    # Recommended: the weights plus one full-length sequence of KV cache, within the seed's figure.
    assert plan.min_gb + kv_gb(config.model, context) <= plan.recommended_gb <= rec_gb
    assert plan.recommended_gb >= plan.min_gb + kv_gb(config.model, context) + OVERHEAD_GB_PER_GPU


def test_the_issue_example_fails_with_needed_available_and_fixes() -> None:
    config = make_config(
        model={"id": "google/gemma-4-31B-it", "dtype": "bfloat16"}
    )  # on g2-standard-8 (1 x L4)
    with pytest.raises(ConfigError) as info:
        plan_capacity(config)
    message = str(info.value)
    assert "google/gemma-4-31B-it in bfloat16 needs >= 62 GB of GPU memory for weights" in message
    assert "1 x nvidia-l4 has 24 GB" in message
    assert "gpuType nvidia-" in message
    assert "gpuCount 4 with tensorParallelSize 4 (g2-standard-48)" in message


def test_every_suggested_gpu_really_fits() -> None:
    config = make_config(model={"id": "google/gemma-4-31B-it"})
    with pytest.raises(ConfigError) as info:
        plan_capacity(config)
    suggested = str(info.value).split("gpuType ", 1)[1].split(" ", 1)[0]
    machine = str(info.value).split(f"gpuType {suggested} (", 1)[1].split(")", 1)[0]
    fixed = make_config(
        model={"id": "google/gemma-4-31B-it"},
        hardware={"machineType": machine, "gpuType": suggested, "gpuCount": 1},
    )
    assert plan_capacity(fixed).kv_budget_gb > 0


def test_too_long_context_says_how_long_fits() -> None:
    config = make_config(model={"id": "google/gemma-4-31B-it", "maxModelLen": 131072}, hardware=A100_80)
    with pytest.raises(
        ConfigError, match=r"vllm-gcp:model.maxModelLen: 131072 tokens need .* Lower maxModelLen to"
    ):
        plan_capacity(config)


@pytest.mark.parametrize(("quant", "bytes_per_param"), [(None, 2.0), ("fp8", 1.0), ("int8", 1.0)])
def test_weights_follow_the_quantization(quant: str | None, bytes_per_param: float) -> None:
    config = make_config(
        model={"id": "acme/llm-8b", "paramsBillions": 8, "quantization": quant}, hardware=A100_80
    )
    assert weights_gb(config.model) == pytest.approx(8 * bytes_per_param)


def test_kv_cache_grows_with_context_but_sliding_layers_are_capped() -> None:
    model = make_config().model
    short, long = kv_gb(model, 4096), kv_gb(model, 8192)
    assert long > short
    assert long < 2 * short  # local (sliding-window) layers do not grow past the window


def test_tensor_parallelism_spreads_weights_over_gpus() -> None:
    config = make_config(
        model={"id": "google/gemma-4-31B-it", "tensorParallelSize": 4},
        hardware={"machineType": "g2-standard-48", "gpuType": "nvidia-l4", "gpuCount": 4},
    )
    plan = plan_capacity(config)
    assert plan.available_gb == pytest.approx(4 * 24 * 0.9)
    assert plan.data_parallel_size == 1


def test_cold_start_drives_autohealing_and_is_faster_from_gcs() -> None:
    hf = plan_capacity(make_config(model={"id": "google/gemma-4-26B-A4B-it"}, hardware=A100_80))
    gcs = plan_capacity(
        make_config(model={"id": "gs://weights/gemma-4-26b", "paramsBillions": 26}, hardware=A100_80)
    )
    assert gcs.cold_start_seconds < hf.cold_start_seconds
    for plan in (hf, gcs):
        assert plan.cold_start_seconds <= plan.autohealing_initial_delay_seconds <= 3600
        assert plan.startup_budget_seconds >= plan.cold_start_seconds


def test_cost_scales_with_replicas_and_spot() -> None:
    on_demand = estimate_cost(make_config(scaling={"minReplicas": 2, "maxReplicas": 4}))
    spot = estimate_cost(make_config(scaling={"minReplicas": 2, "maxReplicas": 4}, hardware={"spot": True}))
    assert on_demand["monthlyUsd"] == pytest.approx(on_demand["hourlyUsd"] * 730, rel=1e-3)
    assert on_demand["maxMonthlyUsd"] == pytest.approx(2 * on_demand["monthlyUsd"], rel=1e-3)
    assert spot["hourlyUsd"] < on_demand["hourlyUsd"]
    assert on_demand["pricesAsOf"] and str(on_demand["source"]).startswith("https://cloud.google.com/")


def test_concurrency_estimate_follows_the_kv_budget_and_vllm_batch_limit() -> None:
    small = plan_capacity(
        make_config(model={"id": "google/gemma-4-26B-A4B-it", "maxModelLen": 32768}, hardware=A100_80)
    )
    roomy = plan_capacity(make_config(model={"maxModelLen": 4096}))  # E4B on an L4 with a short context
    assert small.concurrent_requests == 4 * small.full_length_sequences  # requests average 1/4 of the context
    assert roomy.concurrent_requests == 256  # capped at vLLM's default --max-num-seqs
