"""The offline plan: `python -m components.plan STACK [--json]`.

Runs the real program (`__main__.py`) under Pulumi's mocks with the stack file's config, so it needs no pulumi CLI,
no provider plugins and no credentials: the credential-free `cdk synth` of this project. `secure:` values cannot be
decrypted offline; they become placeholders that stay marked secret. A bad config exits 2 with the message on stderr.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import settings as pulumi_settings

from .capacity import plan_capacity
from .config import NAMESPACE, ConfigError, load_config
from .cost import estimate_cost
from .mocks import install_mocks, resolve, run_program
from .schema_check import Finding, check_resources

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "vllm-gcp"


class SchemaError(Exception):
    """Planned inputs the real provider would reject: a program bug, not a config error."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("\n".join(f"  {finding}" for finding in findings))
        self.findings = findings


def resolve_stack(stack: str) -> tuple[str, Path]:
    """A stack name (stacks/Pulumi.NAME.yaml) or a path to any stack YAML file."""
    path = Path(stack)
    if path.suffix in (".yaml", ".yml") and path.exists():
        name = path.stem.removeprefix("Pulumi.")
        return name, path
    for base in (Path.cwd(), ROOT):
        candidate = base / "stacks" / f"Pulumi.{stack}.yaml"
        if candidate.exists():
            return stack, candidate
    raise ConfigError([f"stack {stack!r}: no file stacks/Pulumi.{stack}.yaml and no such YAML file"])


