"""VllmGceService under the recording mocks: every security, availability and scaling property on its inputs."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from components.capacity import plan_capacity
from components.config import ConfigError, StackConfig
from components.gce_service import (
    AUTOSCALING_METRIC,
    VllmGceService,
    disk_type_for,
    model_cache_disk_gb,
    prometheus_job_name,
    serving_api_key,
)
from components.mocks import PLACEHOLDER_DIGEST, RecordingMocks, resolve
from components.naming import GCP_NAME_MAX, MAX_COMPONENT_NAME, service_account_id
from components.startup_script import BOOT_IMAGE, MODEL_CACHE_DEVICE_NAME
from tests.conftest import make_config
from tests.gce_harness import SECRET_VERSION, ancestors, build, of_type, one

IMAGE = f"us-central1-docker.pkg.dev/test-project/llm-remote/vllm/vllm-openai@{PLACEHOLDER_DIGEST}"
TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
MIG = "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager"
AUTOSCALER = "gcp:compute/regionAutoscaler:RegionAutoscaler"
HEALTH_CHECK = "gcp:compute/healthCheck:HealthCheck"
SECRET_GRANT = "gcp:secretmanager/secretIamMember:SecretIamMember"
PROJECT_GRANT = "gcp:projects/iAMMember:IAMMember"
BUCKET_GRANT = "gcp:storage/bucketIAMMember:BucketIAMMember"
SA_MEMBER = "serviceAccount:llm-vm@test-project.iam.gserviceaccount.com"


def _service(
    mocks: RecordingMocks,
    config: StackConfig | None = None,
    name: str = "llm",
    hf_token: Any = "hf_token_value_for_tests",
    api_keys: Any = None,
    image_ref: str = IMAGE,
) -> VllmGceService:
    return build(
        lambda: VllmGceService(
            name, config or make_config(), image_ref=image_ref, hf_token=hf_token, api_keys=api_keys
        )
    )


def _metadata(mocks: RecordingMocks) -> dict[str, str]:
    return one(mocks, TEMPLATE)["metadata"]


# ---- identity and secrets ---------------------------------------------------------------------------------------
def test_dedicated_service_account_with_only_log_metric_roles_at_project_level(mocks: RecordingMocks) -> None:
    _service(mocks)
    account = one(mocks, "gcp:serviceaccount/account:Account")
    assert account["accountId"] == "llm-vm"
    grants = {(g.inputs["role"], g.inputs["member"]) for g in of_type(mocks, PROJECT_GRANT)}
    assert grants == {("roles/logging.logWriter", SA_MEMBER), ("roles/monitoring.metricWriter", SA_MEMBER)}
    template = one(mocks, TEMPLATE)
    assert template["serviceAccount"]["email"] == "llm-vm@test-project.iam.gserviceaccount.com"


def test_image_reader_on_the_image_repository_only(mocks: RecordingMocks) -> None:
    _service(mocks)
    reader = one(mocks, "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    assert reader == {
        "project": "test-project",
        "location": "us-central1",
        "repository": "llm-remote",
        "role": "roles/artifactregistry.reader",
        "member": SA_MEMBER,
    }


def test_weights_bucket_reader_only_for_gcs_models(mocks: RecordingMocks) -> None:
    _service(mocks)
    assert not of_type(mocks, BUCKET_GRANT)
    gcs = make_config(
        model={"id": "gs://acme-weights/gemma-4-26b", "paramsBillions": 26},
        hardware={"machineType": "a2-ultragpu-1g", "gpuType": "nvidia-a100-80gb", "gpuCount": 1},
    )
    _service(mocks, config=gcs, name="llm2")
    grant = one(mocks, BUCKET_GRANT)
    assert grant == {
        "bucket": "acme-weights",
        "role": "roles/storage.objectViewer",
        "member": "serviceAccount:llm2-vm@test-project.iam.gserviceaccount.com",
    }


def test_secret_accessor_is_granted_per_secret(mocks: RecordingMocks) -> None:
    _service(mocks)
    secrets = {r.inputs["secretId"] for r in of_type(mocks, "gcp:secretmanager/secret:Secret")}
    assert secrets == {"llm-api-key", "llm-hf-token"}
    grants = of_type(mocks, SECRET_GRANT)
    assert sorted(g.inputs["secretId"] for g in grants) == sorted(secrets)
    assert {(g.inputs["role"], g.inputs["member"]) for g in grants} == {
        ("roles/secretmanager.secretAccessor", SA_MEMBER)
    }
    assert all(
        v.inputs["secretData"] == "[secret]"
        for v in of_type(mocks, "gcp:secretmanager/secretVersion:SecretVersion")
    )


def test_without_hf_token_there_is_no_hf_secret(mocks: RecordingMocks) -> None:
    _service(mocks, hf_token=None)
    assert [r.inputs["secretId"] for r in of_type(mocks, "gcp:secretmanager/secret:Secret")] == [
        "llm-api-key"
    ]
    assert "readonly HF_TOKEN_SECRET_VERSION=''" in _metadata(mocks)["startup-script"]


def test_api_key_is_generated_when_absent_and_stays_secret(mocks: RecordingMocks) -> None:
    service = _service(mocks, api_keys=None)
    password = one(mocks, "random:index/randomPassword:RandomPassword")
    assert password["length"] >= 32 and password["special"] is False
    assert resolve(service.api_key) == "[secret]"


def test_given_api_key_is_used_and_no_key_is_generated(mocks: RecordingMocks) -> None:
    service = _service(mocks, api_keys=["sk-given"])
    assert not of_type(mocks, "random:index/randomPassword:RandomPassword")
    assert resolve(service.api_key) == "[secret]"


@pytest.mark.parametrize("keys", [[], ["sk-first-key-111", "sk-second-key-222"], [" "]])
def test_api_keys_must_be_exactly_one(keys: list[str]) -> None:
    with pytest.raises(
        ConfigError, match=rf"vllm-gcp:apiKeys: {len(keys)} keys given; .* exactly one key"
    ) as error:
        serving_api_key(keys)
    assert not any(key.strip() and key in str(error.value) for key in keys)  # no key material in the message


def test_startup_script_holds_secret_names_never_values(mocks: RecordingMocks) -> None:
    _service(mocks, hf_token="hf_NotARealTokenButUniqueEnough123456", api_keys=["sk-unique-test-key-42"])
    script = _metadata(mocks)["startup-script"]
    assert "hf_NotARealTokenButUniqueEnough123456" not in script and "sk-unique-test-key-42" not in script
    versions = dict(re.findall(r"readonly (\w+_SECRET_VERSION)='?([^'\n]*)'?", script))
    assert set(versions) == {"API_KEY_SECRET_VERSION", "HF_TOKEN_SECRET_VERSION"}
    assert all(SECRET_VERSION.fullmatch(v) for v in versions.values()), versions
    assert f"readonly VLLM_IMAGE={IMAGE}" in script


# ---- the instance template -------------------------------------------------------------------------------------
def test_template_is_auto_named_private_shielded_with_os_login(mocks: RecordingMocks) -> None:
    _service(mocks)
    template = one(mocks, TEMPLATE)
    assert "name" not in template and template["namePrefix"] == "llm-"
    (nic,) = template["networkInterfaces"]
    assert "accessConfigs" not in nic and "ipv6AccessConfigs" not in nic  # no external IP
    assert template["shieldedInstanceConfig"] == {
        "enableSecureBoot": True,
        "enableVtpm": True,
        "enableIntegrityMonitoring": True,
    }
    assert template["metadata"]["enable-oslogin"] == "TRUE"
    assert template["metadata"]["block-project-ssh-keys"] == "TRUE"
    assert template["serviceAccount"]["scopes"] == ["cloud-platform"]
    assert template["labels"]["app"] == "vllm-gcp" and template["labels"]["served-model"] == "gemma-4-e4b-it"


def test_on_demand_vm_terminates_on_maintenance_and_restarts(mocks: RecordingMocks) -> None:
    _service(mocks)
    scheduling = one(mocks, TEMPLATE)["scheduling"]
    assert scheduling["onHostMaintenance"] == "TERMINATE"
    assert scheduling["automaticRestart"] is True
    assert scheduling["provisioningModel"] == "STANDARD" and "instanceTerminationAction" not in scheduling


def test_spot_vm_is_deleted_on_preemption_for_the_mig_to_recreate(mocks: RecordingMocks) -> None:
    _service(mocks, config=make_config(hardware={"spot": True}))
    scheduling = one(mocks, TEMPLATE)["scheduling"]
    assert scheduling == {
        "onHostMaintenance": "TERMINATE",
        "provisioningModel": "SPOT",
        "preemptible": True,
        "automaticRestart": False,
        "instanceTerminationAction": "DELETE",
    }


@pytest.mark.parametrize(
    ("hardware", "accelerator"),
    [
        ({"machineType": "g2-standard-8", "gpuType": "nvidia-l4", "gpuCount": 1}, ("nvidia-l4", 1)),
        ({"machineType": "g2-standard-24", "gpuType": "nvidia-l4", "gpuCount": 2}, ("nvidia-l4", 2)),
        (
            {"machineType": "a2-ultragpu-1g", "gpuType": "nvidia-a100-80gb", "gpuCount": 1},
            ("nvidia-a100-80gb", 1),
        ),
    ],
)
def test_machine_and_gpus_come_from_config(
    mocks: RecordingMocks, hardware: dict[str, Any], accelerator: tuple[str, int]
) -> None:
    _service(mocks, config=make_config(hardware=hardware))
    template = one(mocks, TEMPLATE)
    assert template["machineType"] == hardware["machineType"]
    assert template["guestAccelerators"] == [{"type": accelerator[0], "count": accelerator[1]}]


def test_boot_disk_and_model_cache_disk(mocks: RecordingMocks) -> None:
    config = make_config()
    _service(mocks, config=config)
    boot, cache = one(mocks, TEMPLATE)["disks"]
    assert boot["boot"] is True and boot["sourceImage"] == BOOT_IMAGE and boot["diskSizeGb"] >= 100
    assert cache["boot"] is False and cache["deviceName"] == MODEL_CACHE_DEVICE_NAME
    assert cache["diskSizeGb"] == model_cache_disk_gb(config)
    assert cache["autoDelete"] is True and boot["diskType"] == cache["diskType"] == "pd-balanced"


@pytest.mark.parametrize(
    ("model", "expected_gb"),
    [
        ({"id": "google/gemma-4-E4B-it"}, 50),  # 10 GB x 2 + 20 = 40 -> the 50 GB floor
        ({"id": "google/gemma-4-26B-A4B-it"}, 130),  # ~52 GB x 2 + 20 = 124 -> 130
        ({"id": "google/gemma-4-26B-A4B-it", "quantization": "fp8"}, 130),  # downloads the 16-bit checkpoint
        ({"id": "gs://bucket/gemma", "paramsBillions": 26}, 50),  # streamed from GCS, nothing cached
    ],
)
def test_model_cache_disk_size_from_the_planner(model: dict[str, Any], expected_gb: int) -> None:
    config = make_config(
        model=model, hardware={"machineType": "a2-ultragpu-1g", "gpuType": "nvidia-a100-80gb", "gpuCount": 1}
    )
    weights = plan_capacity(config).weights_gb
    assert model_cache_disk_gb(config) == expected_gb
    if not model["id"].startswith("gs://"):
        assert expected_gb >= 2 * weights  # room for a second copy of the checkpoint


@pytest.mark.parametrize(
    ("machine", "disk"),
    [("g2-standard-8", "pd-balanced"), ("a2-ultragpu-1g", "pd-balanced"), ("g4-standard-48", "hyperdisk-balanced"),
     ("a3-ultragpu-8g", "hyperdisk-balanced")],
)  # fmt: skip
def test_disk_type_for_machine_series(machine: str, disk: str) -> None:
    assert disk_type_for(machine) == disk


# ---- the group ------------------------------------------------------------------------------------------------
def test_regional_mig_balanced_over_the_configured_zones(mocks: RecordingMocks) -> None:
    config = make_config(gce={"zones": ["us-central1-a", "us-central1-b", "us-central1-c"]})
    _service(mocks, config=config)
    mig = one(mocks, MIG)
    assert mig["region"] == "us-central1"
    assert mig["distributionPolicyZones"] == config.gce.zones
    assert mig["distributionPolicyTargetShape"] == "BALANCED"
    assert mig["namedPorts"] == [{"name": "http", "port": 8000}]
    assert mig["waitForInstances"] is True and mig["waitForInstancesStatus"] == "STABLE"
    assert mig["targetSize"] == config.scaling.min_replicas
    (version,) = mig["versions"]
    assert "/instanceTemplates/llm-template-" in version["instanceTemplate"]


def test_group_waits_for_stable_and_leaves_its_size_to_the_autoscaler(mocks: RecordingMocks) -> None:
    config = make_config(
        model={"id": "google/gemma-4-26B-A4B-it"},
        hardware={"machineType": "a2-ultragpu-1g", "gpuType": "nvidia-a100-80gb", "gpuCount": 1},
        scaling={"minReplicas": 2, "maxReplicas": 4},
    )
    service = _service(mocks, config=config)
    (mig,) = [r for r in mocks.resources if r.type == MIG]
    assert mig.options["ignoreChanges"] == ["targetSize"]
    timeout = mig.options["customTimeouts"]
    assert timeout["create"] == timeout["update"]
    minutes = int(timeout["create"].removesuffix("m"))
    assert minutes * 60 >= 2 * service.capacity.startup_budget_seconds  # room for more than one cold start


def test_zero_downtime_update_policy(mocks: RecordingMocks) -> None:
    config = make_config(gce={"zones": ["us-central1-a", "us-central1-b", "us-central1-c"]})
    _service(mocks, config=config)
    policy = one(mocks, MIG)["updatePolicy"]
    assert policy["type"] == "PROACTIVE"
    assert policy["minimalAction"] == "REPLACE"
    assert policy["maxUnavailableFixed"] == 0
    assert policy["maxSurgeFixed"] >= len(config.gce.zones)
    assert policy["replacementMethod"] == "SUBSTITUTE"
    assert policy["instanceRedistributionType"] == "NONE"  # required by the BALANCED target shape


def test_autohealing_is_lenient_and_waits_for_the_planned_cold_start(mocks: RecordingMocks) -> None:
    config = make_config()
    _service(mocks, config=config)
    capacity = plan_capacity(config)
    healing = one(mocks, MIG)["autoHealingPolicies"]
    assert healing["initialDelaySec"] == capacity.autohealing_initial_delay_seconds
    assert healing["initialDelaySec"] >= capacity.cold_start_seconds
    (check,) = of_type(mocks, HEALTH_CHECK)
    assert healing["healthCheck"].rsplit("/", 1)[1].startswith("llm-autoheal-hc-")
    assert check.inputs["httpHealthCheck"] == {"port": 8000, "requestPath": "/health"}
    # Several minutes of failures before a (slow, expensive) GPU VM is recreated.
    assert check.inputs["checkIntervalSec"] * check.inputs["unhealthyThreshold"] >= 180


def test_autoscaler_on_queue_depth_per_replica(mocks: RecordingMocks) -> None:
    config = make_config(scaling={"minReplicas": 2, "maxReplicas": 5, "targetWaitingRequestsPerReplica": 7})
    service = _service(mocks, config=config)
    capacity = plan_capacity(config)
    autoscaler = one(mocks, AUTOSCALER)
    policy = autoscaler["autoscalingPolicy"]
    assert autoscaler["target"].rsplit("/", 1)[1].startswith("llm-mig-")
    assert policy["minReplicas"] == 2 and policy["maxReplicas"] == 5 and policy["mode"] == "ON"
    assert policy["cooldownPeriod"] > capacity.cold_start_seconds
    metric, running = policy["metrics"]
    assert metric["name"] == AUTOSCALING_METRIC == "prometheus.googleapis.com/vllm:num_requests_waiting/gauge"
    assert metric["singleInstanceAssignment"] == 7  # per-group metric: summed queue / 7 = replicas wanted
    assert "utilizationTarget" not in metric
    assert metric["filter"] == (  # written out: the autoscaler matches no series if any part is wrong
        'resource.type = "prometheus_target" AND resource.labels.cluster = "__gce__" AND '
        f'resource.labels.job = "{service.prometheus_job}" AND metric.labels.model_name = "gemma-4-e4b-it"'
    )
    assert 'resource.type = "prometheus_target"' in metric["filter"]
    assert policy["scaleInControl"]["maxScaledInReplicas"] == {"fixed": 1}
    # The running batch keeps a busy group from scaling in once the queue is empty.
    assert running["name"] == "prometheus.googleapis.com/vllm:num_requests_running/gauge"
    assert running["filter"] == metric["filter"]
    assert 0 < running["singleInstanceAssignment"] <= capacity.concurrent_requests


@pytest.mark.parametrize(("configured", "expected"), [(None, None), (24, 24)])
def test_running_target_defaults_to_the_planned_concurrency(
    mocks: RecordingMocks, configured: float | None, expected: float | None
) -> None:
    config = make_config(scaling={"targetRunningRequestsPerReplica": configured})
    _service(mocks, config=config)
    running = one(mocks, AUTOSCALER)["autoscalingPolicy"]["metrics"][1]
    planned = plan_capacity(config).concurrent_requests
    assert running["singleInstanceAssignment"] == (expected or round(0.8 * planned))


def test_ops_agent_scrape_job_matches_the_autoscaler_filter(mocks: RecordingMocks) -> None:
    service = _service(mocks)
    script = _metadata(mocks)["startup-script"]
    ops_agent = yaml.safe_load(re.search(r"readonly OPS_AGENT_CONFIG='([^']*)'", script).group(1))  # type: ignore[union-attr]
    (scrape,) = ops_agent["metrics"]["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert scrape["job_name"] == service.prometheus_job == prometheus_job_name("llm")
    assert scrape["static_configs"] == [{"targets": ["localhost:8000"]}]
    metric_filter = one(mocks, AUTOSCALER)["autoscalingPolicy"]["metrics"][0]["filter"]
    assert f'resource.labels.job = "{scrape["job_name"]}"' in metric_filter


# ---- network ----------------------------------------------------------------------------------------------------
def test_firewall_admits_only_google_front_ends_to_the_serving_port(mocks: RecordingMocks) -> None:
    _service(mocks)
    (rule,) = of_type(mocks, "gcp:compute/firewall:Firewall")
    assert rule.inputs["direction"] == "INGRESS"
    assert sorted(rule.inputs["sourceRanges"]) == ["130.211.0.0/22", "35.191.0.0/16"]
    assert rule.inputs["allows"] == [{"protocol": "tcp", "ports": ["8000"]}]
    assert rule.inputs["targetServiceAccounts"] == ["llm-vm@test-project.iam.gserviceaccount.com"]
    assert "denies" not in rule.inputs


def test_egress_through_cloud_nat_and_private_google_access(mocks: RecordingMocks) -> None:
    _service(mocks)
    vpc = one(mocks, "gcp:compute/network:Network")
    assert vpc["autoCreateSubnetworks"] is False  # not the default network and its permissive rules
    subnet = one(mocks, "gcp:compute/subnetwork:Subnetwork")
    assert subnet["privateIpGoogleAccess"] is True and subnet["region"] == "us-central1"
    router = one(mocks, "gcp:compute/router:Router")
    nat = one(mocks, "gcp:compute/routerNat:RouterNat")
    assert nat["router"].startswith("llm-net-router-") and nat["region"] == router["region"]
    assert nat["natIpAllocateOption"] == "AUTO_ONLY"
    (nic,) = one(mocks, TEMPLATE)["networkInterfaces"]
    assert nic["subnetwork"].rsplit("/", 1)[1].startswith("llm-net-subnet-")


# ---- component hygiene ------------------------------------------------------------------------------------------
def test_outputs(mocks: RecordingMocks) -> None:
    service = _service(mocks)
    assert "/regions/us-central1/instanceGroups/llm-mig-" in resolve(service.instance_group)
    assert resolve(service.service_account_email) == "llm-vm@test-project.iam.gserviceaccount.com"
    assert (service.named_port, service.serve_port) == ("http", 8000)


def test_every_resource_is_a_descendant_named_after_the_component(mocks: RecordingMocks) -> None:
    _service(mocks)
    (component,) = of_type(mocks, "vllm-gcp:gce:VllmService")
    for resource in mocks.resources:
        if resource is component:
            continue
        assert component.urn in ancestors(mocks, resource), resource.name
        assert resource.name.startswith("llm-"), resource.name


def test_longest_component_name_keeps_gcp_names_within_limits(mocks: RecordingMocks) -> None:
    name = "a" * (MAX_COMPONENT_NAME - 4) + "-xyz"
    _service(mocks, name=name)
    for resource in mocks.resources:
        if resource.custom:
            # Pulumi auto-names as `<logical name>-<7 hex>`.
            assert len(resource.name) + 8 <= GCP_NAME_MAX, resource.name
    account_id = one(mocks, "gcp:serviceaccount/account:Account")["accountId"]
    assert 6 <= len(account_id) <= 30 and re.fullmatch(r"[a-z][-a-z0-9]*[a-z0-9]", account_id)
    assert len(one(mocks, TEMPLATE)["namePrefix"]) <= 37
    assert len(one(mocks, MIG)["baseInstanceName"]) <= 58


@pytest.mark.parametrize("name", ["a", "llm", "vllm-prod", "x" * 30, "service-with-a-long-name-abcdef"])
def test_service_account_id_is_valid_and_deterministic(name: str) -> None:
    account_id = service_account_id(name)
    assert 6 <= len(account_id) <= 30 and re.fullmatch(r"[a-z][-a-z0-9]*[a-z0-9]", account_id), account_id
    assert service_account_id(name) == account_id


def test_long_service_account_ids_do_not_depend_on_the_process() -> None:
    # Python's hash() changes with PYTHONHASHSEED; the id must not, or every `pulumi up` replaces the account.
    name = "x" * 30
    # 30 chars at most: 20 of the name + "-" + 6 hex of its sha256 + "-vm".
    expected = "x" * 20 + "-" + hashlib.sha256(name.encode()).hexdigest()[:6] + "-vm"
    assert service_account_id(name) == expected
    other_seed = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from components.naming import service_account_id; print(service_account_id({name!r}))",
        ],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert other_seed.stdout.strip() == expected


def test_long_names_sharing_a_prefix_get_distinct_service_accounts() -> None:
    assert service_account_id("x" * 29 + "a") != service_account_id("x" * 29 + "b")


@pytest.mark.parametrize("bad", ["LLM", "llm_x", "9llm", "x" * 31])
def test_bad_component_name_is_rejected(mocks: RecordingMocks, bad: str) -> None:
    with pytest.raises(ValueError, match=f"VllmGceService name {bad!r} is not usable"):
        _service(mocks, name=bad)


def test_config_without_zones_is_rejected(mocks: RecordingMocks) -> None:
    vertex = make_config(platform="vertex", gce={"zones": []})
    with pytest.raises(ConfigError, match=r"vllm-gcp:gce\.zones: empty"):
        _service(mocks, config=vertex)


def test_model_that_does_not_fit_fails_before_any_resource(mocks: RecordingMocks) -> None:
    with pytest.raises(ConfigError, match=r"needs >= \d+ GB of GPU memory"):
        _service(mocks, config=make_config(model={"id": "google/gemma-4-31B-it"}))
    assert not [r for r in mocks.resources if r.custom]


def test_image_outside_artifact_registry_is_rejected(mocks: RecordingMocks) -> None:
    with pytest.raises(ValueError, match="is not an Artifact Registry image by digest"):
        _service(mocks, image_ref="vllm/vllm-openai:v0.33.0")
    assert not [r for r in mocks.resources if r.custom]


def test_image_output_outside_artifact_registry_is_rejected_when_known(mocks: RecordingMocks) -> None:
    with pytest.raises(Exception, match="is not an Artifact Registry image by digest"):
        build(
            lambda: VllmGceService(
                "llm", make_config(), image_ref=pulumi.Output.from_input("docker.io/vllm/vllm-openai:v0.33.0")
            )
        )
