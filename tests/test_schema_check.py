"""Plan fidelity: the schema check catches what Pulumi's mocks accept and the real provider rejects.

Resources are registered through the real SDK classes under the recording mocks (components.mocks), so the inputs
checked here are exactly what `pulumi preview` would send: camelCase at the top, nested keys translated when known
and left as written when not.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pulumi
import pulumi_docker as docker
import pulumi_gcp as gcp
import pulumi_random as random
import pytest

from components import schema_check
from components.mocks import install_mocks, run_program
from components.schema_check import Finding, check_resource, check_resources, documented_values

ROOT = Path(__file__).resolve().parent.parent


def record(program: Callable[[], object]) -> list[dict[str, Any]]:
    """Run `program` under the recording mocks; the custom resources it registered, in the plan's JSON shape."""
    mocks = install_mocks(project="test-project", region="us-central1")
    run_program(program)
    return [r.as_dict() for r in mocks.resources if r.custom]


def only(resources: list[dict[str, Any]], type_suffix: str) -> dict[str, Any]:
    matches = [r for r in resources if r["type"].endswith(type_suffix)]
    assert len(matches) == 1, [r["type"] for r in resources]
    return matches[0]


def findings_of(resource: dict[str, Any]) -> list[Finding]:
    return check_resource(resource["type"], resource["inputs"], resource["name"])


# --------------------------------------------------------------------------------------------------------------
# A realistic program: every resource type this project creates, with the inputs the components give them.
# --------------------------------------------------------------------------------------------------------------

SA_EMAIL = "vllm-dev-vm@test-project.iam.gserviceaccount.com"
LABELS = {"app": "vllm-gcp", "environment": "dev", "model": "gemma-4-e4b-it"}