def _has_secure(value: Any) -> bool:
    if isinstance(value, dict):
        return "secure" in value or any(_has_secure(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secure(v) for v in value)
    return False


def stack_config(path: Path, secret_values: dict[str, Any] | None = None) -> tuple[dict[str, str], list[str]]:
    """Stack YAML -> (Pulumi's flat config map of strings, secret keys). Secure values become placeholders."""
    document = yaml.safe_load(path.read_text()) or {}
    unknown = set(document) - {"config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment"}
    if unknown:
        raise ConfigError(
            [f"{path.name}: unknown top-level keys {sorted(unknown)}; stack files hold `config:`"]
        )
    flat: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in (document.get("config") or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if _has_secure(value):
            secret_keys.append(full)
            value = (secret_values or {}).get(full, f"[placeholder for {full}]")
            if full.endswith(":apiKeys") and isinstance(value, str):
                value = [value]
        if isinstance(value, str):
            flat[full] = value
        else:
            flat[full] = json.dumps(value)
    return flat, secret_keys


def run_plan(
    stack: str, program: Path | None = None, secret_values: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run the program offline and return the plan contract (see DESIGN.md, "Offline plan")."""
    name, path = resolve_stack(stack)
    flat, secret_keys = stack_config(path, secret_values)
    pulumi.runtime.set_all_config(flat, secret_keys)
    mocks = install_mocks(flat.get("gcp:project", "mock-project"), flat.get("gcp:region", ""), stack=name)

    loaded = load_config()
    capacity = plan_capacity(loaded.stack)
    entry = program or ROOT / "__main__.py"
    run_program(lambda: runpy.run_path(str(entry), run_name="__main__"))
    resources = [r.as_dict() for r in sorted(mocks.resources, key=lambda r: r.urn)]  # async order varies
    findings = check_resources(resources)
    if findings:
        raise SchemaError(findings)
    root = pulumi_settings.get_root_resource()
    outputs = {key: resolve(value) for key, value in getattr(root, "outputs", {}).items()}
    return {
        "stack": name,
        "platform": loaded.stack.platform,
        "capacity": capacity.as_dict(),
        "cost": estimate_cost(loaded.stack),
        "warnings": loaded.stack.warnings,
        "resources": resources,
        "outputs": outputs,
    }


def _brief(inputs: dict[str, Any]) -> str:
    shown = []
    for key, value in inputs.items():
        if isinstance(value, str | int | float | bool) and key != "__provider":
            text = str(value).replace("\n", " ")
            shown.append(f"{key}={text[:48] + '…' if len(text) > 48 else text}")
        if len(shown) == 4:
            break
    return " ".join(shown)


def render_text(plan: dict[str, Any]) -> str:
    cap, cost = plan["capacity"], plan["cost"]
    lines = [
        f"vllm-gcp offline plan: stack {plan['stack']} (platform {plan['platform']})",
        "",
        "Capacity (one replica):",
        f"  weights {cap['weightsGb']} GB (minimum), recommended {cap['recommendedGb']} GB, "
        f"available {cap['availableGb']} GB",
        f"  KV cache budget {cap['kvBudgetGb']} GB = {cap['fullLengthSequences']} full-length sequences "
        f"({cap['kvPerSequenceGb']} GB each), headroom {cap['headroomGb']} GB",
        f"  cold start ~{cap['coldStartSeconds']} s -> autohealing initial delay "
        f"{cap['autohealingInitialDelaySeconds']} s, startup budget {cap['startupBudgetSeconds']} s",
        "",
        f"Cost: ${cost['hourlyUsd']}/h, ${cost['monthlyUsd']}/month at minReplicas "
        f"(up to ${cost['maxMonthlyUsd']}/month at maxReplicas); prices as of {cost['pricesAsOf']}",
    ]
    if plan["warnings"]:
        lines += ["", "Warnings:"] + [f"  ! {w}" for w in plan["warnings"]]
    children: dict[str, list[dict[str, Any]]] = {}
    for res in plan["resources"]:
        children.setdefault(res["parent"], []).append(res)

    def walk(parent: str, depth: int) -> None:
        for res in children.get(parent, []):
            lines.append(f"{'  ' * depth}{res['type']}  {res['name']}  {_brief(res['inputs'])}".rstrip())
            walk(res["urn"], depth + 1)

    lines += ["", f"Resources ({len(plan['resources'])}):"]
    roots = {r["parent"] for r in plan["resources"]} - {r["urn"] for r in plan["resources"]}
    for parent in sorted(roots):
        walk(parent, 1)
    lines += ["", "Outputs:"] + [f"  {k}: {v}" for k, v in plan["outputs"].items()]
    return "\n".join(lines)


def _print_monitoring(stack_name: str, rules: bool) -> int:
    """The stack's alerts or dashboard for a self-run Prometheus / Grafana; needs no mocks."""
    from .alerts import render_grafana_dashboard, render_prometheus_rules

    try:
        _, path = resolve_stack(stack_name)
        pulumi.runtime.set_all_config(*stack_config(path))
        stack = load_config().stack
    except ConfigError as error:
        print(f"error: invalid {NAMESPACE} config for stack {stack_name}:\n{error}", file=sys.stderr)
        return 2
    served = stack.model.served_name or ""
    if rules:
        sys.stdout.write(render_prometheus_rules(served, stack.monitoring.alerts))
    else:
        print(json.dumps(render_grafana_dashboard(served, stack.monitoring.alerts), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.plan", description=__doc__.splitlines()[0])
    parser.add_argument("stack", help="stack name (stacks/Pulumi.NAME.yaml) or a path to a stack YAML file")
    parser.add_argument("--json", action="store_true", help="print the plan contract as one JSON object")
    parser.add_argument(
        "--prometheus-rules", action="store_true", help="print the stack's alerts as a Prometheus rule file"
    )
    parser.add_argument(
        "--grafana-dashboard", action="store_true", help="print the stack's Grafana dashboard JSON"
    )
    parser.add_argument(
        "--program", type=Path, help="the Pulumi program to run (default: this repo's __main__.py)"
    )
    args = parser.parse_args(argv)
    if args.prometheus_rules or args.grafana_dashboard:
        return _print_monitoring(args.stack, rules=args.prometheus_rules)
    try:
        plan = run_plan(args.stack, program=args.program)
    except SchemaError as error:
        print(
            f"error: stack {args.stack}: {len(error.findings)} planned input(s) the provider would reject "
            f"(docs/plan-fidelity.md):\n{error}",
            file=sys.stderr,
        )
        return 2
    except (ConfigError, pulumi.RunError) as error:
        print(f"error: invalid {NAMESPACE} config for stack {args.stack}:\n{error}", file=sys.stderr)
        return 2
    print(json.dumps(plan, indent=2) if args.json else render_text(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
