"""The seed's four production alerts and the dashboard panels, as data, with a renderer per destination.

One set of definitions feeds:
- Cloud Monitoring alert-policy conditions (PromQL) and a Cloud Monitoring dashboard (see `VllmMonitoring`);
- a Prometheus rule file for people who run their own Prometheus (`render_prometheus_rules`);
- a Grafana dashboard (`render_grafana_dashboard`).

Metric names follow the pinned vLLM (`vllm_metrics.txt`): the KV-cache gauge is `vllm:kv_cache_usage_perc`,
a 0-1 fraction, and throughput is `rate(vllm:generation_tokens_total[5m])`. Where the series are stored
decides their spelling:
- target `prometheus` (your own Prometheus scraping /metrics) and `gce` (the Ops Agent writes them to Managed
  Service for Prometheus unchanged): `vllm:num_requests_waiting`. Cloud Monitoring's PromQL takes names made
  of letters, digits, `_` and `:` as they are (https://cloud.google.com/stackdriver/docs/managed-prometheus/
  promql-differences, "UTF-8 support");
- target `vertex` (Vertex AI AutoMetrics scrapes the container): `vertex_vllm_num_requests_waiting`
  (https://cloud.google.com/vertex-ai/docs/predictions/view-autometrics).
Google Cloud system metrics follow the PromQL mapping "the first `/` becomes `:`, other `.` and `/` become
`_`" (https://cloud.google.com/monitoring/promql/promql-mapping):
- `loadbalancing.googleapis.com/https/request_count` (label `response_code_class`;
  https://cloud.google.com/load-balancing/docs/metrics) is `loadbalancing_googleapis_com:https_request_count`;
- Vertex's `aiplatform.googleapis.com/prediction/online/error_count`, `.../response_count` and `.../replicas`
  (https://cloud.google.com/monitoring/api/metrics_gcp_a_b#gcp-aiplatform) are
  `aiplatform_googleapis_com:prediction_online_error_count` and so on.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from .metrics import vertex_metric_name

Target = Literal["prometheus", "gce", "vertex"]
TARGETS: tuple[Target, ...] = ("prometheus", "gce", "vertex")
Severity = Literal["warning", "critical"]
RATE_WINDOW = "5m"
RULE_GROUP = "vllm-gcp"
EVALUATION_INTERVAL_SECONDS = 30  # Cloud Monitoring's default and smallest PromQL evaluation interval
_CHANNEL = re.compile(r"^projects/[^/]+/notificationChannels/[^/]+$")
_ONE_DAY = 86_400


class AlertThresholds(BaseModel):
    """Thresholds and `for` durations of the four alerts; the defaults are the seed guide's values.

    camelCase aliases so the stack config can embed it (`monitoring.alerts.kvCacheUsage: 0.9`).
    """

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)

    queue_depth: Annotated[float, Field(gt=0)] = 100
    queue_depth_for_seconds: Annotated[int, Field(ge=0, le=_ONE_DAY)] = 300
    kv_cache_usage: float = 0.95
    kv_cache_usage_for_seconds: Annotated[int, Field(ge=0, le=_ONE_DAY)] = 300
    p99_latency_seconds: Annotated[float, Field(gt=0)] = 5.0
    p99_latency_for_seconds: Annotated[int, Field(ge=0, le=_ONE_DAY)] = 300
    error_ratio: float = 0.01
    error_ratio_for_seconds: Annotated[int, Field(ge=0, le=_ONE_DAY)] = 300

    @field_validator("kv_cache_usage")
    @classmethod
    def _kv_fraction(cls, value: float) -> float:
        if 1 < value <= 100:
            raise ValueError(
                f"{value:g} looks like a percentage; vllm:kv_cache_usage_perc is a 0-1 fraction, "
                f"so write {value / 100:g}"
            )
        if not 0 < value <= 1:
            raise ValueError(
                f"{value:g} is outside (0, 1]; the KV-cache usage gauge is a fraction such as 0.95"
            )
        return value

    @field_validator("error_ratio")
    @classmethod
    def _error_fraction(cls, value: float) -> float:
        if 1 <= value <= 100:
            raise ValueError(
                f"{value:g} looks like a percentage; the error ratio is a fraction, so write {value / 100:g}"
            )
        if not 0 < value < 1:
            raise ValueError(
                f"{value:g} is outside (0, 1); write the error ratio as a fraction such as 0.01 (1%)"
            )
        return value


@dataclass(frozen=True)
class QueryScope:
    """Where the series live and which deployment they belong to; every query is filtered to this model."""

    target: Target
    served_model_name: str
    lb_url_map_name: str | None = None  # gce: the URL map whose 5xx ratio counts
    instance_group_name: str | None = None  # gce: the managed instance group whose size is the replica count
    vertex_endpoint_id: str | None = None  # vertex: the endpoint whose prediction errors and replicas count

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target: {self.target!r} is not one of {', '.join(TARGETS)}")
        if not self.served_model_name:
            raise ValueError(
                "served_model_name: empty; pass the model's --served-model-name (model.servedName)"
            )

    def vllm(self, series: str, **labels: str) -> str:
        """A selector for a vLLM series of this model, spelt the way this target stores it."""
        name = vertex_metric_name(series) if self.target == "vertex" else series
        matchers = {"model_name": self.served_model_name, **labels}
        if self.target == "vertex" and self.vertex_endpoint_id:
            matchers["endpoint_id"] = self.vertex_endpoint_id
        return selector(name, **matchers)

    @property
    def replica_label(self) -> str:
        """The label that tells replicas apart. The Ops Agent scrapes localhost, so every VM's `instance` is
        the same; it adds `instance_name` (the VM's name; GoogleCloudPlatform/ops-agent, confgenerator
        gmpMetricsProcessors). Vertex AutoMetrics adds `replica_id`; your own Prometheus has `instance`."""
        return {"prometheus": "instance", "gce": "instance_name", "vertex": "replica_id"}[self.target]


def selector(metric: str, **labels: str) -> str:
    if not labels:
        return metric
    escaped = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return f"{metric}{{{escaped}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: float) -> str:
    """A PromQL literal: 100 rather than 100.0, full precision otherwise."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def duration(seconds: int) -> str:
    """A Prometheus duration: 5m for 300, 90s for 90."""
    return f"{seconds // 60}m" if seconds and seconds % 60 == 0 else f"{seconds}s"