def realistic_program() -> None:
    region = "us-central1"
    account = gcp.serviceaccount.Account(
        "vllm-dev-vm", account_id="vllm-dev-vm", display_name="vLLM VMs (dev)"
    )
    gcp.projects.IAMMember(
        "vllm-dev-logwriter", project="test-project", role="roles/logging.logWriter", member=account.member
    )
    secret = gcp.secretmanager.Secret(
        "vllm-dev-hf-token",
        secret_id="vllm-dev-hf-token",
        replication={"auto": {}},
        labels=LABELS,
    )
    gcp.secretmanager.SecretVersion(
        "vllm-dev-hf-token-v", secret=secret.id, secret_data=pulumi.Output.secret("hf_not_a_real_token")
    )
    gcp.secretmanager.SecretIamMember(
        "vllm-dev-hf-token-access",
        secret_id=secret.id,
        role="roles/secretmanager.secretAccessor",
        member=account.member,
    )
    repo = gcp.artifactregistry.Repository(
        "vllm-dev-images",
        repository_id="vllm-dev-images",
        location=region,
        format="DOCKER",
        mode="REMOTE_REPOSITORY",
        description="pull-through cache of Docker Hub for the vLLM image",
        remote_repository_config={
            "description": "Docker Hub",
            "docker_repository": {"public_repository": "DOCKER_HUB"},
        },
        labels=LABELS,
    )
    upstream = docker.RemoteImage("vllm-upstream", name="vllm/vllm-openai:v0.33.0", keep_locally=True)
    docker.Tag(
        "vllm-mirror-tag",
        source_image=upstream.image_id,
        target_image=repo.registry_uri.apply(lambda uri: f"{uri}/vllm-openai:v0.33.0"),
    )
    docker.Image(
        "vllm-custom",
        image_name="us-central1-docker.pkg.dev/test-project/vllm-dev-images/vllm-custom:v1",
        build={
            "context": ".",
            "dockerfile": "Dockerfile",
            "platform": "linux/amd64",
            "builder_version": "BuilderBuildKit",
        },
        skip_push=False,
    )
    docker.RegistryImage(
        "vllm-custom-push",
        name="us-central1-docker.pkg.dev/test-project/vllm-dev-images/vllm-custom:v1",
        keep_remotely=True,
    )
    random.RandomPassword("vllm-dev-api-key", length=40, special=False)

    template = gcp.compute.InstanceTemplate(
        "vllm-dev-template",
        name_prefix="vllm-dev-",
        machine_type="g2-standard-8",
        description="vLLM serving google/gemma-4-E4B-it",
        disks=[
            {
                "boot": True,
                "auto_delete": True,
                "source_image": "projects/deeplearning-platform-release/global/images/family/common-cu128-ubuntu-2204-nvidia-580",
                "disk_size_gb": 200,
                "disk_type": "pd-ssd",
                "labels": LABELS,
            }
        ],
        guest_accelerators=[{"type": "nvidia-l4", "count": 1}],
        scheduling={
            "on_host_maintenance": "TERMINATE",
            "automatic_restart": True,
            "provisioning_model": "STANDARD",
        },
        network_interfaces=[{"network": "default", "subnetwork": "default"}],
        service_account={"email": SA_EMAIL, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]},
        shielded_instance_config={
            "enable_secure_boot": True,
            "enable_vtpm": True,
            "enable_integrity_monitoring": True,
        },
        metadata={"startup-script": "#!/bin/bash\necho boot", "enable-oslogin": "TRUE"},
        labels=LABELS,
        tags=["vllm-dev"],
    )
    autoheal = gcp.compute.HealthCheck(
        "vllm-dev-autoheal",
        check_interval_sec=30,
        timeout_sec=10,
        healthy_threshold=1,
        unhealthy_threshold=10,
        http_health_check={"port": 8000, "request_path": "/health", "port_specification": "USE_FIXED_PORT"},
        log_config={"enable": True},
    )
    mig = gcp.compute.RegionInstanceGroupManager(
        "vllm-dev-mig",
        region=region,
        base_instance_name="vllm-dev",
        versions=[{"name": "primary", "instance_template": template.self_link_unique}],
        distribution_policy_zones=["us-central1-a", "us-central1-b"],
        distribution_policy_target_shape="BALANCED",
        named_ports=[{"name": "http", "port": 8000}],
        auto_healing_policies={"health_check": autoheal.id, "initial_delay_sec": 900},
        update_policy={
            "type": "PROACTIVE",
            "minimal_action": "REPLACE",
            "replacement_method": "SUBSTITUTE",
            "instance_redistribution_type": "NONE",
            "max_surge_fixed": 2,
            "max_unavailable_fixed": 0,
        },
        wait_for_instances=False,
    )
    gcp.compute.RegionAutoscaler(
        "vllm-dev-autoscaler",
        region=region,
        target=mig.id,
        autoscaling_policy={
            "min_replicas": 1,
            "max_replicas": 2,
            "cooldown_period": 900,
            "mode": "ON",
            "metrics": [
                {
                    "name": "prometheus.googleapis.com/vllm:num_requests_waiting/gauge",
                    "single_instance_assignment": 10,
                }
            ],
        },
    )
    lb_check = gcp.compute.HealthCheck(
        "vllm-dev-lb-hc", http_health_check={"port": 8000, "request_path": "/health"}, check_interval_sec=10
    )
    armor = gcp.compute.SecurityPolicy(
        "vllm-dev-armor",
        type="CLOUD_ARMOR",
        description="per-client throttling; only /v1/ and /health are public",
        rules=[
            {
                "action": "throttle",
                "priority": 1000,
                "match": {"versioned_expr": "SRC_IPS_V1", "config": {"src_ip_ranges": ["*"]}},
                "rate_limit_options": {
                    "conform_action": "allow",
                    "exceed_action": "deny(429)",
                    "enforce_on_key": "IP",
                    "rate_limit_threshold": {"count": 600, "interval_sec": 60},
                },
            },
            {
                "action": "deny(404)",
                "priority": 2000,
                "match": {
                    "expr": {"expression": "!request.path.startsWith('/v1/') && request.path != '/health'"}
                },
            },
            {
                "action": "allow",
                "priority": 2147483647,
                "description": "default rule",
                "match": {"versioned_expr": "SRC_IPS_V1", "config": {"src_ip_ranges": ["*"]}},
            },
        ],
    )
    backend = gcp.compute.BackendService(
        "vllm-dev-backend",
        protocol="HTTP",
        port_name="http",
        load_balancing_scheme="EXTERNAL_MANAGED",
        locality_lb_policy="LEAST_REQUEST",
        timeout_sec=600,
        connection_draining_timeout_sec=300,
        health_checks=lb_check.id,
        security_policy=armor.id,
        backends=[
            {"group": mig.instance_group, "balancing_mode": "UTILIZATION", "capacity_scaler": 1.0},
        ],
        log_config={"enable": True, "sample_rate": 1.0},
    )
    url_map = gcp.compute.URLMap("vllm-dev-urlmap", default_service=backend.id)
    redirect = gcp.compute.URLMap(
        "vllm-dev-redirect",
        default_url_redirect={
            "https_redirect": True,
            "redirect_response_code": "MOVED_PERMANENTLY_DEFAULT",
            "strip_query": False,
        },
    )
    address = gcp.compute.GlobalAddress("vllm-dev-ip", address_type="EXTERNAL", ip_version="IPV4")
    cert = gcp.compute.ManagedSslCertificate(
        "vllm-dev-cert", type="MANAGED", managed={"domains": ["llm.example.com"]}
    )
    tls = gcp.compute.SSLPolicy("vllm-dev-tls", profile="MODERN", min_tls_version="TLS_1_2")
    https_proxy = gcp.compute.TargetHttpsProxy(
        "vllm-dev-https", url_map=url_map.id, ssl_certificates=[cert.id], ssl_policy=tls.id
    )
    http_proxy = gcp.compute.TargetHttpProxy("vllm-dev-http", url_map=redirect.id)
    for suffix, target, port in (("https", https_proxy.id, "443"), ("http", http_proxy.id, "80")):
        gcp.compute.GlobalForwardingRule(
            f"vllm-dev-fr-{suffix}",
            target=target,
            port_range=port,
            ip_address=address.address,
            ip_protocol="TCP",
            load_balancing_scheme="EXTERNAL_MANAGED",
        )
    gcp.compute.Firewall(
        "vllm-dev-allow-lb",
        network="default",
        direction="INGRESS",
        source_ranges=["35.191.0.0/16", "130.211.0.0/22"],
        allows=[{"protocol": "tcp", "ports": ["8000"]}],
        target_tags=["vllm-dev"],
    )
    router = gcp.compute.Router("vllm-dev-router", region=region, network="default")
    gcp.compute.RouterNat(
        "vllm-dev-nat",
        router=router.name,
        region=region,
        nat_ip_allocate_option="AUTO_ONLY",
        source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
        log_config={"enable": True, "filter": "ERRORS_ONLY"},
    )
    gcp.vertex.AiEndpoint(
        "vllm-vertex-endpoint",
        display_name="vLLM gemma-4-26b",
        location=region,
        dedicated_endpoint_enabled=True,
        labels=LABELS,
    )
    gcp.monitoring.AlertPolicy(
        "vllm-dev-queue-depth",
        display_name="vLLM queue depth > 100 (dev)",
        combiner="OR",
        severity="WARNING",
        conditions=[
            {
                "display_name": "vllm:num_requests_waiting > 100",
                "condition_prometheus_query_language": {
                    "query": "max(vllm:num_requests_waiting) > 100",
                    "duration": "300s",
                    "evaluation_interval": "60s",
                },
            }
        ],
        documentation={"content": "Scale out or check the autoscaler.", "mime_type": "text/markdown"},
        user_labels=LABELS,
    )
    gcp.monitoring.Dashboard("vllm-dev-dashboard", dashboard_json=json.dumps({"displayName": "vLLM (dev)"}))
    gcp.monitoring.UptimeCheckConfig(
        "vllm-dev-uptime",
        display_name="vLLM /health (dev)",
        timeout="10s",
        period="60s",
        http_check={
            "path": "/health",
            "port": 443,
            "use_ssl": True,
            "validate_ssl": True,
            "request_method": "GET",
        },
        monitored_resource={
            "type": "uptime_url",
            "labels": {"project_id": "test-project", "host": "llm.example.com"},
        },
    )


