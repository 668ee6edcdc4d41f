"""`VllmLoadBalancer`: the global external Application Load Balancer in front of a `VllmGceService`.

- EXTERNAL_MANAGED (the current global external Application LB), one global IPv4 address.
- Backend service: `LEAST_REQUEST` (the seed's nginx `least_conn`: a long generation keeps a replica busy, so
  count outstanding requests, not connections), `timeout_sec` = `gce.requestTimeoutSeconds` (streams last
  minutes), connection draining as long as a request may run (capped at GCE's 3600 s), request logging.
- Its own health check on `/health`, stricter than the MIG's autohealing check: it takes a replica out of
  rotation within seconds, while autohealing waits minutes before recreating the VM.
- Cloud Armor: 404 for every path outside `/v1/` and `/health` (vLLM's `--api-key` guards only `/v1`, so
  `/metrics`, `/tokenize`, `/invocations`, `/pooling` ... must never be reachable), 404 for dot-segment or
  percent-encoded `.`/`/` paths that could smuggle one of those behind `/v1/`, a per-client-IP throttle answering
  429, and, when `gce.allowedSourceRanges` is set, an allowlist with a default deny(403).
- With `gce.domain`: a Google-managed certificate, an SSL policy (MODERN, TLS >= 1.2), HTTPS on 443, and port 80
  answering only with a redirect to HTTPS. Without a domain: plain HTTP on 80 (the config warns about it).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_gcp as gcp

from .config import StackConfig
from .naming import check_component_name, standard_labels

DEFAULT_RULE_PRIORITY = 2147483647
PATH_RULE_PRIORITY = 1000
SMUGGLING_RULE_PRIORITY = 1010
THROTTLE_RULE_PRIORITY = 2000
MAX_RANGES_PER_RULE = 10  # Cloud Armor's limit of src_ip_ranges in one basic match condition
MAX_DRAINING_SECONDS = 3600
# Public paths. vLLM serves everything else (/metrics, /tokenize, /invocations, ...) without the API key.
ALLOWED_PATHS_EXPRESSION = "request.path.startsWith('/v1/') || request.path == '/health'"
SMUGGLING_EXPRESSION = "request.path.contains('..') || request.path.lower().contains('%2e') || request.path.lower().contains('%2f')"
# Stricter than the autohealing check (30 s x 10): out of rotation after ~10 s of failures, back after ~10 s.
LB_CHECK = {"check_interval_sec": 5, "timeout_sec": 5, "healthy_threshold": 2, "unhealthy_threshold": 2}


# ---- pure helpers ---------------------------------------------------------------------------------------------
def _src_ips(ranges: Sequence[str]) -> gcp.compute.SecurityPolicyRuleMatchArgs:
    return gcp.compute.SecurityPolicyRuleMatchArgs(
        versioned_expr="SRC_IPS_V1",
        config=gcp.compute.SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=list(ranges)),
    )


def _expr(expression: str) -> gcp.compute.SecurityPolicyRuleMatchArgs:
    return gcp.compute.SecurityPolicyRuleMatchArgs(
        expr=gcp.compute.SecurityPolicyRuleMatchExprArgs(expression=expression)
    )


def security_policy_rules(
    allowed_source_ranges: Sequence[str], requests_per_minute_per_ip: int
) -> list[gcp.compute.SecurityPolicyRuleArgs]:
    """Cloud Armor rules, evaluated lowest priority number first; the first match decides."""
    rules = [
        gcp.compute.SecurityPolicyRuleArgs(
            priority=PATH_RULE_PRIORITY,
            action="deny(404)",
            description="Only /v1/* (API-key protected) and /health are public",
            match=_expr(f"!({ALLOWED_PATHS_EXPRESSION})"),
        ),
        gcp.compute.SecurityPolicyRuleArgs(
            priority=SMUGGLING_RULE_PRIORITY,
            action="deny(404)",
            description="No dot segments or encoded '.' and '/' (path smuggling past the /v1/ rule)",
            match=_expr(SMUGGLING_EXPRESSION),
        ),
    ]
    # The throttle is also the allow rule: it lets conforming traffic from its sources through.
    sources = list(allowed_source_ranges) or ["*"]
    chunks = [sources[i : i + MAX_RANGES_PER_RULE] for i in range(0, len(sources), MAX_RANGES_PER_RULE)]
    for index, chunk in enumerate(chunks):
        rules.append(
            gcp.compute.SecurityPolicyRuleArgs(
                priority=THROTTLE_RULE_PRIORITY + index,
                action="throttle",
                description=f"At most {requests_per_minute_per_ip} requests per minute per client IP, then 429",
                match=_src_ips(chunk),
                rate_limit_options=gcp.compute.SecurityPolicyRuleRateLimitOptionsArgs(
                    conform_action="allow",
                    exceed_action="deny(429)",
                    enforce_on_key="IP",
                    rate_limit_threshold=gcp.compute.SecurityPolicyRuleRateLimitOptionsRateLimitThresholdArgs(
                        count=requests_per_minute_per_ip, interval_sec=60
                    ),
                ),
            )
        )
    allowlist = bool(allowed_source_ranges)
    rules.append(
        gcp.compute.SecurityPolicyRuleArgs(
            priority=DEFAULT_RULE_PRIORITY,
            action="deny(403)" if allowlist else "allow",
            description=(
                "Default: deny every source outside gce.allowedSourceRanges"
                if allowlist
                else "Default: allow (every source is already matched by the throttle)"
            ),
            match=_src_ips(["*"]),
        )
    )
    return rules


def connection_draining_seconds(request_timeout_seconds: int) -> int:
    """Let an in-flight generation finish when a VM leaves the group (update, scale-in), within GCE's limit."""
    return min(request_timeout_seconds, MAX_DRAINING_SECONDS)