def _rate(selector_text: str) -> str:
    return f"rate({selector_text}[{RATE_WINDOW}])"


# --- the expressions ----------------------------------------------------------------------------------


def waiting_requests(scope: QueryScope) -> str:
    return scope.vllm("vllm:num_requests_waiting")


def kv_cache_usage(scope: QueryScope) -> str:
    return scope.vllm("vllm:kv_cache_usage_perc")


def latency_quantile(scope: QueryScope, quantile: float, bucket_series: str) -> str:
    """A quantile over all replicas: per-bucket rates summed by `le`, then interpolated (never averaged)."""
    return f"histogram_quantile({number(quantile)}, sum by (le) ({_rate(scope.vllm(bucket_series))}))"


def vllm_error_ratio(scope: QueryScope) -> str:
    """Share of finished requests that vLLM ended with finished_reason="error" (answered with HTTP 500)."""
    errors = scope.vllm("vllm:request_success_total", finished_reason="error")
    finished = scope.vllm("vllm:request_success_total")
    return f"sum({_rate(errors)}) / sum({_rate(finished)})"


def platform_error_ratio(scope: QueryScope) -> str | None:
    """5xx share seen in front of vLLM: the load balancer on gce, the Vertex endpoint on vertex."""
    if scope.target == "gce" and scope.lb_url_map_name:
        metric = "loadbalancing_googleapis_com:https_request_count"
        errors = selector(metric, url_map_name=scope.lb_url_map_name, response_code_class="500")
        total = selector(metric, url_map_name=scope.lb_url_map_name)
        return f"sum({_rate(errors)}) / sum({_rate(total)})"
    if scope.target == "vertex":
        where = {"endpoint_id": scope.vertex_endpoint_id} if scope.vertex_endpoint_id else {}
        errors = selector("aiplatform_googleapis_com:prediction_online_error_count", **where)
        total = selector("aiplatform_googleapis_com:prediction_online_response_count", **where)
        return f"sum({_rate(errors)}) / sum({_rate(total)})"
    return None


def _labelled(expr: str, source: str) -> str:
    # Tags which side of an `or` fired, so the incident says whether the LB/endpoint or vLLM saw the errors.
    return f'label_replace({expr}, "error_source", "{source}", "", "")'


