"""GPU capacity planning: does the model fit, how much KV cache is left, and how long a cold start takes.

Pure functions of the validated config, no Pulumi. The seed's GPU memory table is the anchor (tests/test_capacity.py):
minimum GPU memory = the weights; recommended = weights + KV cache for one full-length sequence + runtime overhead,
divided by gpuMemoryUtilization.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .catalog import GPUS, MACHINE_TYPES, ON_DEMAND_USD_PER_HOUR, Model
from .config import ConfigError, HardwareConfig, ModelConfig, StackConfig

GB = 1e9
# CUDA context, activations and CUDA-graph pools per GPU (vLLM's profiling run typically reserves 1-3 GB).
OVERHEAD_GB_PER_GPU = 2.0
# KV cache of a model outside the catalog, per token per billion parameters at 16 bit (Llama-3-8B: 128 KiB/token).
UNKNOWN_KV_BYTES_PER_TOKEN_PER_B = 16_384

# Cold-start model (seconds). Image from Artifact Registry in-region; weights from Hugging Face through Cloud NAT, or
# streamed from GCS with --load-format runai_streamer.
BOOT_SECONDS = 90  # VM boot, driver check, disk mount
IMAGE_PULL_SECONDS = 120  # ~10 GB vLLM image from regional Artifact Registry
HF_GB_PER_SECOND = 0.15
GCS_GB_PER_SECOND = 1.0
WARMUP_SECONDS = 120  # weight load to GPU, torch.compile and CUDA-graph capture
MAX_AUTOHEALING_DELAY = 3600  # GCE's limit for autoHealingPolicies.initialDelaySec
MAX_DEPLOY_TIMEOUT = 7200  # Vertex's limit for the serving container deployment timeout
# Concurrency: requests average a quarter of maxModelLen (prompt + output), and vLLM batches at most
# --max-num-seqs sequences (256 by default).
AVERAGE_REQUEST_SHARE_OF_CONTEXT = 4
VLLM_MAX_NUM_SEQS = 256


def bytes_per_param(model: ModelConfig) -> float:
    if model.quantization in ("fp8", "int8"):
        return 1.0
    if model.quantization in ("int4", "awq", "gptq"):
        return 0.5
    return 2.0  # bfloat16 / float16; "auto" loads Gemma's bf16 checkpoints as bf16


def weights_gb(model: ModelConfig) -> float:
    entry: Model | None = model.catalog
    if entry is None:
        return (model.params_billions or 0) * bytes_per_param(model)
    quantized = entry.params_billions - entry.unquantized_billions
    # Weight-only quantization leaves embeddings and norms in 16 bit.
    return quantized * bytes_per_param(model) + entry.unquantized_billions * 2.0


def kv_gb(model: ModelConfig, tokens: int) -> float:
    """KV cache (16-bit) for `tokens` tokens of one sequence."""
    entry: Model | None = model.catalog
    if entry is None:
        return tokens * (model.params_billions or 0) * UNKNOWN_KV_BYTES_PER_TOKEN_PER_B / GB
    per_layer_token = 2 * entry.kv_heads * entry.head_dim * 2  # K and V, 2 bytes each
    global_layers = entry.layers // entry.global_every
    local_layers = entry.layers - global_layers
    return per_layer_token * (global_layers * tokens + local_layers * min(tokens, entry.sliding_window)) / GB


@dataclass(frozen=True)
class CapacityPlan:
    weights_gb: float
    min_gb: float  # the weights: below this nothing loads
    recommended_gb: float  # weights + one full-length sequence of KV cache + overhead, at the utilization
    available_gb: float  # what vLLM may use on the GPUs one engine spans (tensorParallelSize)
    kv_budget_gb: float
    kv_per_sequence_gb: float
    full_length_sequences: int  # how many maxModelLen sequences fit in the KV budget at once
    concurrent_requests: (
        int  # requests of average length (a quarter of maxModelLen) one replica batches at once
    )
    headroom_gb: float
    data_parallel_size: int  # engines per VM when gpuCount > tensorParallelSize
    cold_start_seconds: int
    autohealing_initial_delay_seconds: int
    startup_budget_seconds: int

    def as_dict(self) -> dict[str, float | int]:
        return {_camel(k): v for k, v in asdict(self).items()}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _usable_gb(gpu_type: str, gpus: int, utilization: float) -> float:
    return GPUS[gpu_type].memory_gb * gpus * utilization - OVERHEAD_GB_PER_GPU * gpus


def cold_start_seconds(model: ModelConfig) -> int:
    rate = GCS_GB_PER_SECOND if model.from_gcs else HF_GB_PER_SECOND
    # Online quantization downloads the 16-bit checkpoint.
    download_gb = (
        weights_gb(model)
        if model.quantization not in ("fp8", "int8")
        else weights_gb(model.model_copy(update={"quantization": None}))
    )
    return int(BOOT_SECONDS + IMAGE_PULL_SECONDS + download_gb / rate + WARMUP_SECONDS)


def _round_up(seconds: float, step: int = 30) -> int:
    return int(math.ceil(seconds / step) * step)


def plan_capacity(config: StackConfig) -> CapacityPlan:
    """Plan one replica, or raise ConfigError with the memory needed, the memory available and concrete fixes."""
    model, hw = config.model, config.hardware
    tp = model.tensor_parallel_size
    weights = weights_gb(model)
    usable = _usable_gb(hw.gpu_type, tp, model.gpu_memory_utilization)
    per_seq = kv_gb(model, model.max_model_len)
    label = f"{model.id} in {model.quantization or model.dtype}"
    if weights > usable:
        have = GPUS[hw.gpu_type].memory_gb * tp
        raise ConfigError(
            [
                f"vllm-gcp:hardware: {label} needs >= {weights:.0f} GB of GPU memory for weights; "
                f"{tp} x {hw.gpu_type} has {have} GB ({usable:.0f} GB usable at gpuMemoryUtilization "
                f"{model.gpu_memory_utilization}). Use {' or '.join(suggest_fixes(model, hw))}."
            ]
        )
    kv_budget = usable - weights
    if per_seq > kv_budget:
        fits = _max_tokens(model, kv_budget)
        raise ConfigError(
            [
                f"vllm-gcp:model.maxModelLen: {model.max_model_len} tokens need {per_seq:.1f} GB of KV cache, but "
                f"only {kv_budget:.1f} GB is left after the weights on {tp} x {hw.gpu_type}. Lower maxModelLen "
                f"to {fits}, raise gpuMemoryUtilization, or use more GPU memory."
            ]
        )
    cold = cold_start_seconds(model)
    full_length = int(kv_budget // per_seq) if per_seq else 0
    recommended = (weights + per_seq + OVERHEAD_GB_PER_GPU * tp) / model.gpu_memory_utilization
    return CapacityPlan(
        weights_gb=round(weights, 1),
        min_gb=round(weights, 1),
        recommended_gb=float(math.ceil(recommended)),
        available_gb=round(usable + OVERHEAD_GB_PER_GPU * tp, 1),
        kv_budget_gb=round(kv_budget, 1),
        kv_per_sequence_gb=round(per_seq, 2),
        full_length_sequences=full_length,
        concurrent_requests=min(VLLM_MAX_NUM_SEQS, max(1, full_length * AVERAGE_REQUEST_SHARE_OF_CONTEXT)),
        headroom_gb=round(usable - weights - per_seq, 1),
        data_parallel_size=hw.gpu_count // tp,
        cold_start_seconds=cold,
        autohealing_initial_delay_seconds=min(MAX_AUTOHEALING_DELAY, _round_up(cold * 1.5)),
        startup_budget_seconds=min(MAX_DEPLOY_TIMEOUT, _round_up(cold * 2)),
    )


def _max_tokens(model: ModelConfig, kv_budget: float) -> int:
    """The largest maxModelLen (a multiple of 1024) whose KV cache fits the budget."""
    tokens = 1024
    while kv_gb(model, tokens + 1024) <= kv_budget and tokens < model.max_model_len:
        tokens += 1024
    return tokens


def _fits(model: ModelConfig, gpu_type: str, gpus: int) -> bool:
    usable = _usable_gb(gpu_type, gpus, model.gpu_memory_utilization)
    return weights_gb(model) + kv_gb(model, model.max_model_len) <= usable


def suggest_fixes(model: ModelConfig, hw: HardwareConfig) -> list[str]:
    """Concrete, cheapest-first alternatives that fit: another GPU, more GPUs of this type, or quantization."""
    fixes: list[str] = []
    single = sorted(
        (ON_DEMAND_USD_PER_HOUR.get(machine, math.inf), machine, gpu)
        for machine, (gpu, count) in MACHINE_TYPES.items()
        if count == 1 and gpu != hw.gpu_type and _fits(model, gpu, 1) and machine not in GPUS[gpu].spot_only
    )
    if single:
        _, machine, gpu = single[0]
        fixes.append(f"gpuType {gpu} ({machine})")
    same = sorted(
        (count, machine)
        for machine, count in GPUS[hw.gpu_type].machine_types.items()
        if count > 1 and _fits(model, hw.gpu_type, count)
    )
    if same:
        count, machine = same[0]
        fixes.append(f"gpuCount {count} with tensorParallelSize {count} ({machine})")
    for quant in ("fp8", "int8", "int4"):
        candidate = model.model_copy(update={"quantization": quant})
        if _fits(candidate, hw.gpu_type, model.tensor_parallel_size):
            note = "" if quant != "int4" else " (a pre-quantized int4 checkpoint)"
            fixes.append(f"quantization {quant}{note}")
            break
    return fixes or ["a larger GPU"]
