"""CrossGuard policy pack `vllm-gcp-guardrails`: the validators in `validators.py`, wired into pulumi-policy.

Run it with any stack (ours, or another team's that imports our components):

    pulumi preview --policy-pack policy                                                # defaults, see below
    pulumi preview --policy-pack policy --policy-pack-config policy/config/prod.json   # prod: all mandatory

Defaults: the rules whose violation is an incident anywhere (public IP on a GPU VM, a secret in metadata:
token-shaped, or one of the stack's own secret payloads, a firewall open to the internet) are mandatory; the
rest are advisory. `policy/config/prod.json` sets `"all": "mandatory"`, so a prod preview or update fails on
any violation. Per-rule settings (the serving port, a source allowlist, the GPU budget, ...) are each policy's
config: see `config_schema` below and docs/ci-cd.md.

Pulumi's analyzer runs this file with runpy (`policy/` itself on sys.path); pytest and mypy import it as
`policy.__main__`, where `__name__` is not "__main__", so importing it does not start the gRPC server.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import Policy
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
)
from pulumi_policy.secret import Secret

try:
    from policy import validators
except ImportError:  # run by the Pulumi analyzer: policy/ itself is on sys.path, not the repository root
    import validators  # type: ignore[no-redef]

PACK_NAME = "vllm-gcp-guardrails"
_UNKNOWN_SENTINELS = frozenset(
    {
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    }
)

# Proxies that answer `proxy["__target"]` with the raw tree (the secrets proxy would unwrap `Secret` silently).
_PROXY_TYPES = ("_DictProxy", "_ListProxy", "_DictSecretsProxy", "_ListSecretsProxy")

# One JSON schema per setting; every policy accepts the settings it reads (the CLI validates the config file).
_SETTING_SCHEMAS: dict[str, dict[str, Any]] = {
    "servingPort": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8000},
    "allowedSourceRanges": {"type": "array", "items": {"type": "string"}, "default": []},
    "minBackendTimeoutSec": {"type": "integer", "minimum": 1, "default": 300},
    "minProdReplicas": {"type": "integer", "minimum": 1, "default": 2},
    "maxTotalGpus": {"type": "integer", "minimum": 0, "default": 16},
    "requireSecureBoot": {"type": "boolean", "default": True},
    "environment": {"type": "string", "enum": ["dev", "staging", "prod"]},
}
_SETTINGS_BY_RULE: dict[str, tuple[str, ...]] = {
    validators.FIREWALL_SOURCES.name: ("servingPort", "allowedSourceRanges"),
    validators.BACKEND_TIMEOUT.name: ("minBackendTimeoutSec",),
    validators.SHIELDED_VM.name: ("requireSecureBoot",),
    validators.PROD_HTTPS.name: ("environment",),
    validators.PROD_REPLICAS.name: ("environment", "minProdReplicas"),
    validators.GPU_BUDGET.name: ("maxTotalGpus",),
}


def plain(value: Any) -> Any:
    """The engine's (possibly proxied) property tree as plain dicts/lists, unknowns as validators.UNKNOWN.

    pulumi-policy wraps inputs in proxies that raise on any unknown value during preview; the validators
    instead treat "[unknown]" as "cannot tell yet, do not flag", so one unknown field does not skip a policy.
    Secrets: validation (Analyze/AnalyzeStack) gets them as bare plaintext, nothing to do; the remediation path
    wraps them in `Secret`, which becomes the engine's wire envelope so the validators still see "this is secret".
    """
    target = value["__target"] if type(value).__name__ in _PROXY_TYPES else value
    if isinstance(target, Secret):
        return {validators.SECRET_SIG_KEY: validators.SECRET_SIG, "value": plain(target.value)}
    if isinstance(target, Mapping):
        return {key: plain(target[key]) for key in target}
    if isinstance(target, Sequence) and not isinstance(target, str):
        return [plain(item) for item in target]
    if isinstance(target, str) and target in _UNKNOWN_SENTINELS:
        return validators.UNKNOWN
    return target


def _stack_name() -> str | None:
    return os.environ.get("PULUMI_STACK")


def _config_schema(rule: validators.Rule) -> PolicyConfigSchema | None:
    settings = _SETTINGS_BY_RULE.get(rule.name)
    return PolicyConfigSchema({key: _SETTING_SCHEMAS[key] for key in settings}) if settings else None


def _policy_fields(rule: validators.Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "description": f"{rule.id}: {rule.description}",
        "enforcement_level": EnforcementLevel.MANDATORY
        if rule.mandatory_by_default
        else EnforcementLevel.ADVISORY,
        "config_schema": _config_schema(rule),
        "severity": Severity(rule.severity),
        "remediation_steps": rule.remediation,
        "tags": ["vllm-gcp", rule.id],
    }


def resource_policy(entry: validators.ResourceRule) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        config = validators.GuardrailConfig.from_policy_config(args.get_config())
        for detail in entry.check(args.resource_type, plain(args.props), config):
            report_violation(validators.Violation(entry.rule, detail, args.urn, args.name).message, None)

    return ResourceValidationPolicy(validate=validate, **_policy_fields(entry.rule))


def stack_policy(entry: validators.StackRule) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        config = validators.GuardrailConfig.from_policy_config(args.get_config())
        resources = [
            validators.Resource(type=r.resource_type, name=r.name, inputs=plain(r.props), urn=r.urn)
            for r in args.resources
        ]
        if config.environment is None:
            environment = validators.infer_environment(resources, _stack_name())
            config = dataclasses.replace(config, environment=environment)
        for culprit, detail in entry.check(resources, config):
            urn = culprit.urn if culprit else ""
            violation = validators.Violation(entry.rule, detail, urn, culprit.name if culprit else "")
            report_violation(violation.message, urn or None)

    return StackValidationPolicy(validate=validate, **_policy_fields(entry.rule))


def build_policies() -> list[Policy]:
    policies: list[Policy] = [resource_policy(entry) for entry in validators.RESOURCE_RULES]
    policies.extend(stack_policy(entry) for entry in validators.STACK_RULES)
    return policies


if __name__ == "__main__":
    PolicyPack(
        name=PACK_NAME,
        policies=build_policies(),
        description="Security and cost guardrails for vLLM serving on GCE and Vertex AI (vllm-gcp).",
    )