def error_ratio_alert_expr(scope: QueryScope, threshold: float) -> str:
    vllm_side = f"{_labelled(vllm_error_ratio(scope), 'vllm')} > {number(threshold)}"
    platform = platform_error_ratio(scope)
    if platform is None:
        return vllm_side
    source = "load_balancer" if scope.target == "gce" else "vertex_endpoint"
    # Cloud Monitoring allows one PromQL condition per policy, so both sources go into one expression.
    return f"({_labelled(platform, source)} > {number(threshold)}) or ({vllm_side})"


def replica_count_queries(scope: QueryScope) -> list[tuple[str, str]]:
    reporting = scope.vllm("vllm:num_requests_running")
    queries = [(f"count(count by ({scope.replica_label}) ({reporting}))", "replicas reporting metrics")]
    if scope.target == "gce" and scope.instance_group_name:
        size = selector(
            "compute_googleapis_com:instance_group_size", instance_group_name=scope.instance_group_name
        )
        queries.append((f"sum({size})", "instance group size"))
    if scope.target == "vertex":
        where = {"endpoint_id": scope.vertex_endpoint_id} if scope.vertex_endpoint_id else {}
        queries.append(
            (
                f"sum({selector('aiplatform_googleapis_com:prediction_online_replicas', **where)})",
                "Vertex replicas",
            )
        )
    return queries


# --- the four alerts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertRule:
    key: str  # resource-name suffix: f"{component}-{key}"
    alert_name: str  # Prometheus alert name (also Cloud Monitoring's alertRule)
    title: str
    severity: Severity
    for_seconds: int
    expr: str  # the whole condition, comparison included
    summary: str
    runbook: str  # markdown: what it means and what to do


def platform_error_source(scope: QueryScope) -> str | None:
    """What `platform_error_ratio` measures, in words for the runbook; None when the alert lacks it."""
    if platform_error_ratio(scope) is None:
        return None
    if scope.target == "gce":
        return (
            "the load balancer's 5xx share (loadbalancing.googleapis.com/https/request_count, "
            "response_code_class 500)"
        )
    return "the endpoint's prediction errors (aiplatform.googleapis.com/prediction/online/error_count)"


