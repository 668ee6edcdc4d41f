"""Golden plans: every committed stack's offline plan, snapshotted as JSON under tests/snapshots/<stack>.json.

A snapshot is the plan contract (`components.plan.run_plan`) normalised for review: keys sorted, indent 2, and
resources ordered by URN so that registration order does not churn the file. The golden test fails on any
difference and prints a unified diff. Regenerating is deliberate and reviewed like code:

    make snapshots                       # the same as: python -m tests.golden --update
    python -m tests.golden --update dev  # one stack
    python -m tests.golden               # compare only; prints the diffs, exits 1 on any difference
"""

from __future__ import annotations

import argparse
import copy
import difflib
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = ROOT / "stacks"
SNAPSHOT_DIR = ROOT / "tests" / "snapshots"
REGENERATE = "make snapshots  (or: python -m tests.golden --update)"
MAX_DIFF_LINES = 400


def committed_stacks() -> list[str]:
    """Stack names of stacks/Pulumi.<name>.yaml, sorted."""
    return sorted(
        p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACKS_DIR.glob("Pulumi.*.yaml")
    )


@functools.cache
def _plan(stack: str) -> dict[str, Any]:
    from components.plan import run_plan  # imported late: `--help` and the stack list need no Pulumi runtime

    return run_plan(stack)


def plan_for(stack: str) -> dict[str, Any]:
    """The stack's offline plan, computed once per process (the policy tests and the golden test share it)."""
    return copy.deepcopy(_plan(stack))


def normalise(plan: dict[str, Any]) -> dict[str, Any]:
    normalised = copy.deepcopy(plan)
    normalised["resources"] = sorted(normalised.get("resources", []), key=lambda r: (r["urn"], r["type"]))
    return normalised


def render(plan: dict[str, Any]) -> str:
    return json.dumps(normalise(plan), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def snapshot_path(stack: str, directory: Path = SNAPSHOT_DIR) -> Path:
    return directory / f"{stack}.json"


def diff(stack: str, expected: str, actual: str, expected_name: str) -> str:
    """A unified diff from the committed snapshot to the current plan, capped for readability."""
    lines = list(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=f"{expected_name} (committed)",
            tofile=f"plan of stack {stack} (now)",
            n=3,
        )
    )
    shown = "".join(lines[:MAX_DIFF_LINES])
    if len(lines) > MAX_DIFF_LINES:
        shown += f"... {len(lines) - MAX_DIFF_LINES} more diff lines\n"
    return shown


def compare(stack: str, directory: Path = SNAPSHOT_DIR) -> str | None:
    """None when the stack's plan equals its snapshot, else a message with the diff and the fix."""
    path = snapshot_path(stack, directory)
    actual = render(plan_for(stack))
    try:
        shown_path = path.relative_to(ROOT)
    except ValueError:
        shown_path = path
    if not path.exists():
        return f"no golden plan for stack {stack} at {shown_path}. Create it with: {REGENERATE}"
    expected = path.read_text()
    if expected == actual:
        return None
    return (
        f"the plan of stack {stack} differs from {shown_path}:\n"
        f"{diff(stack, expected, actual, str(shown_path))}"
        f"If this change is intended, regenerate and review the snapshot diff: {REGENERATE}"
    )


def stale_snapshots(directory: Path = SNAPSHOT_DIR) -> list[Path]:
    """Snapshots whose stack file no longer exists."""
    stacks = set(committed_stacks())
    return sorted(p for p in directory.glob("*.json") if p.stem not in stacks)


def update(stacks: Sequence[str], directory: Path = SNAPSHOT_DIR) -> list[Path]:
    """Rewrite the snapshots of `stacks`; return the files whose content changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for stack in stacks:
        path = snapshot_path(stack, directory)
        content = render(plan_for(stack))
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed.append(path)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="*", help="stack names (default: every stacks/Pulumi.*.yaml)")
    parser.add_argument("--update", action="store_true", help="rewrite the snapshots from the current plans")
    parser.add_argument("--dir", type=Path, default=SNAPSHOT_DIR, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    known = committed_stacks()
    unknown = [s for s in args.stacks if s not in known]
    if unknown:
        parser.error(f"unknown stack(s) {unknown}; committed stacks: {known}")
    stacks = args.stacks or known
    if args.update:
        changed = update(stacks, args.dir)
        for path in changed:
            print(f"updated {path}")
        print(
            f"{len(changed)} of {len(stacks)} snapshot(s) changed; review `git diff {args.dir}` before committing"
        )
        for path in stale_snapshots(args.dir):
            print(f"stale: {path} has no stack file; delete it", file=sys.stderr)
        return 0
    failures = [message for stack in stacks if (message := compare(stack, args.dir))]
    for message in failures:
        print(message, file=sys.stderr)
    print(f"{len(stacks) - len(failures)} of {len(stacks)} golden plan(s) match")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
