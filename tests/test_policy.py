"""The guardrail policy pack: every rule passes a good fixture and fails a bad one, the committed stacks comply,
breaking a guarded property in a committed stack fails with the rule id and remediation, and the pack itself
runs under pulumi-policy's real analyzer, both in-process and as the gRPC server the Pulumi CLI talks to."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import EnforcementLevel, ResourceValidationArgs, StackValidationArgs
from pulumi_policy.deserialize import SPECIAL_SECRET_SIG, SPECIAL_SIG_KEY, deserialize_properties
from pulumi_policy.policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationPolicy,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from policy import offline
from policy import validators as v
from policy.__main__ import PACK_NAME, build_policies, plain
from tests.golden import committed_stacks, plan_for

ROOT = Path(__file__).resolve().parent.parent
IT = v.INSTANCE_TEMPLATE
FW = v.FIREWALL
BS = "gcp:compute/backendService:BackendService"
RBS = "gcp:compute/regionBackendService:RegionBackendService"

# A GPU instance template that satisfies every resource rule, as the mocks record it (camelCase inputs).
GOOD_TEMPLATE: dict[str, Any] = {
    "namePrefix": "vllm-prod-",
    "machineType": "a2-ultragpu-1g",
    "guestAccelerators": [{"type": "nvidia-a100-80gb", "count": 1}],
    "scheduling": {"onHostMaintenance": "TERMINATE", "automaticRestart": True},
    "networkInterfaces": [{"network": "projects/p/global/networks/vllm", "subnetwork": "vllm-subnet"}],
    "serviceAccount": {"email": "vllm-prod-vm@p.iam.gserviceaccount.com", "scopes": ["cloud-platform"]},
    "shieldedInstanceConfig": {
        "enableSecureBoot": True,
        "enableVtpm": True,
        "enableIntegrityMonitoring": True,
    },
    "metadata": {
        "enable-oslogin": "TRUE",
        "startup-script": (
            'API_KEY_SECRET_VERSION="projects/123/secrets/vllm-prod-api-keys/versions/latest"\n'
            'append_secret_to_env_file VLLM_API_KEY "${API_KEY_SECRET_VERSION}"\n'
            'docker run --env-file "${ENV_FILE}" vllm/vllm-openai --api-key "${VLLM_API_KEY}"\n'
        ),
    },
}
GOOD_FIREWALL: dict[str, Any] = {
    "direction": "INGRESS",
    "sourceRanges": ["35.191.0.0/16", "130.211.0.0/22"],
    "allows": [{"protocol": "tcp", "ports": ["8000"]}],
    "targetTags": ["vllm-prod"],
}
GOOD_BACKEND: dict[str, Any] = {
    "loadBalancingScheme": "EXTERNAL_MANAGED",
    "protocol": "HTTP",
    "timeoutSec": 600,
    "securityPolicy": "projects/p/global/securityPolicies/vllm-prod-armor",
}


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `base` with the dotted `path` set to `value` (`DELETE` removes the key)."""
    result = copy.deepcopy(base)
    node = result
    *parents, last = path.split(".")
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if value is DELETE:
        node.pop(last, None)
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return result


DELETE = object()
HF_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345"  # shaped like a token, not one
OPENAI_KEY = "sk-" + "proj-" + "a1B2c3D4e5F6g7H8i9J0k1L2"
GOOGLE_KEY = "AIza" + "SyD-1234567890abcdefghijklmnopqrstu"
PEM = "-----BEGIN " + "PRIVATE KEY-----\nMIIEvQ...\n-----END PRIVATE KEY-----"

