"""The Prometheus metrics the pinned vLLM version really exports, and a scanner for vLLM metric names.

`vllm_metrics.txt` (next to this module) is the checked-in list, generated from the vLLM wheel by
`python -m components.metrics regenerate WHEEL` (its header gives the full command). Alert rules, dashboards
and autoscaling filters are checked against it (tests/test_metric_names.py), so a stale name such as the
seed's KV-cache gauge fails the suite instead of silently never firing.

A vLLM metric has three spellings in this project, and the scanner understands all of them:
- Prometheus exposition (what `/metrics` serves and PromQL queries): `vllm:num_requests_waiting`,
  `vllm:e2e_request_latency_seconds_bucket`, `vllm:request_success_total`;
- Managed Service for Prometheus metric types (GCE autoscaler filters): `prometheus.googleapis.com/NAME/KIND`,
  NAME being the exposition name for gauges and counters and the histogram's base name for `histogram`;
- Vertex AI AutoMetrics: `vertex_` + the exposition name, lower-case, `_` for `:`
  (`vertex_vllm_num_requests_waiting`; https://cloud.google.com/vertex-ai/docs/predictions/view-autometrics
  and the autoscaling metrics in https://cloud.google.com/vertex-ai/docs/reference/rest/v1beta1/
  DedicatedResources).
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

VLLM_VERSION = "0.33.0"
METRIC_LIST_PATH = Path(__file__).with_name("vllm_metrics.txt")
# Where vLLM defines its Prometheus metrics inside the wheel (the engine's stat loggers and perf counters).
METRIC_SOURCE_DIR = "vllm/v1/metrics/"

MetricKind = Literal["counter", "gauge", "histogram"]
KINDS: tuple[MetricKind, ...] = ("counter", "gauge", "histogram")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Managed Service for Prometheus appends the Prometheus type to the metric type; these are the ones vLLM uses.
GMP_KIND_SUFFIXES = ("gauge", "counter", "histogram", "summary")


@dataclass(frozen=True)
class VllmMetric:
    kind: MetricKind
    name: str  # as passed to prometheus_client
    series: tuple[str, ...]  # the names a /metrics scrape exposes


def exposed_series(kind: MetricKind, name: str) -> tuple[str, ...]:
    """prometheus_client's naming: counters always end in `_total`, histograms expose three series.

    vLLM serves /metrics through prometheus_client's multiprocess collector (vllm/v1/metrics/prometheus.py),
    which exports no `_created` series, so those are not listed.
    """
    if kind == "counter":
        return (name.removesuffix("_total") + "_total",)
    if kind == "histogram":
        return tuple(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return (name,)


def parse_metric_list(text: str) -> dict[str, VllmMetric]:
    """Parse `kind name series...` rows; `#` lines are comments. The series column is checked, not trusted."""
    metrics: dict[str, VllmMetric] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        kind, name, *series = line.split()
        if kind not in KINDS:
            raise ValueError(
                f"vllm_metrics.txt line {number}: kind {kind!r} is not one of {', '.join(KINDS)}"
            )
        expected = exposed_series(cast(MetricKind, kind), name)
        if tuple(series) != expected:
            raise ValueError(
                f"vllm_metrics.txt line {number}: {kind} {name} exposes {' '.join(expected)}, "
                f"but the row lists {' '.join(series) or 'nothing'}; regenerate the file"
            )
        metrics[name] = VllmMetric(cast(MetricKind, kind), name, expected)
    return metrics


def load_metric_list(path: Path = METRIC_LIST_PATH) -> dict[str, VllmMetric]:
    return parse_metric_list(path.read_text(encoding="utf-8"))


METRICS: Mapping[str, VllmMetric] = load_metric_list()
KNOWN_METRICS: frozenset[str] = frozenset(s for metric in METRICS.values() for s in metric.series)
_KIND_BY_SERIES: dict[str, MetricKind] = {s: m.kind for m in METRICS.values() for s in m.series}

# `vllm:` must not be glued to a longer word ("myvllm:x"); `/` before it is fine (GMP metric types).
_NAME = r"[A-Za-z_][A-Za-z0-9_:]*"
_GMP_TYPED = re.compile(rf"prometheus\.googleapis\.com/(vllm:{_NAME}|vertex_vllm_\w+)/(\w+)")
_EXPOSITION = re.compile(rf"(?<![\w:-])vllm:{_NAME}")
_VERTEX_BARE = re.compile(r"(?<![\w:-])vertex_vllm_(\w+)")
_VERTEX_GMP = re.compile(r"prometheus\.googleapis\.com/vertex_vllm_(\w+)")


def vertex_metric_name(series: str) -> str:
    """The name Vertex AI AutoMetrics gives a vLLM series: `vertex_` + the name, lower-case, `_` for `:`."""
    return "vertex_" + re.sub(r"[^a-z0-9_]", "_", series.lower())


def _from_vertex(rest: str) -> str:
    # Every vLLM name starts with "vllm:", so "vertex_vllm_X" maps back to exactly one exposition name.
    return f"vllm:{rest}"


def _from_gmp_type(name: str, kind: str) -> str:
    """A GMP metric type's NAME/KIND as the exposition series it means, or `NAME/KIND` if they disagree."""
    if name.startswith("vertex_vllm_"):
        name = _from_vertex(name.removeprefix("vertex_vllm_"))
    if kind == "histogram":
        series = name + "_bucket"
        return series if _KIND_BY_SERIES.get(series) == "histogram" else f"{name}/{kind}"
    if kind in ("gauge", "counter") and _KIND_BY_SERIES.get(name) == kind:
        return name
    return f"{name}/{kind}"


