"""Every vLLM metric a query, dashboard or autoscaling filter uses must be one the pinned vLLM exports.

Scans the rendered alert rules and dashboards for every target, and the source of components/, policy/,
__main__.py and the stack files: the GCE autoscaler's filter
(`prometheus.googleapis.com/vllm:num_requests_waiting/gauge`) and the Vertex autoscaling metric live in other
modules. The list is components/vllm_metrics.txt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from components import alerts, metrics
from components.alerts import TARGETS, QueryScope, build_alert_rules, build_panels
from components.metrics import (
    KNOWN_METRICS,
    METRICS,
    extract_metric_definitions,
    parse_metric_list,
    render_metric_list,
    unknown_vllm_metrics,
    vllm_metric_names_in,
)

ROOT = Path(__file__).resolve().parent.parent
# The shared reference list, read from the vLLM 0.33.0 wheel. CI runs a fresh clone with shared/ copied beside it
# (read-only), so it is looked up next to the repository, not inside it.
REFERENCE_LIST = ROOT.parent / "shared" / "reference" / f"vllm-{metrics.VLLM_VERSION}-metrics.txt"
# In our list but not in the reference: vLLM 0.33.0 defines vllm:cache_config_info in
# vllm/v1/metrics/loggers.py (log_metrics_info assigns the name to a local variable before constructing the gauge),
# so the wheel has it; the reference was made by grepping for name="vllm:..." literals and so misses it.
NOT_IN_REFERENCE = {("gauge", "vllm:cache_config_info")}
SOURCE_GLOBS = ("components/**/*.py", "components/**/*.sh", "policy/**/*.py", "__main__.py", "stacks/*.yaml")
SOURCES = sorted({path for pattern in SOURCE_GLOBS for path in ROOT.glob(pattern)})
# The seed's names, assembled so that this file's own source does not contain them.
STALE_KV_GAUGE = "vllm:" + "gpu_cache_usage_perc"
STALE_THROUGHPUT = "vllm:" + "avg_generation_throughput_toks_per_s"
# What the alerts and the dashboard must read; finding them proves the scan looks at the right text.
CORE = {
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:e2e_request_latency_seconds_bucket",
    "vllm:time_to_first_token_seconds_bucket",
    "vllm:request_success_total",
    "vllm:generation_tokens_total",
}


def _rendered(target: str) -> str:
    scope = QueryScope(
        target,  # type: ignore[arg-type]  # TARGETS are the valid literals; the parameter is a str for ids
        "gemma-4-26b",
        lb_url_map_name="u",
        instance_group_name="g",
        vertex_endpoint_id="1",
    )
    parts = [
        alerts.render_prometheus_rules("gemma-4-26b", target=target),  # type: ignore[arg-type]
        *(rule.expr for rule in build_alert_rules(scope)),
        json.dumps(alerts.render_cloud_monitoring_dashboard(build_panels(scope), "d")),
        json.dumps(alerts.render_grafana_dashboard("gemma-4-26b", target=target)),  # type: ignore[arg-type]
    ]
    return "\n".join(parts)


def test_the_list_is_the_pinned_version_and_consistent() -> None:
    assert metrics.VLLM_VERSION == "0.33.0"
    assert f"vLLM {metrics.VLLM_VERSION}" in metrics.METRIC_LIST_PATH.read_text().splitlines()[0]
    assert len(METRICS) >= 40
    assert {"vllm:e2e_request_latency_seconds_sum", "vllm:e2e_request_latency_seconds_count"} <= KNOWN_METRICS
    assert STALE_KV_GAUGE not in KNOWN_METRICS and STALE_THROUGHPUT not in KNOWN_METRICS
    assert "vllm:request_success" not in KNOWN_METRICS  # a counter is only ever exposed with _total


@pytest.mark.parametrize("target", TARGETS)
def test_rendered_rules_and_dashboards_use_only_exported_metrics(target: str) -> None:
    text = _rendered(target)
    assert unknown_vllm_metrics(text) == set()
    assert vllm_metric_names_in(text) >= CORE


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_uses_only_exported_metrics(path: Path) -> None:
    unknown = unknown_vllm_metrics(path.read_text(encoding="utf-8"), bare_vertex_names=False)
    assert not unknown, (
        f"{path.relative_to(ROOT)} uses vLLM metrics that vLLM {metrics.VLLM_VERSION} does not export: {sorted(unknown)}"
    )


def test_a_stale_name_in_a_rendered_rule_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break one name on purpose: the seed's KV-cache gauge in place of the real one."""
    monkeypatch.setattr(alerts, "kv_cache_usage", lambda scope: scope.vllm(STALE_KV_GAUGE))
    assert unknown_vllm_metrics(_rendered("prometheus")) == {STALE_KV_GAUGE}
    assert unknown_vllm_metrics(_rendered("vertex")) == {STALE_KV_GAUGE}  # found through vertex_vllm_...