# ---- the component --------------------------------------------------------------------------------------------
class VllmLoadBalancer(pulumi.ComponentResource):
    """Global external Application LB + Cloud Armor in front of an instance group's `named_port`."""

    ip_address: pulumi.Output[str]
    base_url: pulumi.Output[str]  # scheme://host, no path
    openai_base_url: pulumi.Output[str]  # base_url + "/v1": what OpenAI SDK clients use as base_url
    backend_service: gcp.compute.BackendService
    security_policy: gcp.compute.SecurityPolicy
    health_check: gcp.compute.HealthCheck

    def __init__(
        self,
        name: str,
        config: StackConfig,
        *,
        instance_group: pulumi.Input[str],
        named_port: str = "http",
        serve_port: int = 8000,
        health_path: str = "/health",
        requests_per_minute_per_ip: int = 600,
        log_sample_rate: float = 1.0,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("vllm-gcp:gce:LoadBalancer", name, None, opts)
        check_component_name(name, "VllmLoadBalancer")
        if requests_per_minute_per_ip < 1:
            raise ValueError(
                f"VllmLoadBalancer {name!r}: requests_per_minute_per_ip {requests_per_minute_per_ip} must be >= 1"
            )
        if not 0.0 < log_sample_rate <= 1.0:
            raise ValueError(
                f"VllmLoadBalancer {name!r}: log_sample_rate {log_sample_rate} must be in (0, 1]"
            )
        child = pulumi.ResourceOptions(parent=self)
        gce, project = config.gce, config.project
        labels = standard_labels(name, config.environment, config.model.served_name or "")

        self.address = gcp.compute.GlobalAddress(
            f"{name}-ip",
            project=project,
            ip_version="IPV4",
            address_type="EXTERNAL",
            labels=labels,
            opts=child,
        )
        self.health_check = gcp.compute.HealthCheck(
            f"{name}-hc",
            project=project,
            description="vllm-gcp: load balancer health check (stricter than autohealing)",
            http_health_check=gcp.compute.HealthCheckHttpHealthCheckArgs(
                port=serve_port, request_path=health_path
            ),
            **LB_CHECK,
            opts=child,
        )
        self.security_policy = gcp.compute.SecurityPolicy(
            f"{name}-armor",
            project=project,
            type="CLOUD_ARMOR",
            description="vllm-gcp: public paths, per-IP throttle, source allowlist",
            rules=security_policy_rules(gce.allowed_source_ranges, requests_per_minute_per_ip),
            opts=child,
        )
        self.backend_service = gcp.compute.BackendService(
            f"{name}-backend",
            project=project,
            load_balancing_scheme="EXTERNAL_MANAGED",
            protocol="HTTP",
            port_name=named_port,  # the MIG's named port (http:8000)
            timeout_sec=gce.request_timeout_seconds,
            connection_draining_timeout_sec=connection_draining_seconds(gce.request_timeout_seconds),
            locality_lb_policy="LEAST_REQUEST",
            health_checks=self.health_check.id,
            backends=[
                gcp.compute.BackendServiceBackendArgs(
                    group=instance_group, balancing_mode="UTILIZATION", capacity_scaler=1.0
                )
            ],
            log_config=gcp.compute.BackendServiceLogConfigArgs(enable=True, sample_rate=log_sample_rate),
            security_policy=self.security_policy.self_link,
            opts=child,
        )
        self.url_map = gcp.compute.URLMap(
            f"{name}-urlmap", project=project, default_service=self.backend_service.id, opts=child
        )
        self.ip_address = self.address.address

        if gce.domain:
            self.certificate = gcp.compute.ManagedSslCertificate(
                f"{name}-cert",
                project=project,
                managed=gcp.compute.ManagedSslCertificateManagedArgs(domains=[gce.domain]),
                opts=child,
            )
            self.ssl_policy = gcp.compute.SSLPolicy(
                f"{name}-tls", project=project, profile="MODERN", min_tls_version="TLS_1_2", opts=child
            )
            self.https_proxy = gcp.compute.TargetHttpsProxy(
                f"{name}-https-proxy",
                project=project,
                url_map=self.url_map.id,
                ssl_certificates=[self.certificate.id],
                ssl_policy=self.ssl_policy.id,
                opts=child,
            )
            self.https_rule = self._forwarding_rule(f"{name}-https-rule", "443", self.https_proxy.id, labels)
            # Port 80 only redirects: no API key or prompt ever crosses the internet in clear.
            self.redirect_map = gcp.compute.URLMap(
                f"{name}-redirect",
                project=project,
                default_url_redirect=gcp.compute.URLMapDefaultUrlRedirectArgs(
                    https_redirect=True, strip_query=False, redirect_response_code="MOVED_PERMANENTLY_DEFAULT"
                ),
                opts=child,
            )
            self.redirect_proxy = gcp.compute.TargetHttpProxy(
                f"{name}-redirect-proxy", project=project, url_map=self.redirect_map.id, opts=child
            )
            self.http_rule = self._forwarding_rule(
                f"{name}-https-redirect-rule", "80", self.redirect_proxy.id, labels
            )
            self.base_url = pulumi.Output.from_input(f"https://{gce.domain}")
        else:
            self.http_proxy = gcp.compute.TargetHttpProxy(
                f"{name}-http-proxy", project=project, url_map=self.url_map.id, opts=child
            )
            self.http_rule = self._forwarding_rule(f"{name}-http-rule", "80", self.http_proxy.id, labels)
            self.base_url = pulumi.Output.concat("http://", self.ip_address)
        self.openai_base_url = pulumi.Output.concat(self.base_url, "/v1")
        self.register_outputs(
            {
                "ip_address": self.ip_address,
                "base_url": self.base_url,
                "openai_base_url": self.openai_base_url,
            }
        )

    def _forwarding_rule(
        self, resource_name: str, port: str, target: pulumi.Input[str], labels: dict[str, str]
    ) -> gcp.compute.GlobalForwardingRule:
        return gcp.compute.GlobalForwardingRule(
            resource_name,
            project=self.address.project,
            ip_address=self.address.address,
            ip_protocol="TCP",
            port_range=port,
            load_balancing_scheme="EXTERNAL_MANAGED",
            target=target,
            labels=labels,
            opts=pulumi.ResourceOptions(parent=self),
        )
