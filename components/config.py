"""The stack config contract (namespace `vllm-gcp`), validated once with pydantic.

Every key is camelCase in the stack file and snake_case in Python. Unknown keys are errors (`extra="forbid"`), and
every error names the key path, the bad value and the fix. Secrets (`hfToken`, `apiKeys`) are not part of these
models: they stay Pulumi secrets and are passed to components as `pulumi.Input[str]`.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pulumi
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .alerts import AlertThresholds, notification_channel_names
from .catalog import GPUS, MACHINE_TYPES, MODEL_ALIASES, MODELS, Gpu, Model

NAMESPACE = "vllm-gcp"
SECRET_KEYS = ("hfToken", "apiKeys")
SERVED_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
# Quantization methods we accept, mapped to vLLM 0.33's real --quantization values (see vllm_args.py).
ONLINE_QUANTIZATION = ("fp8", "int8")  # quantize an ordinary checkpoint at load time
PREQUANTIZED = ("int4", "awq", "gptq")  # need a checkpoint that is already quantized that way


class ConfigError(ValueError):
    """A stack config problem: one line per problem, each naming the key, the bad value and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class ModelConfig(_Model):
    id: str = "google/gemma-4-E4B-it"
    served_name: str | None = None
    dtype: Literal["auto", "bfloat16", "float16"] = "bfloat16"
    quantization: Literal["fp8", "int8", "int4", "awq", "gptq"] | None = None
    params_billions: Annotated[float, Field(gt=0, le=2000)] | None = None
    max_model_len: Annotated[int, Field(ge=256, le=1_048_576)] = 8192
    gpu_memory_utilization: Annotated[float, Field(ge=0.5, le=0.98)] = 0.90
    tensor_parallel_size: Annotated[int, Field(ge=1, le=16)] = 1
    image: str = "vllm/vllm-openai:v0.33.0"
    extra_args: list[str] = Field(default_factory=list)

    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("id")
    @classmethod
    def _known_id(cls, value: str) -> str:
        if not (value.startswith("gs://") or re.fullmatch(r"[\w.-]+/[\w.-]+", value)):
            raise ValueError(f"{value!r} is neither a Hugging Face repo id (org/name) nor a gs:// path")
        return value

    @field_validator("image")
    @classmethod
    def _pinned_image(cls, value: str) -> str:
        name = value.split("@", 1)[0]
        tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
        if tag in (None, "latest") and "@sha256:" not in value:
            raise ValueError(f"{value!r} is not pinned; use an explicit tag such as vllm/vllm-openai:v0.33.0")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> ModelConfig:
        if self.id in MODEL_ALIASES:
            real = MODEL_ALIASES[self.id]
            self._warnings.append(f"model.id: {self.id!r} does not exist on Hugging Face; using {real!r}")
            object.__setattr__(self, "id", real)
        if self.served_name is None:
            object.__setattr__(self, "served_name", self.id.rstrip("/").rsplit("/", 1)[-1].lower())
        if not SERVED_NAME_RE.fullmatch(self.served_name or ""):
            raise ValueError(
                f"servedName: {self.served_name!r} is not a valid model name: use 1-64 lower-case letters, digits, "
                "'.', '-' or '_', starting and ending with a letter or digit (e.g. gemma-4-26b)"
            )
        if self.catalog is None and self.params_billions is None:
            raise ValueError(
                f"paramsBillions: required for {self.id!r}, which is not in the built-in catalog "
                f"({', '.join(MODELS)}); set it to the checkpoint's total parameter count in billions"
            )
        if self.quantization in PREQUANTIZED and self.id in MODELS:
            raise ValueError(
                f"quantization: {self.quantization!r} needs a checkpoint already quantized with {self.quantization}; "
                f"{self.id!r} is the unquantized original. Set id to a pre-quantized checkpoint (and paramsBillions), "
                "or use fp8 / int8, which quantize at load time"
            )
        if self.catalog and self.max_model_len > self.catalog.max_context:
            raise ValueError(
                f"maxModelLen: {self.max_model_len} exceeds {self.id}'s context window of "
                f"{self.catalog.max_context}; lower it to at most {self.catalog.max_context}"
            )
        return self

    @property
    def catalog(self) -> Model | None:
        return MODELS.get(self.id)

    @property
    def from_gcs(self) -> bool:
        return self.id.startswith("gs://")