# (rule, resource type, inputs, config, passes) -- at least one passing and one failing fixture per resource rule.
RESOURCE_CASES: list[tuple[v.Rule, str, dict[str, Any], v.GuardrailConfig, bool, str]] = [
    # CKV_GCP_40: no external IP on GPU VMs
    (v.NO_EXTERNAL_IP, IT, GOOD_TEMPLATE, v.GuardrailConfig(), True, "private GPU template"),
    (
        v.NO_EXTERNAL_IP,
        IT,
        changed(GOOD_TEMPLATE, "networkInterfaces.0.accessConfigs", [{}]),
        v.GuardrailConfig(),
        False,
        "ephemeral public IP",
    ),
    (
        v.NO_EXTERNAL_IP,
        IT,
        changed(changed(GOOD_TEMPLATE, "guestAccelerators", []), "machineType", "g2-standard-24")
        | {"networkInterfaces": [{"network": "n", "accessConfigs": [{"natIp": "203.0.113.7"}]}]},
        v.GuardrailConfig(),
        False,
        "g2 machine type carries GPUs implicitly",
    ),
    (
        v.NO_EXTERNAL_IP,
        IT,
        changed(changed(GOOD_TEMPLATE, "guestAccelerators", []), "machineType", "e2-small")
        | {"networkInterfaces": [{"network": "n", "accessConfigs": [{}]}]},
        v.GuardrailConfig(),
        True,
        "CPU-only bastion is out of scope",
    ),
    (
        v.NO_EXTERNAL_IP,
        v.INSTANCE,
        changed(GOOD_TEMPLATE, "networkInterfaces.0.ipv6AccessConfigs", [{}]),
        v.GuardrailConfig(),
        False,
        "standalone GPU instance with an IPv6 access config",
    ),
    # VLLM_GCP_001: TERMINATE on host maintenance
    (v.GPU_TERMINATE, IT, GOOD_TEMPLATE, v.GuardrailConfig(), True, "TERMINATE"),
    (
        v.GPU_TERMINATE,
        IT,
        changed(GOOD_TEMPLATE, "scheduling.onHostMaintenance", "MIGRATE"),
        v.GuardrailConfig(),
        False,
        "MIGRATE",
    ),
    (
        v.GPU_TERMINATE,
        IT,
        changed(GOOD_TEMPLATE, "scheduling", DELETE),
        v.GuardrailConfig(),
        False,
        "unset scheduling defaults to MIGRATE",
    ),
    (
        v.GPU_TERMINATE,
        IT,
        changed(GOOD_TEMPLATE, "scheduling.onHostMaintenance", v.UNKNOWN),
        v.GuardrailConfig(),
        True,
        "unknown during preview is not flagged",
    ),
    # CKV_GCP_30: no default compute service account
    (v.NO_DEFAULT_SA, IT, GOOD_TEMPLATE, v.GuardrailConfig(), True, "dedicated service account"),
    (
        v.NO_DEFAULT_SA,
        IT,
        changed(GOOD_TEMPLATE, "serviceAccount.email", "123456789012-compute@developer.gserviceaccount.com"),
        v.GuardrailConfig(),
        False,
        "default compute SA by email",
    ),
    (
        v.NO_DEFAULT_SA,
        IT,
        changed(GOOD_TEMPLATE, "serviceAccount.email", DELETE),
        v.GuardrailConfig(),
        False,
        "scopes without an email mean the default SA",
    ),
    # CKV_GCP_31: no cloud-platform scope on the default SA
    (
        v.NO_CLOUD_PLATFORM_ON_DEFAULT_SA,
        IT,
        GOOD_TEMPLATE,
        v.GuardrailConfig(),
        True,
        "cloud-platform on a dedicated SA",
    ),
    (
        v.NO_CLOUD_PLATFORM_ON_DEFAULT_SA,
        IT,
        changed(GOOD_TEMPLATE, "serviceAccount", {"email": "default", "scopes": ["cloud-platform"]}),
        v.GuardrailConfig(),
        False,
        "cloud-platform on the default SA",
    ),
    (
        v.NO_CLOUD_PLATFORM_ON_DEFAULT_SA,
        IT,
        changed(
            GOOD_TEMPLATE, "serviceAccount", {"scopes": ["https://www.googleapis.com/auth/cloud-platform"]}
        ),
        v.GuardrailConfig(),
        False,
        "full-URL scope, implicit default SA",
    ),
    (
        v.NO_CLOUD_PLATFORM_ON_DEFAULT_SA,
        IT,
        changed(GOOD_TEMPLATE, "serviceAccount", {"email": "default", "scopes": ["logging-write"]}),
        v.GuardrailConfig(),
        True,
        "default SA with narrow scopes is CKV_GCP_30's business, not 31's",
    ),
    # CKV_GCP_39: Shielded VM
    (v.SHIELDED_VM, IT, GOOD_TEMPLATE, v.GuardrailConfig(), True, "all three on"),
    (
        v.SHIELDED_VM,
        IT,
        changed(GOOD_TEMPLATE, "shieldedInstanceConfig", DELETE),
        v.GuardrailConfig(),
        False,
        "no shieldedInstanceConfig",
    ),
    (
        v.SHIELDED_VM,
        IT,
        changed(GOOD_TEMPLATE, "shieldedInstanceConfig.enableVtpm", False),
        v.GuardrailConfig(),
        False,
        "vTPM off",
    ),
    (
        v.SHIELDED_VM,
        IT,
        changed(GOOD_TEMPLATE, "shieldedInstanceConfig.enableSecureBoot", False),
        v.GuardrailConfig(),
        False,
        "Secure Boot off",
    ),
    (
        v.SHIELDED_VM,
        IT,
        changed(GOOD_TEMPLATE, "shieldedInstanceConfig.enableSecureBoot", False),
        v.GuardrailConfig(require_secure_boot=False),
        True,
        "Secure Boot off, allowed by config",
    ),
    # CKV_GCP_34: OS Login
    (v.OS_LOGIN, IT, GOOD_TEMPLATE, v.GuardrailConfig(), True, "enable-oslogin TRUE"),
    (
        v.OS_LOGIN,
        IT,
        changed(GOOD_TEMPLATE, "metadata.enable-oslogin", "FALSE"),
        v.GuardrailConfig(),
        False,
        "enable-oslogin FALSE",
    ),
    (
        v.OS_LOGIN,
        IT,
        changed(GOOD_TEMPLATE, "metadata.enable-oslogin", DELETE),
        v.GuardrailConfig(),
        False,
        "enable-oslogin unset",
    ),
    # VLLM_GCP_002: no secrets in metadata or the startup script
    (
        v.NO_SECRETS_IN_METADATA,
        IT,
        GOOD_TEMPLATE,
        v.GuardrailConfig(),
        True,
        "Secret Manager names and shell references only",
    ),
    (
        v.NO_SECRETS_IN_METADATA,
        IT,
        changed(GOOD_TEMPLATE, "metadata.hf-token", HF_TOKEN),
        v.GuardrailConfig(),
        False,
        "Hugging Face token",
    ),
    (
        v.NO_SECRETS_IN_METADATA,
        IT,
        changed(GOOD_TEMPLATE, "metadataStartupScript", f"vllm serve m --api-key {OPENAI_KEY}"),
        v.GuardrailConfig(),
        False,
        "sk- key in metadataStartupScript",
    ),
    (
        v.NO_SECRETS_IN_METADATA,
        IT,
        changed(GOOD_TEMPLATE, "metadata.maps-key", GOOGLE_KEY),
        v.GuardrailConfig(),
        False,
        "Google API key",
    ),
    (
        v.NO_SECRETS_IN_METADATA,
        IT,
        changed(GOOD_TEMPLATE, "metadata.user-data", PEM),
        v.GuardrailConfig(),
        False,
        "PEM private key",
    ),
    (
        v.NO_SECRETS_IN_METADATA,
        IT,
        changed(GOOD_TEMPLATE, "metadata.startup-script", 'ARGS=["--api-key", "plain-text-key-1234"]'),
        v.GuardrailConfig(),
        False,
        "literal --api-key in rendered args",
    ),
    (
        v.NO_SECRETS_IN_METADATA,
        IT,
        changed(GOOD_TEMPLATE, "metadata.startup-script", "export HF_TOKEN=[secret]"),
        v.GuardrailConfig(),
        False,
        "a Pulumi secret interpolated into the script",
    ),
    (
        v.NO_SECRETS_IN_METADATA,
        IT,
        changed(
            GOOD_TEMPLATE,
            "metadata.db-password",
            {v.SECRET_SIG_KEY: v.SECRET_SIG, "value": "not-token-shaped"},
        ),
        v.GuardrailConfig(),
        False,
        "a metadata value held as a Pulumi secret (engine wire form)",
    ),
    (
        v.NO_SECRETS_IN_METADATA,
        IT,
        changed(
            GOOD_TEMPLATE, "metadataStartupScript", {v.SECRET_SIG_KEY: v.SECRET_SIG, "ciphertext": "AAEC"}
        ),
        v.GuardrailConfig(),
        False,
        "an encrypted startup script (stack export form)",
    ),
    # AVD-GCP-0027: narrow firewall
    (v.FIREWALL_SOURCES, FW, GOOD_FIREWALL, v.GuardrailConfig(), True, "Google front-end ranges only"),
    (
        v.FIREWALL_SOURCES,
        FW,
        changed(GOOD_FIREWALL, "sourceRanges", ["0.0.0.0/0"]),
        v.GuardrailConfig(),
        False,
        "open to the internet",
    ),
    (
        v.FIREWALL_SOURCES,
        FW,
        changed(GOOD_FIREWALL, "allows", [{"protocol": "tcp", "ports": ["22"]}])
        | {"sourceRanges": ["0.0.0.0/0"]},
        v.GuardrailConfig(),
        False,
        "0.0.0.0/0 on any port",
    ),
    (
        v.FIREWALL_SOURCES,
        FW,
        changed(GOOD_FIREWALL, "sourceRanges", ["203.0.113.0/24"]),
        v.GuardrailConfig(),
        False,
        "serving port from an unlisted range",
    ),
    (
        v.FIREWALL_SOURCES,
        FW,
        changed(GOOD_FIREWALL, "sourceRanges", ["203.0.113.0/24"]),
        v.GuardrailConfig(allowed_source_ranges=("203.0.113.0/24",)),
        True,
        "configured allowlist",
    ),
    (
        v.FIREWALL_SOURCES,
        FW,
        changed(GOOD_FIREWALL, "allows", [{"protocol": "tcp", "ports": ["7000-9000"]}])
        | {"sourceRanges": ["10.0.0.0/8"]},
        v.GuardrailConfig(),
        False,
        "a port range covering 8000",
    ),
    (
        v.FIREWALL_SOURCES,
        FW,
        changed(GOOD_FIREWALL, "sourceRanges", DELETE),
        v.GuardrailConfig(),
        False,
        "no source at all defaults to 0.0.0.0/0",
    ),
    (
        v.FIREWALL_SOURCES,
        FW,
        changed(GOOD_FIREWALL, "allows", [{"protocol": "tcp", "ports": ["22"]}])
        | {"sourceRanges": ["35.235.240.0/20"]},
        v.GuardrailConfig(),
        True,
        "IAP SSH range on port 22 does not touch the serving port",
    ),
    # VLLM_GCP_003: backend timeout
    (v.BACKEND_TIMEOUT, BS, GOOD_BACKEND, v.GuardrailConfig(), True, "600 s"),
    (v.BACKEND_TIMEOUT, BS, changed(GOOD_BACKEND, "timeoutSec", 30), v.GuardrailConfig(), False, "30 s"),
    (
        v.BACKEND_TIMEOUT,
        BS,
        changed(GOOD_BACKEND, "timeoutSec", DELETE),
        v.GuardrailConfig(),
        False,
        "unset defaults to 30 s",
    ),
    (
        v.BACKEND_TIMEOUT,
        BS,
        changed(GOOD_BACKEND, "protocol", "TCP") | {"timeoutSec": 30},
        v.GuardrailConfig(),
        True,
        "TCP proxy backends are out of scope",
    ),
    # VLLM_GCP_004: Cloud Armor on public backends
    (v.CLOUD_ARMOR, BS, GOOD_BACKEND, v.GuardrailConfig(), True, "policy attached"),
    (
        v.CLOUD_ARMOR,
        BS,
        changed(GOOD_BACKEND, "securityPolicy", DELETE),
        v.GuardrailConfig(),
        False,
        "public backend without Cloud Armor",
    ),
    (
        v.CLOUD_ARMOR,
        BS,
        changed(GOOD_BACKEND, "loadBalancingScheme", DELETE) | {"securityPolicy": ""},
        v.GuardrailConfig(),
        False,
        "scheme defaults to EXTERNAL",
    ),
    (
        v.CLOUD_ARMOR,
        RBS,
        changed(GOOD_BACKEND, "loadBalancingScheme", "INTERNAL_MANAGED") | {"securityPolicy": ""},
        v.GuardrailConfig(),
        True,
        "internal backends are out of scope",
    ),
]


