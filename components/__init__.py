"""vllm-gcp components: serve open models with vLLM on GCE or Vertex AI, from your own Pulumi program.

    from components import StackConfig, ServingImage, VllmGceService, VllmLoadBalancer

Names load lazily, so importing one part does not import every provider module (or google-cloud-aiplatform).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "StackConfig": "config",
    "parse_config": "config",
    "ConfigError": "config",
    "plan_capacity": "capacity",
    "render_vllm_args": "vllm_args",
    "ServingImage": "serving_image",
    "ManagedSecret": "secrets",
    "VllmGceService": "gce_service",
    "VllmLoadBalancer": "load_balancer",
    "VertexVllmEndpoint": "vertex_endpoint",
    "VllmMonitoring": "monitoring",
}
__all__ = [  # noqa: RUF022 (grouped as in _EXPORTS)
    "StackConfig",
    "parse_config",
    "ConfigError",
    "plan_capacity",
    "render_vllm_args",
    "ServingImage",
    "ManagedSecret",
    "VllmGceService",
    "VllmLoadBalancer",
    "VertexVllmEndpoint",
    "VllmMonitoring",
]

if TYPE_CHECKING:
    from .capacity import plan_capacity
    from .config import ConfigError, StackConfig, parse_config
    from .gce_service import VllmGceService
    from .load_balancer import VllmLoadBalancer
    from .monitoring import VllmMonitoring
    from .secrets import ManagedSecret
    from .serving_image import ServingImage
    from .vertex_endpoint import VertexVllmEndpoint
    from .vllm_args import render_vllm_args


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'components' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
