"""Guardrail validators: plain functions over Pulumi resources, kept apart from the CrossGuard policy objects.

A resource is seen exactly as the offline plan records it and as `pulumi preview` hands it to a policy pack:
a Pulumi type token (`gcp:compute/instanceTemplate:InstanceTemplate`) and its inputs under their Pulumi schema
names, camelCase: `networkInterfaces[].accessConfigs`, `scheduling.onHostMaintenance`, `guestAccelerators`...
Values that cannot be known yet are the string "[unknown]"; values Pulumi holds as secrets are "[secret]" in
the plan, but plaintext with no marker under a real `pulumi preview` (pulumi-policy unwraps them), which is why
VLLM_GCP_002 also has a stack-wide check that searches metadata for the stack's own secret payloads.

Every rule has an id (Checkov's or Trivy's where one exists, else `VLLM_GCP_xxx`), a description and a
remediation, and every violation message carries both the id and the remediation. This module imports nothing
from Pulumi, so pytest, the offline plan check and the policy pack all call the same functions.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

UNKNOWN = "[unknown]"
SECRET_MARKER = "[secret]"
# The wire form of a Pulumi secret ({SIG_KEY: SECRET_SIG, "value": plaintext} or "ciphertext"), as the engine sends
# it to an analyzer and `pulumi stack export` writes it. pulumi-policy's validation path strips it (the policy sees
# the bare plaintext, with no is-secret marker); the pack's `plain()` turns a remediation-path `Secret` into it.
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"

# Google's front ends and health checkers: the only sources that must reach a load-balanced backend.
# https://cloud.google.com/load-balancing/docs/health-check-concepts#ip-ranges
GOOGLE_FRONT_END_RANGES: tuple[str, ...] = ("35.191.0.0/16", "130.211.0.0/22")

INSTANCE_TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
REGION_INSTANCE_TEMPLATE = "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate"
INSTANCE = "gcp:compute/instance:Instance"
INSTANCE_FROM_TEMPLATE = "gcp:compute/instanceFromTemplate:InstanceFromTemplate"
VM_TYPES = frozenset({INSTANCE_TEMPLATE, REGION_INSTANCE_TEMPLATE, INSTANCE, INSTANCE_FROM_TEMPLATE})
TEMPLATE_TYPES = frozenset({INSTANCE_TEMPLATE, REGION_INSTANCE_TEMPLATE})
STANDALONE_VM_TYPES = frozenset({INSTANCE, INSTANCE_FROM_TEMPLATE})
FIREWALL = "gcp:compute/firewall:Firewall"
BACKEND_SERVICE_TYPES = frozenset(
    {"gcp:compute/backendService:BackendService", "gcp:compute/regionBackendService:RegionBackendService"}
)
MIG_TYPES = frozenset(
    {
        "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager",
        "gcp:compute/instanceGroupManager:InstanceGroupManager",
    }
)
AUTOSCALER_TYPES = frozenset(
    {"gcp:compute/regionAutoscaler:RegionAutoscaler", "gcp:compute/autoscaler:Autoscaler"}
)
CERTIFICATE_TYPES = frozenset(
    {
        "gcp:compute/managedSslCertificate:ManagedSslCertificate",
        "gcp:certificatemanager/certificate:Certificate",
    }
)
HTTPS_PROXY_TYPES = frozenset({"gcp:compute/targetHttpsProxy:TargetHttpsProxy"})
# Any of these means the stack has its own external HTTP(S) load balancer front end (the gce platform).
LOAD_BALANCER_TYPES = frozenset(
    {
        "gcp:compute/globalForwardingRule:GlobalForwardingRule",
        "gcp:compute/targetHttpProxy:TargetHttpProxy",
        "gcp:compute/targetHttpsProxy:TargetHttpsProxy",
        "gcp:compute/uRLMap:URLMap",
    }
)
EXTERNAL_SCHEMES = frozenset({"EXTERNAL", "EXTERNAL_MANAGED"})
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTPS", "HTTP2"})
DEFAULT_SERVICE_ACCOUNT_RE = re.compile(r"^\d+-compute@developer\.gserviceaccount\.com$")
CLOUD_PLATFORM_SCOPES = frozenset({"cloud-platform", "https://www.googleapis.com/auth/cloud-platform"})
TRUE_STRINGS = frozenset({"true", "1", "yes", "on"})

# GPU machine families carry their GPUs implicitly (no guestAccelerators block needed).
# https://cloud.google.com/compute/docs/gpus
_GPU_FAMILY_RE = re.compile(r"^a[234]-(?:high|ultra|mega|edge)gpu-(\d+)g(?:-.*)?$")
_G2_GPUS = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}
_G4_GPUS = {48: 1, 96: 2, 192: 4, 384: 8}

# Secret-looking literals. Each pattern names what it found; the match itself is never echoed back.
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a Hugging Face token (hf_...)", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("an OpenAI-style API key (sk-...)", re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-)?[A-Za-z0-9_-]{20,}")),
    ("a Google API key (AIza...)", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("a PEM private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
    ("a service-account key file", re.compile(r"\"private_key\"\s*:\s*\"[^\"]+")),
    ("a GitHub token (ghp_...)", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Slack token (xox...)", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
)
# A credential given literally after a flag or assignment, e.g. `--api-key abc123...` or `HF_TOKEN=abc123...`.
_LITERAL_CREDENTIAL_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?P<key>--api-key)(?:\s*=\s*|[\"']?\s*,\s*[\"']|\s+)[\"']?(?P<value>[^\s\"',;)\]}]+)"),
    re.compile(
        r"\b(?P<key>HF_TOKEN|HUGGING_FACE_HUB_TOKEN|HUGGINGFACE_TOKEN|HF_API_TOKEN|VLLM_API_KEY|OPENAI_API_KEY"
        r"|API_KEY|API_KEYS)[\"']?\s*[=:]\s*[\"']?(?P<value>[^\s\"',;)\]}]+)"
    ),
)
_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
MIN_LITERAL_CREDENTIAL_CHARS = 12


# ------------------------------------------------------------------------------------------------------------
# Rules, violations, configuration


@dataclass(frozen=True)
class Rule:
    """One guardrail. `name` is the CrossGuard policy name (unique in a pack); `id` follows Checkov/Trivy."""

    id: str
    name: str
    description: str
    remediation: str
    severity: str  # low | medium | high | critical
    mandatory_by_default: bool = False


@dataclass(frozen=True)
class Violation:
    rule: Rule
    detail: str
    urn: str = ""
    resource_name: str = ""

    @property
    def message(self) -> str:
        where = f"{self.resource_name}: " if self.resource_name else ""
        return f"[{self.rule.id}] {where}{self.detail} Remediation: {self.rule.remediation}"

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Resource:
    """A planned resource: its Pulumi type token, logical name, URN and camelCase inputs."""

    type: str
    name: str
    inputs: Mapping[str, Any]
    urn: str = ""

    @classmethod
    def from_plan(cls, record: Mapping[str, Any]) -> Resource:
        """One entry of the offline plan's `resources` list (`python -m components.plan STACK --json`)."""
        return cls(
            type=record["type"], name=record["name"], inputs=record.get("inputs") or {}, urn=record["urn"]
        )