def case_id(case: tuple[Any, ...]) -> str:
    rule, _, _, _, passes, label = case
    return f"{rule.id}-{'pass' if passes else 'fail'}-{label}"


@pytest.mark.parametrize("case", RESOURCE_CASES, ids=[case_id(c) for c in RESOURCE_CASES])
def test_resource_rule_fixture(
    case: tuple[v.Rule, str, dict[str, Any], v.GuardrailConfig, bool, str],
) -> None:
    rule, resource_type, inputs, config, passes, _ = case
    entry = next(e for e in v.RESOURCE_RULES if e.rule == rule)
    problems = entry.check(resource_type, inputs, config)
    assert (problems == []) is passes, problems


def test_every_rule_has_a_passing_and_a_failing_fixture() -> None:
    covered = {(rule, passes) for rule, *_, passes, _ in RESOURCE_CASES} | {
        (rule, passes) for rule, _, passes, _ in STACK_CASES
    }
    for rule in v.ALL_RULES:
        assert (rule, True) in covered and (rule, False) in covered, (
            f"{rule.id} lacks a pass or a fail fixture"
        )


def test_good_template_passes_every_resource_rule_at_once() -> None:
    assert v.evaluate_resource(v.Resource(IT, "vllm", GOOD_TEMPLATE)) == []


def test_violation_message_names_rule_id_resource_and_remediation() -> None:
    bad = changed(GOOD_TEMPLATE, "networkInterfaces.0.accessConfigs", [{}])
    [violation] = v.evaluate_resource(v.Resource(IT, "vllm-prod-template", bad, urn="urn:x"))
    assert violation.message.startswith("[CKV_GCP_40] vllm-prod-template: networkInterfaces[0]")
    assert v.NO_EXTERNAL_IP.remediation in violation.message
    assert violation.urn == "urn:x"


def test_secret_messages_never_echo_the_secret() -> None:
    problems = v.check_no_secrets_in_metadata(
        IT, changed(GOOD_TEMPLATE, "metadata.hf", HF_TOKEN), v.GuardrailConfig()
    )
    assert problems and HF_TOKEN not in " ".join(problems)


@pytest.mark.parametrize(
    ("machine_type", "gpus"),
    [
        ("a2-ultragpu-1g", 1),
        ("a2-highgpu-8g", 8),
        ("a3-highgpu-4g", 4),
        ("g2-standard-24", 2),
        ("g2-standard-8", 1),
        ("g4-standard-384", 8),
        ("zones/us-central1-a/machineTypes/g2-standard-48", 4),
        ("n2-standard-8", 0),
        ("e2-small", 0),
    ],
)
def test_implicit_gpus_of_machine_families(machine_type: str, gpus: int) -> None:
    assert v.implicit_gpus(machine_type) == gpus


def test_policy_config_rejects_unknown_keys_and_bad_cidrs() -> None:
    with pytest.raises(ValueError, match=r"unknown key 'maxGpus'.*known keys: .*maxTotalGpus"):
        v.GuardrailConfig.from_policy_config({"maxGpus": 4})
    with pytest.raises(ValueError, match=r"allowedSourceRanges entry '10\.0\.0\.300/8' is not a CIDR"):
        v.GuardrailConfig.from_policy_config({"allowedSourceRanges": ["10.0.0.300/8"]})
    with pytest.raises(ValueError, match=r"maxTotalGpus must be a non-negative whole number, not 2\.5"):
        v.GuardrailConfig.from_policy_config({"maxTotalGpus": 2.5})
    with pytest.raises(ValueError, match=r"environment must be dev, staging or prod, not 'production'"):
        v.GuardrailConfig.from_policy_config({"environment": "production"})
    with pytest.raises(ValueError, match=r"requireSecureBoot must be true or false, not 'no'"):
        v.GuardrailConfig.from_policy_config({"requireSecureBoot": "no"})
    # The engine hands the pack every number as a float (protobuf Struct): 4.0 is the whole number 4.
    config = v.GuardrailConfig.from_policy_config({"maxTotalGpus": 4.0, "enforcementLevel": "mandatory"})
    assert config.max_total_gpus == 4 and isinstance(config.max_total_gpus, int)


# ---------------------------------------------------------------------------------------------------------------------
# Stack rules

MIG = "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager"
AUTOSCALER = "gcp:compute/regionAutoscaler:RegionAutoscaler"
CERT = "gcp:compute/managedSslCertificate:ManagedSslCertificate"
HTTPS_PROXY = "gcp:compute/targetHttpsProxy:TargetHttpsProxy"
HTTP_PROXY = "gcp:compute/targetHttpProxy:TargetHttpProxy"
FORWARDING_RULE = "gcp:compute/globalForwardingRule:GlobalForwardingRule"