def build_alert_rules(scope: QueryScope, thresholds: AlertThresholds | None = None) -> list[AlertRule]:
    t = thresholds or AlertThresholds()
    model = f"`{scope.served_model_name}`"
    p99 = latency_quantile(scope, 0.99, "vllm:e2e_request_latency_seconds_bucket")
    platform_source = platform_error_source(scope)
    also = f", or {platform_source}" if platform_source else ""
    queue, queue_for = number(t.queue_depth), duration(t.queue_depth_for_seconds)
    kv, kv_for = number(t.kv_cache_usage), duration(t.kv_cache_usage_for_seconds)
    p99_limit, p99_for = number(t.p99_latency_seconds), duration(t.p99_latency_for_seconds)
    errors_pct, errors_for = number(t.error_ratio * 100), duration(t.error_ratio_for_seconds)
    return [
        AlertRule(
            key="queue-depth",
            alert_name="VllmQueueDepthHigh",
            title=f"vLLM {scope.served_model_name}: queue depth > {queue}",
            severity="warning",
            for_seconds=t.queue_depth_for_seconds,
            expr=f"{waiting_requests(scope)} > {queue}",
            summary=f"More than {queue} requests waiting on one replica for {queue_for}.",
            runbook=(
                f"**What it means.** `vllm:num_requests_waiting` on a replica of {model} stayed above "
                f"{queue} for {queue_for}: requests queue inside vLLM, so time to first token and client "
                "timeouts rise."
                "\n\n**What to do.**\n"
                "1. Add replicas: raise `scaling.maxReplicas`. If the replica count on the dashboard is at "
                "the maximum already, the autoscaler (target `scaling.targetWaitingRequestsPerReplica`) is "
                "stuck.\n"
                "2. Or use a bigger GPU (`hardware.machineType`, `hardware.gpuType`), so each replica "
                "batches more requests at once.\n"
                "3. Check the KV-cache panel: a full KV cache also makes requests wait."
            ),
        ),
        AlertRule(
            key="kv-cache",
            alert_name="VllmKvCacheNearlyFull",
            title=f"vLLM {scope.served_model_name}: KV cache > {number(t.kv_cache_usage * 100)}%",
            severity="warning",
            for_seconds=t.kv_cache_usage_for_seconds,
            expr=f"{kv_cache_usage(scope)} > {kv}",
            summary=f"KV-cache usage above {kv} (fraction) on one replica for {kv_for}.",
            runbook=(
                f"**What it means.** `vllm:kv_cache_usage_perc` (a 0-1 fraction) on a replica of {model} "
                f"stayed above {kv} for {kv_for}. Out of KV blocks, vLLM preempts running requests and "
                "recomputes them later (`vllm:num_preemptions_total` rises), so latency climbs."
                "\n\n**What to do.**\n"
                "1. Lower `model.maxModelLen` if clients do not need the full context: each sequence then "
                "reserves less KV cache.\n"
                "2. Or add memory: raise `model.gpuMemoryUtilization` (up to 0.95), use a GPU with more "
                "memory, or more GPUs with `model.tensorParallelSize`.\n"
                "3. Or add replicas (`scaling.maxReplicas`) to spread the concurrent sequences."
            ),
        ),
        AlertRule(
            key="p99-latency",
            alert_name="VllmP99LatencyHigh",
            title=f"vLLM {scope.served_model_name}: p99 latency > {p99_limit} s",
            severity="warning",
            for_seconds=t.p99_latency_for_seconds,
            expr=f"{p99} > {p99_limit}",
            summary=f"p99 end-to-end request latency above {p99_limit} s for {p99_for}.",
            runbook=(
                "**What it means.** The 99th percentile of end-to-end request latency over all replicas "
                f"of {model} (from the `vllm:e2e_request_latency_seconds_bucket` histogram, {RATE_WINDOW} "
                f"window) stayed above {p99_limit} s for {p99_for}."
                "\n\n**What to do.**\n"
                "1. Scale out: raise `scaling.minReplicas` and `scaling.maxReplicas`.\n"
                "2. Compare the queue-depth and TTFT panels: requests that wait before they start mean too "
                "little capacity (see the queue-depth alert); a fine TTFT with a high total means long "
                "outputs (`max_tokens`), where a faster GPU or fewer concurrent requests per replica help.\n"
                "3. If only one replica is slow, look for a degraded VM or GPU; autohealing replaces it."
            ),
        ),
        AlertRule(
            key="error-rate",
            alert_name="VllmErrorRateHigh",
            title=f"vLLM {scope.served_model_name}: error rate > {errors_pct}%",
            severity="critical",
            for_seconds=t.error_ratio_for_seconds,
            expr=error_ratio_alert_expr(scope, t.error_ratio),
            summary=f"More than {errors_pct}% of requests failed for {errors_for}.",
            runbook=(
                f"**What it means.** For {errors_for}, more than {errors_pct}% of requests to {model} "
                'failed: requests vLLM finished with `finished_reason="error"` '
                "(`vllm:request_success_total`, "
                f"answered with HTTP 500){also}. The `error_source` label says which one fired."
                "\n\n**What to do.**\n"
                "1. Look for out-of-memory errors in the replicas' logs (`CUDA out of memory`, "
                "`OutOfMemoryError`, the container exiting with code 137). If you find them, lower "
                "`model.maxModelLen` or `model.gpuMemoryUtilization`, or use a bigger GPU.\n"
                "2. Check model health: `/health` answers 503 when the engine is dead; look for replicas "
                "that restart or that autohealing recreates, and for driver or NCCL errors.\n"
                "3. 5xx in front of vLLM without vLLM errors means unhealthy or timed-out backends (502, "
                "504): check backend health and the request timeout."
            ),
        ),
    ]


# --- dashboard panels ---------------------------------------------------------------------------------

PanelUnit = Literal["count", "ratio", "seconds", "tokens_per_second", "replicas"]


@dataclass(frozen=True)
class PanelQuery:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[PanelQuery, ...]
    unit: PanelUnit
    threshold: float | None = None  # the matching alert's threshold, drawn as a line


