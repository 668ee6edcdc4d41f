"""VllmMonitoring under the recording mocks: policies, queries, durations, channels, dashboard and uptime check."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pytest

from components.alerts import AlertThresholds, notification_channel_names
from components.metrics import unknown_vllm_metrics, vllm_metric_names_in
from components.mocks import RecordedResource, RecordingMocks, resolve, run_program
from components.monitoring import VllmMonitoring

PROJECT = "test-project"
MODEL = "gemma-4-26b"
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
UPTIME = "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig"


def _build(mocks: RecordingMocks, **kwargs: Any) -> dict[str, Any]:
    built: dict[str, Any] = {}

    def program() -> None:
        built["component"] = VllmMonitoring(
            "llm-mon", **{"project": PROJECT, "served_model_name": MODEL, "platform": "gce", **kwargs}
        )

    run_program(program)
    return built


def _of_type(mocks: RecordingMocks, type_: str) -> list[RecordedResource]:
    return [r for r in mocks.resources if r.type == type_]


def _policies(mocks: RecordingMocks) -> dict[str, dict[str, Any]]:
    return {r.name: r.inputs for r in _of_type(mocks, POLICY)}


def _condition(policy: dict[str, Any]) -> dict[str, Any]:
    (condition,) = policy["conditions"]
    return condition["conditionPrometheusQueryLanguage"]


def test_gce_creates_four_policies_a_dashboard_and_an_uptime_check(mocks: RecordingMocks) -> None:
    _build(mocks, uptime_host="llm.example.com", lb_url_map_name="llm-urlmap", instance_group_name="llm-mig")
    (component,) = _of_type(mocks, "vllm-gcp:monitoring:VllmMonitoring")
    children = [r for r in mocks.resources if r.parent == component.urn]
    assert sorted(r.name for r in children) == [
        "llm-mon-dashboard",
        "llm-mon-error-rate",
        "llm-mon-kv-cache",
        "llm-mon-p99-latency",
        "llm-mon-queue-depth",
        "llm-mon-uptime",
    ]
    assert len(children) == len(mocks.resources) - 1  # everything else is a child of the component


def test_policy_queries_durations_and_severity(mocks: RecordingMocks) -> None:
    _build(mocks, lb_url_map_name="llm-urlmap")
    policies = _policies(mocks)
    queue = _condition(policies["llm-mon-queue-depth"])
    assert queue["query"] == 'vllm:num_requests_waiting{model_name="gemma-4-26b"} > 100'
    assert (queue["duration"], queue["evaluationInterval"]) == ("300s", "30s")
    assert (queue["ruleGroup"], queue["alertRule"]) == ("vllm-gcp", "VllmQueueDepthHigh")
    assert _condition(policies["llm-mon-kv-cache"])["query"].endswith(
        'vllm:kv_cache_usage_perc{model_name="gemma-4-26b"} > 0.95'
    )
    assert _condition(policies["llm-mon-p99-latency"])["query"].startswith(
        "histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket{"
    )
    error = _condition(policies["llm-mon-error-rate"])["query"]
    assert (
        'loadbalancing_googleapis_com:https_request_count{url_map_name="llm-urlmap",response_code_class="500"}'
        in error
    )
    assert 'finished_reason="error"' in error
    assert policies["llm-mon-error-rate"]["severity"] == "CRITICAL"
    assert policies["llm-mon-queue-depth"]["severity"] == "WARNING"
    for policy in policies.values():
        assert policy["combiner"] == "OR" and len(policy["conditions"]) == 1
        assert policy["documentation"]["mimeType"] == "text/markdown"
        assert "**What to do.**" in policy["documentation"]["content"]
        assert policy["project"] == PROJECT


def test_thresholds_from_config_reach_the_policies(mocks: RecordingMocks) -> None:
    _build(mocks, thresholds=AlertThresholds(queue_depth=25, queue_depth_for_seconds=120, kv_cache_usage=0.9))
    policies = _policies(mocks)
    queue = _condition(policies["llm-mon-queue-depth"])
    assert queue["query"].endswith(" > 25") and queue["duration"] == "120s"
    assert _condition(policies["llm-mon-kv-cache"])["query"].endswith(" > 0.9")
    assert policies["llm-mon-kv-cache"]["displayName"] == "vLLM gemma-4-26b: KV cache > 90%"


def test_notification_channels(mocks: RecordingMocks) -> None:
    _build(mocks, notification_channels=["42", "projects/other/notificationChannels/7"])
    policies = _policies(mocks)
    assert len(policies) == 4  # the loop below must not pass vacuously
    for policy in policies.values():
        assert policy["notificationChannels"] == [
            "projects/test-project/notificationChannels/42",
            "projects/other/notificationChannels/7",
        ]


def test_no_channels_means_none_attached(mocks: RecordingMocks) -> None:
    _build(mocks)
    policies = _policies(mocks)
    assert len(policies) == 4  # all() of nothing would be true
    assert all(not policy.get("notificationChannels") for policy in policies.values())


def test_bad_channel_is_a_clear_error() -> None:
    with pytest.raises(ValueError) as caught:
        notification_channel_names(["42", "my-slack"], PROJECT)
    message = str(caught.value)
    assert "monitoring.notificationChannels[1]" in message and "'my-slack'" in message
    assert "projects/test-project/notificationChannels/CHANNEL_ID" in message


def test_dashboard_json_is_valid_and_complete(mocks: RecordingMocks) -> None:
    built = _build(mocks, lb_url_map_name="llm-urlmap", instance_group_name="llm-mig")
    (dashboard,) = _of_type(mocks, DASHBOARD)
    document = json.loads(dashboard.inputs["dashboardJson"])
    assert document["displayName"] == "vLLM gemma-4-26b (gce)"
    titles = [tile["widget"]["title"] for tile in document["mosaicLayout"]["tiles"]]
    assert len(titles) == 8 and "Token throughput (tokens/s, all replicas)" in titles
    queries = [
        data_set["timeSeriesQuery"]["prometheusQuery"]
        for tile in document["mosaicLayout"]["tiles"]
        for data_set in tile["widget"]["xyChart"]["dataSets"]
    ]
    assert 'sum(compute_googleapis_com:instance_group_size{instance_group_name="llm-mig"})' in queries
    assert resolve(built["component"].dashboard_url).startswith(
        "https://console.cloud.google.com/monitoring/dashboards/builder/"
    )


def test_uptime_check_on_health(mocks: RecordingMocks) -> None:
    _build(mocks, uptime_host="llm.example.com")
    (uptime,) = _of_type(mocks, UPTIME)
    check = uptime.inputs
    assert check["httpCheck"] == {
        "path": "/health",
        "port": 443,
        "useSsl": True,
        "validateSsl": True,
        "requestMethod": "GET",
    }
    assert check["monitoredResource"] == {
        "type": "uptime_url",
        "labels": {"host": "llm.example.com", "project_id": PROJECT},
    }
    assert (check["period"], check["timeout"]) == ("60s", "10s")


def test_uptime_check_over_plain_http(mocks: RecordingMocks) -> None:
    _build(mocks, uptime_host="203.0.113.10", uptime_use_ssl=False)
    (uptime,) = _of_type(mocks, UPTIME)
    assert uptime.inputs["httpCheck"]["port"] == 80 and uptime.inputs["httpCheck"]["useSsl"] is False


def test_no_uptime_check_without_a_host(mocks: RecordingMocks) -> None:
    built = _build(mocks)
    assert not _of_type(mocks, UPTIME) and built["component"].uptime_check_id is None


def test_deploy_time_names_flow_into_queries(mocks: RecordingMocks) -> None:
    """The URL map's auto-generated name is only known at deploy time; the queries wait for it."""

    def program() -> None:
        url_map = gcp.compute.URLMap("llm-urlmap", default_service="projects/p/global/backendServices/b")
        VllmMonitoring(
            "llm-mon", platform="gce", project=PROJECT, served_model_name=MODEL, lb_url_map_name=url_map.name
        )

    run_program(program)
    generated = next(r for r in mocks.resources if r.name == "llm-mon-error-rate")
    query = _condition(generated.inputs)["query"]
    assert 'url_map_name="llm-urlmap-' in query  # the provider-style generated name, not the logical one
    assert "[unknown]" not in query


