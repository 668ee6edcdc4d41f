"""`VertexVllmEndpoint`: vLLM on a Vertex AI dedicated endpoint, called with the OpenAI SDK.

Children: a dedicated, regional, labelled `gcp.vertex.AiEndpoint` (stable: its URL survives model updates), a service
account for the serving container, the HF token in Secret Manager readable only by that account, and the
`VertexModelDeployment` dynamic resource that uploads the container as a Model and deploys it (blue/green on change).

URL shape (checked against Google's docs):
- The model is uploaded with `invokeRoutePrefix: "/*"`, so "/invoke/foo/bar" is forwarded to the container as
  "/foo/bar"; invoke-enabled models can be deployed only to dedicated endpoints, and only one of predictRoute or
  invokeRoutePrefix may be set (https://cloud.google.com/vertex-ai/docs/predictions/use-arbitrary-custom-routes).
- The REST method is `POST https://{service-endpoint}/v1/{endpoint}/invoke/**` with
  endpoint = projects/{project}/locations/{location}/endpoints/{endpoint}
  (https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest/v1/projects.locations.endpoints.invoke/invoke);
  a dedicated endpoint serves it on its own DNS name, `Endpoint.dedicatedEndpointDns`
  ({endpoint_id}.{region}-{project_number}.prediction.vertexai.goog).
So the OpenAI base URL is `https://{dedicatedEndpointDns}/v1/projects/{p}/locations/{r}/endpoints/{id}/invoke/v1`, and
the SDK's POST {base}/chat/completions reaches vLLM's /v1/chat/completions: DESIGN.md's shape, confirmed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pulumi
import pulumi_gcp as gcp

from .capacity import plan_capacity
from .catalog import GPUS
from .config import ConfigError, StackConfig
from .cost import estimate_cost
from .naming import check_component_name, label_value, short_id, standard_labels
from .secrets import ManagedSecret
from .vertex_provider import VertexModelDeployment, VertexModelDeploymentProvider
from .vllm_args import PORT, render_vllm_args

# vLLM's multi-GPU workers talk through /dev/shm (the gce path runs the container with --ipc=host). Multi-GPU machine
# types have >= 96 GB of RAM, so 16 GB fits; a single GPU needs little.
SHARED_MEMORY_MB_MULTI_GPU = 16384
SHARED_MEMORY_MB_SINGLE_GPU = 2048


# ---------------------------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------------------------
def check_endpoint_config(name: str, config: StackConfig) -> None:
    """Reject what cannot work on Vertex, before anything is created."""
    try:
        check_component_name(name, "VertexVllmEndpoint")
    except ValueError as err:
        raise ConfigError([str(err)]) from None
    if not config.vertex.dedicated_endpoint:
        raise ConfigError(
            [
                "vllm-gcp:vertex.dedicatedEndpoint: false is not supported: the OpenAI routes are served through "
                "Vertex's invoke route, which Google allows only on dedicated endpoints. Set vertex.dedicatedEndpoint: "
                "true"
            ]
        )


def endpoint_numeric_id(project: str, region: str, program: str, stack: str, name: str) -> str:
    """The endpoint's id, chosen by us: numeric, no leading zero, 10 digits (the API's rule for endpoint ids).

    Deterministic, so a re-run addresses the same endpoint; distinct per GCP project, region, Pulumi program (project
    name), stack and component.
    """
    digest = int(hashlib.sha256(f"{project}/{region}/{program}/{stack}/{name}".encode()).hexdigest(), 16)
    return str(1_000_000_000 + digest % 9_000_000_000)


def deployment_key(program: str, stack: str, name: str) -> str:
    """The `vllm-gcp-deployment` label value that ties Vertex Models to this component of this stack.

    It includes the Pulumi project name: two programs that both have a stack `prod` and a component `vllm` in one GCP
    project must not adopt (or delete) each other's Models.
    """
    return label_value(f"{program}-{stack}-{name}")


def endpoint_labels(config: StackConfig, stack: str, name: str) -> dict[str, str]:
    labels = standard_labels(name, config.environment, config.model.served_name or "")
    return labels | {"vllm-gcp-stack": label_value(stack)}


def shared_memory_mb(config: StackConfig) -> int:
    return SHARED_MEMORY_MB_MULTI_GPU if config.hardware.gpu_count > 1 else SHARED_MEMORY_MB_SINGLE_GPU


def openai_base_url(dedicated_dns: str, endpoint_name: str) -> str:
    """`https://{dns}/v1/projects/{p}/locations/{r}/endpoints/{id}/invoke/v1` (see the module docstring)."""
    host = dedicated_dns.removeprefix("https://").removeprefix("http://").rstrip("/")
    return f"https://{host}/v1/{endpoint_name}/invoke/v1"


def deployment_inputs(
    config: StackConfig,
    *,
    name: str,
    program: str,
    stack: str,
    endpoint_name: pulumi.Input[str],
    image_uri: pulumi.Input[str],
    service_account: pulumi.Input[str],
    hf_token_secret_version: pulumi.Input[str] | None,
) -> dict[str, Any]:
    """The VertexModelDeployment inputs (see VertexModelDeploymentInputs) from the stack config."""
    capacity = plan_capacity(config)
    props: dict[str, Any] = {
        "project": config.project,
        "region": config.region,
        "endpointName": endpoint_name,
        "deploymentKey": deployment_key(program, stack, name),
        "displayName": f"{name}-{config.model.served_name}"[:128],
        "labels": endpoint_labels(config, stack, name),
        "imageUri": image_uri,
        "vllmArgs": render_vllm_args(config.model, config.hardware.gpu_count),
        "servedModelName": config.model.served_name,
        "containerPort": PORT,
        "healthRoute": "/health",
        "invokeRoutePrefix": "/*",
        "sharedMemorySizeMb": shared_memory_mb(config),
        "deploymentTimeoutSeconds": capacity.startup_budget_seconds,
        "machineType": config.hardware.machine_type,
        "acceleratorType": GPUS[config.hardware.gpu_type].vertex_enum,
        "acceleratorCount": config.hardware.gpu_count,
        "minReplicas": config.scaling.min_replicas,
        "maxReplicas": config.scaling.max_replicas,
        "spot": config.hardware.spot,
        "targetWaitingRequests": max(1, round(config.scaling.target_waiting_requests_per_replica)),
        "serviceAccount": service_account,
    }
    if hf_token_secret_version is not None:
        props["hfTokenSecretVersion"] = hf_token_secret_version
    return props


# ---------------------------------------------------------------------------------------------------------------------
# The component
# ---------------------------------------------------------------------------------------------------------------------
class VertexVllmEndpoint(pulumi.ComponentResource):
    """A Vertex AI dedicated endpoint serving `config.model` with vLLM, for the OpenAI SDK (OAuth token as API key)."""

    openai_base_url: pulumi.Output[str]
    served_model_name: pulumi.Output[str]
    endpoint_id: pulumi.Output[str]
    endpoint_name: pulumi.Output[str]
    dedicated_endpoint_dns: pulumi.Output[str]
    estimated_monthly_cost_usd: pulumi.Output[float]

    def __init__(
        self,
        name: str,
        config: StackConfig,
        image_uri: pulumi.Input[str],
        hf_token: pulumi.Input[str] | None,
        opts: pulumi.ResourceOptions | None = None,
        provider: VertexModelDeploymentProvider | None = None,
    ) -> None:
        super().__init__("vllm-gcp:vertex:VllmEndpoint", name, None, opts)
        check_endpoint_config(name, config)
        program, stack = pulumi.get_project(), pulumi.get_stack()
        if config.scaling.min_replicas < 2:
            pulumi.log.warn(
                f"{name}: scaling.minReplicas is {config.scaling.min_replicas}; Vertex AI's SLA for custom-model "
                "online prediction covers models deployed on 2 or more nodes (https://cloud.google.com/vertex-ai/sla)"
            )
        labels = endpoint_labels(config, stack, name)
        child = pulumi.ResourceOptions(parent=self)

        # The identity the container runs as. Its only grant: read its own HF token secret (below). Vertex pulls the
        # image with its own service agent, not with this account.
        self.service_account = gcp.serviceaccount.Account(
            f"{name}-sa",
            account_id=short_id(name, max_len=30, suffix="-vertex", min_len=6),
            display_name=f"vLLM on Vertex AI ({name})",
            description="Runs the vLLM serving container of a Vertex AI deployment; reads only its HF token secret.",
            project=config.project,
            opts=child,
        )
        self.endpoint = gcp.vertex.AiEndpoint(
            f"{name}-endpoint",
            name=endpoint_numeric_id(config.project, config.region, program, stack, name),
            display_name=f"{name} ({config.model.served_name})",
            description=f"vLLM serving {config.model.id}; managed by the vllm-gcp stack {stack}",
            location=config.region,
            region=config.region,
            project=config.project,
            labels=labels,
            dedicated_endpoint_enabled=True,
            opts=child,
        )

        secret_version: pulumi.Output[str] | None = None
        depends: list[pulumi.Resource] = [self.endpoint]
        self.hf_token: ManagedSecret | None = None
        if hf_token is not None:
            # Readable by the serving account only; the deployment gets the version *name*, never the value.
            self.hf_token = ManagedSecret(
                f"{name}-hf-token",
                secret_id=f"{name}-hf-token",
                value=hf_token,
                accessors=[self.service_account.member],
                project=config.project,
                labels=labels,
                opts=child,
            )
            secret_version = self.hf_token.version_name
            depends.append(self.hf_token)  # the grant exists before the container starts and reads the secret

        self.deployment = VertexModelDeployment(
            f"{name}-deployment",
            deployment_inputs(
                config,
                name=name,
                program=program,
                stack=stack,
                endpoint_name=self.endpoint.id,
                image_uri=image_uri,
                service_account=self.service_account.email,
                hf_token_secret_version=secret_version,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
            provider=provider,
        )

        self.endpoint_id = self.endpoint.name
        self.endpoint_name = self.endpoint.id
        self.dedicated_endpoint_dns = self.endpoint.dedicated_endpoint_dns
        # Known once the deployment is done, so a client never gets a URL that serves nothing yet.
        self.openai_base_url = pulumi.Output.all(
            self.endpoint.dedicated_endpoint_dns, self.endpoint.id, self.deployment.id
        ).apply(lambda values: openai_base_url(values[0], values[1]))
        self.served_model_name = pulumi.Output.from_input(config.model.served_name or "")
        self.estimated_monthly_cost_usd = pulumi.Output.from_input(float(estimate_cost(config)["monthlyUsd"]))
        self.register_outputs(
            {
                "openai_base_url": self.openai_base_url,
                "served_model_name": self.served_model_name,
                "endpoint_id": self.endpoint_id,
                "endpoint_name": self.endpoint_name,
                "dedicated_endpoint_dns": self.dedicated_endpoint_dns,
                "estimated_monthly_cost_usd": self.estimated_monthly_cost_usd,
            }
        )