class HardwareConfig(_Model):
    machine_type: str = "g2-standard-8"
    gpu_type: str = "nvidia-l4"
    gpu_count: Annotated[int, Field(ge=1, le=16)] = 1
    spot: bool = False

    @model_validator(mode="after")
    def _machine_carries_gpus(self) -> HardwareConfig:
        if self.gpu_type not in GPUS:
            raise ValueError(f"gpuType: {self.gpu_type!r} is not a known GPU; use one of {', '.join(GPUS)}")
        gpu = GPUS[self.gpu_type]
        if self.machine_type not in MACHINE_TYPES:
            options = ", ".join(m for m, n in gpu.machine_types.items() if n == self.gpu_count) or "none"
            raise ValueError(
                f"machineType: {self.machine_type!r} is not a GPU machine type we know; "
                f"for {self.gpu_count} x {self.gpu_type} use: {options}"
            )
        carried, count = MACHINE_TYPES[self.machine_type]
        if (carried, count) != (self.gpu_type, self.gpu_count):
            options = ", ".join(m for m, n in gpu.machine_types.items() if n == self.gpu_count)
            fix = (
                f"a machine type with {self.gpu_count} x {self.gpu_type}: {options}"
                if options
                else (f"a gpuCount that {self.gpu_type} comes in: {sorted(set(gpu.machine_types.values()))}")
            )
            raise ValueError(
                f"machineType: {self.machine_type!r} carries {count} x {carried}, not {self.gpu_count} x "
                f"{self.gpu_type}. Set gpuType {carried} and gpuCount {count}, or use {fix}"
            )
        if self.machine_type in gpu.spot_only and not self.spot:
            raise ValueError(
                f"spot: machineType {self.machine_type!r} is sold only as Spot or flex-start; set spot: true"
            )
        return self

    @property
    def gpu(self) -> Gpu:
        return GPUS[self.gpu_type]


class ScalingConfig(_Model):
    min_replicas: Annotated[int, Field(ge=1, le=100)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=100)] = 1
    target_waiting_requests_per_replica: Annotated[float, Field(gt=0, le=1000)] = 10
    # Second signal (gce): running requests per replica. Queue depth alone drops to zero once capacity suffices,
    # which would scale in a busy group; default: 80 % of the planner's concurrency estimate.
    target_running_requests_per_replica: Annotated[float, Field(gt=0, le=4096)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ScalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas: {self.max_replicas} is below minReplicas {self.min_replicas}; "
                f"raise maxReplicas to at least {self.min_replicas}"
            )
        return self


class GceConfig(_Model):
    zones: list[str] = Field(default_factory=list)
    domain: str | None = None
    allowed_source_ranges: list[str] = Field(default_factory=list)
    request_timeout_seconds: Annotated[int, Field(ge=300, le=86_400)] = 600

    @field_validator("domain")
    @classmethod
    def _fqdn(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(?=.{4,253}$)([a-z0-9-]{1,63}\.)+[a-z]{2,63}", value):
            raise ValueError(
                f"{value!r} is not a lower-case fully qualified domain name such as llm.example.com"
            )
        return value

    @field_validator("allowed_source_ranges")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        import ipaddress

        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR range such as 203.0.113.0/24 ({exc})") from None
        return value


class VertexConfig(_Model):
    dedicated_endpoint: bool = True


class MonitoringConfig(_Model):
    notification_channels: list[str] = Field(default_factory=list)
    alerts: AlertThresholds = Field(default_factory=AlertThresholds)


class StackConfig(_Model):
    """The whole validated stack config. Components take this (or its parts); they never read pulumi.Config."""

    project: str
    region: str
    platform: Literal["gce", "vertex"] = "gce"
    environment: Literal["dev", "staging", "prod"] = "dev"
    model: ModelConfig = Field(default_factory=ModelConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    gce: GceConfig = Field(default_factory=GceConfig)
    vertex: VertexConfig = Field(default_factory=VertexConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @field_validator("project")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][-a-z0-9]{4,28}[a-z0-9]", value):
            raise ValueError(
                f"{value!r} is not a project id: 6-30 lower-case letters, digits or hyphens, starting "
                "with a letter (the id, not the display name or number)"
            )
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> StackConfig:
        problems = []
        tp, gpus = self.model.tensor_parallel_size, self.hardware.gpu_count
        if gpus % tp:
            divisors = [d for d in range(1, gpus + 1) if gpus % d == 0]
            problems.append(
                f"model.tensorParallelSize: {tp} does not divide hardware.gpuCount {gpus}; use one of {divisors}"
            )
        if self.platform == "gce":
            if not self.gce.zones:
                problems.append(
                    f"gce.zones: empty; list the zones of {self.region} that have {self.hardware.gpu_type} "
                    f"(e.g. [{self.region}-a, {self.region}-b])"
                )
            stray = [z for z in self.gce.zones if not z.startswith(f"{self.region}-")]
            if stray:
                problems.append(
                    f"gce.zones: {stray} are not in region {self.region}; use {self.region}-<letter>"
                )
        if self.environment == "prod":
            if self.scaling.min_replicas < 2:
                problems.append(
                    f"scaling.minReplicas: {self.scaling.min_replicas} in prod; prod needs >= 2 replicas so that "
                    "one failure or update causes no downtime. Set minReplicas: 2"
                )
            if self.platform == "gce" and len(set(self.gce.zones)) < 2:
                problems.append(
                    f"gce.zones: {self.gce.zones} in prod; prod needs >= 2 zones. Add another zone of {self.region}"
                )
            if self.platform == "gce" and not self.gce.domain:
                problems.append(
                    "gce.domain: not set in prod; prod serves HTTPS only, which needs a domain for the managed "
                    "certificate. Set gce.domain (e.g. llm.example.com)"
                )
        try:
            notification_channel_names(self.monitoring.notification_channels, self.project)
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def warnings(self) -> list[str]:
        notes = list(self.model._warnings)
        if self.platform == "gce" and not self.gce.domain:
            notes.append(
                "gce.domain: not set; the load balancer serves plain HTTP, so API keys and prompts cross the "
                "internet unencrypted. Set gce.domain for HTTPS"
            )
        if "@sha256:" not in self.model.image:
            notes.append(
                f"model.image: {self.model.image!r} is pinned by tag only; the stack caches it in Artifact Registry and "
                "deploys it by digest, but add @sha256:<digest> to make the upstream pin immutable too"
            )
        return notes


def _known_keys() -> list[str]:
    models = (
        StackConfig,
        ModelConfig,
        HardwareConfig,
        ScalingConfig,
        GceConfig,
        VertexConfig,
        MonitoringConfig,
    )
    return [to_camel(name) for model in models for name in model.model_fields] + list(SECRET_KEYS)


_KEYED = re.compile(r"^([a-z][A-Za-z0-9.\[\]]*): (.*)$", re.S)


def _format(error: ValidationError) -> list[str]:
    """One line per problem: `vllm-gcp:<key path>: <what is wrong and the fix>`."""
    problems = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[-1], _known_keys(), n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else "see the config contract in README (Configuration)"
            )
            message = f"unknown key; {hint}"
        elif item["type"] != "value_error" and item["type"] != "missing":
            message = f"{message} (got {item['input']!r})"
        for line in message.split("\n"):
            keyed = _KEYED.match(line)  # model-level checks name their own key: "gpuCount: ..."
            path = [*loc, keyed.group(1)] if keyed else loc
            text = keyed.group(2) if keyed else line
            namespace = "gcp" if path[:1] in (["project"], ["region"]) else NAMESPACE
            problems.append(f"{namespace}:{'.'.join(path)}: {text}" if path else f"{NAMESPACE}: {text}")
    return problems


def parse_config(raw: dict[str, Any]) -> StackConfig:
    """Validate a plain dict (stack-file shape: camelCase keys, no namespace) or raise ConfigError."""
    from .vllm_args import check_extra_args  # vllm_args builds on this module

    try:
        config = StackConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format(error)) from None
    check_extra_args(config.model.extra_args)
    return config