def build_panels(scope: QueryScope, thresholds: AlertThresholds | None = None) -> list[Panel]:
    t = thresholds or AlertThresholds()
    replica = scope.replica_label
    error_queries = [PanelQuery(vllm_error_ratio(scope), "vLLM finished_reason=error")]
    platform = platform_error_ratio(scope)
    if platform is not None:
        error_queries.append(
            PanelQuery(platform, "load balancer 5xx" if scope.target == "gce" else "Vertex errors")
        )
    ttft = "vllm:time_to_first_token_seconds_bucket"
    return [
        Panel(
            "Queue depth (waiting requests per replica)",
            (PanelQuery(f"max by ({replica}) ({waiting_requests(scope)})", f"{{{{{replica}}}}}"),),
            "count",
            t.queue_depth,
        ),
        Panel(
            "KV-cache usage (fraction, per replica)",
            (PanelQuery(f"max by ({replica}) ({kv_cache_usage(scope)})", f"{{{{{replica}}}}}"),),
            "ratio",
            t.kv_cache_usage,
        ),
        Panel(
            "End-to-end latency p50 / p99",
            (
                PanelQuery(latency_quantile(scope, 0.5, "vllm:e2e_request_latency_seconds_bucket"), "p50"),
                PanelQuery(latency_quantile(scope, 0.99, "vllm:e2e_request_latency_seconds_bucket"), "p99"),
            ),
            "seconds",
            t.p99_latency_seconds,
        ),
        Panel("Error ratio", tuple(error_queries), "ratio", t.error_ratio),
        Panel(
            "Token throughput (tokens/s, all replicas)",
            (
                PanelQuery(f"sum({_rate(scope.vllm('vllm:generation_tokens_total'))})", "generated"),
                PanelQuery(f"sum({_rate(scope.vllm('vllm:prompt_tokens_total'))})", "prompt"),
            ),
            "tokens_per_second",
        ),
        Panel(
            "Time to first token p50 / p99",
            (
                PanelQuery(latency_quantile(scope, 0.5, ttft), "p50"),
                PanelQuery(latency_quantile(scope, 0.99, ttft), "p99"),
            ),
            "seconds",
        ),
        Panel(
            "Running / waiting requests (all replicas)",
            (
                PanelQuery(f"sum({scope.vllm('vllm:num_requests_running')})", "running"),
                PanelQuery(f"sum({waiting_requests(scope)})", "waiting"),
            ),
            "count",
        ),
        Panel(
            "Replicas",
            tuple(PanelQuery(expr, legend) for expr, legend in replica_count_queries(scope)),
            "replicas",
        ),
    ]


def notification_channel_names(channels: Sequence[str], project: str) -> list[str]:
    """Full channel resource names: `projects/P/notificationChannels/ID` kept, a bare numeric ID expanded."""
    names = []
    for index, channel in enumerate(channels):
        if _CHANNEL.match(channel):
            names.append(channel)
        elif channel.isdigit():
            names.append(f"projects/{project}/notificationChannels/{channel}")
        else:
            raise ValueError(
                f"monitoring.notificationChannels[{index}]: {channel!r} is not a notification channel; use its "
                f"resource name projects/{project}/notificationChannels/CHANNEL_ID or the numeric CHANNEL_ID "
                "(`gcloud beta monitoring channels list --format='value(name)'`)"
            )
    return names


# --- renderers ----------------------------------------------------------------------------------------


def render_cloud_monitoring_condition(rule: AlertRule) -> dict[str, Any]:
    """The PrometheusQueryLanguageCondition fields (API names) for one alert."""
    return {
        "query": rule.expr,
        "duration": f"{rule.for_seconds}s",
        "evaluationInterval": f"{EVALUATION_INTERVAL_SECONDS}s",
        "alertRule": rule.alert_name,
        "ruleGroup": RULE_GROUP,
        "labels": {"severity": rule.severity},
    }


CLOUD_SEVERITY: dict[Severity, str] = {"warning": "WARNING", "critical": "CRITICAL"}


def render_prometheus_rule_groups(rules: list[AlertRule], scope: QueryScope) -> dict[str, Any]:
    return {
        "groups": [
            {
                "name": RULE_GROUP,
                "interval": duration(EVALUATION_INTERVAL_SECONDS),
                "rules": [
                    {
                        "alert": rule.alert_name,
                        "expr": rule.expr,
                        "for": duration(rule.for_seconds),
                        "labels": {"severity": rule.severity, "served_model_name": scope.served_model_name},
                        "annotations": {"summary": rule.summary, "description": rule.runbook},
                    }
                    for rule in rules
                ],
            }
        ]
    }