def test_vertex_policies_use_vertex_metrics_and_have_no_uptime_check(mocks: RecordingMocks) -> None:
    _build(mocks, platform="vertex", vertex_endpoint_id="1234567890")
    policies = _policies(mocks)
    assert len(policies) == 4 and not _of_type(mocks, UPTIME)
    error = _condition(policies["llm-mon-error-rate"])["query"]
    assert 'aiplatform_googleapis_com:prediction_online_error_count{endpoint_id="1234567890"}' in error
    assert _condition(policies["llm-mon-queue-depth"])["query"].startswith(
        "vertex_vllm_num_requests_waiting{"
    )
    (dashboard,) = _of_type(mocks, DASHBOARD)
    assert "aiplatform_googleapis_com:prediction_online_replicas" in dashboard.inputs["dashboardJson"]


@pytest.mark.parametrize("platform", ["gce", "vertex"])
def test_recorded_inputs_use_only_exported_vllm_metrics(mocks: RecordingMocks, platform: str) -> None:
    _build(mocks, platform=platform)
    text = json.dumps([r.inputs for r in mocks.resources])
    assert unknown_vllm_metrics(text) == set()
    assert "vllm:kv_cache_usage_perc" in vllm_metric_names_in(text)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"platform": "gke"}, "platform"),
        ({"platform": "vertex", "uptime_host": "x.example.com"}, "uptime_host"),
        ({"platform": "vertex", "lb_url_map_name": "u"}, "lb_url_map_name"),
        ({"platform": "gce", "vertex_endpoint_id": "1"}, "vertex_endpoint_id"),
        ({"notification_channels": ["slack"]}, "monitoring.notificationChannels[0]"),
    ],
)
def test_bad_inputs_fail_at_construction(mocks: RecordingMocks, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        VllmMonitoring("bad", **{"project": PROJECT, "served_model_name": MODEL, "platform": "gce", **kwargs})
    assert not mocks.resources


UPTIME_CHECK_ID = "vllm-health-0123456789"


def _registered(mocks: RecordingMocks) -> dict[str, Any]:
    (component,) = _of_type(mocks, "vllm-gcp:monitoring:VllmMonitoring")
    return mocks.component_outputs[component.urn]


def _with_uptime_check_id(mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recording mocks compute no uptimeCheckId; a None output is dropped from register_outputs, so give
    the uptime check one (as the provider would) to see it flow through."""
    new_resource = mocks.new_resource

    def with_id(args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        resource_id, state = new_resource(args)
        return resource_id, state | ({"uptimeCheckId": UPTIME_CHECK_ID} if args.typ == UPTIME else {})

    monkeypatch.setattr(mocks, "new_resource", with_id)


def test_outputs_are_registered(mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_uptime_check_id(mocks, monkeypatch)
    built = _build(mocks, uptime_host="llm.example.com")
    component: VllmMonitoring = built["component"]
    registered = _registered(mocks)
    assert set(registered) == {"alertPolicyNames", "dashboardId", "dashboardUrl", "uptimeCheckId"}
    names = registered["alertPolicyNames"]
    assert set(names) == {"queue-depth", "kv-cache", "p99-latency", "error-rate"}
    for key, policy_name in names.items():
        # each key carries its own policy's provider name (the mocks auto-name as LOGICAL-NAME-HASH)
        assert policy_name.startswith(f"llm-mon-{key}-"), key
        assert policy_name == resolve(component.alert_policy_names[key])
    assert registered["dashboardId"].startswith("llm-mon-dashboard-")
    assert registered["dashboardId"] == resolve(component.dashboard_id)
    assert registered["dashboardUrl"] == resolve(component.dashboard_url)
    assert registered["dashboardUrl"].endswith(f"/{registered['dashboardId']}?project={PROJECT}")
    assert registered["uptimeCheckId"] == UPTIME_CHECK_ID == resolve(component.uptime_check_id)


def test_no_uptime_check_id_is_registered_without_an_uptime_check(
    mocks: RecordingMocks, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_uptime_check_id(mocks, monkeypatch)
    _build(mocks)
    registered = _registered(mocks)
    assert set(registered) == {"alertPolicyNames", "dashboardId", "dashboardUrl"}
    assert len(registered["alertPolicyNames"]) == 4