REALISTIC_TYPES = [
    "gcp:compute/instanceTemplate:InstanceTemplate",
    "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager",
    "gcp:compute/regionAutoscaler:RegionAutoscaler",
    "gcp:compute/healthCheck:HealthCheck",
    "gcp:compute/backendService:BackendService",
    "gcp:compute/uRLMap:URLMap",
    "gcp:compute/targetHttpsProxy:TargetHttpsProxy",
    "gcp:compute/targetHttpProxy:TargetHttpProxy",
    "gcp:compute/globalForwardingRule:GlobalForwardingRule",
    "gcp:compute/globalAddress:GlobalAddress",
    "gcp:compute/managedSslCertificate:ManagedSslCertificate",
    "gcp:compute/sSLPolicy:SSLPolicy",
    "gcp:compute/securityPolicy:SecurityPolicy",
    "gcp:compute/firewall:Firewall",
    "gcp:compute/router:Router",
    "gcp:compute/routerNat:RouterNat",
    "gcp:serviceaccount/account:Account",
    "gcp:projects/iAMMember:IAMMember",
    "gcp:secretmanager/secret:Secret",
    "gcp:secretmanager/secretVersion:SecretVersion",
    "gcp:secretmanager/secretIamMember:SecretIamMember",
    "gcp:artifactregistry/repository:Repository",
    "gcp:vertex/aiEndpoint:AiEndpoint",
    "gcp:monitoring/alertPolicy:AlertPolicy",
    "gcp:monitoring/dashboard:Dashboard",
    "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig",
    "docker:index/remoteImage:RemoteImage",
    "docker:index/image:Image",
    "docker:index/tag:Tag",
    "docker:index/registryImage:RegistryImage",
    "random:index/randomPassword:RandomPassword",
]


