"""VllmMonitoring: the four vLLM alert policies, a dashboard and (gce) an uptime check, in Cloud Monitoring.

The queries and panels come from `alerts.py`, the same definitions that render the Prometheus rule file, so
what promtool proves is what Cloud Monitoring evaluates. Policies use PromQL conditions; Cloud Monitoring
allows one PromQL condition per policy (https://cloud.google.com/monitoring/promql/create-promql-alerts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import pulumi
import pulumi_gcp as gcp

from .alerts import (
    CLOUD_SEVERITY,
    AlertRule,
    AlertThresholds,
    QueryScope,
    build_alert_rules,
    build_panels,
    notification_channel_names,
    render_cloud_monitoring_condition,
    render_cloud_monitoring_dashboard,
)

PLATFORMS = ("gce", "vertex")
_PromQLCondition = gcp.monitoring.AlertPolicyConditionConditionPrometheusQueryLanguageArgs
# Stands in for a name that is only known at deploy time; titles and runbooks depend on whether it is set,
# never on its value.
_DEPLOY_TIME = "deploy-time"


def _item(index: int) -> Callable[[list[str]], str]:
    return lambda values: values[index]


def _label_value(text: str) -> str:
    # Cloud Monitoring user label values: at most 63 lower-case letters, digits, `_` and `-`.
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


class VllmMonitoring(pulumi.ComponentResource):
    """Alert policies for queue depth, KV cache, p99 latency and error rate; a dashboard; an uptime check on gce.

    Inputs are plain values from the validated stack config; the deploy-time names of the load balancer's URL
    map, the instance group and the Vertex endpoint narrow the platform queries when given.
    """

    alert_policy_names: dict[str, pulumi.Output[str]]
    dashboard_id: pulumi.Output[str]
    dashboard_url: pulumi.Output[str]
    uptime_check_id: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        *,
        platform: str,
        project: str,
        served_model_name: str,
        notification_channels: Sequence[str] = (),
        thresholds: AlertThresholds | None = None,
        uptime_host: pulumi.Input[str] | None = None,
        uptime_use_ssl: bool = True,
        lb_url_map_name: pulumi.Input[str] | None = None,
        instance_group_name: pulumi.Input[str] | None = None,
        vertex_endpoint_id: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        if platform not in PLATFORMS:
            raise ValueError(f"platform: {platform!r} is not one of {', '.join(PLATFORMS)}")
        if platform == "vertex" and (uptime_host is not None or lb_url_map_name is not None):
            raise ValueError(
                "uptime_host / lb_url_map_name: only for platform gce (a Vertex endpoint has no load balancer "
                "of ours); pass vertex_endpoint_id instead"
            )
        if platform == "gce" and vertex_endpoint_id is not None:
            raise ValueError("vertex_endpoint_id: only for platform vertex; pass lb_url_map_name on gce")
        channels = notification_channel_names(notification_channels, project)
        limits = thresholds or AlertThresholds()
        super().__init__("vllm-gcp:monitoring:VllmMonitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        def scope_of(values: dict[str, Any]) -> QueryScope:
            return QueryScope(
                target=platform,  # type: ignore[arg-type]  # checked against PLATFORMS above
                served_model_name=served_model_name,
                lb_url_map_name=values["lb"],
                instance_group_name=values["mig"],
                vertex_endpoint_id=values["endpoint"],
            )

        deploy_time = {"lb": lb_url_map_name, "mig": instance_group_name, "endpoint": vertex_endpoint_id}
        # Titles, runbooks and the set of alerts are known now; only the query text waits for deploy-time names.
        static_rules = build_alert_rules(
            scope_of({k: None if v is None else _DEPLOY_TIME for k, v in deploy_time.items()}), limits
        )
        scope = pulumi.Output.all(**deploy_time).apply(scope_of)
        queries: pulumi.Output[list[str]] = scope.apply(
            lambda s: [r.expr for r in build_alert_rules(s, limits)]
        )
        labels = {"app": "vllm-gcp", "served-model": _label_value(served_model_name), "platform": platform}

        self.alert_policy_names = {}
        for index, rule in enumerate(static_rules):
            query: pulumi.Output[str] = queries.apply(_item(index))
            policy = self._alert_policy(
                f"{name}-{rule.key}",
                rule,
                query,
                channels,
                labels,
                project,
                child,
            )
            self.alert_policy_names[rule.key] = policy.name

        display_name = f"vLLM {served_model_name} ({platform})"
        dashboard = gcp.monitoring.Dashboard(
            f"{name}-dashboard",
            project=project,
            dashboard_json=scope.apply(
                lambda s: json.dumps(render_cloud_monitoring_dashboard(build_panels(s, limits), display_name))
            ),
            opts=child,
        )
        self.dashboard_id = dashboard.id
        self.dashboard_url = dashboard.id.apply(
            lambda dashboard_id: (
                "https://console.cloud.google.com/monitoring/dashboards/builder/"
                f"{dashboard_id.rsplit('/', 1)[-1]}?project={project}"
            )
        )

        self.uptime_check_id = None
        if platform == "gce" and uptime_host is not None:
            uptime = gcp.monitoring.UptimeCheckConfig(
                f"{name}-uptime",
                project=project,
                display_name=f"vLLM {served_model_name} /health",
                period="60s",
                timeout="10s",
                http_check=gcp.monitoring.UptimeCheckConfigHttpCheckArgs(
                    path="/health",
                    port=443 if uptime_use_ssl else 80,
                    use_ssl=uptime_use_ssl,
                    validate_ssl=uptime_use_ssl,
                    request_method="GET",
                ),
                monitored_resource=gcp.monitoring.UptimeCheckConfigMonitoredResourceArgs(
                    type="uptime_url", labels={"host": uptime_host, "project_id": project}
                ),
                user_labels=labels,
                opts=child,
            )
            self.uptime_check_id = uptime.uptime_check_id

        self.register_outputs(
            {
                "alertPolicyNames": self.alert_policy_names,
                "dashboardId": self.dashboard_id,
                "dashboardUrl": self.dashboard_url,
                "uptimeCheckId": self.uptime_check_id,
            }
        )

    @staticmethod
    def _alert_policy(
        resource_name: str,
        rule: AlertRule,
        query: pulumi.Output[str],
        channels: list[str],
        labels: dict[str, str],
        project: str,
        opts: pulumi.ResourceOptions,
    ) -> gcp.monitoring.AlertPolicy:
        condition = render_cloud_monitoring_condition(rule)
        return gcp.monitoring.AlertPolicy(
            resource_name,
            project=project,
            display_name=rule.title,
            combiner="OR",  # required by the API; a policy with a PromQL condition has only that one
            severity=CLOUD_SEVERITY[rule.severity],
            conditions=[
                gcp.monitoring.AlertPolicyConditionArgs(
                    display_name=f"{condition['ruleGroup']}/{condition['alertRule']}",
                    condition_prometheus_query_language=_PromQLCondition(
                        query=query,
                        duration=condition["duration"],
                        evaluation_interval=condition["evaluationInterval"],
                        alert_rule=condition["alertRule"],
                        rule_group=condition["ruleGroup"],
                        labels=condition["labels"],
                    ),
                )
            ],
            documentation=gcp.monitoring.AlertPolicyDocumentationArgs(
                subject=rule.title, content=rule.runbook, mime_type="text/markdown"
            ),
            notification_channels=channels,
            user_labels=labels,
            opts=opts,
        )