@dataclass(frozen=True)
class GuardrailConfig:
    """Per-pack settings. The policy pack builds one from each policy's config (camelCase keys)."""

    serving_port: int = 8000
    allowed_source_ranges: tuple[str, ...] = ()
    min_backend_timeout_sec: int = 300
    min_prod_replicas: int = 2
    max_total_gpus: int = 16
    require_secure_boot: bool = True
    environment: str | None = None  # None: infer from labels or the stack name

    @classmethod
    def from_policy_config(cls, config: Mapping[str, Any] | None) -> GuardrailConfig:
        """Settings from one policy's config, checked and typed (the engine sends every number as a float)."""
        values: dict[str, Any] = {}
        for key, value in dict(config or {}).items():
            if key == "enforcementLevel":
                continue
            if key not in _SETTINGS:
                raise ValueError(
                    f"policy config: unknown key {key!r} (value {value!r}); "
                    f"known keys: {', '.join(sorted(_SETTINGS))}"
                )
            field_name, parse = _SETTINGS[key]
            values[field_name] = parse(key, value)
        return replace(cls(), **values)


def _setting_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 0:
        raise ValueError(f"policy config: {key} must be a non-negative whole number, not {value!r}")
    return int(value)


def _setting_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"policy config: {key} must be true or false, not {value!r}")
    return value


def _setting_environment(key: str, value: Any) -> str:
    if value not in ("dev", "staging", "prod"):
        raise ValueError(f"policy config: {key} must be dev, staging or prod, not {value!r}")
    return str(value)


def _setting_cidrs(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"policy config: {key} must be a list of CIDR ranges, not {value!r}")
    for cidr in value:
        try:
            ipaddress.ip_network(str(cidr), strict=False)
        except ValueError as exc:
            raise ValueError(
                f"policy config: {key} entry {cidr!r} is not a CIDR range ({exc}); use e.g. 203.0.113.0/24"
            ) from exc
    return tuple(str(cidr) for cidr in value)


# Config key (camelCase, as in the pack's config file) -> (GuardrailConfig field, parser).
_SETTINGS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "servingPort": ("serving_port", _setting_int),
    "allowedSourceRanges": ("allowed_source_ranges", _setting_cidrs),
    "minBackendTimeoutSec": ("min_backend_timeout_sec", _setting_int),
    "minProdReplicas": ("min_prod_replicas", _setting_int),
    "maxTotalGpus": ("max_total_gpus", _setting_int),
    "requireSecureBoot": ("require_secure_boot", _setting_bool),
    "environment": ("environment", _setting_environment),
}


ResourceCheck = Callable[[str, Mapping[str, Any], GuardrailConfig], list[str]]
StackCheck = Callable[[Sequence[Resource], GuardrailConfig], list[tuple[Resource | None, str]]]


@dataclass(frozen=True)
class ResourceRule:
    rule: Rule
    check: ResourceCheck


@dataclass(frozen=True)
class StackRule:
    rule: Rule
    check: StackCheck


# ------------------------------------------------------------------------------------------------------------
# Small readers over camelCase inputs


def is_unknown(value: Any) -> bool:
    return value == UNKNOWN


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None or is_unknown(value):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in TRUE_STRINGS)


def _last_segment(reference: str) -> str:
    return reference.rstrip("/").rsplit("/", 1)[-1]