@pytest.fixture(scope="module")
def realistic() -> dict[str, list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in record(realistic_program):
        by_type.setdefault(resource["type"], []).append(resource)
    return by_type


def test_the_realistic_program_covers_every_resource_type_this_project_uses(realistic):
    assert sorted(realistic) == sorted(REALISTIC_TYPES)


@pytest.mark.parametrize("type_token", REALISTIC_TYPES)
def test_realistic_inputs_have_no_findings(realistic, type_token):
    for resource in realistic[type_token]:
        assert findings_of(resource) == [], resource["inputs"]


@pytest.mark.parametrize("type_token", REALISTIC_TYPES)
def test_a_typo_at_the_top_level_of_every_type_is_found(realistic, type_token):
    resource = copy.deepcopy(realistic[type_token][0])
    key = next(iter(resource["inputs"]))
    resource["inputs"][key + "x"] = resource["inputs"][key]
    found = findings_of(resource)
    assert [(f.check, f.path) for f in found] == [("unknown-key", key + "x")]
    assert found[0].suggestion == key


# Nested objects (not maps) of the realistic resources: a typo inside each must be found, at that path.
NESTED_OBJECTS = [
    ("gcp:compute/instanceTemplate:InstanceTemplate", ["disks", 0]),
    ("gcp:compute/instanceTemplate:InstanceTemplate", ["scheduling"]),
    ("gcp:compute/instanceTemplate:InstanceTemplate", ["serviceAccount"]),
    ("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", ["updatePolicy"]),
    ("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", ["versions", 0]),
    ("gcp:compute/regionAutoscaler:RegionAutoscaler", ["autoscalingPolicy", "metrics", 0]),
    ("gcp:compute/securityPolicy:SecurityPolicy", ["rules", 0, "rateLimitOptions", "rateLimitThreshold"]),
    ("gcp:compute/securityPolicy:SecurityPolicy", ["rules", 1, "match", "expr"]),
    ("gcp:compute/healthCheck:HealthCheck", ["httpHealthCheck"]),
    ("gcp:artifactregistry/repository:Repository", ["remoteRepositoryConfig", "dockerRepository"]),
    ("gcp:secretmanager/secret:Secret", ["replication", "auto"]),
    ("gcp:monitoring/alertPolicy:AlertPolicy", ["conditions", 0, "conditionPrometheusQueryLanguage"]),
    ("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig", ["httpCheck"]),
    ("docker:index/image:Image", ["build"]),
]


def _dig(inputs: dict[str, Any], path: list[str | int]) -> Any:
    node: Any = inputs
    for step in path:
        node = node[step]
    return node


def _render(path: list[str | int]) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


@pytest.mark.parametrize(
    ("type_token", "path"), NESTED_OBJECTS, ids=lambda v: v if isinstance(v, str) else None
)
def test_a_typo_in_a_nested_object_is_found_at_its_path(realistic, type_token, path):
    resource = copy.deepcopy(realistic[type_token][0])
    _dig(resource["inputs"], path)["sampel_rate"] = 1.0
    found = findings_of(resource)
    assert [(f.check, f.path, f.value) for f in found] == [
        ("unknown-key", _render([*path, "sampel_rate"]), "sampel_rate")
    ]


@pytest.mark.parametrize(
    ("type_token", "path"),
    [
        ("gcp:compute/instanceTemplate:InstanceTemplate", ["metadata"]),
        ("gcp:compute/instanceTemplate:InstanceTemplate", ["labels"]),
        ("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig", ["monitoredResource", "labels"]),
    ],
)
def test_maps_accept_any_key(realistic, type_token, path):
    resource = copy.deepcopy(realistic[type_token][0])
    _dig(resource["inputs"], path)["any_key_at_all"] = "value"
    assert findings_of(resource) == []


def _placeholders(value: Any, marker: str) -> Any:
    if isinstance(value, dict):
        return {k: _placeholders(v, marker) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v, marker) for v in value]
    return marker


@pytest.mark.parametrize("marker", ["[secret]", "[unknown]"])
@pytest.mark.parametrize("type_token", REALISTIC_TYPES)
def test_secret_and_unknown_placeholders_are_accepted_anywhere(realistic, type_token, marker):
    resource = realistic[type_token][0]
    leaves = _placeholders(resource["inputs"], marker)
    assert check_resource(type_token, leaves, resource["name"]) == []
    whole = {key: marker for key in resource["inputs"]}  # each whole object/list/map hidden
    assert check_resource(type_token, whole, resource["name"]) == []


def test_the_recorded_secret_stays_a_placeholder(realistic):
    version = realistic["gcp:secretmanager/secretVersion:SecretVersion"][0]
    assert version["inputs"]["secretData"] == "[secret]"
    assert "hf_not_a_real_token" not in json.dumps(realistic)


# --------------------------------------------------------------------------------------------------------------
# Check 1: keys. The issue's example, registered through the real SDK class and the mocks.
# --------------------------------------------------------------------------------------------------------------


def test_issue_example_both_typos_are_found_through_real_mocks():
    resources = record(
        lambda: gcp.compute.BackendService(
            "b", locality_lb_policy="LEAST_REQEST", log_config={"enable": True, "sampel_rate": 1.0}
        )
    )
    backend = only(resources, ":BackendService")
    # What the mocks accept: the unknown nested key stays snake_case, the bad enum passes through.
    assert backend["inputs"] == {
        "localityLbPolicy": "LEAST_REQEST",
        "logConfig": {"enable": True, "sampel_rate": 1},
    }
    found = {f.check: f for f in findings_of(backend)}
    assert set(found) == {"unknown-key", "enum"}
    typo = found["unknown-key"]
    assert (typo.resource, typo.path, typo.value, typo.suggestion) == (
        "b",
        "logConfig.sampel_rate",
        "sampel_rate",
        "sample_rate",
    )
    assert str(typo) == (
        "[unknown-key] gcp:compute/backendService:BackendService 'b'.logConfig.sampel_rate: unknown key "
        "'sampel_rate': not an input of BackendServiceLogConfigArgs (did you mean `sample_rate` (Pulumi name "
        "`sampleRate`)?)"
    )
    enum_finding = found["enum"]
    assert (enum_finding.path, enum_finding.value, enum_finding.suggestion) == (
        "localityLbPolicy",
        "LEAST_REQEST",
        "LEAST_REQUEST",
    )
    assert "LEAST_REQEST" in str(enum_finding) and "did you mean `LEAST_REQUEST`?" in str(enum_finding)


