"""The offline plan as a user runs it: the CLI, the JSON contract, and bad configs exiting 2 without a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components.config import ConfigError
from components.plan import run_plan

ROOT = Path(__file__).resolve().parent.parent
STACKS = sorted(
    p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (ROOT / "stacks").glob("*.yaml")
)


def plan_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "components.plan", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_committed_stacks_are_the_three_examples() -> None:
    assert set(STACKS) >= {"dev", "prod", "vertex"}


def test_prod_json_follows_the_contract() -> None:
    result = plan_cli("prod", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert {"stack", "platform", "capacity", "cost", "resources", "outputs"} <= set(plan)
    assert plan["stack"] == "prod" and plan["platform"] == "gce"
    assert {"hourlyUsd", "monthlyUsd"} <= set(plan["cost"])
    for resource in plan["resources"]:
        assert set(resource) == {"urn", "type", "name", "parent", "inputs"}
        assert resource["urn"].startswith("urn:pulumi:prod::vllm-gcp::")


def test_human_output_has_capacity_cost_and_resources() -> None:
    result = plan_cli("dev")
    assert result.returncode == 0, result.stderr
    for heading in ("Capacity (one replica):", "Cost: $", "Resources (", "Outputs:"):
        assert heading in result.stdout


def write_stack(tmp_path: Path, body: str) -> str:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(body)
    return str(path)


BASE = """
config:
  gcp:project: my-project
  gcp:region: us-central1
  vllm-gcp:platform: gce
  vllm-gcp:gce: {zones: [us-central1-a]}
"""


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            "  vllm-gcp:model: {id: google/gemma-4-31B-it, dtype: bfloat16}\n"
            "  vllm-gcp:hardware: {machineType: g2-standard-8, gpuType: nvidia-l4, gpuCount: 1}\n",
            "needs >= 62 GB of GPU memory for weights; 1 x nvidia-l4 has 24 GB",
        ),
        ("  vllm-gcp:modle: {id: x/y}\n", "vllm-gcp:modle: unknown key; did you mean 'model'?"),
        (
            "  vllm-gcp:hardware: {machineType: g2-standard-24, gpuType: nvidia-l4, gpuCount: 2}\n"
            "  vllm-gcp:model: {tensorParallelSize: 4}\n",
            "vllm-gcp:model.tensorParallelSize: 4 does not divide hardware.gpuCount 2",
        ),
        ("  vllm-gcp:hfToken: hf_plaintext\n", "vllm-gcp:hfToken: stored in plaintext"),
        ("  vllm-gcp:model: {extraArgs: ['--max-model-len', '9']}\n", "vllm-gcp:model.extraArgs"),
    ],
)
def test_bad_config_exits_2_with_the_message_and_no_traceback(
    tmp_path: Path, extra: str, needle: str
) -> None:
    result = plan_cli(write_stack(tmp_path, BASE + extra))
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_plans_run_back_to_back_in_one_process() -> None:
    first, second = run_plan("dev"), run_plan("dev")
    assert [r["urn"] for r in first["resources"]] == [r["urn"] for r in second["resources"]]
    assert first["outputs"] == second["outputs"]


def test_prometheus_rules_of_a_stack_are_valid(tmp_path: Path) -> None:
    result = plan_cli("prod", "--prometheus-rules")
    assert result.returncode == 0, result.stderr
    rules = yaml.safe_load(result.stdout)
    alerts = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    assert len(alerts) == 4
    assert 'model_name="gemma-4-26b"' in result.stdout  # the prod stack's served name, not a default
    promtool = shutil.which("promtool")
    if promtool:  # the promtool tests proper live in tests/test_promtool.py
        path = tmp_path / "rules.yml"
        path.write_text(result.stdout)
        check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_dashboard_of_a_stack_is_json() -> None:
    result = plan_cli("dev", "--grafana-dashboard")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["panels"]


def test_api_keys_must_be_exactly_one_secret(tmp_path: Path) -> None:
    body = BASE + "  vllm-gcp:apiKeys:\n    secure: v1:x\n"
    ok = run_plan(write_stack(tmp_path, body), secret_values={"vllm-gcp:apiKeys": ["sk-one"]})
    assert ok["stack"] == "bad"
    result = run_plan_error(write_stack(tmp_path, body), {"vllm-gcp:apiKeys": ["sk-one", "sk-two"]})
    assert "vllm-gcp:apiKeys: expected a list with exactly one key (2)" in result
    assert "sk-one" not in result and "sk-two" not in result


def run_plan_error(stack: str, secrets: dict) -> str:
    with pytest.raises(ConfigError) as info:
        run_plan(stack, secret_values=secrets)
    return str(info.value)


def test_schema_findings_fail_the_plan_with_resource_and_key_path(tmp_path: Path) -> None:
    program = tmp_path / "typo.py"
    program.write_text(
        "import pulumi_gcp as gcp\n"
        "gcp.compute.BackendService('b', locality_lb_policy='LEAST_REQEST',\n"
        "                           log_config={'enable': True, 'sampel_rate': 1.0})\n"
    )
    result = plan_cli("dev", "--program", str(program))
    assert result.returncode == 2
    assert "'b'.localityLbPolicy: 'LEAST_REQEST'" in result.stderr and "LEAST_REQUEST" in result.stderr
    assert "'b'.logConfig.sampel_rate" in result.stderr and "sample_rate" in result.stderr
    assert "Traceback" not in result.stderr


def test_stacks_sharing_a_project_choose_distinct_ids() -> None:
    """prod and vertex share my-project-prod: ids we choose (not auto-named) must not collide (409 at `up`)."""
    chosen: dict[tuple[str, str, str], str] = {}
    id_keys = ("secretId", "repositoryId", "accountId", "namePrefix", "baseInstanceName")
    for stack in STACKS:
        for resource in run_plan(stack)["resources"]:
            inputs = resource["inputs"]
            for key in id_keys:
                if key in inputs:
                    slot = (str(inputs.get("project")), resource["type"], str(inputs[key]))
                    assert slot not in chosen, f"{stack} and {chosen[slot]} both create {slot}"
                    chosen[slot] = stack
    assert len({stack for stack in chosen.values()}) == len(STACKS)
