"""Rendering of the `vllm serve` argument list from the model config (pure)."""

from __future__ import annotations

from .config import ConfigError, ModelConfig

PORT = 8000

# Our names -> vLLM 0.33's real --quantization methods. int8 on a MoE model quantizes the experts (the bulk of the
# weights) with experts_int8; on a dense model it is weight-only per-channel INT8. int4 checkpoints (e.g. W4A16
# exports) are compressed-tensors.
QUANTIZATION_METHODS = {"fp8": "fp8", "int4": "compressed-tensors", "awq": "awq", "gptq": "gptq"}

# Flags the stack owns: derived from typed config keys or needed for the platform to work.
OWNED_FLAGS = {
    "--model": "model.id",
    "--served-model-name": "model.servedName",
    "--dtype": "model.dtype",
    "--max-model-len": "model.maxModelLen",
    "--gpu-memory-utilization": "model.gpuMemoryUtilization",
    "--tensor-parallel-size": "model.tensorParallelSize",
    "--data-parallel-size": "hardware.gpuCount / model.tensorParallelSize",
    "--quantization": "model.quantization",
    "--load-format": "model.id (gs:// uses runai_streamer)",
    "--host": "the platform",
    "--port": "the platform (8000)",
    "--api-key": "vllm-gcp:apiKeys (a secret, passed as VLLM_API_KEY)",
    "--download-dir": "the platform's model cache",
}
_SHORT = {"-tp": "--tensor-parallel-size", "-q": "--quantization", "-dp": "--data-parallel-size"}


def quantization_method(model: ModelConfig) -> str | None:
    if model.quantization == "int8":
        moe = model.catalog is not None and model.catalog.moe
        return "experts_int8" if moe else "int8_per_channel_weight_only"
    return QUANTIZATION_METHODS.get(model.quantization or "")


def check_extra_args(extra_args: list[str]) -> None:
    problems = []
    for arg in extra_args:
        flag = arg.split("=", 1)[0]
        flag = _SHORT.get(flag, flag).replace("_", "-")
        if flag in OWNED_FLAGS:
            problems.append(
                f"vllm-gcp:model.extraArgs: {arg!r} overrides {flag}, which the stack sets from "
                f"{OWNED_FLAGS[flag]}; remove it from extraArgs and set that key instead"
            )
    if problems:
        raise ConfigError(problems)


def render_vllm_args(model: ModelConfig, gpu_count: int | None = None) -> list[str]:
    """The arguments after `vllm serve`. The model is passed with --model explicitly."""
    check_extra_args(model.extra_args)
    args = [
        "--model", model.id,
        "--served-model-name", model.served_name or "",
        "--host", "0.0.0.0",
        "--port", str(PORT),
        "--dtype", model.dtype,
        "--max-model-len", str(model.max_model_len),
        "--gpu-memory-utilization", f"{model.gpu_memory_utilization:g}",
        "--tensor-parallel-size", str(model.tensor_parallel_size),
    ]  # fmt: skip
    data_parallel = (gpu_count or model.tensor_parallel_size) // model.tensor_parallel_size
    if data_parallel > 1:
        args += ["--data-parallel-size", str(data_parallel)]
    method = quantization_method(model)
    if method:
        args += ["--quantization", method]
    if model.from_gcs:
        # Streams safetensors straight from GCS to the GPU: no Hugging Face download on a cold start.
        args += ["--load-format", "runai_streamer"]
    return args + list(model.extra_args)