def test_correct_spellings_of_the_issue_example_pass_in_both_cases():
    resources = record(
        lambda: [
            gcp.compute.BackendService(
                "snake", locality_lb_policy="LEAST_REQUEST", log_config={"sample_rate": 0.5}
            ),
            gcp.compute.BackendService("camel", log_config={"sampleRate": 0.5, "optionalMode": "CUSTOM"}),
            gcp.compute.BackendService(
                "args", log_config=gcp.compute.BackendServiceLogConfigArgs(sample_rate=0.5)
            ),
        ]
    )
    assert check_resources(resources) == []


def test_python_names_are_accepted_only_below_the_top_level():
    nested = check_resource(
        "gcp:compute/backendService:BackendService", {"logConfig": {"sample_rate": 1.0}}, "b"
    )
    top = check_resource("gcp:compute/backendService:BackendService", {"locality_lb_policy": "RANDOM"}, "b")
    assert nested == []
    assert [(f.check, f.suggestion, f.suggestion_alias) for f in top] == [
        ("unknown-key", "locality_lb_policy", "Pulumi name `localityLbPolicy`")
    ]


def test_a_typo_inside_a_list_of_objects_names_its_index():
    resources = record(
        lambda: gcp.compute.BackendService(
            "b", backends=[{"group": "g1"}, {"group": "g2", "balancing_mod": "RATE"}]
        )
    )
    [found] = check_resources(resources)
    assert (found.path, found.suggestion) == ("backends[1].balancing_mod", "balancing_mode")


def test_a_raw_secret_from_the_mocks_is_checked_inside():
    # Without the plan's redaction, a secret arrives as Pulumi's wire wrapper; its content is still checked.
    wrapped = {schema_check._SIG_KEY: schema_check._SECRET_SIG, "value": {"sampel_rate": 1.0}}
    [found] = check_resource("gcp:compute/backendService:BackendService", {"logConfig": wrapped}, "b")
    assert found.path == "logConfig.sampel_rate"


# --------------------------------------------------------------------------------------------------------------
# Check 2: nested required fields.
# --------------------------------------------------------------------------------------------------------------


def test_a_nested_object_missing_a_required_field_is_found():
    resources = record(
        lambda: gcp.compute.RegionInstanceGroupManager(
            "mig",
            base_instance_name="vllm",
            region="us-central1",
            versions=[{"name": "primary"}],
            auto_healing_policies={"initial_delay_sec": 900},
        )
    )
    found = sorted((f.check, f.path, f.value) for f in check_resources(resources))
    assert found == [
        ("missing-required", "autoHealingPolicies.healthCheck", "healthCheck"),
        ("missing-required", "versions[0].instanceTemplate", "instanceTemplate"),
    ]
    assert "requires healthCheck (python health_check)" in str(
        next(f for f in check_resources(resources) if f.value == "healthCheck")
    )


def test_a_required_field_given_as_unknown_counts_as_present():
    inputs = {"autoHealingPolicies": {"healthCheck": "[unknown]", "initialDelaySec": 900}}
    assert (
        check_resource("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", inputs, "m") == []
    )


# --------------------------------------------------------------------------------------------------------------
# Check 3: documented enum values.
# --------------------------------------------------------------------------------------------------------------


def test_a_nested_enum_typo_is_found_with_the_closest_value():
    resources = record(
        lambda: gcp.compute.RegionInstanceGroupManager(
            "mig",
            base_instance_name="vllm",
            versions=[{"instance_template": "t"}],
            update_policy={
                "type": "PROACTIVE",
                "minimal_action": "REPLACE",
                "instance_redistribution_type": "PROACTIV",
            },
        )
    )
    [found] = check_resources(resources)
    assert (found.check, found.path, found.value, found.suggestion) == (
        "enum",
        "updatePolicy.instanceRedistributionType",
        "PROACTIV",
        "PROACTIVE",
    )


def test_an_sdk_enum_annotation_is_enforced():
    # pulumi_docker declares builder_version as the BuilderVersion enum, not in a docstring.
    [found] = check_resource(
        "docker:index/image:Image", {"imageName": "x", "build": {"builderVersion": "V2"}}, "i"
    )
    assert (found.check, found.path) == ("enum", "build.builderVersion")


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("The mode.\nDefault value is `STANDARD_REPOSITORY`.\nPossible values are: `STANDARD_REPOSITORY`, "
         "`VIRTUAL_REPOSITORY`, `REMOTE_REPOSITORY`.", ("STANDARD_REPOSITORY", "VIRTUAL_REPOSITORY", "REMOTE_REPOSITORY")),
        ("Possible values are: `A`.", ("A",)),
        ("The possible values are:\n* `ROUND_ROBIN`: simple.\n  continues here.\n* `MAGLEV`: hashing.\n\nMore text.",
         ("ROUND_ROBIN", "MAGLEV")),
        ("Possible values are PREPARE, TEST_BY_PERCENTAGE, and TEST_ALL_TRAFFIC.",
         ("PREPARE", "TEST_BY_PERCENTAGE", "TEST_ALL_TRAFFIC")),
        ('Valid values are: `"PROACTIVE"`, `"NONE"`. If `PROACTIVE` (default), ...', ("PROACTIVE", "NONE")),
        ('Possible values: ["USE_FIXED_PORT", "USE_NAMED_PORT"]', ("USE_FIXED_PORT", "USE_NAMED_PORT")),
        ("accepted values are: PERIODIC\nPossible values are: `PERIODIC`.", ("PERIODIC",)),
        # No list, or a list mixed with prose: nothing to enforce, rather than a guess.
        ("The name of the resource.", None),
        ("Possible values are: .", None),
        ("Possible values include:\n* VPC_PEERING - for peer networks\n* IPSEC_INTERCONNECT - for VPN", None),
        ("For example, the\nfollowing are valid values:\n* `https://example.com/x`\n* `hyperdisk-throughput`", None),
        ("Valid values are 1 through 65535.", None),
        ("Possible values: API Gateway: apigateway.googleapis.com", None),
        ("Each entry can have one of the following values:\n* **allUsers**: anyone.\n* **user:{emailid}**: a user.", None),
    ],
)  # fmt: skip
def test_documented_values_parser(doc, expected):
    assert documented_values(doc) == expected