@pytest.mark.parametrize(
    ("text", "unknown"),
    [
        (f"{STALE_KV_GAUGE} > 0.95", {STALE_KV_GAUGE}),
        (f"rate({STALE_THROUGHPUT}[5m])", {STALE_THROUGHPUT}),
        # a histogram is queried through its series, never by its base name
        (
            "histogram_quantile(0.99, rate(vllm:e2e_request_latency_seconds[5m]))",
            {"vllm:e2e_request_latency_seconds"},
        ),
        ("histogram_quantile(0.99, rate(vllm:e2e_request_latency_seconds_bucket[5m]))", set()),
        ("vllm:e2e_request_latency_seconds_sum / vllm:e2e_request_latency_seconds_count", set()),
        # counters are exposed with _total only; gauges never get it
        ("rate(vllm:generation_tokens[5m])", {"vllm:generation_tokens"}),
        ("rate(vllm:generation_tokens_total[5m])", set()),
        ("vllm:num_requests_waiting_total", {"vllm:num_requests_waiting_total"}),
        # a histogram named ..._total keeps it and adds the suffixes
        ("vllm:iteration_tokens_total_bucket", set()),
        ("vllm:iteration_tokens_total_total", {"vllm:iteration_tokens_total_total"}),
        # Managed Service for Prometheus metric types carry the kind, which must match
        ("prometheus.googleapis.com/vllm:num_requests_waiting/gauge", set()),
        (
            "prometheus.googleapis.com/vllm:num_requests_waiting/counter",
            {"vllm:num_requests_waiting/counter"},
        ),
        ("prometheus.googleapis.com/vllm:request_success_total/counter", set()),
        ("prometheus.googleapis.com/vllm:e2e_request_latency_seconds/histogram", set()),
        (
            "prometheus.googleapis.com/vllm:e2e_request_latency_seconds_bucket/histogram",
            {"vllm:e2e_request_latency_seconds_bucket/histogram"},
        ),
        # Vertex AI AutoMetrics names; Google's autoscaling list still offers the stale KV gauge
        ("vertex_vllm_num_requests_waiting > 10", set()),
        ("prometheus.googleapis.com/vertex_vllm_gpu_cache_usage_perc", {STALE_KV_GAUGE}),
        # not metrics at all
        ("vllm-gcp:monitoring:VllmMonitoring vllm/vllm-openai:v0.33.0 myvllm:thing", set()),
    ],
)
def test_scanner(text: str, unknown: set[str]) -> None:
    assert unknown_vllm_metrics(text) == unknown


def test_source_mode_ignores_identifiers_that_look_like_vertex_names() -> None:
    assert vllm_metric_names_in("def render_vertex_vllm_args(): ...", bare_vertex_names=False) == set()
    assert vllm_metric_names_in("vertex_vllm_args = 1", bare_vertex_names=True) == {"vllm:args"}
    assert vllm_metric_names_in(
        '"prometheus.googleapis.com/vertex_vllm_num_requests_waiting"', bare_vertex_names=False
    ) == {"vllm:num_requests_waiting"}