def gce_stack(
    *, min_replicas: int = 2, max_replicas: int = 4, gpus: int = 1, https: bool = True, labels: bool = False
) -> list[v.Resource]:
    """A gce-shaped stack as the mocks record it: references are self links with auto-generated names."""
    template = dict(GOOD_TEMPLATE, guestAccelerators=[{"type": "nvidia-a100-80gb", "count": gpus}])
    if labels:
        template["labels"] = {"environment": "prod"}
    base = "https://www.googleapis.com/compute/v1/projects/p"
    resources = [
        v.Resource(IT, "vllm-prod-template", template, "urn:it"),
        v.Resource(
            MIG,
            "vllm-prod-mig",
            {
                "baseInstanceName": "vllm-prod",
                "versions": [
                    {"instanceTemplate": f"{base}/global/instanceTemplates/vllm-prod-template-1a2b3c4"}
                ],
            },
            "urn:mig",
        ),
        v.Resource(
            AUTOSCALER,
            "vllm-prod-autoscaler",
            {
                "target": f"{base}/regions/us-central1/regionInstanceGroupManagers/vllm-prod-mig-9f8e7d6",
                "autoscalingPolicy": {"minReplicas": min_replicas, "maxReplicas": max_replicas},
            },
            "urn:as",
        ),
        v.Resource(BS, "vllm-prod-backend", GOOD_BACKEND, "urn:bs"),
        v.Resource(FORWARDING_RULE, "vllm-prod-https", {"portRange": "443"}, "urn:fr"),
    ]
    if https:
        resources += [
            v.Resource(CERT, "vllm-prod-cert", {"managed": {"domains": ["llm.example.com"]}}, "urn:cert"),
            v.Resource(HTTPS_PROXY, "vllm-prod-https-proxy", {"sslCertificates": ["urn:cert"]}, "urn:hp"),
        ]
    else:
        resources.append(v.Resource(HTTP_PROXY, "vllm-prod-http-proxy", {}, "urn:p"))
    return resources


VERTEX = "pulumi-python:dynamic/vertex:ModelDeployment"  # our dynamic provider's type token


def vertex_stack(min_replicas: int, max_replicas: int, gpus: int) -> list[v.Resource]:
    """Our dynamic provider's deployment inputs (components/vertex_provider.py), as the mocks record them."""
    deployment = {
        "machineType": "a2-ultragpu-1g",
        "acceleratorType": "NVIDIA_A100_80GB",
        "acceleratorCount": gpus,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "__provider": "[dynamic provider]",
    }
    return [
        v.Resource(
            "gcp:vertex/aiEndpoint:AiEndpoint", "vllm-vertex-endpoint", {"dedicatedEndpointEnabled": True}
        ),
        v.Resource(VERTEX, "vllm-vertex-deployment", deployment, "urn:vd"),
    ]


def vertex_api_shaped(min_replicas: int, max_replicas: int, gpus: int) -> list[v.Resource]:
    """The same deployment in the Vertex API's own nesting and snake_case names."""
    deployment = {
        "dedicated_resources": {
            "machine_spec": {"machine_type": "g2-standard-12", "accelerator_count": gpus},
            "min_replica_count": min_replicas,
            "max_replica_count": max_replicas,
        }
    }
    return [v.Resource("gcp:vertex/aiEndpointWithModelGardenDeployment:X", "d", deployment, "urn:d")]


SECRET_VERSION = v.SECRET_VERSION
RANDOM_PASSWORD = v.RANDOM_PASSWORD
# Payloads shaped like what this stack manages: pulumi-random's 48 alphanumerics (length=48, special=False) and a
# vendor token of no known shape. Neither matches SECRET_PATTERNS: only the stack-wide check can catch them.
GENERATED_API_KEY = "q7WfK2mZ9xTcR4bNvL8sJ3hYpD6gA1eU5oIzXr0HtBn2MkQw"
VENDOR_TOKEN = "tok" + "9F3kLmQ2xZ7wR8vB1nC4jH6tY0pD5sAeG"
SCRIPT_HEAD = GOOD_TEMPLATE["metadata"]["startup-script"]


def secret_stack(
    script_tail: str = "",
    *,
    api_key: Any = GENERATED_API_KEY,
    hf_token: Any = VENDOR_TOKEN,
    hf_extra: dict[str, Any] | None = None,
    field: str = "metadata.startup-script",
) -> list[v.Resource]:
    """A gce stack with the secret payloads raw, as a real preview's AnalyzeStack sees its outputs."""
    [template, *rest] = gce_stack()
    inputs = changed(dict(template.inputs), field, SCRIPT_HEAD + script_tail)
    return [
        v.Resource(IT, template.name, inputs, template.urn),
        *rest,
        v.Resource(
            RANDOM_PASSWORD, "vllm-api-key-value", {"length": 48, "special": False, "result": api_key}
        ),
        v.Resource(
            SECRET_VERSION,
            "vllm-hf-token-version",
            {"secret": "projects/123456789012/secrets/vllm-hf-token", "secretData": hf_token}
            | (hf_extra or {}),
        ),
    ]


def wire(value: str) -> dict[str, str]:
    """A secret as the engine marshals it to an analyzer (MarshalOptions KeepSecrets)."""
    return {v.SECRET_SIG_KEY: v.SECRET_SIG, "value": value}


