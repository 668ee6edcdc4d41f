"""`VllmGceService`: GPU VMs running vLLM in a regional managed instance group, private, self-healing, autoscaled.

Composed of: a dedicated service account with least-privilege roles; `ManagedSecret`s for the API key and the
Hugging Face token (per-secret accessor grants); `ServiceNetwork` (VPC, Cloud NAT, the load balancer's firewall
rule); an auto-named instance template; a regional MIG; a lenient autohealing health check; a regional autoscaler
on vLLM's queue depth. The load balancer in front is `components.load_balancer.VllmLoadBalancer`.

Choices a reader might question, and why:
- Spot VMs use `instance_termination_action=DELETE`. A MIG repairs a VM that stops or is deleted by anything but
  itself by *recreating* it from the template ("If a VM fails or is deleted by an action not initiated by the MIG,
  then the MIG automatically repairs the failed VM ... by recreating it":
  https://cloud.google.com/compute/docs/instance-groups/about-repair). STOP would keep nothing (the recreated VM
  gets fresh disks) and would bill the stopped VM's disks until the repair; DELETE frees them at once.
- Autoscaling signal: the Ops Agent writes vLLM's Prometheus metrics to Managed Service for Prometheus on the
  monitored resource `prometheus_target` (not `gce_instance`). For any resource type other than `gce_instance`
  the autoscaler treats the metric as a *per-group* metric: it sums the time series the filter selects, and the
  filter may use resource labels; `single_instance_assignment` is then the amount of work one VM should get
  (Compute API `AutoscalingPolicyCustomMetricUtilization.filter` and `.singleInstanceAssignment`;
  https://cloud.google.com/compute/docs/autoscaler/scaling-cloud-monitoring-metrics). Summed waiting requests
  divided by `targetWaitingRequestsPerReplica` is exactly "that many waiting requests per replica". The filter
  pins the scrape job (unique per service, set in the Ops Agent config of the startup script) and the served
  model, because `prometheus_target` series from other VMs in the project would otherwise be summed in. The
  resource labels the Ops Agent sets (`cluster="__gce__"`, `namespace="<instance id>/<name>"`, `job`,
  `instance`, `location`) come from the Ops Agent's GCE resource detection (GoogleCloudPlatform/ops-agent,
  confgenerator). A queue metric drops to zero as soon as capacity suffices, so scale-in is rate-limited
  (one VM per window) and the cool-down exceeds the planned cold start.
- Disks: DLVM boot image (see startup_script.py) on a 150 GB boot disk: the DLVM image itself plus the vLLM
  image, compressed and extracted (~10 + ~20 GB). The model cache is a separate disk sized from the planner.
  Machine series that accept only Hyperdisk (G4, A3 Ultra, A4) get `hyperdisk-balanced`, the rest `pd-balanced`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_random as random

from .capacity import CapacityPlan, plan_capacity, weights_gb
from .config import ConfigError, StackConfig
from .naming import check_component_name, service_account_id, short_id, standard_labels
from .network import ServiceNetwork
from .secrets import ManagedSecret
from .startup_script import (
    BOOT_IMAGE,
    BOOT_IMAGE_METADATA,
    MODEL_CACHE_DEVICE_NAME,
    SERVE_PORT,
    StartupScriptParams,
    render_ops_agent_config,
    render_startup_script,
)
from .vllm_args import render_vllm_args

NAMED_PORT = "http"
AUTOSCALING_METRIC = "prometheus.googleapis.com/vllm:num_requests_waiting/gauge"
RUNNING_METRIC = "prometheus.googleapis.com/vllm:num_requests_running/gauge"
HEALTH_PATH = "/health"
BOOT_DISK_GB = 150
MIN_CACHE_DISK_GB = 50
CACHE_MARGIN_GB = 20
# Series whose machine types accept only Hyperdisk (no pd-balanced / pd-ssd).
HYPERDISK_ONLY_PREFIXES = ("g4-", "a3-ultragpu-", "a4-")
PROJECT_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter")
# Lenient on purpose: repair only a VM that has been unhealthy for minutes, never one that is merely busy.
AUTOHEAL_CHECK = {
    "check_interval_sec": 30,
    "timeout_sec": 10,
    "healthy_threshold": 1,
    "unhealthy_threshold": 10,
}
# After a new VM turns healthy, give the load balancer's own (stricter) check time to admit it before the update
# removes an old VM.
MIN_READY_SECONDS = 60
_AR_IMAGE_RE = re.compile(
    r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repository>[^/]+)/.+@sha256:[0-9a-f]{64}"
)


# ---- pure helpers ---------------------------------------------------------------------------------------------
def model_cache_disk_gb(config: StackConfig) -> int:
    """Room for the checkpoint twice (a re-download beside a partial one) plus margin, in 10 GB steps."""
    model = config.model
    if model.from_gcs:
        return MIN_CACHE_DISK_GB  # runai_streamer streams from GCS to the GPU; nothing is cached on disk
    # Online quantization (fp8, int8) downloads the 16-bit checkpoint.
    online = model.quantization in ("fp8", "int8")
    download = weights_gb(model.model_copy(update={"quantization": None}) if online else model)
    return max(MIN_CACHE_DISK_GB, int(math.ceil((download * 2 + CACHE_MARGIN_GB) / 10) * 10))


def disk_type_for(machine_type: str) -> str:
    return "hyperdisk-balanced" if machine_type.startswith(HYPERDISK_ONLY_PREFIXES) else "pd-balanced"


def prometheus_job_name(name: str) -> str:
    """The Ops Agent scrape job: it becomes `resource.labels.job` and scopes the autoscaler to this service."""
    return short_id(f"vllm-gcp-{name}", max_len=63)


def autoscaler_metric_filter(job: str, served_model_name: str) -> str:
    # Only '=' and AND are allowed in an autoscaler filter.
    return (
        'resource.type = "prometheus_target" AND resource.labels.cluster = "__gce__" AND '
        f'resource.labels.job = "{job}" AND metric.labels.model_name = "{served_model_name}"'
    )


def running_target(config: StackConfig, plan: CapacityPlan) -> float:
    """Running requests per replica the autoscaler aims for: configured, or 80 % of what one replica batches."""
    configured = config.scaling.target_running_requests_per_replica
    return configured if configured is not None else max(1.0, round(0.8 * plan.concurrent_requests))


def rollout_timeout_minutes(plan: CapacityPlan, max_replicas: int) -> int:
    """How long `pulumi up` waits for the group to become stable: surged VMs boot in parallel, so a few cold
    starts, with room for GPU stockouts that make the MIG retry (Terraform's default, 15 minutes, is too short)."""
    return max(30, math.ceil(plan.startup_budget_seconds * (2 + max_replicas // 4) / 60))


def autoscaler_cooldown_seconds(plan: CapacityPlan) -> int:
    """Longer than the planned cold start, so a booting VM's empty queue does not count as spare capacity."""
    return max(plan.autohealing_initial_delay_seconds, plan.cold_start_seconds + 60)


def scheduling(config: StackConfig) -> gcp.compute.InstanceTemplateSchedulingArgs:
    # GPUs cannot live-migrate: host maintenance must stop the VM.
    if config.hardware.spot:
        return gcp.compute.InstanceTemplateSchedulingArgs(
            on_host_maintenance="TERMINATE",
            provisioning_model="SPOT",
            preemptible=True,
            automatic_restart=False,
            instance_termination_action="DELETE",
        )
    return gcp.compute.InstanceTemplateSchedulingArgs(
        on_host_maintenance="TERMINATE",
        provisioning_model="STANDARD",
        preemptible=False,
        automatic_restart=True,
    )


def artifact_registry_repository(image_ref: str) -> dict[str, str]:
    """`{location, project, repository}` of an Artifact Registry image reference by digest."""
    match = _AR_IMAGE_RE.fullmatch(image_ref)
    if not match:
        raise ValueError(
            f"image_ref {image_ref!r} is not an Artifact Registry image by digest; pass ServingImage(...).image_ref "
            "(REGION-docker.pkg.dev/PROJECT/REPO/IMAGE@sha256:<digest>)"
        )
    return match.groupdict()


def weights_bucket(model_id: str) -> str:
    """`gs://bucket/path/to/weights` -> `bucket`."""
    bucket = model_id.removeprefix("gs://").split("/", 1)[0]
    if not model_id.startswith("gs://") or not bucket:
        raise ValueError(f"model.id: {model_id!r} is not a gs://BUCKET/PATH location")
    return bucket


def serving_api_key(keys: Any) -> str:
    """The one key vLLM serves: VLLM_API_KEY holds a single key in vLLM 0.33."""
    values = [keys] if isinstance(keys, str) else list(keys or [])
    if len(values) != 1 or not isinstance(values[0], str) or not values[0].strip():
        # Never echo key material: only the count.
        raise ConfigError(
            [
                f"vllm-gcp:apiKeys: {len(values)} keys given; the gce platform serves exactly one key (vLLM reads "
                "one VLLM_API_KEY). Set one key, or remove apiKeys to have one generated"
            ]
        )
    return values[0]


# ---- the component --------------------------------------------------------------------------------------------
class VllmGceService(pulumi.ComponentResource):
    """vLLM on GPU VMs in a regional MIG. Put `VllmLoadBalancer` in front of `instance_group`."""

    instance_group: pulumi.Output[str]
    instance_group_manager: gcp.compute.RegionInstanceGroupManager
    instance_template: gcp.compute.InstanceTemplate
    autoscaler: gcp.compute.RegionAutoscaler
    service_account: gcp.serviceaccount.Account
    service_account_email: pulumi.Output[str]
    api_key: pulumi.Output[str]
    startup_script: pulumi.Output[str]
    named_port: str = NAMED_PORT
    serve_port: int = SERVE_PORT
    health_path: str = HEALTH_PATH
    prometheus_job: str
    network: ServiceNetwork
    capacity: CapacityPlan

    def __init__(
        self,
        name: str,
        config: StackConfig,
        image_ref: pulumi.Input[str],
        hf_token: pulumi.Input[str] | None = None,
        api_keys: pulumi.Input[Sequence[str]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("vllm-gcp:gce:VllmService", name, None, opts)
        check_component_name(name, "VllmGceService")
        if not config.gce.zones:
            raise ConfigError(
                [
                    f"vllm-gcp:gce.zones: empty; VllmGceService needs the zones of {config.region} to spread VMs over"
                ]
            )
        self.capacity = capacity = plan_capacity(config)  # raises ConfigError before any resource exists
        if isinstance(image_ref, str):
            artifact_registry_repository(
                image_ref
            )  # a literal reference is checked now; an Output when known
        child = pulumi.ResourceOptions(parent=self)
        project, region = config.project, config.region
        labels = standard_labels(name, config.environment, config.model.served_name or "")
        self.prometheus_job = prometheus_job_name(name)
        image = pulumi.Output.from_input(image_ref)

        # -- identity: its own service account, only the roles the VM uses ------------------------------------
        self.service_account = gcp.serviceaccount.Account(
            f"{name}-sa",
            project=project,
            account_id=service_account_id(name),
            display_name=f"vllm-gcp {name} GPU VMs",
            description="Runs the vLLM VMs: writes logs and metrics, pulls the image, reads its own secrets.",
            opts=child,
        )
        member = self.service_account.member
        grants: list[pulumi.Resource] = [
            gcp.projects.IAMMember(
                f"{name}-{role.split('.')[-1].lower()}", project=project, role=role, member=member, opts=child
            )
            for role in PROJECT_ROLES
        ]
        repository = image.apply(artifact_registry_repository)
        grants.append(
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-image-reader",
                project=repository["project"],
                location=repository["location"],
                repository=repository["repository"],
                role="roles/artifactregistry.reader",
                member=member,
                opts=child,
            )
        )

        if config.model.from_gcs:
            # runai_streamer reads the weights with the VM's credentials: read access to that bucket only.
            grants.append(
                gcp.storage.BucketIAMMember(
                    f"{name}-weights-reader",
                    bucket=weights_bucket(config.model.id),
                    role="roles/storage.objectViewer",
                    member=member,
                    opts=child,
                )
            )

        # -- secrets: Secret Manager, read only by this service account --------------------------------------
        if api_keys is None:
            generated = random.RandomPassword(f"{name}-api-key-value", length=48, special=False, opts=child)
            self.api_key = pulumi.Output.secret(generated.result)
        else:
            self.api_key = pulumi.Output.secret(pulumi.Output.from_input(api_keys).apply(serving_api_key))
        sid = short_id(name, max_len=40)
        api_key_secret = ManagedSecret(
            f"{name}-api-key",
            secret_id=f"{sid}-api-key",
            value=self.api_key,
            accessors=[member],
            project=project,
            labels=labels,
            opts=child,
        )
        secrets = [api_key_secret]
        hf_version: pulumi.Output[str | None] = pulumi.Output.from_input(None)
        if hf_token is not None:
            hf_secret = ManagedSecret(
                f"{name}-hf-token",
                secret_id=f"{sid}-hf-token",
                value=hf_token,
                accessors=[member],
                project=project,
                labels=labels,
                opts=child,
            )
            secrets.append(hf_secret)
            hf_version = hf_secret.version_name

        # -- network -------------------------------------------------------------------------------------------
        self.network = ServiceNetwork(
            f"{name}-net",
            project=project,
            region=region,
            target_service_account=self.service_account.email,
            serve_port=SERVE_PORT,
            opts=child,
        )

        # -- the VM ----------------------------------------------------------------------------------------------
        vllm_args = render_vllm_args(config.model, config.hardware.gpu_count)
        job_config = render_ops_agent_config(SERVE_PORT, job_name=self.prometheus_job)

        def render(values: list[Any]) -> str:
            image_value, api_key_version, hf_token_version = values
            return render_startup_script(
                StartupScriptParams(
                    image=image_value,
                    vllm_args=vllm_args,
                    api_key_secret_version=api_key_version,
                    hf_token_secret_version=hf_token_version,
                    model_cache_device_name=MODEL_CACHE_DEVICE_NAME,
                    gpu_count=config.hardware.gpu_count,
                    ops_agent_config=job_config,
                )
            )

        # Only the image reference and Secret Manager resource names go in: no secret value.
        self.startup_script = pulumi.Output.all(image, api_key_secret.version_name, hf_version).apply(render)
        disk_type = disk_type_for(config.hardware.machine_type)
        self.instance_template = gcp.compute.InstanceTemplate(
            f"{name}-template",
            # Auto-named from a prefix: a changed template is created before the old one is deleted.
            name_prefix=f"{short_id(name, max_len=36)}-",
            project=project,
            region=region,
            description=f"vllm-gcp {name}: {config.model.id} on {config.hardware.machine_type}",
            machine_type=config.hardware.machine_type,
            guest_accelerators=[
                gcp.compute.InstanceTemplateGuestAcceleratorArgs(
                    type=config.hardware.gpu_type, count=config.hardware.gpu_count
                )
            ],
            scheduling=scheduling(config),
            disks=[
                gcp.compute.InstanceTemplateDiskArgs(
                    boot=True,
                    source_image=BOOT_IMAGE,
                    disk_size_gb=BOOT_DISK_GB,
                    disk_type=disk_type,
                    auto_delete=True,
                    labels=labels,
                ),
                gcp.compute.InstanceTemplateDiskArgs(
                    boot=False,
                    type="PERSISTENT",
                    device_name=MODEL_CACHE_DEVICE_NAME,  # the startup script mounts /dev/disk/by-id/google-<name>
                    disk_size_gb=model_cache_disk_gb(config),
                    disk_type=disk_type,
                    auto_delete=True,
                    labels=labels,
                ),
            ],
            network_interfaces=[
                # No access_configs: no external IP. Egress goes through Cloud NAT.
                gcp.compute.InstanceTemplateNetworkInterfaceArgs(
                    network=self.network.network.id,
                    subnetwork=self.network.subnetwork.id,
                    nic_type="GVNIC",
                )
            ],
            service_account=gcp.compute.InstanceTemplateServiceAccountArgs(
                email=self.service_account.email, scopes=["cloud-platform"]
            ),
            shielded_instance_config=gcp.compute.InstanceTemplateShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
            ),
            metadata={
                "startup-script": self.startup_script,
                "enable-oslogin": "TRUE",
                "block-project-ssh-keys": "TRUE",
                **BOOT_IMAGE_METADATA,
            },
            labels=labels,
            opts=child,
        )

        # -- the group -------------------------------------------------------------------------------------------
        self.autoheal_health_check = gcp.compute.HealthCheck(
            f"{name}-autoheal-hc",
            project=project,
            description=f"vllm-gcp {name}: autohealing (lenient; the load balancer's check is stricter)",
            http_health_check=gcp.compute.HealthCheckHttpHealthCheckArgs(
                port=SERVE_PORT, request_path=HEALTH_PATH
            ),
            **AUTOHEAL_CHECK,
            opts=child,
        )
        zones = list(dict.fromkeys(config.gce.zones))
        rollout_timeout = f"{rollout_timeout_minutes(capacity, config.scaling.max_replicas)}m"
        self.instance_group_manager = gcp.compute.RegionInstanceGroupManager(
            f"{name}-mig",
            project=project,
            region=region,
            base_instance_name=short_id(name, max_len=50),
            distribution_policy_zones=zones,
            distribution_policy_target_shape="BALANCED",
            versions=[
                gcp.compute.RegionInstanceGroupManagerVersionArgs(
                    name="primary", instance_template=self.instance_template.self_link
                )
            ],
            named_ports=[
                gcp.compute.RegionInstanceGroupManagerNamedPortArgs(name=NAMED_PORT, port=SERVE_PORT)
            ],
            auto_healing_policies=gcp.compute.RegionInstanceGroupManagerAutoHealingPoliciesArgs(
                health_check=self.autoheal_health_check.id,
                initial_delay_sec=capacity.autohealing_initial_delay_seconds,
            ),
            update_policy=gcp.compute.RegionInstanceGroupManagerUpdatePolicyArgs(
                type="PROACTIVE",
                minimal_action="REPLACE",
                most_disruptive_allowed_action="REPLACE",
                # Surge one VM per zone, never take one away: capacity never drops during an update.
                max_unavailable_fixed=0,
                max_surge_fixed=len(zones),
                replacement_method="SUBSTITUTE",
                min_ready_sec=MIN_READY_SECONDS,
                # BALANCED target shape requires proactive redistribution to be off.
                instance_redistribution_type="NONE",
            ),
            instance_lifecycle_policy=gcp.compute.RegionInstanceGroupManagerInstanceLifecyclePolicyArgs(
                default_action_on_failure="REPAIR", force_update_on_repair="YES"
            ),
            # The autoscaler owns the size after creation; a new group starts at minReplicas, not at zero.
            target_size=config.scaling.min_replicas,
            # `pulumi up` returns only once the group is stable (every VM created and verified healthy). So a group
            # replaced because its zones changed serves before the old one is deleted (create-before-delete), and
            # old templates and secret versions are deleted only after a rollout has finished with them.
            wait_for_instances=True,
            wait_for_instances_status="STABLE",
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*grants, *secrets],
                ignore_changes=["targetSize"],
                custom_timeouts=pulumi.CustomTimeouts(create=rollout_timeout, update=rollout_timeout),
            ),
        )
        cooldown = autoscaler_cooldown_seconds(capacity)
        metric_filter = autoscaler_metric_filter(self.prometheus_job, config.model.served_name or "")
        self.autoscaler = gcp.compute.RegionAutoscaler(
            f"{name}-autoscaler",
            project=project,
            region=region,
            target=self.instance_group_manager.id,
            autoscaling_policy=gcp.compute.RegionAutoscalerAutoscalingPolicyArgs(
                min_replicas=config.scaling.min_replicas,
                max_replicas=config.scaling.max_replicas,
                cooldown_period=cooldown,
                mode="ON",
                # Per-group metrics: replicas wanted = sum over the group / target. The autoscaler follows the
                # larger recommendation: the queue scales out, the running batch keeps a busy group from
                # scaling in once its queue has drained.
                metrics=[
                    gcp.compute.RegionAutoscalerAutoscalingPolicyMetricArgs(
                        name=metric, filter=metric_filter, single_instance_assignment=target
                    )
                    for metric, target in (
                        (AUTOSCALING_METRIC, config.scaling.target_waiting_requests_per_replica),
                        (RUNNING_METRIC, running_target(config, capacity)),
                    )
                ],
                scale_in_control=gcp.compute.RegionAutoscalerAutoscalingPolicyScaleInControlArgs(
                    max_scaled_in_replicas=gcp.compute.RegionAutoscalerAutoscalingPolicyScaleInControlMaxScaledInReplicasArgs(
                        fixed=1
                    ),
                    time_window_sec=max(600, cooldown),
                ),
            ),
            opts=child,
        )

        self.instance_group = self.instance_group_manager.instance_group
        self.service_account_email = self.service_account.email
        self.register_outputs(
            {
                "instance_group": self.instance_group,
                "service_account_email": self.service_account_email,
                "api_key": self.api_key,
                "named_port": NAMED_PORT,
                "prometheus_job": self.prometheus_job,
            }
        )