VLLM_LIKE_SOURCE = """
class PrometheusStatLogger:
    _gauge_cls = prometheus_client.Gauge
    def __init__(self):
        waiting = self._gauge_cls(name="vllm:num_requests_waiting", documentation="...")
        done = self._counter_cls(name="vllm:request_success", labelnames=["finished_reason"])
        lat = self._histogram_cls(name="vllm:e2e_request_latency_seconds", buckets=[1.0])
        other = self._gauge_cls(name="process_cpu_seconds", documentation="not vllm")
    def log_metrics_info(self, type):
        name = None
        if type == "cache_config":
            name = "vllm:cache_config_info"
        self._gauge_cls(name=name, documentation="info")
"""


def test_regeneration_reads_vllm_constructors() -> None:
    assert extract_metric_definitions(VLLM_LIKE_SOURCE) == {
        ("gauge", "vllm:num_requests_waiting"),
        ("counter", "vllm:request_success"),
        ("histogram", "vllm:e2e_request_latency_seconds"),
        ("gauge", "vllm:cache_config_info"),
    }


def test_rendered_list_parses_back() -> None:
    text = render_metric_list(extract_metric_definitions(VLLM_LIKE_SOURCE), "# header\n")
    parsed = parse_metric_list(text)
    assert parsed["vllm:request_success"].series == ("vllm:request_success_total",)
    assert parsed["vllm:e2e_request_latency_seconds"].series == (
        "vllm:e2e_request_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_sum",
        "vllm:e2e_request_latency_seconds_count",
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("counter vllm:x vllm:x", "exposes vllm:x_total"),
        ("histogram vllm:h vllm:h_bucket", "exposes vllm:h_bucket vllm:h_sum vllm:h_count"),
        ("summary vllm:s vllm:s", "kind 'summary'"),
    ],
)
def test_a_hand_edited_row_is_rejected(row: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_metric_list(f"# comment\n{row}\n")


def test_checked_in_list_is_the_generator_output() -> None:
    """Rows are exactly what the regenerator writes: the list was generated, not typed."""
    lines = metrics.METRIC_LIST_PATH.read_text().splitlines()
    rows = [line for line in lines if line and not line.startswith("#")]
    definitions = {(m.kind, m.name) for m in METRICS.values()}
    assert render_metric_list(definitions, "").splitlines()[1:] == rows


def test_checked_in_list_matches_the_shared_reference() -> None:
    """Runs every time: ties components/vllm_metrics.txt to what vLLM 0.33.0 really defines (the wheel
    comparison below needs a 340 MB download and normally skips)."""
    if not REFERENCE_LIST.is_file():
        pytest.skip(f"{REFERENCE_LIST} is missing: copy shared/ beside the repository to compare against it")
    reference = {
        (m.kind, m.name) for m in parse_metric_list(REFERENCE_LIST.read_text(encoding="utf-8")).values()
    }
    ours = {(m.kind, m.name) for m in METRICS.values()}
    assert len(reference) >= 40  # the reference parsed as a metric list, not as comments only
    assert ours >= NOT_IN_REFERENCE and not NOT_IN_REFERENCE & reference  # the allow-list is still needed
    assert ours - NOT_IN_REFERENCE - reference == set(), "in vllm_metrics.txt but not in the reference"
    assert reference - ours == set(), "in the reference but missing from vllm_metrics.txt"


@pytest.mark.skipif(
    not os.environ.get("VLLM_WHEEL"),
    reason="set VLLM_WHEEL to a downloaded vllm-0.33.0 wheel (pip download vllm==0.33.0 --no-deps) to compare",
)
def test_checked_in_list_matches_the_wheel() -> None:
    wheel = Path(os.environ["VLLM_WHEEL"])
    assert metrics.metric_definitions_in_wheel(wheel) == {(m.kind, m.name) for m in METRICS.values()}