def vllm_metric_names_in(text: str, *, bare_vertex_names: bool = True) -> set[str]:
    """Every vLLM metric the text refers to, as the exposition series name (`vllm:...`).

    GMP metric types are checked against their kind: `prometheus.googleapis.com/NAME/gauge` stands for NAME
    only if NAME is a gauge; otherwise `NAME/gauge` is returned, which no list contains. Bare Vertex names
    (`vertex_vllm_...`) count when `bare_vertex_names` is true (rendered PromQL); in source code only the
    `prometheus.googleapis.com/vertex_vllm_...` form counts, so an identifier such as `vertex_vllm_args` does
    not.
    """
    found: set[str] = set()
    for match in _GMP_TYPED.finditer(text):
        if match.group(2) in GMP_KIND_SUFFIXES:
            found.add(_from_gmp_type(match.group(1), match.group(2)))
    remainder = _GMP_TYPED.sub(lambda m: " " if m.group(2) in GMP_KIND_SUFFIXES else m.group(0), text)
    found.update(_EXPOSITION.findall(remainder))
    vertex = _VERTEX_BARE if bare_vertex_names else _VERTEX_GMP
    found.update(_from_vertex(rest) for rest in vertex.findall(remainder))
    return found


def unknown_vllm_metrics(text: str, *, bare_vertex_names: bool = True) -> set[str]:
    """The vLLM metric references in `text` that the pinned vLLM version does not export."""
    return vllm_metric_names_in(text, bare_vertex_names=bare_vertex_names) - KNOWN_METRICS


# --- regeneration from the wheel (python -m components.metrics regenerate WHEEL) ----------------------

_CONSTRUCTOR_KINDS: dict[str, MetricKind] = {
    "_counter_cls": "counter",
    "_gauge_cls": "gauge",
    "_histogram_cls": "histogram",
    "Counter": "counter",
    "Gauge": "gauge",
    "Histogram": "histogram",
}


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def extract_metric_definitions(source: str) -> set[tuple[MetricKind, str]]:
    """(kind, name) of every `vllm:` metric constructed in a Python source file.

    vLLM builds metrics through `self._gauge_cls(name=...)`-style factories (swappable for Ray wrappers).
    The name is a literal, or a local variable assigned a literal in the same function
    (`vllm:cache_config_info`).
    """
    found: set[tuple[MetricKind, str]] = set()
    tree = ast.parse(source)
    scopes: list[ast.AST] = [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    for scope in [tree, *scopes]:
        literals: dict[str, set[str]] = {}
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                        literals.setdefault(target.id, set()).add(node.value.value)
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call) or _callee(node) not in _CONSTRUCTOR_KINDS:
                continue
            kind = _CONSTRUCTOR_KINDS[_callee(node)]
            for keyword in node.keywords:
                if keyword.arg != "name":
                    continue
                value = keyword.value
                names = (
                    {value.value}
                    if isinstance(value, ast.Constant) and isinstance(value.value, str)
                    else literals.get(value.id, set())
                    if isinstance(value, ast.Name)
                    else set()
                )
                found.update((kind, name) for name in names if name.startswith("vllm:"))
    return found


def metric_definitions_in_wheel(wheel: Path) -> set[tuple[MetricKind, str]]:
    definitions: set[tuple[MetricKind, str]] = set()
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(METRIC_SOURCE_DIR) and member.endswith(".py"):
                definitions |= extract_metric_definitions(archive.read(member).decode("utf-8"))
    return definitions


def render_metric_list(definitions: Iterable[tuple[MetricKind, str]], header: str) -> str:
    rows = [
        f"{kind:<9} {name:<48} {' '.join(exposed_series(kind, name))}"
        for kind, name in sorted(definitions, key=lambda d: d[1])
    ]
    return header.rstrip("\n") + "\n" + "\n".join(rows) + "\n"


def _regeneration_header(wheel: Path) -> str:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return (
        f"# Prometheus metrics defined by vLLM {VLLM_VERSION} ({METRIC_SOURCE_DIR}*.py in the PyPI wheel).\n"
        "# Regenerate (needs only the standard library; the wheel is ~340 MB):\n"
        f"#   pip download vllm=={VLLM_VERSION} --no-deps -d /tmp/vllm-wheel\n"
        f"#   python -m components.metrics regenerate /tmp/vllm-wheel/vllm-{VLLM_VERSION}-*.whl"
        " > components/vllm_metrics.txt\n"
        f"# Generated from {wheel.name} (sha256 {digest}).\n"
        "# Columns: kind, the name as defined, the series a /metrics scrape exposes (prometheus_client\n"
        "#   adds _total to counters and _bucket/_sum/_count to histograms; vLLM's multiprocess collector\n"
        "#   exports no _created series).\n"
        "# Labels: every series carries model_name (the --served-model-name) and engine;\n"
        "#   vllm:request_success_total also carries finished_reason = stop|length|abort|error|repetition.\n"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "regenerate":
        print("usage: python -m components.metrics regenerate WHEEL", file=sys.stderr)
        return 2
    wheel = Path(argv[1])
    definitions = metric_definitions_in_wheel(wheel)
    if not definitions:
        print(f"{wheel}: no vllm: metric definitions under {METRIC_SOURCE_DIR}", file=sys.stderr)
        return 1
    sys.stdout.write(render_metric_list(definitions, _regeneration_header(wheel)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
