"""The guardrails over the offline plan: no pulumi CLI, no credentials.

    python -m policy.offline                     # every stacks/Pulumi.*.yaml
    python -m policy.offline prod --config policy/config/prod.json

It runs the same validators as the policy pack on the resources `python -m components.plan` records, with the
pack's config-file semantics (`all`, per-policy `enforcementLevel` and settings). Without `--config` a stack whose
`vllm-gcp:environment` is prod uses policy/config/prod.json, any other nonprod.json. Exit status: 1 when a
mandatory rule is violated, 2 on a bad stack or config file, else 0 (advisory findings are printed only).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from policy import validators as v

CONFIG_DIR = Path(__file__).resolve().parent / "config"
LEVELS = ("advisory", "mandatory", "remediate", "disabled")


@dataclass
class StackResult:
    stack: str
    environment: str
    config_file: Path
    report: v.Report
    levels: dict[str, str]

    def blocking(self) -> list[v.Violation]:
        return [x for x in self.report.violations if self.levels[x.rule.name] in ("mandatory", "remediate")]

    def render(self) -> str:
        shown = [x for x in self.report.violations if self.levels[x.rule.name] != "disabled"]
        lines = [
            f"guardrails for stack {self.stack} (environment {self.environment}, config {self.config_file.name}): "
            f"{len(v.ALL_RULES)} rules, {len(self.blocking())} mandatory and "
            f"{len(shown) - len(self.blocking())} advisory violation(s)"
        ]
        lines += [f"  [{self.levels[x.rule.name]}] {x.message}" for x in shown]
        return "\n".join(lines)


def _level(value: Any, where: str) -> str:
    level = value.get("enforcementLevel") if isinstance(value, Mapping) else value
    if level is not None and level not in LEVELS:
        raise ValueError(f"{where}: enforcementLevel {level!r} is not one of {', '.join(LEVELS)}")
    return str(level) if level is not None else ""


def enforcement_levels(pack_config: Mapping[str, Any]) -> dict[str, str]:
    """Each policy's level: its own entry, else `all`, else the pack default (as the Pulumi CLI resolves it)."""
    everything = _level(pack_config.get("all"), "all")
    levels = {}
    for rule in v.ALL_RULES:
        default = "mandatory" if rule.mandatory_by_default else "advisory"
        levels[rule.name] = _level(pack_config.get(rule.name), rule.name) or everything or default
    return levels


def rule_configs(pack_config: Mapping[str, Any], environment: str) -> dict[str, v.GuardrailConfig]:
    names = {rule.name for rule in v.ALL_RULES}
    unknown = set(pack_config) - names - {"all"}
    if unknown:
        raise ValueError(f"policy config names unknown policies {sorted(unknown)}; policies: {sorted(names)}")
    configs = {}
    for rule in v.ALL_RULES:
        entry = pack_config.get(rule.name)
        config = v.GuardrailConfig.from_policy_config(entry if isinstance(entry, Mapping) else None)
        configs[rule.name] = config if config.environment else replace(config, environment=environment)
    return configs


def stack_environment(stack_file: Path) -> str:
    document = yaml.safe_load(stack_file.read_text()) or {}
    return str((document.get("config") or {}).get("vllm-gcp:environment", "dev"))


def default_config_file(environment: str) -> Path:
    return CONFIG_DIR / ("prod.json" if environment == "prod" else "nonprod.json")


def check_stack(
    stack: str, config_file: Path | None = None, plan: Mapping[str, Any] | None = None
) -> StackResult:
    """Plan `stack` (unless its `plan` is given) and run every guardrail with the pack config's semantics."""
    from components.plan import resolve_stack, run_plan  # the plan, not the pack, needs the components

    name, stack_file = resolve_stack(stack)
    environment = stack_environment(stack_file)
    config_file = config_file or default_config_file(environment)
    pack_config = json.loads(config_file.read_text())
    records = (plan or run_plan(stack))["resources"]
    resources = [v.Resource.from_plan(record) for record in records]
    report = v.evaluate_stack(resources, per_rule=rule_configs(pack_config, environment))
    return StackResult(name, environment, config_file, report, enforcement_levels(pack_config))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policy.offline", description=__doc__.splitlines()[0])
    parser.add_argument("stacks", nargs="*", help="stack names or stack YAML paths (default: all committed)")
    parser.add_argument("--config", type=Path, help="a policy pack config file (default: by environment)")
    args = parser.parse_args(argv)
    from components.config import ConfigError
    from components.plan import ROOT

    stacks = args.stacks or sorted(
        p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (ROOT / "stacks").glob("Pulumi.*.yaml")
    )
    status = 0
    for stack in stacks:
        try:
            result = check_stack(stack, args.config)
        except (ConfigError, ValueError, OSError) as error:
            print(f"error: stack {stack}: {error}", file=sys.stderr)
            return 2
        print(result.render())
        status = max(status, 1 if result.blocking() else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
