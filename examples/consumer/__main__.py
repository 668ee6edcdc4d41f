"""A consumer stack: a small internal Gemma endpoint built from the vllm-gcp components.

It imports `components` as an installed package (requirements.txt), builds its own validated config in Python
instead of reading the `vllm-gcp:` stack namespace, and composes the three gce components itself.
"""

import pulumi

from components.config import GceConfig, HardwareConfig, ModelConfig, ScalingConfig, StackConfig
from components.gce_service import VllmGceService
from components.load_balancer import VllmLoadBalancer
from components.serving_image import ServingImage

NAMESPACE = "vllm-consumer"

gcp_config = pulumi.Config("gcp")
region = gcp_config.get("region") or "us-central1"
config = StackConfig(
    project=gcp_config.require("project"),
    region=region,
    platform="gce",
    environment="staging",
    model=ModelConfig(id="google/gemma-4-E2B-it", served_name="gemma-4-e2b", max_model_len=8192),
    hardware=HardwareConfig(machine_type="g2-standard-8", gpu_type="nvidia-l4", gpu_count=1, spot=True),
    scaling=ScalingConfig(min_replicas=1, max_replicas=3, target_waiting_requests_per_replica=5),
    # Internal use only: Cloud Armor admits just the office range.
    gce=GceConfig(zones=[f"{region}-a", f"{region}-b"], allowed_source_ranges=["203.0.113.0/24"]),
)

image = ServingImage("team-llm", config)
service = VllmGceService(
    "team-llm",
    config,
    image_ref=image.image_ref,
    hf_token=pulumi.Config(NAMESPACE).get_secret("hfToken"),
    api_keys=None,  # generated, stored in Secret Manager, exported as a secret
)
front = VllmLoadBalancer(
    "team-llm", config, instance_group=service.instance_group, named_port=service.named_port
)

pulumi.export("openaiBaseUrl", front.openai_base_url)
pulumi.export("servedModelName", config.model.served_name)
pulumi.export("apiKey", service.api_key)
pulumi.export("imageRef", image.image_ref)