PROD = v.GuardrailConfig(environment="prod")
STACK_CASES: list[tuple[v.Rule, Callable[[], tuple[list[v.Resource], v.GuardrailConfig]], bool, str]] = [
    # VLLM_GCP_002 (stack-wide): the stack's own secret payloads never reach metadata
    (
        v.NO_MANAGED_SECRETS_IN_METADATA,
        lambda: (secret_stack(), v.GuardrailConfig()),
        True,
        "only Secret Manager names in the startup script",
    ),
    (
        v.NO_MANAGED_SECRETS_IN_METADATA,
        lambda: (secret_stack(f'VLLM_API_KEY="{GENERATED_API_KEY}"\n'), v.GuardrailConfig()),
        False,
        "RandomPassword result inside metadata.startup-script",
    ),
    (
        v.NO_MANAGED_SECRETS_IN_METADATA,
        lambda: (secret_stack(f"docker login -p {VENDOR_TOKEN}\n"), v.GuardrailConfig()),
        False,
        "SecretVersion secretData inside metadata.startup-script",
    ),
    (
        v.NO_MANAGED_SECRETS_IN_METADATA,
        lambda: (
            secret_stack(
                f"KEY={GENERATED_API_KEY}", field="metadataStartupScript", api_key=wire(GENERATED_API_KEY)
            ),
            v.GuardrailConfig(),
        ),
        False,
        "wire-form RandomPassword result inside metadataStartupScript",
    ),
    (
        v.NO_MANAGED_SECRETS_IN_METADATA,
        lambda: (
            secret_stack(
                f"T={VENDOR_TOKEN}",
                hf_token=base64.b64encode(VENDOR_TOKEN.encode()).decode(),
                hf_extra={"isSecretDataBase64": True},
            ),
            v.GuardrailConfig(),
        ),
        False,
        "decoded value of a base64 secretData",
    ),
    (
        v.NO_MANAGED_SECRETS_IN_METADATA,
        lambda: (
            secret_stack(f"K={VENDOR_TOKEN}", hf_token=f"{GENERATED_API_KEY}\n{VENDOR_TOKEN}\n"),
            v.GuardrailConfig(),
        ),
        False,
        "one key of a multi-key secretData",
    ),
    (
        v.NO_MANAGED_SECRETS_IN_METADATA,
        lambda: (
            secret_stack(f"echo {base64.b64encode(GENERATED_API_KEY.encode()).decode()} | base64 -d"),
            v.GuardrailConfig(),
        ),
        False,
        "base64-encoded RandomPassword result",
    ),
    (
        v.NO_MANAGED_SECRETS_IN_METADATA,
        lambda: (
            secret_stack("# [secret] [unknown]\n", api_key=v.UNKNOWN, hf_token=v.SECRET_MARKER),
            v.GuardrailConfig(),
        ),
        True,
        "unknown or masked payloads (preview of a new stack, offline plan) give nothing to search for",
    ),
    # VLLM_GCP_005: HTTPS in prod
    (v.PROD_HTTPS, lambda: (gce_stack(), PROD), True, "cert and HTTPS proxy"),
    (v.PROD_HTTPS, lambda: (gce_stack(https=False), PROD), False, "HTTP-only prod load balancer"),
    (
        v.PROD_HTTPS,
        lambda: (gce_stack(https=False), v.GuardrailConfig(environment="dev")),
        True,
        "HTTP-only dev",
    ),
    (
        v.PROD_HTTPS,
        lambda: (gce_stack(https=False, labels=True), v.GuardrailConfig()),
        False,
        "prod inferred from labels",
    ),
    (v.PROD_HTTPS, lambda: (vertex_stack(2, 4, 1), PROD), True, "vertex prod has no LB of ours"),
    # VLLM_GCP_006: >= 2 replicas in prod
    (v.PROD_REPLICAS, lambda: (gce_stack(min_replicas=2), PROD), True, "autoscaler min 2"),
    (v.PROD_REPLICAS, lambda: (gce_stack(min_replicas=1), PROD), False, "autoscaler min 1"),
    (
        v.PROD_REPLICAS,
        lambda: (gce_stack(min_replicas=1), v.GuardrailConfig(environment="dev")),
        True,
        "min 1 in dev",
    ),
    (
        v.PROD_REPLICAS,
        lambda: ([r for r in gce_stack() if r.type != AUTOSCALER], PROD),
        False,
        "MIG without autoscaler or targetSize",
    ),
    (
        v.PROD_REPLICAS,
        lambda: (
            [
                r if r.type != MIG else v.Resource(MIG, r.name, dict(r.inputs, targetSize=3), r.urn)
                for r in gce_stack()
                if r.type != AUTOSCALER
            ],
            PROD,
        ),
        True,
        "fixed-size MIG of 3",
    ),
    (v.PROD_REPLICAS, lambda: (vertex_stack(1, 2, 1), PROD), False, "vertex minReplicas 1"),
    (v.PROD_REPLICAS, lambda: (vertex_stack(2, 2, 1), PROD), True, "vertex minReplicas 2"),
    (v.PROD_REPLICAS, lambda: (vertex_api_shaped(1, 2, 1), PROD), False, "Vertex API min_replica_count 1"),
    # VLLM_GCP_007: GPU budget
    (
        v.GPU_BUDGET,
        lambda: (gce_stack(max_replicas=4, gpus=4), v.GuardrailConfig(max_total_gpus=16)),
        True,
        "4 GPUs x 4 replicas = 16",
    ),
    (
        v.GPU_BUDGET,
        lambda: (gce_stack(max_replicas=5, gpus=4), v.GuardrailConfig(max_total_gpus=16)),
        False,
        "4 GPUs x 5 replicas = 20",
    ),
    (
        v.GPU_BUDGET,
        lambda: (vertex_stack(1, 8, 2), v.GuardrailConfig(max_total_gpus=8)),
        False,
        "vertex 2 GPUs x 8 replicas",
    ),
    (
        v.GPU_BUDGET,
        lambda: (vertex_stack(1, 4, 2), v.GuardrailConfig(max_total_gpus=8)),
        True,
        "vertex 2 GPUs x 4 replicas",
    ),
    (
        v.GPU_BUDGET,
        lambda: (vertex_api_shaped(1, 5, 2), v.GuardrailConfig(max_total_gpus=8)),
        False,
        "Vertex API 2 GPUs x 5 replicas",
    ),
]


@pytest.mark.parametrize(
    "case", STACK_CASES, ids=[f"{c[0].id}-{'pass' if c[2] else 'fail'}-{c[3]}" for c in STACK_CASES]
)
def test_stack_rule_fixture(
    case: tuple[v.Rule, Callable[[], tuple[list[v.Resource], v.GuardrailConfig]], bool, str],
) -> None:
    rule, build, passes, _ = case
    resources, config = build()
    entry = next(e for e in v.STACK_RULES if e.rule == rule)
    problems = entry.check(resources, config)
    assert (problems == []) is passes, problems


def test_gpu_budget_links_mig_to_its_template_and_autoscaler() -> None:
    [(resource, gpus, how)] = v.gpus_at_max_scale(gce_stack(max_replicas=3, gpus=2))
    assert (resource.name, gpus, how) == ("vllm-prod-mig", 6, "2 GPU(s)/VM x maxReplicas 3")


def test_gpu_budget_message_shows_the_arithmetic() -> None:
    [(_, detail)] = v.check_gpu_budget(
        gce_stack(max_replicas=5, gpus=4), v.GuardrailConfig(max_total_gpus=16)
    )
    assert detail == (
        "20 GPUs at max scale exceed the budget of 16 (vllm-prod-mig: 4 GPU(s)/VM x maxReplicas 5)."
    )


def test_stack_secret_messages_name_the_source_and_a_fingerprint_never_the_value() -> None:
    script = f"printf %s {GENERATED_API_KEY} > /etc/vllm/key\ncurl -H 'X-Token: {VENDOR_TOKEN}' ...\n"
    assert v.find_secrets(script) == []  # the per-resource patterns are blind to both payloads
    problems = v.check_no_managed_secrets_in_metadata(secret_stack(script), v.GuardrailConfig())
    details = [detail for _, detail in problems]
    assert {culprit.name for culprit, _ in problems if culprit} == {"vllm-prod-template"}
    fingerprint = hashlib.sha256(GENERATED_API_KEY.encode()).hexdigest()[:12]
    assert (
        "metadata['startup-script'] contains the value of random:index/randomPassword:RandomPassword "
        f"vllm-api-key-value.result (sha256 {fingerprint}, 48 chars)."
    ) in details
    assert any("vllm-hf-token-version.secretData" in d for d in details)
    report = v.evaluate_stack(secret_stack(script))
    for text in [*details, report.render(), repr(v.managed_secrets(secret_stack()))]:
        for secret in (GENERATED_API_KEY, VENDOR_TOKEN, GENERATED_API_KEY[:16], VENDOR_TOKEN[:16]):
            assert secret not in text


def test_short_payloads_are_not_searched_for() -> None:
    """A 3-char secretData ("yes") would match innocent metadata; the check ignores payloads under 8 chars."""
    resources = secret_stack("enable=yes\n", hf_token="yes")
    assert [s.source for s in v.managed_secrets(resources)] == [
        f"{RANDOM_PASSWORD} vllm-api-key-value.result"
    ]
    assert v.check_no_managed_secrets_in_metadata(resources, v.GuardrailConfig()) == []


# ---------------------------------------------------------------------------------------------------------------------
# The committed stacks, through the offline plan


def stack_environment(stack: str) -> str:
    document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    return str(document["config"].get("vllm-gcp:environment", "dev"))


def planned(stack: str) -> list[v.Resource]:
    return [v.Resource.from_plan(record) for record in plan_for(stack)["resources"]]


@pytest.mark.parametrize("stack", committed_stacks())
def test_committed_stack_complies(stack: str) -> None:
    """Every rule, advisory ones included, with the config CI uses for the stack (prod.json for prod)."""
    plan = plan_for(stack)
    assert plan["resources"], f"the plan of stack {stack} has no resources"
    result = offline.check_stack(stack, plan=plan)
    assert result.config_file.name == ("prod.json" if stack_environment(stack) == "prod" else "nonprod.json")
    assert result.report.ok, f"stack {stack} breaks guardrails:\n{result.render()}"


