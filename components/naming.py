"""GCP-safe names and labels derived from a component name (pure functions).

Most children are auto-named by Pulumi (`<resource name>-<7 hex>`), so a component name of at most
`MAX_COMPONENT_NAME` characters keeps every derived name within GCP's 63-character limit. Resources whose id we
must choose (service account, secrets, repositories, instance-name prefixes) get a short deterministic id here.
"""

from __future__ import annotations

import hashlib
import re

# 30 + the longest child suffix we use ("-https-redirect-rule", 20) + Pulumi's "-xxxxxxx" (8) = 58 <= 63.
MAX_COMPONENT_NAME = 30
GCP_NAME_MAX = 63
COMPONENT_NAME_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE_BAD = re.compile(r"[^a-z0-9_-]")


def check_component_name(name: str, component: str, max_len: int = MAX_COMPONENT_NAME) -> str:
    """Reject a name that would give invalid or over-long GCP names, with the fix."""
    if not COMPONENT_NAME_RE.fullmatch(name) or len(name) > max_len:
        raise ValueError(
            f"{component} name {name!r} is not usable: GCP resource names are derived from it, so use 1-"
            f"{max_len} lower-case letters, digits or '-', starting with a letter and not ending with "
            "'-' (e.g. 'vllm' or 'vllm-prod')"
        )
    return name


def deployment_name(stack: str, base: str = "vllm") -> str:
    """The component name for one stack's deployment: `vllm-<stack>`, GCP-safe and at most 30 characters.

    The ids we choose (secrets, repository, service account) derive from it, so two stacks in one GCP project
    (dev and staging, or prod and vertex) do not collide.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", stack.lower()).strip("-") or "stack"
    return short_id(f"{base}-{slug}", max_len=MAX_COMPONENT_NAME)


def _digest(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def short_id(name: str, max_len: int, suffix: str = "", min_len: int = 1) -> str:
    """`<name><suffix>` if it fits in max_len, else the name cut short plus a hash of the full name.

    Deterministic, so a re-run yields the same id; the hash keeps two long names that share a prefix apart.
    """
    candidate = f"{name}{suffix}"
    if len(candidate) > max_len:
        room = max_len - len(suffix) - 7  # "-" + 6 hex
        candidate = f"{name[:room].rstrip('-')}-{_digest(name)}{suffix}"
    if len(candidate) < min_len:
        candidate = f"{candidate}-{_digest(name)}"[:max_len]
    return candidate


def service_account_id(name: str) -> str:
    """A service account id (6-30 chars, [a-z][-a-z0-9]*[a-z0-9]) for the component called `name`."""
    return short_id(name, max_len=30, suffix="-vm", min_len=6)


def label_value(value: str) -> str:
    """A GCP label value: lower-case letters, digits, '_' and '-', at most 63 characters."""
    return _LABEL_VALUE_BAD.sub("_", value.lower())[:GCP_NAME_MAX]


def standard_labels(component: str, environment: str, model: str) -> dict[str, str]:
    """The labels every resource of a deployment carries (cost reports and `gcloud ... --filter` use them)."""
    return {
        "app": "vllm-gcp",
        "vllm-gcp-component": label_value(component),
        "environment": label_value(environment),
        "served-model": label_value(model),
    }
