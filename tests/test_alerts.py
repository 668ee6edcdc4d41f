"""The alert and panel definitions and their renderers (pure; no Pulumi)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from components import alerts
from components.alerts import (
    AlertThresholds,
    QueryScope,
    build_alert_rules,
    build_panels,
    render_cloud_monitoring_condition,
    render_cloud_monitoring_dashboard,
    render_grafana_dashboard,
    render_prometheus_rules,
)

MODEL = "gemma-4-26b"
PROM = QueryScope("prometheus", MODEL)
GCE = QueryScope("gce", MODEL, lb_url_map_name="llm-urlmap", instance_group_name="llm-mig")
VERTEX = QueryScope("vertex", MODEL, vertex_endpoint_id="1234567890")


def _rules(scope: QueryScope, thresholds: AlertThresholds | None = None) -> dict[str, alerts.AlertRule]:
    return {rule.alert_name: rule for rule in build_alert_rules(scope, thresholds)}


def test_defaults_are_the_seed_thresholds() -> None:
    t = AlertThresholds()
    assert (t.queue_depth, t.kv_cache_usage, t.p99_latency_seconds, t.error_ratio) == (100, 0.95, 5.0, 0.01)
    assert {t.queue_depth_for_seconds, t.kv_cache_usage_for_seconds, t.p99_latency_for_seconds} == {300}
    assert t.error_ratio_for_seconds == 300


def test_thresholds_take_stack_config_camel_case() -> None:
    t = AlertThresholds.model_validate({"kvCacheUsage": 0.9, "queueDepthForSeconds": 120})
    assert (t.kv_cache_usage, t.queue_depth_for_seconds) == (0.9, 120)


@pytest.mark.parametrize(
    ("raw", "needles"),
    [
        ({"kvCacheUsage": 95}, ["kvCacheUsage", "95 looks like a percentage", "so write 0.95"]),
        ({"kvCacheUsage": 0}, ["kvCacheUsage", "fraction such as 0.95"]),
        ({"errorRatio": 1}, ["errorRatio", "1 looks like a percentage", "so write 0.01"]),
        ({"queueDepth": -1}, ["queueDepth", "greater than 0"]),
        ({"p99LatencyForSeconds": -5}, ["p99LatencyForSeconds", "greater than or equal to 0"]),
        ({"queueDepht": 10}, ["queueDepht", "Extra inputs are not permitted"]),
    ],
)
def test_bad_thresholds_name_the_field_and_the_fix(raw: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        AlertThresholds.model_validate(raw)
    for needle in needles:
        assert needle in str(caught.value)


def test_four_alerts_with_the_expected_queries() -> None:
    rules = _rules(PROM)
    assert list(rules) == [
        "VllmQueueDepthHigh",
        "VllmKvCacheNearlyFull",
        "VllmP99LatencyHigh",
        "VllmErrorRateHigh",
    ]
    assert rules["VllmQueueDepthHigh"].expr == 'vllm:num_requests_waiting{model_name="gemma-4-26b"} > 100'
    assert rules["VllmKvCacheNearlyFull"].expr == 'vllm:kv_cache_usage_perc{model_name="gemma-4-26b"} > 0.95'
    assert rules["VllmP99LatencyHigh"].expr == (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(vllm:e2e_request_latency_seconds_bucket{model_name="gemma-4-26b"}[5m]))) > 5'
    )
    assert rules["VllmErrorRateHigh"].expr == (
        'label_replace(sum(rate(vllm:request_success_total{model_name="gemma-4-26b",finished_reason="error"}[5m]))'
        ' / sum(rate(vllm:request_success_total{model_name="gemma-4-26b"}[5m])), "error_source", "vllm", "", "")'
        " > 0.01"
    )
    assert {rule.for_seconds for rule in rules.values()} == {300}


def test_overrides_reach_queries_and_durations() -> None:
    t = AlertThresholds(
        queue_depth=40,
        kv_cache_usage=0.9,
        p99_latency_seconds=2.5,
        error_ratio=0.05,
        error_ratio_for_seconds=90,
    )
    rules = _rules(PROM, t)
    assert rules["VllmQueueDepthHigh"].expr.endswith(" > 40")
    assert rules["VllmKvCacheNearlyFull"].expr.endswith(" > 0.9")
    assert rules["VllmP99LatencyHigh"].expr.endswith(" > 2.5")
    assert rules["VllmErrorRateHigh"].expr.endswith(" > 0.05")
    assert rules["VllmErrorRateHigh"].for_seconds == 90
    assert "for 90s" in rules["VllmErrorRateHigh"].summary


def test_gce_error_rate_adds_the_load_balancer_5xx_ratio() -> None:
    expr = _rules(GCE)["VllmErrorRateHigh"].expr
    assert (
        'sum(rate(loadbalancing_googleapis_com:https_request_count{url_map_name="llm-urlmap",response_code_class="500"}'
        '[5m])) / sum(rate(loadbalancing_googleapis_com:https_request_count{url_map_name="llm-urlmap"}[5m]))'
    ) in expr
    assert '"error_source", "load_balancer"' in expr and '"error_source", "vllm"' in expr
    assert ") or (" in expr
    # gce metrics keep their Prometheus names in Managed Service for Prometheus
    assert _rules(GCE)["VllmQueueDepthHigh"].expr == _rules(PROM)["VllmQueueDepthHigh"].expr


def test_gce_without_url_map_alerts_on_vllm_errors_only() -> None:
    rule = _rules(QueryScope("gce", MODEL))["VllmErrorRateHigh"]
    assert "loadbalancing" not in rule.expr and "loadbalancing" not in rule.runbook
    assert rule.expr == _rules(PROM)["VllmErrorRateHigh"].expr


def test_vertex_uses_autometrics_names_and_prediction_errors() -> None:
    rules = _rules(VERTEX)
    assert rules["VllmQueueDepthHigh"].expr == (
        'vertex_vllm_num_requests_waiting{model_name="gemma-4-26b",endpoint_id="1234567890"} > 100'
    )
    assert "vertex_vllm_e2e_request_latency_seconds_bucket{" in rules["VllmP99LatencyHigh"].expr
    error = rules["VllmErrorRateHigh"].expr
    assert (
        'sum(rate(aiplatform_googleapis_com:prediction_online_error_count{endpoint_id="1234567890"}[5m]))'
        in error
    )
    assert (
        'sum(rate(aiplatform_googleapis_com:prediction_online_response_count{endpoint_id="1234567890"}[5m]))'
        in error
    )
    assert "vertex_vllm_request_success_total{" in error
    assert "prediction/online/error_count" in rules["VllmErrorRateHigh"].runbook


@pytest.mark.parametrize(
    ("alert", "advice"),
    [
        ("VllmQueueDepthHigh", ["scaling.maxReplicas", "bigger GPU"]),
        ("VllmKvCacheNearlyFull", ["model.maxModelLen", "add memory", "gpuMemoryUtilization"]),
        ("VllmP99LatencyHigh", ["Scale out", "scaling.maxReplicas"]),
        ("VllmErrorRateHigh", ["out-of-memory", "model health", "/health"]),
    ],
)
def test_each_runbook_says_what_to_do(alert: str, advice: list[str]) -> None:
    rule = _rules(GCE)[alert]
    assert "**What it means.**" in rule.runbook and "**What to do.**" in rule.runbook
    for words in advice:
        assert words in rule.runbook


def test_served_model_name_is_escaped_in_selectors() -> None:
    expr = _rules(QueryScope("prometheus", 'odd"name\\x'))["VllmQueueDepthHigh"].expr
    assert expr == 'vllm:num_requests_waiting{model_name="odd\\"name\\\\x"} > 100'


@pytest.mark.parametrize("bad", [{"target": "gke"}, {"served_model_name": ""}])
def test_scope_rejects_bad_input(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        QueryScope(**{"target": "gce", "served_model_name": MODEL, **bad})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"), [(100, "100"), (100.0, "100"), (0.95, "0.95"), (2.5, "2.5"), (1e-4, "0.0001")]
)
def test_number_literals(value: float, text: str) -> None:
    assert alerts.number(value) == text


@pytest.mark.parametrize(("seconds", "text"), [(300, "5m"), (90, "90s"), (0, "0s"), (3600, "60m")])
def test_durations(seconds: int, text: str) -> None:
    assert alerts.duration(seconds) == text


def test_cloud_monitoring_condition_fields() -> None:
    rule = _rules(GCE, AlertThresholds(kv_cache_usage_for_seconds=600))["VllmKvCacheNearlyFull"]
    assert render_cloud_monitoring_condition(rule) == {
        "query": 'vllm:kv_cache_usage_perc{model_name="gemma-4-26b"} > 0.95',
        "duration": "600s",
        "evaluationInterval": "30s",
        "alertRule": "VllmKvCacheNearlyFull",
        "ruleGroup": "vllm-gcp",
        "labels": {"severity": "warning"},
    }


def test_prometheus_rule_file_shape() -> None:
    document = yaml.safe_load(render_prometheus_rules(MODEL, AlertThresholds(p99_latency_for_seconds=120)))
    (group,) = document["groups"]
    assert group["name"] == "vllm-gcp"
    rules = {rule["alert"]: rule for rule in group["rules"]}
    assert set(rules) == set(_rules(PROM))
    assert rules["VllmP99LatencyHigh"]["for"] == "2m" and rules["VllmQueueDepthHigh"]["for"] == "5m"
    assert rules["VllmErrorRateHigh"]["labels"] == {"severity": "critical", "served_model_name": MODEL}
    assert all("**What to do.**" in rule["annotations"]["description"] for rule in rules.values())


def _cloud_dashboard(scope: QueryScope) -> dict[str, Any]:
    return json.loads(json.dumps(render_cloud_monitoring_dashboard(build_panels(scope), "vLLM test")))


@pytest.mark.parametrize("scope", [GCE, VERTEX], ids=["gce", "vertex"])
def test_cloud_dashboard_is_a_valid_mosaic(scope: QueryScope) -> None:
    dashboard = _cloud_dashboard(scope)
    assert dashboard["displayName"] == "vLLM test" and dashboard["mosaicLayout"]["columns"] == 48
    tiles = dashboard["mosaicLayout"]["tiles"]
    cells: set[tuple[int, int]] = set()
    for tile in tiles:
        assert tile["xPos"] >= 0 and tile["xPos"] + tile["width"] <= 48
        covered = {
            (x, y)
            for x in range(tile["xPos"], tile["xPos"] + tile["width"])
            for y in range(tile["yPos"], tile["yPos"] + tile["height"])
        }
        assert not covered & cells, f"tile {tile['widget']['title']} overlaps another"
        cells |= covered
        for data_set in tile["widget"]["xyChart"]["dataSets"]:
            assert data_set["timeSeriesQuery"]["prometheusQuery"]
            assert "{{" not in data_set["legendTemplate"]


def test_dashboard_has_the_four_alerts_and_the_operating_panels() -> None:
    tiles = {
        t["widget"]["title"]: t["widget"]["xyChart"] for t in _cloud_dashboard(GCE)["mosaicLayout"]["tiles"]
    }
    queries = {
        title: " ".join(d["timeSeriesQuery"]["prometheusQuery"] for d in chart["dataSets"])
        for title, chart in tiles.items()
    }
    thresholds = {
        title: chart["thresholds"][0]["value"] for title, chart in tiles.items() if "thresholds" in chart
    }
    assert sorted(thresholds.values()) == [0.01, 0.95, 5.0, 100]
    everything = " ".join(queries.values())
    for needle in [
        'rate(vllm:generation_tokens_total{model_name="gemma-4-26b"}[5m])',
        "histogram_quantile(0.5, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{",
        "histogram_quantile(0.99, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{",
        "sum(vllm:num_requests_running{",
        "sum(vllm:num_requests_waiting{",
        'compute_googleapis_com:instance_group_size{instance_group_name="llm-mig"}',
        "loadbalancing_googleapis_com:https_request_count{",
    ]:
        assert needle in everything


@pytest.mark.parametrize(
    ("scope", "label"),
    [(PROM, "instance"), (GCE, "instance_name"), (VERTEX, "replica_id")],
    ids=["prom", "gce", "vertex"],
)
def test_per_replica_panels_split_by_the_targets_replica_label(scope: QueryScope, label: str) -> None:
    panels = {panel.title: panel for panel in build_panels(scope)}
    assert (
        panels["Queue depth (waiting requests per replica)"].queries[0].expr.startswith(f"max by ({label}) (")
    )
    assert panels["Replicas"].queries[0].expr.startswith(f"count(count by ({label}) (")


def test_vertex_dashboard_counts_vertex_replicas() -> None:
    replicas = next(
        t for t in _cloud_dashboard(VERTEX)["mosaicLayout"]["tiles"] if t["widget"]["title"] == "Replicas"
    )
    text = json.dumps(replicas)
    assert "aiplatform_googleapis_com:prediction_online_replicas" in text and "count by (replica_id)" in text


def test_grafana_dashboard_model() -> None:
    dashboard = json.loads(json.dumps(render_grafana_dashboard(MODEL, AlertThresholds(queue_depth=42))))
    panels = dashboard["panels"]
    assert [p["title"] for p in panels] == [p.title for p in build_panels(PROM)]
    assert len({p["id"] for p in panels}) == len(panels)
    assert dashboard["templating"]["list"][0] == {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
    }
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids) and all(t["expr"] for t in panel["targets"])
    queue = panels[0]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert queue[-1]["value"] == 42
    assert len(dashboard["uid"]) <= 40


def test_cli_prints_rules_and_grafana(capsys: pytest.CaptureFixture[str]) -> None:
    assert alerts.main(["prometheus-rules", "--served-model-name", MODEL]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["groups"][0]["name"] == "vllm-gcp"
    assert alerts.main(["grafana-dashboard", "--served-model-name", MODEL, "--target", "gce"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == f"vLLM {MODEL}"
