"""Golden plans: each committed stack's offline plan equals its reviewed snapshot in tests/snapshots/.

On a difference the test prints a unified diff and the regeneration command (`make snapshots`). The machinery
itself is tested on a temporary directory, so these tests can fail for the right reason only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import golden

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("stack", golden.committed_stacks())
def test_plan_matches_golden_snapshot(stack: str) -> None:
    problem = golden.compare(stack)
    if problem:
        pytest.fail(problem, pytrace=False)


def test_no_snapshot_without_a_stack() -> None:
    stale = golden.stale_snapshots()
    assert not stale, f"snapshots without a stack file (delete them): {[str(p) for p in stale]}"


def test_snapshot_is_sorted_indented_json_with_resources_in_urn_order() -> None:
    resources = [{"urn": "urn:b", "type": "t"}, {"urn": "urn:a", "type": "t"}]
    plan: dict[str, Any] = {"stack": "x", "resources": resources, "a": 1}
    text = golden.render(plan)
    assert (
        text
        == json.dumps(
            {
                "a": 1,
                "resources": [{"type": "t", "urn": "urn:a"}, {"type": "t", "urn": "urn:b"}],
                "stack": "x",
            },
            indent=2,
        )
        + "\n"
    )
    assert resources[0]["urn"] == "urn:b"  # rendering does not reorder the caller's plan


def test_update_then_compare_round_trips(tmp_path: Path) -> None:
    changed = golden.update(["dev"], tmp_path)
    assert changed == [tmp_path / "dev.json"]
    assert golden.compare("dev", tmp_path) is None
    assert golden.update(["dev"], tmp_path) == []  # idempotent: nothing changes the second time


def test_a_drifted_plan_fails_with_a_readable_diff_and_the_command(tmp_path: Path) -> None:
    golden.update(["dev"], tmp_path)
    path = tmp_path / "dev.json"
    snapshot = json.loads(path.read_text())
    snapshot["platform"] = "drifted-platform"
    path.write_text(json.dumps(snapshot, sort_keys=True, indent=2) + "\n")

    message = golden.compare("dev", tmp_path)
    assert message is not None
    assert f"--- {path} (committed)" in message and "+++ plan of stack dev (now)" in message
    assert '-  "platform": "drifted-platform",' in message
    assert f'+  "platform": "{golden.plan_for("dev")["platform"]}",' in message
    assert message.rstrip().endswith(golden.REGENERATE)


def test_a_missing_snapshot_says_how_to_create_it(tmp_path: Path) -> None:
    message = golden.compare("dev", tmp_path)
    assert message is not None and "no golden plan for stack dev" in message and golden.REGENERATE in message


def test_cli_update_and_check(tmp_path: Path) -> None:
    """`python -m tests.golden` is what `make snapshots` runs; its check mode exits 1 on a difference."""

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tests.golden", "--dir", str(tmp_path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    updated = cli("--update", "dev")
    assert updated.returncode == 0, updated.stderr
    assert "1 of 1 snapshot(s) changed" in updated.stdout
    assert cli("dev").returncode == 0
    (tmp_path / "dev.json").write_text("{}\n")
    checked = cli("dev")
    assert checked.returncode == 1 and "the plan of stack dev differs" in checked.stderr
    assert cli("no-such-stack").returncode == 2