def test_a_value_matching_a_documented_template_is_accepted():
    # pulumi_docker documents ipc_mode as `container:<name|id>` among fixed values.
    assert (
        check_resource("docker:index/container:Container", {"image": "i", "ipcMode": "container:abc"}, "c")
        == []
    )
    [found] = check_resource(
        "docker:index/container:Container", {"image": "i", "ipcMode": "containr:abc"}, "c"
    )
    assert found.check == "enum"


def test_every_parsed_enum_contains_its_documented_default():
    # A self-consistency check of the parser over every input type of the SDK modules this project uses.
    import re
    import sys

    default = re.compile(r"Default value is `([^`]+)`")
    modules = ("compute", "artifactregistry", "monitoring", "vertex", "secretmanager", "serviceaccount")
    for name in modules:
        getattr(gcp, name).__name__  # noqa: B018 (loads the lazily imported module and all its files)
    checked = 0
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith(tuple(f"pulumi_gcp.{m}." for m in modules)):
            continue
        for cls in vars(module).values():
            if isinstance(cls, type) and hasattr(cls, "_pulumi_input_type") and cls.__module__ == module_name:
                for prop in schema_check.object_schema(cls).properties.values():
                    values = prop.allowed_values
                    for value in default.findall(prop.doc) if values else ():
                        checked += 1
                        assert value in values, (cls.__name__, prop.python_name, value, values)
    assert checked > 50  # a real sample (98 defaults in pulumi_gcp 10.2.0), not an empty one


# --------------------------------------------------------------------------------------------------------------
# Check 4: names and labels.
# --------------------------------------------------------------------------------------------------------------


def test_a_name_of_64_characters_is_too_long_and_63_is_fine():
    resources = record(
        lambda: [
            gcp.compute.HealthCheck("long", name="a" * 64, http_health_check={"port": 8000}),
            gcp.compute.HealthCheck("ok", name="a" * 63, http_health_check={"port": 8000}),
        ]
    )
    [found] = check_resources(resources)
    assert (found.check, found.resource, found.path, found.value) == ("name", "long", "name", "a" * 64)
    assert "64 characters" in str(found) and found.suggestion == "a" * 63


@pytest.mark.parametrize(
    ("type_token", "key", "value", "suggestion"),
    [
        ("gcp:compute/firewall:Firewall", "name", "Vllm_Allow", "vllm-allow"),
        ("gcp:compute/firewall:Firewall", "name", "vllm-", "vllm"),
        ("gcp:compute/firewall:Firewall", "name", "1vllm", "x-1vllm"),
        ("gcp:compute/instanceTemplate:InstanceTemplate", "namePrefix", "x" * 55, "x" * 54),
        ("gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager", "baseInstanceName", "v" * 59, "v" * 58),
        ("gcp:serviceaccount/account:Account", "accountId", "vm", None),
        ("gcp:serviceaccount/account:Account", "accountId", "vllm-prod-gemma-4-26b-a4b-it-vm", "vllm-prod-gemma-4-26b-a4b-it-v"),
        ("gcp:secretmanager/secret:Secret", "secretId", "hf.token", "hf-token"),
        ("gcp:artifactregistry/repository:Repository", "repositoryId", "Vllm", "vllm"),
        ("gcp:vertex/aiEndpoint:AiEndpoint", "name", "gemma-endpoint", None),
    ],
)  # fmt: skip
def test_invalid_names_are_found(type_token, key, value, suggestion):
    found = [f for f in check_resource(type_token, {key: value}, "r") if f.check == "name"]
    assert [(f.path, f.value, f.suggestion) for f in found] == [(key, value, suggestion)]


@pytest.mark.parametrize(
    ("type_token", "key", "value"),
    [
        (
            "gcp:secretmanager/secret:Secret",
            "secretId",
            "HF_TOKEN-vllm_dev",
        ),  # secret ids allow '_' and capitals
        ("gcp:serviceaccount/account:Account", "accountId", "vllm-0"),
        ("gcp:vertex/aiEndpoint:AiEndpoint", "name", "1234567890"),
        ("gcp:monitoring/alertPolicy:AlertPolicy", "displayName", "Free text: p99 > 5 s!"),
        ("docker:index/registryImage:RegistryImage", "name", "us-central1-docker.pkg.dev/P/R/Image:Tag"),
    ],
)
def test_valid_and_unconstrained_names_pass(type_token, key, value):
    assert [f for f in check_resource(type_token, {key: value}, "r") if f.check == "name"] == []