def test_committed_stacks_comply_with_the_default_settings_too() -> None:
    for stack in committed_stacks():
        report = v.evaluate_stack(planned(stack), v.GuardrailConfig(environment=stack_environment(stack)))
        assert report.ok, f"stack {stack} breaks guardrails:\n{report.render()}"


def test_offline_check_blocks_a_prod_stack_over_the_gpu_budget(tmp_path: Path) -> None:
    """End to end: a stack file -> the offline plan -> the guardrails, exit 1 on a mandatory rule."""
    document = yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    document["config"]["vllm-gcp:scaling"]["maxReplicas"] = 20  # 20 x 1 A100 > the prod budget of 16
    stack_file = tmp_path / "Pulumi.greedy.yaml"
    stack_file.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [sys.executable, "-m", "policy.offline", str(stack_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "[mandatory] [VLLM_GCP_007]" in result.stdout
        and "20 GPUs at max scale exceed the budget of 16" in (result.stdout)
    )
    assert v.GPU_BUDGET.remediation in result.stdout


@pytest.mark.parametrize(
    ("pack_config", "expected"),
    [
        ({}, {"gpu-vm-no-external-ip": "mandatory", "gpu-budget": "advisory"}),
        ({"all": "mandatory"}, {"gpu-vm-no-external-ip": "mandatory", "gpu-budget": "mandatory"}),
        (
            {"all": "mandatory", "gpu-budget": {"enforcementLevel": "advisory", "maxTotalGpus": 4}},
            {"gpu-vm-no-external-ip": "mandatory", "gpu-budget": "advisory"},
        ),
        (
            {"gpu-vm-no-external-ip": "disabled"},
            {"gpu-vm-no-external-ip": "disabled", "gpu-budget": "advisory"},
        ),
    ],
)
def test_offline_enforcement_levels_follow_the_pack_config(
    pack_config: dict[str, Any], expected: dict[str, str]
) -> None:
    levels = offline.enforcement_levels(pack_config)
    assert {name: levels[name] for name in expected} == expected


def test_offline_config_errors_name_the_bad_entry() -> None:
    with pytest.raises(ValueError, match=r"gpu-budget: enforcementLevel 'blocking' is not one of"):
        offline.enforcement_levels({"gpu-budget": {"enforcementLevel": "blocking"}})
    with pytest.raises(ValueError, match=r"unknown policies \['gpu-budgets'\]"):
        offline.rule_configs({"gpu-budgets": {}}, "dev")
    configs = offline.rule_configs({"gpu-budget": {"maxTotalGpus": 4}}, "prod")
    assert configs["gpu-budget"].max_total_gpus == 4 and configs["prod-https"].environment == "prod"


def _first(resources: list[v.Resource], types: frozenset[str] | set[str], stack: str) -> v.Resource:
    found = [r for r in resources if r.type in types]
    assert found, f"the {stack} plan has no {sorted(types)}"
    return found[0]


def _mutate(resources: list[v.Resource], target: v.Resource, inputs: dict[str, Any]) -> list[v.Resource]:
    return [v.Resource(r.type, r.name, inputs, r.urn) if r is target else r for r in resources]


def add_access_config(inputs: dict[str, Any]) -> dict[str, Any]:
    inputs["networkInterfaces"][0]["accessConfigs"] = [{"networkTier": "PREMIUM"}]
    return inputs


# (rule, resource types to break, how to break a copy of its inputs)
MUTATIONS: list[tuple[v.Rule, frozenset[str], Callable[[dict[str, Any]], dict[str, Any]]]] = [
    (v.NO_EXTERNAL_IP, v.TEMPLATE_TYPES, add_access_config),
    (v.GPU_TERMINATE, v.TEMPLATE_TYPES, lambda i: changed(i, "scheduling.onHostMaintenance", "MIGRATE")),
    (
        v.NO_DEFAULT_SA,
        v.TEMPLATE_TYPES,
        lambda i: changed(i, "serviceAccount.email", "123456789012-compute@developer.gserviceaccount.com"),
    ),
    (
        v.NO_CLOUD_PLATFORM_ON_DEFAULT_SA,
        v.TEMPLATE_TYPES,
        lambda i: changed(i, "serviceAccount", {"scopes": ["cloud-platform"]}),
    ),
    (v.SHIELDED_VM, v.TEMPLATE_TYPES, lambda i: changed(i, "shieldedInstanceConfig.enableVtpm", False)),
    (v.OS_LOGIN, v.TEMPLATE_TYPES, lambda i: changed(i, "metadata.enable-oslogin", "FALSE")),
    (
        v.NO_SECRETS_IN_METADATA,
        v.TEMPLATE_TYPES,
        lambda i: changed(
            i, "metadata.startup-script", i["metadata"].get("startup-script", "") + f"\n#{HF_TOKEN}"
        ),
    ),
    (
        v.FIREWALL_SOURCES,
        frozenset({v.FIREWALL}),
        lambda i: changed(i, "sourceRanges", [*i.get("sourceRanges", []), "0.0.0.0/0"]),
    ),
    (v.BACKEND_TIMEOUT, v.BACKEND_SERVICE_TYPES, lambda i: changed(i, "timeoutSec", 30)),
    (v.CLOUD_ARMOR, v.BACKEND_SERVICE_TYPES, lambda i: changed(i, "securityPolicy", DELETE)),
    (v.PROD_REPLICAS, v.AUTOSCALER_TYPES, lambda i: changed(i, "autoscalingPolicy.minReplicas", 1)),
    (v.GPU_BUDGET, v.AUTOSCALER_TYPES, lambda i: changed(i, "autoscalingPolicy.maxReplicas", 1000)),
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m[0].id for m in MUTATIONS])
def test_breaking_a_guarded_property_of_prod_fails_with_id_and_remediation(
    mutation: tuple[v.Rule, frozenset[str], Callable[[dict[str, Any]], dict[str, Any]]],
) -> None:
    rule, types, breaks = mutation
    resources = planned("prod")
    config = v.GuardrailConfig(environment=stack_environment("prod"))
    assert v.evaluate_stack(resources, config).ok  # the mutation, not the stack, causes the failure
    target = _first(resources, types, "prod")
    report = v.evaluate_stack(_mutate(resources, target, breaks(copy.deepcopy(dict(target.inputs)))), config)
    found = report.by_rule(rule)
    assert found, f"{rule.id} did not fire:\n{report.render()}"
    assert f"[{rule.id}]" in found[0].message and rule.remediation in found[0].message


@pytest.mark.parametrize("stack", committed_stacks())
def test_gpu_budget_counts_what_the_stack_config_asks_for(stack: str) -> None:
    """The budget is not vacuous: it finds gpuCount x maxReplicas GPUs in every committed stack's plan."""
    config = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
    expected = config["vllm-gcp:hardware"]["gpuCount"] * config["vllm-gcp:scaling"]["maxReplicas"]
    assert sum(gpus for _, gpus, _ in v.gpus_at_max_scale(planned(stack))) == expected


def test_breaking_the_vertex_stack_replicas_fails_prod_min_replicas() -> None:
    resources = planned("vertex")
    deployment = next(
        r for r in resources if r.type.startswith("pulumi-python:dynamic") and "minReplicas" in r.inputs
    )
    report = v.evaluate_stack(
        _mutate(resources, deployment, changed(dict(deployment.inputs), "minReplicas", 1)),
        v.GuardrailConfig(environment="prod"),
    )
    [violation] = report.by_rule(v.PROD_REPLICAS)
    assert "[VLLM_GCP_006]" in violation.message and "min replicas is 1" in violation.message