def render_prometheus_rules(
    served_model_name: str, thresholds: AlertThresholds | None = None, *, target: Target = "prometheus"
) -> str:
    """The four alerts as a Prometheus rule file (YAML), for a Prometheus that scrapes vLLM's /metrics itself.

    `target="gce"` or `"vertex"` renders the Cloud Monitoring spelling instead (promtool checks its syntax).
    """
    scope = QueryScope(target=target, served_model_name=served_model_name)
    document = render_prometheus_rule_groups(build_alert_rules(scope, thresholds), scope)
    header = (
        f"# vLLM alerts for served model {served_model_name!r} (target: {target}), generated by vllm-gcp\n"
        "# from the same definitions as the Cloud Monitoring alert policies.\n"
        "# Check it with: promtool check rules FILE\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, width=1000, allow_unicode=True)


_CLOUD_UNITS: dict[PanelUnit, str] = {
    "count": "1",
    "ratio": "1",
    "seconds": "s",
    "tokens_per_second": "1/s",
    "replicas": "1",
}
_GRAFANA_UNITS: dict[PanelUnit, str] = {
    "count": "short",
    "ratio": "percentunit",
    "seconds": "s",
    "tokens_per_second": "short",
    "replicas": "short",
}


def render_cloud_monitoring_dashboard(panels: list[Panel], display_name: str) -> dict[str, Any]:
    """A Cloud Monitoring dashboard (projects.dashboards JSON): a 48-column mosaic, two charts per row."""
    tiles = []
    for index, panel in enumerate(panels):
        chart: dict[str, Any] = {
            "dataSets": [
                {
                    "timeSeriesQuery": {
                        "prometheusQuery": query.expr,
                        "unitOverride": _CLOUD_UNITS[panel.unit],
                    },
                    "plotType": "LINE",
                    "targetAxis": "Y1",
                    # Cloud Monitoring's legend templates do not take Prometheus {{label}} syntax.
                    "legendTemplate": "" if "{{" in query.legend else query.legend,
                }
                for query in panel.queries
            ],
            "yAxis": {"label": _CLOUD_UNITS[panel.unit], "scale": "LINEAR"},
        }
        if panel.threshold is not None:
            chart["thresholds"] = [{"value": panel.threshold, "label": "alert threshold", "targetAxis": "Y1"}]
        tiles.append(
            {
                "xPos": (index % 2) * 24,
                "yPos": (index // 2) * 16,
                "width": 24,
                "height": 16,
                "widget": {"title": panel.title, "xyChart": chart},
            }
        )
    return {"displayName": display_name, "mosaicLayout": {"columns": 48, "tiles": tiles}}


def render_grafana_dashboard(
    served_model_name: str,
    thresholds: AlertThresholds | None = None,
    *,
    target: Target = "prometheus",
    title: str | None = None,
) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) with the same panels, on a Prometheus data source chosen at import."""
    scope = QueryScope(target=target, served_model_name=served_model_name)
    panels = []
    for index, panel in enumerate(build_panels(scope, thresholds)):
        defaults: dict[str, Any] = {"unit": _GRAFANA_UNITS[panel.unit]}
        if panel.threshold is not None:
            defaults["thresholds"] = {
                "mode": "absolute",
                "steps": [{"color": "green", "value": None}, {"color": "red", "value": panel.threshold}],
            }
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel.title,
                "gridPos": {"x": (index % 2) * 12, "y": (index // 2) * 8, "w": 12, "h": 8},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + n),
                        "expr": query.expr,
                        "legendFormat": query.legend,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    }
                    for n, query in enumerate(panel.queries)
                ],
            }
        )
    return {
        "title": title or f"vLLM {served_model_name}",
        "uid": _grafana_uid(served_model_name),
        "tags": ["vllm", "vllm-gcp"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"}
            ]
        },
        "panels": panels,
    }


def _grafana_uid(served_model_name: str) -> str:
    # Grafana uids are at most 40 characters of [a-zA-Z0-9_-].
    return ("vllm-" + re.sub(r"[^a-zA-Z0-9_-]", "-", served_model_name))[:40]


def main(argv: list[str]) -> int:
    """`python -m components.alerts {prometheus-rules,grafana-dashboard} --served-model-name NAME`."""
    parser = argparse.ArgumentParser(prog="python -m components.alerts", description=main.__doc__)
    parser.add_argument("what", choices=["prometheus-rules", "grafana-dashboard"])
    parser.add_argument(
        "--served-model-name", required=True, help="the model name clients send (model.servedName)"
    )
    parser.add_argument("--target", choices=TARGETS, default="prometheus")
    args = parser.parse_args(argv)
    if args.what == "prometheus-rules":
        sys.stdout.write(render_prometheus_rules(args.served_model_name, target=args.target))
    else:
        json.dump(render_grafana_dashboard(args.served_model_name, target=args.target), sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