def test_labels_follow_gcp_rules():
    resources = record(
        lambda: gcp.compute.InstanceTemplate(
            "t",
            machine_type="g2-standard-8",
            disks=[{"boot": True, "labels": {"Team": "ml"}}],
            labels={"env": "Prod", "k" * 64: "v", "model": "gemma-4-26b", "_x": "ok", "ok": "v" * 64},
        )
    )
    found = sorted((f.path, f.value, f.suggestion) for f in check_resources(resources))
    assert found == [
        ("disks[0].labels['Team']", "Team", "team"),
        ("labels['_x']", "_x", "x"),
        ("labels['env']", "Prod", "prod"),
        ("labels['kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk']", "k" * 64, "k" * 63),
        ("labels['ok']", "v" * 64, "v" * 63),
    ]


def test_at_most_64_labels():
    labels = {f"l{i}": "v" for i in range(65)}
    [found] = check_resource("gcp:secretmanager/secret:Secret", {"secretId": "s", "labels": labels}, "s")
    assert (found.check, found.value) == ("label", "65")
    assert (
        check_resource("gcp:secretmanager/secret:Secret", {"labels": dict(list(labels.items())[:64])}, "s")
        == []
    )


def test_docker_labels_are_not_gcp_labels():
    assert (
        check_resource(
            "docker:index/container:Container",
            {"image": "i", "labels": [{"label": "A.B", "value": "C"}]},
            "c",
        )
        == []
    )


# --------------------------------------------------------------------------------------------------------------
# Type tokens, skipped resources, dynamic resources.
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "type_token",
    [
        "vllm-gcp:gce:VllmService",
        "pulumi:providers:gcp",
        "pulumi:pulumi:Stack",
        "aws:s3/bucket:Bucket",
        "nonsense",
    ],
)
def test_components_providers_and_uninstalled_packages_are_skipped(type_token):
    assert check_resource(type_token, {"anything": {"goes": 1}}, "x") == []


def test_an_unknown_type_of_an_installed_package_is_reported():
    [found] = check_resource("gcp:compute/backendServise:BackendServise", {}, "b")
    assert found.check == "unknown-type" and "BackendServise" in str(found)


def test_a_token_whose_class_name_is_not_capitalised_resolves():
    # pulumi_gcp registers this one type with a lower-case class name in its token.
    cls = schema_check.sdk_args_class("gcp:privilegedaccessmanager/entitlement:entitlement")
    assert cls is not None and cls.__name__ == "EntitlementArgs"


@dataclasses.dataclass
class _DemoInputs:
    project: str
    mode: Literal["BLUE_GREEN", "IN_PLACE"]
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    timeout_seconds: int = 600


class _DemoProvider(pulumi.dynamic.ResourceProvider):
    def create(self, props: Any) -> pulumi.dynamic.CreateResult:
        return pulumi.dynamic.CreateResult("id", props)


class _DemoDeployment(pulumi.dynamic.Resource, module="test", name="DemoDeployment"):
    INPUTS = _DemoInputs

    def __init__(self, name: str, props: dict[str, Any]) -> None:
        super().__init__(_DemoProvider(), name, props)


class _UndeclaredDeployment(pulumi.dynamic.Resource, module="test", name="Undeclared"):
    def __init__(self, name: str, props: dict[str, Any]) -> None:
        super().__init__(_DemoProvider(), name, props)


def test_a_dynamic_resource_is_checked_against_its_declared_inputs():
    resources = record(
        lambda: [
            _DemoDeployment("good", {"project": "p", "mode": "IN_PLACE", "labels": {"a": "b"}}),
            _DemoDeployment("bad", {"mode": "BLUE_GREN", "timeout_secs": 5, "labels": {"A": "b"}}),
        ]
    )
    assert resources[0]["type"] == "pulumi-python:dynamic/test:DemoDeployment"
    assert "__provider" in resources[0]["inputs"]
    found = sorted((f.resource, f.check, f.path, f.suggestion) for f in check_resources(resources))
    assert found == [
        ("bad", "enum", "mode", "BLUE_GREEN"),
        ("bad", "label", "labels['A']", "a"),
        (
            "bad",
            "missing-required",
            "project",
            None,
        ),  # nothing else enforces a dynamic resource's required keys
        ("bad", "unknown-key", "timeout_secs", "timeout_seconds"),
    ]


def test_a_dynamic_resource_without_a_declared_schema_is_tolerated():
    resources = record(lambda: _UndeclaredDeployment("x", {"whatever": 1}))
    assert check_resources(resources) == []


def test_the_vertex_provider_schema_is_found_by_convention():
    from components.vertex_provider import VertexModelDeploymentInputs

    schema_check.DYNAMIC_SCHEMAS.pop("pulumi-python:dynamic/vertex:ModelDeployment", None)
    assert (
        schema_check._dynamic_schema("pulumi-python:dynamic/vertex:ModelDeployment")
        is VertexModelDeploymentInputs
    )
    [found] = check_resource("pulumi-python:dynamic/vertex:ModelDeployment", {"spott": True}, "d")[:1]
    assert (found.path, found.suggestion) == ("spott", "spot")


