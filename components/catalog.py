"""Static facts the planner relies on: GPUs, the GCE machine types that carry them, models, and prices.

Kept as plain data so that reviewers can check each figure against its source without reading any logic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    gce_name: str  # GCE accelerator type, e.g. nvidia-l4
    vertex_enum: str  # Vertex AI AcceleratorType enum
    memory_gb: int
    machine_types: dict[str, int]  # machine type -> GPUs it carries
    spot_only: frozenset[str] = frozenset()  # machine types sold only as Spot / flex-start


# Source: https://cloud.google.com/compute/docs/gpus and
# https://cloud.google.com/compute/docs/accelerator-optimized-machines (as summarised in DESIGN.md).
GPUS: dict[str, Gpu] = {
    g.gce_name: g
    for g in (
        Gpu(
            "nvidia-l4",
            "NVIDIA_L4",
            24,
            {
                "g2-standard-4": 1,
                "g2-standard-8": 1,
                "g2-standard-12": 1,
                "g2-standard-16": 1,
                "g2-standard-32": 1,
                "g2-standard-24": 2,
                "g2-standard-48": 4,
                "g2-standard-96": 8,
            },
        ),
        Gpu(
            "nvidia-tesla-a100",
            "NVIDIA_TESLA_A100",
            40,
            {"a2-highgpu-1g": 1, "a2-highgpu-2g": 2, "a2-highgpu-4g": 4, "a2-highgpu-8g": 8},
        ),
        Gpu(
            "nvidia-a100-80gb",
            "NVIDIA_A100_80GB",
            80,
            {"a2-ultragpu-1g": 1, "a2-ultragpu-2g": 2, "a2-ultragpu-4g": 4, "a2-ultragpu-8g": 8},
        ),
        Gpu(
            "nvidia-h100-80gb",
            "NVIDIA_H100_80GB",
            80,
            {"a3-highgpu-1g": 1, "a3-highgpu-2g": 2, "a3-highgpu-4g": 4, "a3-highgpu-8g": 8},
            spot_only=frozenset({"a3-highgpu-1g", "a3-highgpu-2g", "a3-highgpu-4g"}),
        ),
        Gpu("nvidia-h100-mega-80gb", "NVIDIA_H100_MEGA_80GB", 80, {"a3-megagpu-8g": 8}),
        Gpu("nvidia-h200-141gb", "NVIDIA_H200_141GB", 141, {"a3-ultragpu-8g": 8}),
        Gpu(
            "nvidia-rtx-pro-6000",
            "NVIDIA_RTX_PRO_6000",
            96,
            {"g4-standard-48": 1, "g4-standard-96": 2, "g4-standard-192": 4, "g4-standard-384": 8},
        ),
    )
}

MACHINE_TYPES: dict[str, tuple[str, int]] = {
    machine: (gpu.gce_name, count) for gpu in GPUS.values() for machine, count in gpu.machine_types.items()
}


@dataclass(frozen=True)
class Model:
    hf_id: str
    params_billions: float  # every parameter that must be resident (all MoE experts included)
    unquantized_billions: float  # embeddings/norms that weight-only quantization leaves in 16-bit
    max_context: int
    # KV-cache geometry. Gemma interleaves sliding-window (local) and global attention layers; only global layers
    # hold the whole context. Figures follow the Gemma 3 family layout (5 local : 1 global, 1024-token window) and
    # are planning estimates: check them against the checkpoint's config.json when it matters.
    layers: int
    kv_heads: int
    head_dim: int
    global_every: int = 6
    sliding_window: int = 1024
    moe: bool = False


# Parameter totals reproduce the seed's GPU memory table (weights = params x bytes/param): E4B FP16 10 GB,
# 26B BF16 52 GB, 31B BF16 62 GB; the INT8 rows (6 GB, 28 GB) follow from the 16-bit embedding share.
MODELS: dict[str, Model] = {
    m.hf_id: m
    for m in (
        Model("google/gemma-4-E2B-it", 2.5, 0.5, 32_768, layers=30, kv_heads=2, head_dim=256),
        Model("google/gemma-4-E4B-it", 5.0, 1.0, 32_768, layers=35, kv_heads=2, head_dim=256),
        Model("google/gemma-4-26B-A4B-it", 26.0, 2.0, 131_072, layers=46, kv_heads=8, head_dim=128, moe=True),
        Model("google/gemma-4-31B-it", 31.0, 2.0, 131_072, layers=62, kv_heads=16, head_dim=128),
    )
}

# Ids that appear in older guides (the seed among them) but do not exist on Hugging Face.
MODEL_ALIASES: dict[str, str] = {
    "google/gemma-4-26b": "google/gemma-4-26B-A4B-it",
    "google/gemma-4-31b": "google/gemma-4-31B-it",
}

# On-demand and Spot prices per machine per hour (GPUs, vCPUs and memory together), us-central1, USD.
# Source: https://cloud.google.com/compute/vm-instance-pricing#accelerator-optimized and
# https://cloud.google.com/compute/gpus-pricing, list prices as recorded on PRICES_AS_OF; other regions differ
# (often +10-40 %) and committed-use discounts are not applied. An estimate for budgeting, not a quote.
PRICES_AS_OF = "2026-06-01"
PRICES_SOURCE = (
    "https://cloud.google.com/compute/vm-instance-pricing (us-central1, on-demand and Spot list prices)"
)
ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "g2-standard-4": 0.71,
    "g2-standard-8": 0.85,
    "g2-standard-12": 1.00,
    "g2-standard-16": 1.15,
    "g2-standard-24": 2.00,
    "g2-standard-32": 1.73,
    "g2-standard-48": 4.00,
    "g2-standard-96": 8.00,
    "a2-highgpu-1g": 3.67,
    "a2-highgpu-2g": 7.35,
    "a2-highgpu-4g": 14.69,
    "a2-highgpu-8g": 29.39,
    "a2-ultragpu-1g": 5.07,
    "a2-ultragpu-2g": 10.14,
    "a2-ultragpu-4g": 20.28,
    "a2-ultragpu-8g": 40.55,
    "a3-highgpu-1g": 11.06,
    "a3-highgpu-2g": 22.12,
    "a3-highgpu-4g": 44.25,
    "a3-highgpu-8g": 88.49,
    "a3-megagpu-8g": 92.00,
    "a3-ultragpu-8g": 84.81,
    "g4-standard-48": 4.50,
    "g4-standard-96": 9.00,
    "g4-standard-192": 18.00,
    "g4-standard-384": 36.00,
}
# Spot VMs are billed at a variable discount; 0.35 of on-demand is typical for GPU families (60-70 % off).
SPOT_PRICE_FACTOR = 0.35
# Vertex AI online prediction bills the node (machine + accelerator) with a management premium over GCE.
# Source: https://cloud.google.com/vertex-ai/pricing#prediction-prices (custom-trained models); ~1.15 x GCE.
VERTEX_PRICE_FACTOR = 1.15
HOURS_PER_MONTH = 730
