"""VllmLoadBalancer: EXTERNAL_MANAGED front end, Cloud Armor behaviour, HTTPS with a domain, HTTP without."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from components.gce_service import AUTOHEAL_CHECK, VllmGceService
from components.load_balancer import DEFAULT_RULE_PRIORITY, VllmLoadBalancer, security_policy_rules
from components.mocks import PLACEHOLDER_DIGEST, PLACEHOLDER_IP, RecordingMocks, resolve
from tests.conftest import make_config
from tests.gce_harness import build, of_type, one

IMAGE = f"us-central1-docker.pkg.dev/test-project/llm-remote/vllm/vllm-openai@{PLACEHOLDER_DIGEST}"
BACKEND = "gcp:compute/backendService:BackendService"
RULE = "gcp:compute/globalForwardingRule:GlobalForwardingRule"
HTTP_PROXY = "gcp:compute/targetHttpProxy:TargetHttpProxy"
HTTPS_PROXY = "gcp:compute/targetHttpsProxy:TargetHttpsProxy"
URL_MAP = "gcp:compute/uRLMap:URLMap"
INSTANCE_GROUP = (
    "https://www.googleapis.com/compute/v1/projects/test-project/regions/us-central1/instanceGroups/g"
)


def _last(link: str) -> str:
    """The resource name at the end of a self link or id."""
    return link.rsplit("/", 1)[1]


def _front(mocks: RecordingMocks, **gce: Any) -> VllmLoadBalancer:
    config = make_config(gce={"zones": ["us-central1-a", "us-central1-b"], **gce})
    return build(lambda: VllmLoadBalancer("llm", config, instance_group=INSTANCE_GROUP))


# ---- Cloud Armor, evaluated ------------------------------------------------------------------------------------
def _cel(expression: str, path: str) -> bool:
    """Evaluate the small CEL subset our rules use (startsWith, contains, lower, ==, !, ||) on a request path."""
    python = (
        expression.replace("request.path", "path")
        .replace(".startsWith(", ".startswith(")
        .replace(".contains(", ".__contains__(")
        .replace("||", " or ")
        .replace("!(", " not (")
    )
    assert re.fullmatch(r"[\w\s.()'/%=_-]*", python), f"unexpected CEL construct in {expression!r}"
    return bool(eval(python, {"__builtins__": {}}, {"path": path}))


def _matches(rule: dict[str, Any], path: str, source_ip: str) -> bool:
    match = rule["match"]
    if "expr" in match:
        return _cel(match["expr"]["expression"], path)
    assert match["versionedExpr"] == "SRC_IPS_V1"
    ranges = match["config"]["srcIpRanges"]
    return "*" in ranges or any(ipaddress.ip_address(source_ip) in ipaddress.ip_network(r) for r in ranges)


def cloud_armor(rules: list[dict[str, Any]], path: str, source_ip: str = "198.51.100.7") -> str:
    """The action Cloud Armor takes: the first matching rule by ascending priority."""
    for rule in sorted(rules, key=lambda r: r["priority"]):
        if _matches(rule, path, source_ip):
            return rule["action"]
    raise AssertionError("no rule matched: Cloud Armor always has a default rule")


def _rules(mocks: RecordingMocks, **gce: Any) -> list[dict[str, Any]]:
    _front(mocks, **gce)
    return one(mocks, "gcp:compute/securityPolicy:SecurityPolicy")["rules"]


@pytest.mark.parametrize(
    ("path", "action"),
    [
        ("/v1/chat/completions", "throttle"),
        ("/v1/models", "throttle"),
        ("/health", "throttle"),
        ("/metrics", "deny(404)"),
        ("/tokenize", "deny(404)"),
        ("/invocations", "deny(404)"),
        ("/pooling", "deny(404)"),
        ("/docs", "deny(404)"),
        ("/", "deny(404)"),
        ("/healthz", "deny(404)"),
        ("/v1/../metrics", "deny(404)"),
        ("/v1/%2e%2e/metrics", "deny(404)"),
        ("/v1/..%2Fmetrics", "deny(404)"),
    ],
)
def test_only_v1_and_health_are_public(mocks: RecordingMocks, path: str, action: str) -> None:
    assert cloud_armor(_rules(mocks), path) == action


def test_public_traffic_is_throttled_per_client_ip_with_429(mocks: RecordingMocks) -> None:
    rules = _rules(mocks)
    (throttle,) = [r for r in rules if r["action"] == "throttle"]
    options = throttle["rateLimitOptions"]
    assert options["enforceOnKey"] == "IP"
    assert options["exceedAction"] == "deny(429)" and options["conformAction"] == "allow"
    assert options["rateLimitThreshold"] == {"count": 600, "intervalSec": 60}
    default = [r for r in rules if r["priority"] == DEFAULT_RULE_PRIORITY]
    assert [r["action"] for r in default] == ["allow"]


def test_allowlist_admits_only_listed_ranges(mocks: RecordingMocks) -> None:
    rules = _rules(mocks, allowedSourceRanges=["203.0.113.0/24", "198.51.100.0/25"])
    assert cloud_armor(rules, "/v1/models", "203.0.113.9") == "throttle"
    assert cloud_armor(rules, "/v1/models", "198.51.100.7") == "throttle"
    assert cloud_armor(rules, "/v1/models", "198.51.100.200") == "deny(403)"
    assert cloud_armor(rules, "/v1/models", "192.0.2.1") == "deny(403)"
    assert cloud_armor(rules, "/metrics", "203.0.113.9") == "deny(404)"  # the path rule still applies


def test_allowlist_longer_than_one_rule_is_split() -> None:
    ranges = [f"10.0.{i}.0/24" for i in range(23)]
    rules = [r for r in security_policy_rules(ranges, 100) if r.action == "throttle"]  # type: ignore[attr-defined]
    chunks = [r.match.config.src_ip_ranges for r in rules]  # type: ignore[attr-defined]
    assert [len(c) for c in chunks] == [10, 10, 3]
    assert [ip for chunk in chunks for ip in chunk] == ranges


def test_security_policy_is_attached_to_the_backend(mocks: RecordingMocks) -> None:
    _front(mocks)
    backend = one(mocks, BACKEND)
    assert _last(backend["securityPolicy"]).startswith("llm-armor-")


# ---- backend service and health -------------------------------------------------------------------------------
def test_backend_service(mocks: RecordingMocks) -> None:
    _front(mocks, requestTimeoutSeconds=900)
    backend = one(mocks, BACKEND)
    assert backend["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    assert backend["localityLbPolicy"] == "LEAST_REQUEST"
    assert backend["protocol"] == "HTTP" and backend["portName"] == "http"
    assert backend["timeoutSec"] == 900
    assert backend["connectionDrainingTimeoutSec"] == 900
    assert backend["logConfig"]["enable"] is True and 0 < backend["logConfig"]["sampleRate"] <= 1
    assert [b["group"] for b in backend["backends"]] == [INSTANCE_GROUP]


def test_connection_draining_is_capped_at_gce_limit(mocks: RecordingMocks) -> None:
    _front(mocks, requestTimeoutSeconds=7200)
    assert one(mocks, BACKEND)["connectionDrainingTimeoutSec"] == 3600


def test_health_check_is_stricter_than_autohealing(mocks: RecordingMocks) -> None:
    _front(mocks)
    check = one(mocks, "gcp:compute/healthCheck:HealthCheck")
    assert check["httpHealthCheck"] == {"port": 8000, "requestPath": "/health"}
    assert one(mocks, BACKEND)["healthChecks"].rsplit("/", 1)[1].startswith("llm-hc-")
    lb_seconds_to_unhealthy = check["checkIntervalSec"] * check["unhealthyThreshold"]
    autoheal_seconds_to_unhealthy = (
        AUTOHEAL_CHECK["check_interval_sec"] * AUTOHEAL_CHECK["unhealthy_threshold"]
    )
    assert lb_seconds_to_unhealthy < autoheal_seconds_to_unhealthy
    assert check["timeoutSec"] <= AUTOHEAL_CHECK["timeout_sec"]


def test_backend_port_name_is_the_migs_named_port(mocks: RecordingMocks) -> None:
    config = make_config()

    def program() -> None:
        service = VllmGceService("llm", config, image_ref=IMAGE)
        VllmLoadBalancer(
            "llm-lb", config, instance_group=service.instance_group, named_port=service.named_port
        )

    build(program)
    named_ports = one(mocks, "gcp:compute/regionInstanceGroupManager:RegionInstanceGroupManager")[
        "namedPorts"
    ]
    backend = one(mocks, BACKEND)
    assert {"name": backend["portName"], "port": 8000} in named_ports
    assert "/instanceGroups/llm-mig-" in backend["backends"][0]["group"]


# ---- HTTPS with a domain, HTTP without ----------------------------------------------------------------------------
def test_with_domain_https_modern_tls_and_redirect(mocks: RecordingMocks) -> None:
    front = _front(mocks, domain="llm.example.com")
    cert = one(mocks, "gcp:compute/managedSslCertificate:ManagedSslCertificate")
    assert cert["managed"] == {"domains": ["llm.example.com"]}
    policy = one(mocks, "gcp:compute/sSLPolicy:SSLPolicy")
    assert policy["profile"] == "MODERN" and policy["minTlsVersion"] == "TLS_1_2"
    https = one(mocks, HTTPS_PROXY)
    assert _last(https["sslPolicy"]).startswith("llm-tls-")
    assert len(https["sslCertificates"]) == 1 and _last(https["sslCertificates"][0]).startswith("llm-cert-")
    rules = {r.inputs["portRange"]: r.inputs for r in of_type(mocks, RULE)}
    assert set(rules) == {"443", "80"}
    assert all(
        r["loadBalancingScheme"] == "EXTERNAL_MANAGED" and r["ipAddress"] == PLACEHOLDER_IP
        for r in rules.values()
    )
    assert _last(rules["443"]["target"]).startswith("llm-https-proxy-")
    assert _last(rules["80"]["target"]).startswith("llm-redirect-proxy-")
    # Port 80 serves only a redirect: its URL map has no backend at all.
    (redirect_proxy,) = of_type(mocks, HTTP_PROXY)
    maps = {r.name: r.inputs for r in of_type(mocks, URL_MAP)}
    redirect_map = next(m for name, m in maps.items() if name == "llm-redirect")
    assert (
        redirect_map["defaultUrlRedirect"]["httpsRedirect"] is True and "defaultService" not in redirect_map
    )
    assert _last(redirect_proxy.inputs["urlMap"]).startswith("llm-redirect-")
    assert resolve(front.openai_base_url) == "https://llm.example.com/v1"
    assert resolve(front.ip_address) == PLACEHOLDER_IP


def test_without_domain_plain_http_on_80(mocks: RecordingMocks) -> None:
    front = _front(mocks)
    assert not of_type(mocks, HTTPS_PROXY) and not of_type(
        mocks, "gcp:compute/managedSslCertificate:ManagedSslCertificate"
    )
    (rule,) = of_type(mocks, RULE)
    assert rule.inputs["portRange"] == "80" and _last(rule.inputs["target"]).startswith("llm-http-proxy-")
    assert _last(one(mocks, HTTP_PROXY)["urlMap"]).startswith("llm-urlmap-")
    assert resolve(front.base_url) == f"http://{PLACEHOLDER_IP}"
    assert resolve(front.openai_base_url) == f"http://{PLACEHOLDER_IP}/v1"


def test_children_parented_and_named(mocks: RecordingMocks) -> None:
    _front(mocks, domain="llm.example.com")
    (component,) = of_type(mocks, "vllm-gcp:gce:LoadBalancer")
    children = [r for r in mocks.resources if r is not component]
    assert children and all(r.parent == component.urn and r.name.startswith("llm-") for r in children)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"requests_per_minute_per_ip": 0}, "must be >= 1"), ({"log_sample_rate": 0.0}, r"must be in \(0, 1\]")],
)
def test_bad_options(mocks: RecordingMocks, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(lambda: VllmLoadBalancer("llm", make_config(), instance_group=INSTANCE_GROUP, **kwargs))
