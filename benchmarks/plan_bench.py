"""Offline-plan benchmark: wall time (median of 5) and peak RSS per stack, against the unavoidable import floor.

Prints figures only; no test is timed. Targets (issue 2): plan <= 1.5 x floor, peak RSS <= 300 MB, and
google.cloud.aiplatform never imported for a gce stack. Run: `make bench`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
FLOOR = (
    "import pulumi, pulumi_gcp as g, pulumi_docker; "
    "g.compute.InstanceTemplate; g.monitoring.AlertPolicy; g.secretmanager.Secret"
)
# Times the schema check inside a real plan (cold caches, as the CLI runs it) and checks the lazy aiplatform import.
PROBE = """
import sys, time
import components.plan as plan
check, spent = plan.check_resources, []
def timed(resources):
    start = time.perf_counter()
    findings = check(resources)
    spent.append(time.perf_counter() - start)
    return findings
plan.check_resources = timed
result = plan.run_plan(sys.argv[1])
print(sum(spent), 'google.cloud.aiplatform' in sys.modules, len(result['resources']))
"""


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return wall, usage.ru_maxrss / 1024


def median_of(argv: list[str]) -> tuple[float, float]:
    runs = [measure(argv) for _ in range(RUNS)]
    return statistics.median(w for w, _ in runs), max(r for _, r in runs)


def main() -> None:
    stacks = sorted(p.stem.removeprefix("Pulumi.") for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
    floor_s, floor_mb = median_of([sys.executable, "-c", FLOOR])
    print(f"import floor: {floor_s:.2f} s, {floor_mb:.0f} MB (median of {RUNS})")
    print(
        f"{'stack':<8} {'wall s':>7} {'x floor':>8} {'peak MB':>8} {'schema s':>9} {'of plan':>9} {'resources':>9}  aiplatform"
    )
    for stack in stacks:
        wall, rss = median_of([sys.executable, "-m", "components.plan", stack, "--json"])
        probe = subprocess.run([sys.executable, "-c", PROBE, stack], cwd=ROOT, capture_output=True, text=True)
        schema_s, aiplatform, count = probe.stdout.split() if probe.returncode == 0 else ("nan", "?", "?")
        print(
            f"{stack:<8} {wall:>7.2f} {wall / floor_s:>8.2f} {rss:>8.0f} "
            f"{float(schema_s):>9.3f} {100 * float(schema_s) / wall:>8.1f}% {count:>9}  "
            f"{'imported' if aiplatform == 'True' else 'not imported'}"
        )


if __name__ == "__main__":
    main()