def test_removing_the_prod_certificate_fails_prod_https() -> None:
    resources = [r for r in planned("prod") if r.type not in v.CERTIFICATE_TYPES]
    report = v.evaluate_stack(resources, v.GuardrailConfig(environment="prod"))
    [violation] = report.by_rule(v.PROD_HTTPS)
    assert "has no managed SSL certificate: it serves plain HTTP." in violation.message
    assert "[VLLM_GCP_005]" in violation.message and v.PROD_HTTPS.remediation in violation.message


# ---------------------------------------------------------------------------------------------------------------------
# The pack under pulumi-policy


def test_pack_has_one_policy_per_rule_with_id_remediation_and_levels() -> None:
    policies = build_policies()
    assert [p.name for p in policies] == [r.name for r in v.ALL_RULES]
    for policy, rule in zip(policies, v.ALL_RULES, strict=True):
        assert policy.description.startswith(f"{rule.id}: ") and policy.remediation_steps == rule.remediation
        expected = EnforcementLevel.MANDATORY if rule.mandatory_by_default else EnforcementLevel.ADVISORY
        assert policy.enforcement_level == expected
    mandatory = {r.id for r in v.ALL_RULES if r.mandatory_by_default}
    assert mandatory == {"CKV_GCP_40", "VLLM_GCP_002", "AVD-GCP-0027"}


OPTIONS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


class Recorder:
    """A ReportViolation callback that keeps what it was given."""

    def __init__(self) -> None:
        self.reported: list[tuple[str, str | None]] = []

    def __call__(self, message: str, urn: str | None = None) -> None:
        self.reported.append((message, urn))


def _policy(name: str) -> Any:
    return next(p for p in build_policies() if p.name == name)


def test_resource_policy_reports_through_pulumi_policy_proxies() -> None:
    # Props wrapped exactly as the analyzer wraps them: an unknown elsewhere must not hide the violation.
    props = changed(GOOD_TEMPLATE, "networkInterfaces.0.accessConfigs", [{}]) | {
        "description": UNKNOWN_STRING_VALUE
    }
    args = ResourceValidationArgs(
        IT,
        unknown_checking_proxy(props),
        "urn:t",
        "tmpl",
        OPTIONS,
        None,
        {},
    )
    recorder = Recorder()
    policy = _policy(v.NO_EXTERNAL_IP.name)
    assert isinstance(policy, ResourceValidationPolicy)
    policy.validate(args, recorder)
    assert len(recorder.reported) == 1 and recorder.reported[0][0].startswith("[CKV_GCP_40] tmpl: ")


def test_plain_turns_proxies_and_unknown_sentinels_into_plain_data() -> None:
    proxied = unknown_checking_proxy({"a": [{"b": UNKNOWN_STRING_VALUE}], "c": 1})
    assert plain(proxied) == {"a": [{"b": v.UNKNOWN}], "c": 1}


def test_stack_policy_uses_its_config_and_reports_the_culprit_urn() -> None:
    resources = [
        PolicyResource(
            r.type,
            unknown_checking_proxy(dict(r.inputs)),
            r.urn,
            r.name,
            OPTIONS,
            None,
            None,
            [],
            {},
        )
        for r in gce_stack(min_replicas=1)
    ]
    prod, dev = Recorder(), Recorder()
    policy = _policy(v.PROD_REPLICAS.name)
    assert isinstance(policy, StackValidationPolicy)
    policy.validate(StackValidationArgs(resources, {"environment": "prod"}), prod)
    assert prod.reported == [
        (
            f"[VLLM_GCP_006] vllm-prod-autoscaler: autoscalingPolicy.minReplicas is 1; prod needs >= 2. "
            f"Remediation: {v.PROD_REPLICAS.remediation}",
            "urn:as",
        )
    ]
    policy.validate(StackValidationArgs(resources, {"environment": "dev"}), dev)
    assert dev.reported == []


def test_secret_wire_constants_are_pulumi_policys() -> None:
    assert (v.SECRET_SIG_KEY, v.SECRET_SIG) == (SPECIAL_SIG_KEY, SPECIAL_SECRET_SIG)


def _wire_stack(script_tail: str) -> list[dict[str, Any]]:
    """secret_stack() as the engine marshals AnalyzeStack's outputs: the payloads (and the metadata built from
    them, which Pulumi marks secret too) in the secret envelope."""
    records = []
    for r in secret_stack(script_tail):
        inputs = dict(r.inputs)
        for key in ("result", "secretData"):
            if key in inputs:
                inputs[key] = wire(inputs[key])
        if r.type == IT:
            inputs["metadata"] = dict(
                inputs["metadata"], **{"startup-script": wire(inputs["metadata"]["startup-script"])}
            )
        records.append({"type": r.type, "name": r.name, "urn": r.urn or f"urn:{r.name}", "inputs": inputs})
    return records


@pytest.mark.parametrize("proxy_secrets", [False, True], ids=["validation-path", "remediation-path"])
def test_stack_secret_policy_sees_payloads_in_both_pulumi_policy_shapes(proxy_secrets: bool) -> None:
    """pulumi-policy 1.21 unwraps secrets to bare plaintext for validation (deserialize_properties(props)) and
    to `Secret` objects behind a secrets proxy for remediation (proxy_secrets=True); both must be caught."""
    policy = _policy(v.NO_MANAGED_SECRETS_IN_METADATA.name)
    assert isinstance(policy, StackValidationPolicy)
    assert policy.enforcement_level == EnforcementLevel.MANDATORY

    def run(script_tail: str) -> list[tuple[str, str | None]]:
        resources = [
            PolicyResource(
                r["type"],
                unknown_checking_proxy(
                    deserialize_properties(json.loads(json.dumps(r["inputs"])), proxy_secrets)
                ),
                r["urn"],
                r["name"],
                OPTIONS,
                None,
                None,
                [],
                {},
            )
            for r in _wire_stack(script_tail)
        ]
        recorder = Recorder()
        policy.validate(StackValidationArgs(resources, {}), recorder)
        return recorder.reported

    assert run("") == []
    [(message, urn)] = run(f"export VLLM_API_KEY={GENERATED_API_KEY}\n")
    assert urn == "urn:it" and message.startswith(
        "[VLLM_GCP_002] vllm-prod-template: metadata['startup-script']"
    )
    assert "vllm-api-key-value.result (sha256 " in message and GENERATED_API_KEY not in message