def test_register_dynamic_schema_overrides_discovery():
    schema_check.register_dynamic_schema("pulumi-python:dynamic/test:Registered", _DemoInputs)
    try:
        found = check_resource("pulumi-python:dynamic/test:Registered", {"project": "p", "mode": "X"}, "r")
        assert [f.check for f in found] == ["enum"]
    finally:
        schema_check.DYNAMIC_SCHEMAS.pop("pulumi-python:dynamic/test:Registered")
    with pytest.raises(TypeError):
        schema_check.register_dynamic_schema("pulumi-python:dynamic/test:Bad", int)


# --------------------------------------------------------------------------------------------------------------
# The command line: a saved plan JSON.
# --------------------------------------------------------------------------------------------------------------


def test_cli_exits_2_with_each_finding_on_stderr(tmp_path, capsys):
    plan = {"resources": [{"urn": "u", "type": "gcp:compute/backendService:BackendService", "name": "b",
                           "parent": "p", "inputs": {"localityLbPolicy": "LEAST_REQEST"}}]}  # fmt: skip
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    assert schema_check.main([str(path)]) == 2
    assert (
        "error: [enum] gcp:compute/backendService:BackendService 'b'.localityLbPolicy"
        in capsys.readouterr().err
    )
    plan["resources"][0]["inputs"]["localityLbPolicy"] = "LEAST_REQUEST"
    path.write_text(json.dumps(plan))
    assert schema_check.main([str(path)]) == 0


# --------------------------------------------------------------------------------------------------------------
# Whole programs: every committed stack, and generated variations, plan with zero findings.
# --------------------------------------------------------------------------------------------------------------

COMMITTED_STACKS = sorted((ROOT / "stacks").glob("Pulumi.*.yaml"))


def _plan_findings(stack: str | Path) -> tuple[dict[str, Any], list[Finding]]:
    from components.plan import run_plan

    plan = run_plan(str(stack))
    return plan, check_resources(plan["resources"])


@pytest.mark.parametrize("stack", COMMITTED_STACKS, ids=lambda p: p.stem.removeprefix("Pulumi."))
def test_every_committed_stack_plans_with_zero_findings(stack):
    plan, findings = _plan_findings(stack)
    assert sum(not r["type"].startswith("vllm-gcp:") for r in plan["resources"]) >= 10  # a real program ran
    assert [str(f) for f in findings] == []


def _variations() -> list[tuple[str, str, str | None, bool]]:
    out: list[tuple[str, str, str | None, bool]] = []
    for platform in ("gce", "vertex"):
        for environment in ("dev", "staging", "prod"):
            for domain in ("llm.example.com", None) if platform == "gce" else (None,):
                if platform == "gce" and environment == "prod" and domain is None:
                    continue  # rejected by the config contract: prod serves HTTPS only
                for spot in (False, True):
                    out.append((platform, environment, domain, spot))
    return out


@pytest.mark.parametrize(("platform", "environment", "domain", "spot"), _variations())
def test_generated_variations_plan_with_zero_findings(tmp_path, platform, environment, domain, spot):
    import yaml

    base = "Pulumi.dev.yaml" if platform == "gce" else "Pulumi.vertex.yaml"
    document = yaml.safe_load((ROOT / "stacks" / base).read_text())
    config = document["config"]
    config["vllm-gcp:environment"] = environment
    config["vllm-gcp:hardware"]["spot"] = spot
    if environment == "prod":
        config["vllm-gcp:scaling"] = {
            **config.get("vllm-gcp:scaling", {}),
            "minReplicas": 2,
            "maxReplicas": 3,
        }
    if platform == "gce":
        gce = config.setdefault("vllm-gcp:gce", {})
        gce.pop("domain", None)
        if domain:
            gce["domain"] = domain
    path = tmp_path / f"Pulumi.{platform}-{environment}.yaml"
    path.write_text(yaml.safe_dump(document))
    plan, findings = _plan_findings(path)
    assert plan["platform"] == platform
    types = {r["type"] for r in plan["resources"]}
    assert ("gcp:compute/managedSslCertificate:ManagedSslCertificate" in types) == bool(domain)
    assert [str(f) for f in findings] == []


def test_the_offline_plan_exits_2_naming_resource_and_key_path(tmp_path, capsys):
    from components.plan import main as plan_main

    program = tmp_path / "__main__.py"
    program.write_text(
        "import pulumi_gcp as gcp\n"
        'gcp.compute.BackendService("typo-backend", locality_lb_policy="LEAST_REQEST",\n'
        '                           log_config={"enable": True, "sampel_rate": 1.0})\n'
    )
    assert plan_main(["dev", "--program", str(program)]) == 2
    err = capsys.readouterr().err
    assert "'typo-backend'.logConfig.sampel_rate" in err and "did you mean `sample_rate`" in err
    assert "'typo-backend'.localityLbPolicy" in err and "did you mean `LEAST_REQUEST`?" in err