def implicit_gpus(machine_type: str) -> int:
    """GPUs that come with an accelerator-optimized machine type (a2/a3/a4, g2, g4); 0 for any other type."""
    machine_type = _last_segment(machine_type)
    if match := _GPU_FAMILY_RE.match(machine_type):
        return int(match.group(1))
    family, _, size = machine_type.rpartition("-")
    if family == "g2-standard" and size.isdigit():
        return _G2_GPUS.get(int(size), 0)
    if family == "g4-standard" and size.isdigit():
        return _G4_GPUS.get(int(size), 0)
    return 0


def gpus_per_vm(inputs: Mapping[str, Any]) -> int:
    """GPUs per VM of a template/instance: explicit guestAccelerators, else its machine family's GPUs."""
    explicit = sum(_int(_dict(acc).get("count")) or 0 for acc in _list(inputs.get("guestAccelerators")))
    return explicit or implicit_gpus(str(inputs.get("machineType") or ""))


def _default_service_account(resource_type: str, inputs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A VM's serviceAccount block when it runs as the default compute service account, else None."""
    account = inputs.get("serviceAccount")
    if resource_type not in VM_TYPES or account is None:
        return None
    account = _dict(account)
    # Scopes without an email mean "the default compute service account" (pulumi-gcp: serviceAccount.email).
    email = account.get("email")
    if email is None or email == "" or email == "default":
        return account
    return account if isinstance(email, str) and DEFAULT_SERVICE_ACCOUNT_RE.match(email) else None


def is_secret_envelope(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get(SECRET_SIG_KEY) == SECRET_SIG


def reveal(value: Any) -> Any:
    """`value` without its Pulumi secret envelope: the plaintext, or SECRET_MARKER when it holds only ciphertext."""
    while is_secret_envelope(value):
        value = value.get("value", SECRET_MARKER)
    return value


def _metadata_values(inputs: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(where, text, held as a Pulumi secret) for every metadata value and the startup script."""
    metadata = inputs.get("metadata")
    whole_map_secret = is_secret_envelope(metadata)
    for key, value in _dict(reveal(metadata)).items():
        text = reveal(value)
        if isinstance(text, str):
            yield f"metadata[{key!r}]", text, whole_map_secret or is_secret_envelope(value)
    script = inputs.get("metadataStartupScript")
    if isinstance(reveal(script), str):
        yield "metadataStartupScript", reveal(script), is_secret_envelope(script)


def _metadata_texts(inputs: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for where, text, _ in _metadata_values(inputs):
        yield where, text


def _is_literal_credential(value: str) -> bool:
    # References are fine: shell expansion, command substitution, our markers, paths and Secret Manager names,
    # flags, and other variable names (`for name in VLLM_API_KEY HF_TOKEN`).
    if value.startswith(("$", "`", "[", "<", "-")) or "/" in value or _ENV_NAME_RE.match(value):
        return False
    return len(value) >= MIN_LITERAL_CREDENTIAL_CHARS


def find_secrets(text: str) -> list[str]:
    """What secret-looking things `text` holds, described without echoing them."""
    found = [label for label, pattern in SECRET_PATTERNS if pattern.search(text)]
    if SECRET_MARKER in text:
        found.append("a Pulumi secret value")
    for pattern in _LITERAL_CREDENTIAL_RES:
        for match in pattern.finditer(text):
            if _is_literal_credential(match.group("value")):
                found.append(f"a literal credential after {match.group('key')}")
    return sorted(set(found))


# ------------------------------------------------------------------------------------------------------------
# Resource rules

NO_EXTERNAL_IP = Rule(
    id="CKV_GCP_40",
    name="gpu-vm-no-external-ip",
    description="GPU instance templates and instances have no external IP address (no accessConfigs).",
    remediation=(
        "remove networkInterfaces[].accessConfigs from the GPU template; reach the VMs through the load "
        "balancer and give them egress through Cloud NAT."
    ),
    severity="high",
    mandatory_by_default=True,
)


def check_no_external_ip(resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig) -> list[str]:
    if resource_type not in VM_TYPES or gpus_per_vm(inputs) == 0:
        return []
    problems = []
    for index, nic in enumerate(_list(inputs.get("networkInterfaces"))):
        nic = _dict(nic)
        if _list(nic.get("accessConfigs")) or _list(nic.get("ipv6AccessConfigs")):
            problems.append(f"networkInterfaces[{index}] has an access config, i.e. a public IP on a GPU VM.")
    return problems


GPU_TERMINATE = Rule(
    id="VLLM_GCP_001",
    name="gpu-vm-terminate-on-maintenance",
    description="GPU VMs set scheduling.onHostMaintenance=TERMINATE (GPUs cannot live-migrate).",
    remediation="set scheduling.onHostMaintenance to TERMINATE (and automaticRestart true) on GPU templates.",
    severity="high",
)


def check_gpu_terminate(resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig) -> list[str]:
    if resource_type not in VM_TYPES or gpus_per_vm(inputs) == 0:
        return []
    value = _dict(inputs.get("scheduling")).get("onHostMaintenance")
    if is_unknown(value) or value == "TERMINATE":
        return []
    shown = "unset (GCE defaults to MIGRATE)" if value is None else repr(value)
    return [f"a VM with {gpus_per_vm(inputs)} GPU(s) has scheduling.onHostMaintenance {shown}."]


NO_DEFAULT_SA = Rule(
    id="CKV_GCP_30",
    name="vm-no-default-service-account",
    description="VMs do not run as the default compute service account.",
    remediation=(
        "create a dedicated service account with only the roles the VM needs (log writer, metric writer, "
        "artifact registry reader, secret accessor on its own secrets) and set serviceAccount.email to it."
    ),
    severity="high",
)


def check_no_default_service_account(
    resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig
) -> list[str]:
    account = _default_service_account(resource_type, inputs)
    if account is None:
        return []
    email = account.get("email")
    shown = "no serviceAccount.email (the default compute account)" if not email else f"{email!r}"
    return [f"serviceAccount is {shown}."]


NO_CLOUD_PLATFORM_ON_DEFAULT_SA = Rule(
    id="CKV_GCP_31",
    name="vm-no-cloud-platform-scope-on-default-sa",
    description="VMs do not combine the cloud-platform scope with the default compute service account.",
    remediation=(
        "use a dedicated, narrowly-granted service account when you need the cloud-platform scope, or list "
        "only the scopes the VM needs."
    ),
    severity="critical",
)


def check_no_cloud_platform_on_default_sa(
    resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig
) -> list[str]:
    account = _default_service_account(resource_type, inputs)
    if account is None:
        return []
    if CLOUD_PLATFORM_SCOPES & {str(scope) for scope in _list(account.get("scopes"))}:
        return ["the default compute service account has the cloud-platform scope (full access to all APIs)."]
    return []


SHIELDED_VM = Rule(
    id="CKV_GCP_39",
    name="vm-shielded-vm",
    description="VMs use Shielded VM: vTPM and integrity monitoring (and Secure Boot unless configured off).",
    remediation=(
        "set shieldedInstanceConfig {enableSecureBoot: true, enableVtpm: true, enableIntegrityMonitoring: "
        "true} on a Shielded-VM-capable image (Container-Optimized OS or a Deep Learning VM image)."
    ),
    severity="medium",
)


def check_shielded_vm(resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig) -> list[str]:
    if resource_type not in VM_TYPES:
        return []
    shielded = inputs.get("shieldedInstanceConfig")
    if shielded is None:
        return ["shieldedInstanceConfig is not set."]
    shielded = _dict(shielded)
    required = ["enableVtpm", "enableIntegrityMonitoring"]
    problems = [f"shieldedInstanceConfig.{key} is false." for key in required if shielded.get(key) is False]
    secure_boot = shielded.get("enableSecureBoot")
    if config.require_secure_boot and not (secure_boot is True or is_unknown(secure_boot)):
        problems.append("shieldedInstanceConfig.enableSecureBoot is not true.")
    return problems


OS_LOGIN = Rule(
    id="CKV_GCP_34",
    name="vm-os-login",
    description="VMs enable OS Login via metadata enable-oslogin=TRUE (IAM-governed SSH, no metadata keys).",
    remediation='set metadata {"enable-oslogin": "TRUE"} on the template.',
    severity="medium",
)


def check_os_login(resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig) -> list[str]:
    if resource_type not in VM_TYPES:
        return []
    value = _dict(inputs.get("metadata")).get("enable-oslogin")
    if is_unknown(value) or _truthy(value):
        return []
    shown = "not set" if value is None else f"{value!r}"
    return [f"metadata enable-oslogin is {shown}."]


NO_SECRETS_IN_METADATA = Rule(
    id="VLLM_GCP_002",
    name="vm-no-secrets-in-metadata",
    description=(
        "Instance metadata and startup scripts hold no secret: no tokens, API keys, private keys or Pulumi "
        "secret values (metadata is readable by anyone with compute viewer rights and by every process on "
        "the VM)."
    ),
    remediation=(
        "store the value in Secret Manager and have the startup script fetch it at boot with the "
        "metadata-server token; pass only the secret's resource name in metadata."
    ),
    severity="critical",
    mandatory_by_default=True,
)


def check_no_secrets_in_metadata(
    resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig
) -> list[str]:
    if resource_type not in VM_TYPES:
        return []
    problems = []
    for where, text, held_as_secret in _metadata_values(inputs):
        found = find_secrets(text)
        if held_as_secret and "a Pulumi secret value" not in found:
            found.append("a Pulumi secret value")
        if found:
            problems.append(f"{where} contains {', '.join(found)}.")
    return problems


# ------------------------------------------------------------------------------------------------------------
# Stack secrets in metadata: the secret payloads the stack itself manages, whatever their shape

SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"
RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword"
# Where each type keeps its secret payload (outputs, as AnalyzeStack sees them; secretData is an input too).
MANAGED_SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    SECRET_VERSION: ("secretData",),
    RANDOM_PASSWORD: ("result",),
}
# Shorter payloads ("true", "1") would match innocent text; a real key or token is far longer.
MIN_MANAGED_SECRET_CHARS = 8
# A multi-key payload (one key per line or comma) leaks key by key: each token-like part is searched for too.
_PAYLOAD_PART_RE = re.compile(r"^[A-Za-z0-9_.+=~-]{16,}$")


@dataclass(frozen=True)
class ManagedSecret:
    """One secret payload of the stack. `value` never appears in a repr or a message: only `fingerprint` does."""

    source: str  # e.g. "random:index/randomPassword:RandomPassword vllm-api-key-value.result"
    value: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return f"sha256 {hashlib.sha256(self.value.encode()).hexdigest()[:12]}, {len(self.value)} chars"

    def needles(self) -> tuple[str, ...]:
        """The payload, each key of a multi-key payload, and the payload base64-encoded (cloud-init, env files)."""
        parts = [p.strip() for p in re.split(r"[\n,]", self.value)]
        found = [self.value, *(p for p in parts if p != self.value and _PAYLOAD_PART_RE.match(p))]
        found.append(base64.b64encode(self.value.encode()).decode())
        return tuple(dict.fromkeys(found))


def _known_payload(value: Any) -> str | None:
    value = reveal(value)
    if (
        not isinstance(value, str)
        or value in (UNKNOWN, SECRET_MARKER)
        or len(value) < MIN_MANAGED_SECRET_CHARS
    ):
        return None  # unknown during preview, or masked (the offline plan): nothing to search for
    return value


def managed_secrets(resources: Sequence[Resource]) -> list[ManagedSecret]:
    """The known secret payloads of the stack's SecretVersions and RandomPasswords."""
    found = []
    for resource in resources:
        for key in MANAGED_SECRET_FIELDS.get(resource.type, ()):
            payload = _known_payload(resource.inputs.get(key))
            if payload is None:
                continue
            found.append(ManagedSecret(f"{resource.type} {resource.name}.{key}", payload))
            if key == "secretData" and _truthy(reveal(resource.inputs.get("isSecretDataBase64"))):
                try:  # the VM would hold the decoded secret, not the base64 Secret Manager was given
                    decoded = _known_payload(base64.b64decode(payload, validate=True).decode())
                except (binascii.Error, UnicodeDecodeError):
                    decoded = None
                if decoded is not None:
                    found.append(ManagedSecret(f"{resource.type} {resource.name}.{key} (decoded)", decoded))
    return found


NO_MANAGED_SECRETS_IN_METADATA = Rule(
    id="VLLM_GCP_002",
    name="vm-no-stack-secrets-in-metadata",
    description=(
        "Stack-wide part of VLLM_GCP_002: no VM metadata value or startup script contains the value of a secret "
        "the stack manages (a Secret Manager SecretVersion's secretData, a RandomPassword's result), whatever "
        "its shape; a real preview hands the pack these values in plaintext, without any secret marker."
    ),
    remediation=NO_SECRETS_IN_METADATA.remediation,
    severity="critical",
    mandatory_by_default=True,
)


def check_no_managed_secrets_in_metadata(
    resources: Sequence[Resource], config: GuardrailConfig
) -> list[tuple[Resource | None, str]]:
    secrets = managed_secrets(resources)
    if not secrets:
        return []
    problems: list[tuple[Resource | None, str]] = []
    for vm in (r for r in resources if r.type in VM_TYPES):
        for where, text in _metadata_texts(vm.inputs):
            for secret in secrets:
                if any(needle in text for needle in secret.needles()):
                    problems.append(
                        (vm, f"{where} contains the value of {secret.source} ({secret.fingerprint}).")
                    )
    return problems


FIREWALL_SOURCES = Rule(
    id="AVD-GCP-0027",
    name="firewall-serving-port-sources",
    description=(
        "Ingress firewall rules never allow 0.0.0.0/0, and the serving port is reachable only from Google's "
        "front-end/health-check ranges (35.191.0.0/16, 130.211.0.0/22) or a configured allowlist."
    ),
    remediation=(
        "set sourceRanges to 35.191.0.0/16 and 130.211.0.0/22 (plus the ranges in the pack's "
        "allowedSourceRanges config) and expose clients through the load balancer, not the VMs."
    ),
    severity="critical",
    mandatory_by_default=True,
)


def _covers_port(allow: Mapping[str, Any], port: int) -> bool:
    protocol = str(allow.get("protocol", "")).lower()
    if protocol not in ("tcp", "all", "6"):
        return False
    ports = _list(allow.get("ports"))
    if not ports:
        return True  # no ports listed: every port of the protocol
    for spec in ports:
        low, _, high = str(spec).partition("-")
        if low.isdigit() and int(low) <= port <= int(high or low):
            return True
    return False


def _within(cidr: str, allowed: Sequence[str]) -> bool:
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
    for candidate in allowed:
        allowed_network = ipaddress.ip_network(candidate, strict=False)
        if network.version == allowed_network.version and network.subnet_of(allowed_network):  # type: ignore[arg-type]
            return True
    return False


def check_firewall_sources(
    resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig
) -> list[str]:
    if resource_type != FIREWALL:
        return []
    if str(inputs.get("direction") or "INGRESS").upper() != "INGRESS" or inputs.get("disabled") is True:
        return []
    allows = [_dict(allow) for allow in _list(inputs.get("allows"))]
    if not allows:
        return []  # a deny-only rule narrows access
    ranges = [str(r) for r in _list(inputs.get("sourceRanges")) if not is_unknown(r)]
    if not ranges and not _list(inputs.get("sourceTags")) and not _list(inputs.get("sourceServiceAccounts")):
        ranges = ["0.0.0.0/0"]  # GCE's default source for an ingress rule with no source at all
    problems = [
        f"sourceRanges contains {cidr}: the rule is open to the whole internet."
        for cidr in ranges
        if ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    ]
    if any(_covers_port(allow, config.serving_port) for allow in allows):
        allowed = (*GOOGLE_FRONT_END_RANGES, *config.allowed_source_ranges)
        outside = [
            c for c in ranges if not _within(c, allowed) and ipaddress.ip_network(c, strict=False).prefixlen
        ]
        if outside:
            problems.append(
                f"serving port {config.serving_port} is open to {', '.join(outside)}, outside Google's "
                "front-end ranges and the configured allowlist."
            )
    return problems


BACKEND_TIMEOUT = Rule(
    id="VLLM_GCP_003",
    name="backend-timeout-for-llm-serving",
    description="HTTP(S) backend services allow at least 300 s per request, so long generations can stream.",
    remediation="set timeoutSec >= 300 on the backend service (gce.requestTimeoutSeconds in stack config).",
    severity="medium",
)


def check_backend_timeout(
    resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig
) -> list[str]:
    if resource_type not in BACKEND_SERVICE_TYPES:
        return []
    if str(inputs.get("protocol") or "HTTP").upper() not in HTTP_PROTOCOLS:
        return []
    raw = inputs.get("timeoutSec")
    if is_unknown(raw):
        return []
    timeout = _int(raw)
    if timeout is not None and timeout >= config.min_backend_timeout_sec:
        return []
    shown = "unset (defaults to 30 s)" if raw is None else f"{raw!r} s"
    return [f"timeoutSec is {shown}; LLM responses need >= {config.min_backend_timeout_sec} s."]


CLOUD_ARMOR = Rule(
    id="VLLM_GCP_004",
    name="public-backend-cloud-armor",
    description="Public (EXTERNAL / EXTERNAL_MANAGED) backend services have a Cloud Armor security policy.",
    remediation=(
        "attach a Cloud Armor policy (securityPolicy) that rate-limits per client IP and denies every path "
        "outside /v1/ and /health."
    ),
    severity="high",
)


def _is_public_backend(resource: Resource) -> bool:
    # pulumi-gcp defaults: a global BackendService is EXTERNAL, a RegionBackendService INTERNAL.
    default = "EXTERNAL" if resource.type == "gcp:compute/backendService:BackendService" else "INTERNAL"
    return str(resource.inputs.get("loadBalancingScheme") or default).upper() in EXTERNAL_SCHEMES


def check_cloud_armor(resource_type: str, inputs: Mapping[str, Any], config: GuardrailConfig) -> list[str]:
    if resource_type not in BACKEND_SERVICE_TYPES or not _is_public_backend(
        Resource(resource_type, "", inputs)
    ):
        return []
    if inputs.get("securityPolicy"):
        return []
    return ["a public backend service has no securityPolicy (Cloud Armor)."]


RESOURCE_RULES: tuple[ResourceRule, ...] = (
    ResourceRule(NO_EXTERNAL_IP, check_no_external_ip),
    ResourceRule(GPU_TERMINATE, check_gpu_terminate),
    ResourceRule(NO_DEFAULT_SA, check_no_default_service_account),
    ResourceRule(NO_CLOUD_PLATFORM_ON_DEFAULT_SA, check_no_cloud_platform_on_default_sa),
    ResourceRule(SHIELDED_VM, check_shielded_vm),
    ResourceRule(OS_LOGIN, check_os_login),
    ResourceRule(NO_SECRETS_IN_METADATA, check_no_secrets_in_metadata),
    ResourceRule(FIREWALL_SOURCES, check_firewall_sources),
    ResourceRule(BACKEND_TIMEOUT, check_backend_timeout),
    ResourceRule(CLOUD_ARMOR, check_cloud_armor),
)


# ------------------------------------------------------------------------------------------------------------
# Stack rules (they need to see several resources at once)

ENVIRONMENT_LABEL_KEYS = ("environment", "env")
KNOWN_ENVIRONMENTS = ("dev", "staging", "prod")


def infer_environment(resources: Sequence[Resource], stack_name: str | None = None) -> str | None:
    """The stack's environment: a resource label `environment`/`env`, else a stack named dev/staging/prod."""
    for resource in resources:
        labels = _dict(resource.inputs.get("labels"))
        for key in ENVIRONMENT_LABEL_KEYS:
            value = labels.get(key)
            if isinstance(value, str) and value in KNOWN_ENVIRONMENTS:
                return value
    if stack_name:
        short = stack_name.rsplit("/", 1)[-1]
        if short in KNOWN_ENVIRONMENTS:
            return short
    return None


def _environment(resources: Sequence[Resource], config: GuardrailConfig) -> str | None:
    return config.environment or infer_environment(resources)


PROD_HTTPS = Rule(
    id="VLLM_GCP_005",
    name="prod-https",
    description="In prod, the load balancer serves HTTPS: a managed certificate and a target HTTPS proxy.",
    remediation=(
        "set gce.domain in the stack config: the stack then creates a ManagedSslCertificate, a "
        "TargetHttpsProxy and an HTTP->HTTPS redirect."
    ),
    severity="high",
)


def check_prod_https(
    resources: Sequence[Resource], config: GuardrailConfig
) -> list[tuple[Resource | None, str]]:
    if _environment(resources, config) != "prod":
        return []
    types = {resource.type for resource in resources}
    public_backend = any(r.type in BACKEND_SERVICE_TYPES and _is_public_backend(r) for r in resources)
    if not (types & LOAD_BALANCER_TYPES or public_backend):
        return []  # no load balancer of ours (e.g. a Vertex endpoint, which is HTTPS-only already)
    missing = []
    if not types & CERTIFICATE_TYPES:
        missing.append("managed SSL certificate")
    if not types & HTTPS_PROXY_TYPES:
        missing.append("target HTTPS proxy")
    if not missing:
        return []
    return [
        (None, f"a prod stack with a load balancer has no {' and no '.join(missing)}: it serves plain HTTP.")
    ]


PROD_REPLICAS = Rule(
    id="VLLM_GCP_006",
    name="prod-min-replicas",
    description="In prod, every serving group keeps >= 2 replicas (autoscaler minReplicas, MIG targetSize).",
    remediation="set scaling.minReplicas >= 2 in the prod stack config, with gce.zones over >= 2 zones.",
    severity="high",
)


def _identifiers(resource: Resource) -> tuple[set[str], set[str]]:
    """Exact names a reference to `resource` can end with, and prefixes of auto-generated names."""
    exact = {resource.urn} if resource.urn else set()
    prefixes = {resource.name + "-"}
    for key in ("name", "selfLink", "id", "selfLinkUnique"):
        value = resource.inputs.get(key)
        if isinstance(value, str) and value and not is_unknown(value):
            exact.add(_last_segment(value))
    exact.add(resource.name)
    prefix = resource.inputs.get("namePrefix")
    if isinstance(prefix, str) and prefix:
        prefixes.add(prefix)
    return exact, prefixes


def _resolve(reference: Any, candidates: Sequence[Resource]) -> Resource | None:
    """The candidate a reference (URN, self link, id or name, as plan or engine record it) points to."""
    if not isinstance(reference, str) or not reference or is_unknown(reference):
        return None
    last = _last_segment(reference)
    best: tuple[int, Resource] | None = None
    for candidate in candidates:
        exact, prefixes = _identifiers(candidate)
        if reference in exact or last in exact:
            return candidate
        for prefix in prefixes:
            if last.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), candidate)
    return best[1] if best else None


def _autoscaler_for(
    mig: Resource, autoscalers: Sequence[Resource], migs: Sequence[Resource]
) -> Resource | None:
    for autoscaler in autoscalers:
        if _resolve(autoscaler.inputs.get("target"), migs) is mig:
            return autoscaler
    if len(autoscalers) == 1 and len(migs) == 1:
        return autoscalers[0]  # the only pair; its reference was unknown during preview
    return None


def _vertex_replicas(inputs: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(min replicas, max replicas, accelerators per replica) found anywhere in a Vertex-style input tree.

    Vertex's API says minReplicaCount/maxReplicaCount (camel or snake case); our dynamic provider's inputs say
    minReplicas/maxReplicas next to acceleratorCount.
    """
    found: dict[str, int | None] = {}
    aliases = {
        "minReplicaCount": "min",
        "min_replica_count": "min",
        "minReplicas": "min",
        "maxReplicaCount": "max",
        "max_replica_count": "max",
        "maxReplicas": "max",
        "acceleratorCount": "gpus",
        "accelerator_count": "gpus",
    }

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key in aliases and aliases[key] not in found:
                    found[aliases[key]] = _int(value)
                walk(value)
        elif isinstance(node, Sequence) and not isinstance(node, str):
            for item in node:
                walk(item)

    walk(inputs)
    return found.get("min"), found.get("max"), found.get("gpus")


def _is_vertex_deployment(resource: Resource) -> bool:
    """A model deployment with replicas and accelerators: a Vertex resource or our dynamic provider's."""
    if resource.type in VM_TYPES | MIG_TYPES | AUTOSCALER_TYPES:
        return False
    _, high, gpus = _vertex_replicas(resource.inputs)
    return high is not None and (gpus is not None or "vertex" in resource.type.lower())


def check_prod_replicas(
    resources: Sequence[Resource], config: GuardrailConfig
) -> list[tuple[Resource | None, str]]:
    if _environment(resources, config) != "prod":
        return []
    minimum = config.min_prod_replicas
    migs = [r for r in resources if r.type in MIG_TYPES]
    autoscalers = [r for r in resources if r.type in AUTOSCALER_TYPES]
    problems: list[tuple[Resource | None, str]] = []
    for autoscaler in autoscalers:
        policy = _dict(autoscaler.inputs.get("autoscalingPolicy"))
        low = _int(policy.get("minReplicas"))
        if low is not None and low < minimum:
            problems.append((autoscaler, f"autoscalingPolicy.minReplicas is {low}; prod needs >= {minimum}."))
    for mig in migs:
        if _autoscaler_for(mig, autoscalers, migs) is not None:
            continue
        size = _int(mig.inputs.get("targetSize"))
        if size is None or size < minimum:
            problems.append(
                (
                    mig,
                    f"targetSize is {size if size is not None else 'unset'} with no autoscaler; "
                    f"prod needs >= {minimum}.",
                )
            )
    for deployment in filter(_is_vertex_deployment, resources):
        low = _vertex_replicas(deployment.inputs)[0]
        if low is None or low < minimum:
            problems.append((deployment, f"min replicas is {low}; prod needs >= {minimum}."))
    return problems


GPU_BUDGET = Rule(
    id="VLLM_GCP_007",
    name="gpu-budget",
    description=(
        "The GPUs the stack can run at maximum scale (GPUs per VM x autoscaler maxReplicas, plus standalone "
        "GPU VMs and Vertex deployments at maxReplicaCount) stay within the configured budget (maxTotalGpus)."
    ),
    remediation=(
        "lower scaling.maxReplicas or hardware.gpuCount, or raise maxTotalGpus in the policy pack config "
        "after checking the project's GPU quota and budget."
    ),
    severity="medium",
)


def gpus_at_max_scale(resources: Sequence[Resource]) -> list[tuple[Resource, int, str]]:
    """Each GPU consumer with the GPUs it holds at max scale and how that number was worked out."""
    templates = [r for r in resources if r.type in TEMPLATE_TYPES]
    migs = [r for r in resources if r.type in MIG_TYPES]
    autoscalers = [r for r in resources if r.type in AUTOSCALER_TYPES]
    consumers: list[tuple[Resource, int, str]] = []
    for mig in migs:
        references = [_dict(v).get("instanceTemplate") for v in _list(mig.inputs.get("versions"))]
        references.append(mig.inputs.get("instanceTemplate"))
        linked = [t for ref in references if (t := _resolve(ref, templates)) is not None]
        # An unresolvable template counts as the largest one: a budget should fail closed.
        per_vm = max((gpus_per_vm(t.inputs) for t in linked or templates), default=0)
        if per_vm == 0:
            continue
        autoscaler = _autoscaler_for(mig, autoscalers, migs)
        if autoscaler is not None:
            replicas = _int(_dict(autoscaler.inputs.get("autoscalingPolicy")).get("maxReplicas")) or 1
            how = f"{per_vm} GPU(s)/VM x maxReplicas {replicas}"
        else:
            replicas = _int(mig.inputs.get("targetSize")) or 1
            how = f"{per_vm} GPU(s)/VM x targetSize {replicas}"
        consumers.append((mig, per_vm * replicas, how))
    for vm in (r for r in resources if r.type in STANDALONE_VM_TYPES):
        if gpus := gpus_per_vm(vm.inputs):
            consumers.append((vm, gpus, f"{gpus} GPU(s) on a standalone VM"))
    for deployment in filter(_is_vertex_deployment, resources):
        _, high, per_replica = _vertex_replicas(deployment.inputs)
        if high and per_replica:
            consumers.append((deployment, high * per_replica, f"{per_replica} GPU(s) x max replicas {high}"))
    return consumers


def check_gpu_budget(
    resources: Sequence[Resource], config: GuardrailConfig
) -> list[tuple[Resource | None, str]]:
    consumers = gpus_at_max_scale(resources)
    total = sum(gpus for _, gpus, _ in consumers)
    if total <= config.max_total_gpus:
        return []
    breakdown = "; ".join(f"{r.name}: {how}" for r, _, how in consumers)
    return [(None, f"{total} GPUs at max scale exceed the budget of {config.max_total_gpus} ({breakdown}).")]


STACK_RULES: tuple[StackRule, ...] = (
    StackRule(NO_MANAGED_SECRETS_IN_METADATA, check_no_managed_secrets_in_metadata),
    StackRule(PROD_HTTPS, check_prod_https),
    StackRule(PROD_REPLICAS, check_prod_replicas),
    StackRule(GPU_BUDGET, check_gpu_budget),
)

ALL_RULES: tuple[Rule, ...] = tuple(r.rule for r in RESOURCE_RULES) + tuple(r.rule for r in STACK_RULES)


# ------------------------------------------------------------------------------------------------------------
# Whole-stack evaluation (tests, the offline plan check)


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_rule(self, rule: Rule) -> list[Violation]:
        return [v for v in self.violations if v.rule == rule]

    def render(self) -> str:
        return "\n".join(v.message for v in self.violations) or "all guardrails pass"


ConfigByRule = Mapping[str, GuardrailConfig]


def _config_for(rule: Rule, config: GuardrailConfig | None, per_rule: ConfigByRule | None) -> GuardrailConfig:
    """A rule's own config (as the pack's per-policy config), else the shared one, else the defaults."""
    if per_rule and rule.name in per_rule:
        return per_rule[rule.name]
    return config or GuardrailConfig()


def evaluate_resource(
    resource: Resource, config: GuardrailConfig | None = None, per_rule: ConfigByRule | None = None
) -> list[Violation]:
    return [
        Violation(entry.rule, detail, resource.urn, resource.name)
        for entry in RESOURCE_RULES
        for detail in entry.check(resource.type, resource.inputs, _config_for(entry.rule, config, per_rule))
    ]


def evaluate_stack(
    resources: Sequence[Resource], config: GuardrailConfig | None = None, per_rule: ConfigByRule | None = None
) -> Report:
    """Run every resource rule on every resource and every stack rule on the whole set.

    `config` applies to every rule; `per_rule` (by policy name) overrides it, as the pack's config file does.
    """
    report = Report()
    for resource in resources:
        report.violations.extend(evaluate_resource(resource, config, per_rule))
    for entry in STACK_RULES:
        for culprit, detail in entry.check(resources, _config_for(entry.rule, config, per_rule)):
            report.violations.append(
                Violation(entry.rule, detail, culprit.urn if culprit else "", culprit.name if culprit else "")
            )
    return report