@dataclass(frozen=True)
class LoadedConfig:
    """The validated stack config plus its secrets, which stay Pulumi secrets."""

    stack: StackConfig
    hf_token: pulumi.Output[str] | None
    api_keys: pulumi.Output[list[str]] | None


def _stack_file_value(value: Any) -> Any:
    # Pulumi hands structured config to programs as JSON strings.
    if isinstance(value, str) and value[:1] in ("{", "["):
        return json.loads(value)
    return value


def load_config() -> LoadedConfig:
    """Read the `vllm-gcp` namespace (and gcp:project / gcp:region) once, validate it, and keep secrets secret."""
    from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret

    every = {**get_config_env(), **CONFIG.get()}
    raw: dict[str, Any] = {}
    for key, value in every.items():
        namespace, _, name = key.replace(":config:", ":").partition(":")
        if namespace == NAMESPACE and name not in SECRET_KEYS:
            raw[name] = _stack_file_value(value)
    gcp = pulumi.Config("gcp")
    raw["project"] = gcp.get("project") or raw.get("project")
    raw["region"] = gcp.get("region") or raw.get("region")
    problems = [
        f"gcp:{key}: not set; run `pulumi config set gcp:{key} <value>`"
        for key in ("project", "region")
        if not raw[key]
    ]
    for key in SECRET_KEYS:
        if f"{NAMESPACE}:{key}" in every and not is_config_secret(f"{NAMESPACE}:{key}"):
            problems.append(
                f"{NAMESPACE}:{key}: stored in plaintext; store it as a secret: "
                f"`pulumi config set --secret {NAMESPACE}:{key} ...` (and rotate the exposed value)"
            )
    api_keys = every.get(f"{NAMESPACE}:apiKeys")
    if api_keys is not None:
        keys = _stack_file_value(api_keys)
        # vLLM reads one key from VLLM_API_KEY; several would have to go on its command line, visible in `ps`.
        if not (isinstance(keys, list) and len(keys) == 1 and all(isinstance(k, str) and k for k in keys)):
            count = len(keys) if isinstance(keys, list) else "not a list"
            problems.append(
                f"{NAMESPACE}:apiKeys: expected a list with exactly one key ({count}); set it with "
                f"`pulumi config set --secret --path '{NAMESPACE}:apiKeys[0]' <key>`, or remove it to have one generated"
            )
    if problems:
        raise ConfigError(problems)
    stack = parse_config(raw)
    cfg = pulumi.Config(NAMESPACE)
    return LoadedConfig(
        stack=stack, hf_token=cfg.get_secret("hfToken"), api_keys=cfg.get_secret_object("apiKeys")
    )
