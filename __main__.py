"""vllm-gcp: load the stack config, build the chosen platform, export what clients need. No resource logic here."""

from typing import Any

import pulumi

from components.capacity import plan_capacity
from components.config import ConfigError, load_config
from components.cost import estimate_cost
from components.monitoring import VllmMonitoring
from components.naming import deployment_name
from components.serving_image import ServingImage

try:
    loaded = load_config()
    plan_capacity(loaded.stack)  # a misfit fails here, at preview, before anything is created
except ConfigError as error:
    raise pulumi.RunError(str(error)) from None

config = loaded.stack
# One name per stack: the ids derived from it stay unique when several stacks share a GCP project.
NAME = deployment_name(pulumi.get_stack())
for warning in config.warnings:
    pulumi.log.warn(warning)

image = ServingImage(NAME, config)


def monitoring_for(**platform_names: Any) -> VllmMonitoring:
    """The four alerts, the dashboard (and on gce the uptime check), narrowed to this deployment's resources."""
    return VllmMonitoring(
        NAME,
        platform=config.platform,
        project=config.project,
        served_model_name=config.model.served_name or "",
        notification_channels=config.monitoring.notification_channels,
        thresholds=config.monitoring.alerts,
        **platform_names,
    )


if config.platform == "gce":
    from components.gce_service import VllmGceService
    from components.load_balancer import VllmLoadBalancer

    service = VllmGceService(NAME, config, image.image_ref, loaded.hf_token, loaded.api_keys)
    front = VllmLoadBalancer(
        NAME, config, instance_group=service.instance_group, named_port=service.named_port
    )
    monitoring = monitoring_for(
        uptime_host=config.gce.domain or front.ip_address,
        uptime_use_ssl=config.gce.domain is not None,
        lb_url_map_name=front.url_map.name,
        instance_group_name=service.instance_group_manager.name,
    )
    pulumi.export("openaiBaseUrl", front.openai_base_url)
    pulumi.export("apiKey", service.api_key)
    pulumi.export("loadBalancerIp", front.ip_address)
    pulumi.export("instanceGroup", service.instance_group)
else:
    from components.vertex_endpoint import VertexVllmEndpoint

    vertex = VertexVllmEndpoint(NAME, config, image.image_ref, loaded.hf_token)
    monitoring = monitoring_for(vertex_endpoint_id=vertex.endpoint_id)
    pulumi.export("openaiBaseUrl", vertex.openai_base_url)
    pulumi.export("endpointId", vertex.endpoint_id)
    pulumi.export("endpointName", vertex.endpoint_name)
    pulumi.export("dedicatedEndpointDns", vertex.dedicated_endpoint_dns)

pulumi.export("platform", config.platform)
pulumi.export("project", config.project)
pulumi.export("region", config.region)
pulumi.export("servedModelName", config.model.served_name)
pulumi.export("imageRef", image.image_ref)
pulumi.export("dashboardUrl", monitoring.dashboard_url)
pulumi.export("estimatedMonthlyCostUsd", estimate_cost(config)["monthlyUsd"])
