"""Opt-in: deploy the dev stack for real on an ephemeral stack, smoke-check it, destroy it.

Skipped unless VLLM_GCP_INTEGRATION_PROJECT names a GCP project with L4 quota, the pulumi CLI is on PATH and
Application Default Credentials work. It costs real money (one g2-standard-8 for ~15 minutes) and is never run in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("VLLM_GCP_INTEGRATION_PROJECT")


def _skip_reason() -> str | None:
    if not PROJECT:
        return "needs real GCP: set VLLM_GCP_INTEGRATION_PROJECT (a project with L4 quota) to run"
    if shutil.which("pulumi") is None:
        return "needs the pulumi CLI on PATH (https://www.pulumi.com/docs/install/)"
    try:
        import google.auth

        google.auth.default()
    except Exception as error:  # any ADC failure means: no credentials here
        return f"needs Application Default Credentials (gcloud auth application-default login): {error}"
    return None


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]


def test_dev_stack_serves_openai_requests_and_hides_metrics() -> None:
    from pulumi import automation as auto

    from components import smoke

    stack_name = f"it-{int(time.time())}"
    stack = auto.create_or_select_stack(stack_name=stack_name, work_dir=str(ROOT))
    try:
        stack.set_all_config(
            {
                "gcp:project": auto.ConfigValue(PROJECT or ""),
                "gcp:region": auto.ConfigValue("us-central1"),
                "vllm-gcp:platform": auto.ConfigValue("gce"),
                "vllm-gcp:gce": auto.ConfigValue('{"zones": ["us-central1-a", "us-central1-b"]}'),
                "vllm-gcp:hfToken": auto.ConfigValue(os.environ.get("HF_TOKEN", ""), secret=True),
            }
        )
        result = stack.up(on_output=print, timeout=3600)
        outputs = {key: value.value for key, value in result.outputs.items()}
        outputs_file = ROOT / "out" / f"{stack_name}-outputs.json"
        outputs_file.parent.mkdir(exist_ok=True)
        outputs_file.write_text(json.dumps(outputs))
        assert smoke.main(["--outputs", str(outputs_file)]) == 0
    finally:
        stack.destroy(on_output=print)
        stack.workspace.remove_stack(stack_name)
