"""The generated Prometheus rule file, proven with promtool: each alert fires after its `for` duration when its
threshold is crossed and stays quiet just below it, and the p99 alert reads the histogram correctly.

promtool comes from Debian's `prometheus` package (.ci/run installs it); without it these tests skip.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.alerts import TARGETS, AlertThresholds, render_prometheus_rules

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found: install Debian's `prometheus` package (apt-get install -y prometheus)",
)

MODEL = "gemma-4-26b"
RULE_LABELS = {"served_model_name": MODEL}
REPLICA = {"model_name": MODEL, "engine": "0", "instance": "vm-a:8000", "job": "vllm"}


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def _series(name: str, **labels: str) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


@dataclass
class Scenario:
    alert: str
    series: list[tuple[str, str]]  # (series, promtool values notation), 1m apart
    firing: list[dict[str, str]] = field(default_factory=list)  # alert labels when it fires; [] = stays quiet
    rate_based: bool = False  # the condition needs two samples, so it first holds one interval after t=0


def _histogram(per_minute: dict[str, int], **labels: str) -> list[tuple[str, str]]:
    """Cumulative e2e-latency buckets growing by `per_minute[le]` requests a minute, for 30 minutes."""
    return [
        (_series("vllm:e2e_request_latency_seconds_bucket", **labels, le=le), f"0+{count}x30")
        for le, count in per_minute.items()
    ]


def _finished(error: int, stop: int) -> list[tuple[str, str]]:
    return [
        (_series("vllm:request_success_total", **REPLICA, finished_reason="error"), f"0+{error}x30"),
        (_series("vllm:request_success_total", **REPLICA, finished_reason="stop"), f"0+{stop}x30"),
    ]


def _alert_labels(severity: str, **labels: str) -> dict[str, str]:
    return {**labels, "severity": severity, **RULE_LABELS}


# Buckets as vLLM defines them for request latency (a subset): 0.5, 1, 2.5, 5, 10, 20 s and +Inf.
TAIL_AT_7_5_S = {"0.5": 98, "1": 98, "2.5": 98, "5": 98, "10": 100, "20": 100, "+Inf": 100}  # p99 = 7.5 s
TAIL_AT_3_75_S = {"0.5": 98, "1": 98, "2.5": 98, "5": 100, "10": 100, "20": 100, "+Inf": 100}  # p99 = 3.75 s

FIRING = [
    Scenario(
        "VllmQueueDepthHigh",
        [(_series("vllm:num_requests_waiting", **REPLICA), "101x30")],
        [_alert_labels("warning", **REPLICA)],
    ),
    Scenario(
        "VllmKvCacheNearlyFull",
        [(_series("vllm:kv_cache_usage_perc", **REPLICA), "0.96x30")],
        [_alert_labels("warning", **REPLICA)],
    ),
    Scenario(
        "VllmP99LatencyHigh",
        _histogram(TAIL_AT_7_5_S, **REPLICA),
        [_alert_labels("warning")],
        rate_based=True,
    ),
    Scenario(
        "VllmErrorRateHigh",
        _finished(error=2, stop=98),
        [_alert_labels("critical", error_source="vllm")],
        True,
    ),
]

QUIET = [
    Scenario("VllmQueueDepthHigh", [(_series("vllm:num_requests_waiting", **REPLICA), "100x30")]),
    Scenario("VllmKvCacheNearlyFull", [(_series("vllm:kv_cache_usage_perc", **REPLICA), "0.95x30")]),
    Scenario("VllmP99LatencyHigh", _histogram(TAIL_AT_3_75_S, **REPLICA), rate_based=True),
    Scenario("VllmErrorRateHigh", _finished(error=1, stop=110), rate_based=True),  # 0.9%
]


def _rules(rules_text: str) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in yaml.safe_load(rules_text)["groups"][0]["rules"]}


def _unit_test(
    rules_text: str, scenario: Scenario, checks: list[tuple[int, list[dict[str, str]]]]
) -> dict[str, Any]:
    # promtool compares annotations too; they are prose (tested in test_alerts.py), so take them from the rule.
    annotations = _rules(rules_text)[scenario.alert]["annotations"]
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in scenario.series],
        "alert_rule_test": [
            {
                "eval_time": f"{minute}m",
                "alertname": scenario.alert,
                "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations} for labels in alerts],
            }
            for minute, alerts in checks
        ],
    }


def _run(tmp_path: Path, rules_text: str, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(rules_text)
    document = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return _promtool("test", "rules", "test.yaml", cwd=tmp_path)


# Which AlertThresholds field sets each alert's `for`: the expected duration comes from the inputs, not from
# the rule file under test.
DURATION_FIELD = {
    "VllmQueueDepthHigh": "queue_depth_for_seconds",
    "VllmKvCacheNearlyFull": "kv_cache_usage_for_seconds",
    "VllmP99LatencyHigh": "p99_latency_for_seconds",
    "VllmErrorRateHigh": "error_ratio_for_seconds",
}


def _fires_after_duration(rules_text: str, scenario: Scenario, thresholds: AlertThresholds) -> dict[str, Any]:
    start = 1 if scenario.rate_based else 0
    for_minutes = getattr(thresholds, DURATION_FIELD[scenario.alert]) // 60
    # Quiet one minute before the duration has elapsed although the condition already holds; firing after.
    return _unit_test(
        rules_text, scenario, [(start + for_minutes - 1, []), (start + for_minutes + 1, scenario.firing)]
    )


@pytest.mark.parametrize("target", TARGETS)
def test_promtool_check_rules_accepts_every_target(tmp_path: Path, target: str) -> None:
    (tmp_path / "rules.yaml").write_text(render_prometheus_rules(MODEL, target=target))  # type: ignore[arg-type]
    result = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_promtool_check_rules_can_fail(tmp_path: Path) -> None:
    document = yaml.safe_load(render_prometheus_rules(MODEL))
    document["groups"][0]["rules"][0]["expr"] += " +"  # a dangling operator
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(document))
    assert _promtool("check", "rules", "rules.yaml", cwd=tmp_path).returncode != 0


@pytest.mark.parametrize("scenario", FIRING, ids=[s.alert for s in FIRING])
def test_alert_fires_after_its_duration(tmp_path: Path, scenario: Scenario) -> None:
    rules = render_prometheus_rules(MODEL)
    result = _run(tmp_path, rules, [_fires_after_duration(rules, scenario, AlertThresholds())])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", QUIET, ids=[s.alert for s in QUIET])
def test_alert_stays_quiet_just_below_threshold(tmp_path: Path, scenario: Scenario) -> None:
    rules = render_prometheus_rules(MODEL)
    result = _run(tmp_path, rules, [_unit_test(rules, scenario, [(10, []), (25, [])])])
    assert result.returncode == 0, result.stdout + result.stderr


def test_overridden_thresholds_and_durations_reach_the_rule_file(tmp_path: Path) -> None:
    thresholds = AlertThresholds(queue_depth=50, queue_depth_for_seconds=120, p99_latency_seconds=3)
    rules = render_prometheus_rules(MODEL, thresholds)
    queue = Scenario(
        "VllmQueueDepthHigh",
        [(_series("vllm:num_requests_waiting", **REPLICA), "51x30")],
        [_alert_labels("warning", **REPLICA)],
    )
    p99 = Scenario(
        "VllmP99LatencyHigh", QUIET[2].series, [_alert_labels("warning")], rate_based=True
    )  # 3.75 s
    result = _run(
        tmp_path,
        rules,
        [_fires_after_duration(rules, queue, thresholds), _fires_after_duration(rules, p99, thresholds)],
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_p99_uses_the_quantile_not_the_mean(tmp_path: Path) -> None:
    """199 requests at 0.1 s and one at 1000 s a minute: mean 5.1 s, p99 under 0.5 s. A mean-based rule would fire."""
    buckets = {"0.5": 199, "1": 199, "2.5": 199, "5": 199, "10": 199, "20": 199, "+Inf": 200}
    series = [
        *_histogram(buckets, **REPLICA),
        (_series("vllm:e2e_request_latency_seconds_sum", **REPLICA), "0+1019.9x30"),
        (_series("vllm:e2e_request_latency_seconds_count", **REPLICA), "0+200x30"),
    ]
    rules = render_prometheus_rules(MODEL)
    result = _run(tmp_path, rules, [_unit_test(rules, Scenario("VllmP99LatencyHigh", series), [(20, [])])])
    assert result.returncode == 0, result.stdout + result.stderr


def test_p99_is_over_all_replicas_requests(tmp_path: Path) -> None:
    """Replica b alone has 9% slow requests, but of all 1100 requests a minute only 0.8% are slow: p99 is fast."""
    fast = {"0.5": 1000, "1": 1000, "2.5": 1000, "5": 1000, "10": 1000, "20": 1000, "+Inf": 1000}
    slow_tail = {"0.5": 91, "1": 91, "2.5": 91, "5": 91, "10": 100, "20": 100, "+Inf": 100}
    series = [
        *_histogram(fast, **{**REPLICA, "instance": "vm-a:8000"}),
        *_histogram(slow_tail, **{**REPLICA, "instance": "vm-b:8000"}),
    ]
    rules = render_prometheus_rules(MODEL)
    result = _run(tmp_path, rules, [_unit_test(rules, Scenario("VllmP99LatencyHigh", series), [(20, [])])])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_can_fail(tmp_path: Path) -> None:
    """The harness itself: expecting a quiet scenario to fire must make promtool fail."""
    wrong = Scenario(QUIET[0].alert, QUIET[0].series, [_alert_labels("warning", **REPLICA)])
    rules = render_prometheus_rules(MODEL)
    result = _run(tmp_path, rules, [_unit_test(rules, wrong, [(10, wrong.firing)])])
    assert result.returncode != 0