def test_plain_keeps_a_remediation_secret_recognisable() -> None:
    props = deserialize_properties({"a": {SPECIAL_SIG_KEY: SPECIAL_SECRET_SIG, "value": "s3cr3t"}}, True)
    assert plain(unknown_checking_proxy(props)) == {"a": wire("s3cr3t")}
    assert plain(unknown_checking_proxy(deserialize_properties({"a": wire("s3cr3t")}))) == {"a": "s3cr3t"}


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    """The pack as the Pulumi CLI starts it: `python -m pulumi.policy ENGINE policy/`, a gRPC server on 127.0.0.1."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PULUMI_STACK", None)
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(ROOT / "policy")],
        cwd=ROOT / "policy",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        port = ""
        while not port.strip().isdigit():
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(
                    f"the policy pack did not start: {process.stderr.read() if process.stderr else ''}"
                )
            port = process.stdout.readline()
        channel = grpc.insecure_channel(f"127.0.0.1:{port.strip()}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def test_grpc_pack_describes_every_policy(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    from google.protobuf import empty_pb2

    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == PACK_NAME
    assert [p.name for p in info.policies] == [r.name for r in v.ALL_RULES]
    budget = next(p for p in info.policies if p.name == v.GPU_BUDGET.name)
    assert json_format.MessageToDict(budget.configSchema)["properties"]["maxTotalGpus"]["default"] == 16


def test_grpc_pack_blocks_a_public_gpu_template_and_an_over_budget_stack(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    all_mandatory = {
        rule.name: analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.MANDATORY) for rule in v.ALL_RULES
    }
    all_mandatory[v.GPU_BUDGET.name].properties.update({"maxTotalGpus": 8})
    analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=all_mandatory), timeout=30)

    bad = changed(GOOD_TEMPLATE, "networkInterfaces.0.accessConfigs", [{}])
    response = analyzer.Analyze(
        analyzer_pb2.AnalyzeRequest(type=IT, properties=_struct(bad), urn="urn:t", name="tmpl"), timeout=30
    )
    [diagnostic] = response.diagnostics
    assert diagnostic.policyName == v.NO_EXTERNAL_IP.name
    assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
    assert "[CKV_GCP_40] tmpl:" in diagnostic.message and v.NO_EXTERNAL_IP.remediation in diagnostic.message

    good = analyzer.Analyze(
        analyzer_pb2.AnalyzeRequest(type=IT, properties=_struct(GOOD_TEMPLATE), urn="urn:t", name="tmpl"),
        timeout=30,
    )
    assert list(good.diagnostics) == []

    stack = [
        analyzer_pb2.AnalyzerResource(type=r.type, properties=_struct(dict(r.inputs)), urn=r.urn, name=r.name)
        for r in gce_stack(max_replicas=3, gpus=4)
    ]
    stack_response = analyzer.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=stack), timeout=30)
    messages = [d.message for d in stack_response.diagnostics]
    assert any(
        "[VLLM_GCP_007]" in m and "12 GPUs at max scale exceed the budget of 8 (" in m for m in messages
    ), messages


@pytest.mark.parametrize("name", ["prod.json", "nonprod.json"])
def test_policy_config_files_name_real_policies_and_settings(name: str) -> None:
    config = json.loads((ROOT / "policy" / "config" / name).read_text())
    assert ("all" in config) is (name == "prod.json") and config.get("all", "mandatory") == "mandatory"
    for policy_name, value in config.items():
        if policy_name != "all":
            assert policy_name in {r.name for r in v.ALL_RULES}, f"{policy_name} is not a policy of the pack"
            v.GuardrailConfig.from_policy_config(value)  # every setting is one the validators know


def test_grpc_pack_passes_every_committed_stack_with_its_ci_config(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    """The committed plans through the real analyzer, every resource and the whole stack, all rules mandatory."""
    for stack in committed_stacks():
        pack_config = json.loads(offline.default_config_file(stack_environment(stack)).read_text())
        request = {}
        for rule in v.ALL_RULES:
            config = analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.MANDATORY)
            settings = pack_config.get(rule.name)
            if isinstance(settings, dict):
                config.properties.update(settings)
            if rule.name in (v.PROD_HTTPS.name, v.PROD_REPLICAS.name):
                config.properties.update({"environment": stack_environment(stack)})
            request[rule.name] = config
        analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=request), timeout=30)
        resources = plan_for(stack)["resources"]
        messages = []
        for record in resources:
            response = analyzer.Analyze(
                analyzer_pb2.AnalyzeRequest(
                    type=record["type"],
                    properties=_struct(record["inputs"]),
                    urn=record["urn"],
                    name=record["name"],
                ),
                timeout=30,
            )
            messages += [d.message for d in response.diagnostics]
        stack_request = analyzer_pb2.AnalyzeStackRequest(
            resources=[
                analyzer_pb2.AnalyzerResource(
                    type=r["type"], properties=_struct(r["inputs"]), urn=r["urn"], name=r["name"]
                )
                for r in resources
            ]
        )
        messages += [d.message for d in analyzer.AnalyzeStack(stack_request, timeout=30).diagnostics]
        assert messages == [], f"stack {stack}: {messages}"


def test_grpc_pack_blocks_a_stack_payload_in_the_startup_script(
    analyzer: analyzer_pb2_grpc.AnalyzerStub,
) -> None:
    """AnalyzeStack exactly as a real preview sends it: outputs with secrets in the engine's envelope, which
    pulumi-policy strips before the policy runs (no marker reaches it). Default enforcement: mandatory."""
    analyzer.Configure(
        analyzer_pb2.ConfigureAnalyzerRequest(
            policyConfig={
                v.NO_MANAGED_SECRETS_IN_METADATA.name: analyzer_pb2.PolicyConfig(
                    enforcementLevel=analyzer_pb2.MANDATORY
                )
            }
        ),
        timeout=30,
    )

    def diagnostics(script_tail: str) -> list[Any]:
        request = analyzer_pb2.AnalyzeStackRequest(
            resources=[
                analyzer_pb2.AnalyzerResource(
                    type=r["type"], properties=_struct(r["inputs"]), urn=r["urn"], name=r["name"]
                )
                for r in _wire_stack(script_tail)
            ]
        )
        response = analyzer.AnalyzeStack(request, timeout=30)
        return [d for d in response.diagnostics if d.policyName == v.NO_MANAGED_SECRETS_IN_METADATA.name]

    assert diagnostics("") == []
    found = diagnostics(f"docker login -p {VENDOR_TOKEN}\n")
    assert len(found) == 1 and found[0].enforcementLevel == analyzer_pb2.MANDATORY
    assert "[VLLM_GCP_002]" in found[0].message and "vllm-hf-token-version.secretData" in found[0].message
    assert VENDOR_TOKEN not in found[0].message and found[0].urn == "urn:it"


def _revealed(stack: str) -> list[v.Resource]:
    """The committed plan with its masked payloads given raw values, as a real preview of a deployed stack shows."""
    payloads = iter([GENERATED_API_KEY, VENDOR_TOKEN, "x" * 40, "y" * 40])
    resources = []
    for r in planned(stack):
        inputs = dict(r.inputs)
        if r.type == v.SECRET_VERSION:
            inputs["secretData"] = next(payloads)
        if r.type == v.RANDOM_PASSWORD:
            inputs["result"] = next(payloads)
        resources.append(v.Resource(r.type, r.name, inputs, r.urn))
    return resources


@pytest.mark.parametrize("stack", committed_stacks())
def test_committed_stack_metadata_holds_none_of_its_revealed_secrets(stack: str) -> None:
    resources = _revealed(stack)
    secrets = v.managed_secrets(resources)
    assert secrets, f"stack {stack} manages no secret payloads: the check would be vacuous"
    assert v.check_no_managed_secrets_in_metadata(resources, v.GuardrailConfig()) == []
    vms = [r for r in resources if r.type in v.VM_TYPES]
    if not vms:
        return  # the Vertex stack has no VM metadata to leak into
    target = vms[0]
    leaked = changed(
        dict(target.inputs),
        "metadata.startup-script",
        target.inputs["metadata"]["startup-script"] + f"\nK={secrets[0].value}\n",
    )
    problems = v.check_no_managed_secrets_in_metadata(_mutate(resources, target, leaked), v.GuardrailConfig())
    assert [c.name for c, _ in problems if c] == [target.name], problems
