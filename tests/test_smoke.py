"""components.smoke against the fake server: it passes on a healthy endpoint and fails, with the reason, on each
misconfiguration it exists to catch."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from components.client import GoogleTokenSource, build_async_client, parse_outputs
from components.smoke import main, run_smoke
from tests.fake_openai import VERTEX_PREFIX, FakeBehaviour, FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
API_KEY = "sk-smoke-secret-5f2c9a"


def outputs_file(tmp_path: Path, outputs: dict[str, Any]) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return path


def run_main(
    tmp_path: Path, outputs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    code = main(["--outputs", str(outputs_file(tmp_path, outputs)), "--timeout", "10"])
    captured = capsys.readouterr()
    assert API_KEY not in captured.out + captured.err  # the key is never printed, pass or fail
    return code, captured.out, captured.err


def test_healthy_gce_endpoint_passes_every_check(tmp_path: Path) -> None:
    behaviour = FakeBehaviour(api_key=API_KEY, ttft_schedule_s=(0.02,), itl_s=0.002)
    with FakeOpenAIServer(behaviour) as server:
        done = subprocess.run(
            [sys.executable, "-m", "components.smoke", "--outputs", str(outputs_file(tmp_path, server.gce_outputs()))],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        paths = [(r.method, r.path, r.status) for r in server.requests]
    assert done.returncode == 0, done.stdout + done.stderr
    assert API_KEY not in done.stdout + done.stderr
    for check in ("models", "chat", "chat (streamed)", "auth required", "internal paths private"):
        assert any(line.startswith("PASS") and f"  {check}  " in line for line in done.stdout.splitlines()), (
            check
        )
    assert "TTFT " in done.stdout and "tokens/s" in done.stdout
    assert "smoke: all checks passed" in done.stdout
    # It really probed the key check and the internal paths through the public URL.
    assert ("GET", "/v1/models", 401) in paths
    assert ("GET", "/metrics", 404) in paths
    assert {("GET", "/tokenize", 404), ("GET", "/invocations", 404)} <= set(paths)


def test_metrics_reachable_through_the_lb_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(FakeBehaviour(api_key=API_KEY, expose_internal_publicly=True)) as server:
        code, out, err = run_main(tmp_path, server.gce_outputs(), capsys)
    assert code == 1
    assert "FAIL  internal paths private  GET /metrics through the public URL returned HTTP 200" in out
    assert "smoke: FAILED 1 of 5 checks" in err


def test_endpoint_open_without_a_key_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(FakeBehaviour(api_key=API_KEY, skip_auth=True)) as server:
        code, out, _ = run_main(tmp_path, server.gce_outputs(), capsys)
    assert code == 1
    assert "FAIL  auth required" in out
    assert "with no key returned HTTP 200, expected 401 or 403" in out


def test_wrong_served_model_name_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(FakeBehaviour(api_key=API_KEY)) as server:
        code, out, _ = run_main(tmp_path, {**server.gce_outputs(), "servedModelName": "gemma-4-31b"}, capsys)
    assert code == 1
    assert "FAIL  models" in out and "served model 'gemma-4-31b' is not in /v1/models" in out
    assert "FAIL  chat " in out and "HTTP 404" in out


def test_wrong_key_fails_with_http_401(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer(FakeBehaviour(api_key="the-real-key")) as server:
        code, out, _ = run_main(tmp_path, {**server.gce_outputs(), "apiKey": API_KEY}, capsys)
    assert code == 1
    assert "FAIL  models" in out and "HTTP 401" in out


def test_unreachable_endpoint_fails_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outputs = {"platform": "gce", "openaiBaseUrl": f"http://127.0.0.1:{port}/v1", "servedModelName": "m",
               "apiKey": API_KEY}  # fmt: skip
    code, out, _ = run_main(tmp_path, outputs, capsys)
    assert code == 1
    assert out.count("FAIL") == 5 and "cannot connect" in out


def test_invalid_outputs_exit_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(
        tmp_path, {"platform": "gce", "openaiBaseUrl": "http://x/v1", "apiKey": API_KEY}, capsys
    )
    assert code == 2
    assert "servedModelName: Field required" in err


def test_stack_option_reads_pulumi_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["--stack", "prod"]) == 2
    assert "`pulumi` CLI is not on PATH" in capsys.readouterr().err

    with FakeOpenAIServer(FakeBehaviour(api_key=API_KEY)) as server:
        pulumi = tmp_path / "bin" / "pulumi"
        pulumi.parent.mkdir()
        pulumi.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(server.gce_outputs()))})\n")
        pulumi.chmod(pulumi.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{pulumi.parent}{os.pathsep}{os.environ['PATH']}")
        assert main(["--stack", "prod"]) == 0
    assert API_KEY not in capsys.readouterr().out


class FakeCredentials:
    def __init__(self) -> None:
        self.token: str | None = None
        self.expiry: dt.datetime | None = None

    def refresh(self, request: Any) -> None:
        self.token = "ya29.smoke-token"
        self.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)


def test_vertex_endpoint_passes_with_a_google_token() -> None:
    behaviour = FakeBehaviour(api_key=None, accepted_tokens={"ya29.smoke-token"}, path_prefix=VERTEX_PREFIX)
    with FakeOpenAIServer(behaviour) as server:
        outputs = parse_outputs(server.vertex_outputs())
        source = GoogleTokenSource(FakeCredentials(), request_factory=lambda: None)
        results = asyncio.run(run_smoke(outputs, client=build_async_client(outputs, token_source=source)))
        authorizations = {r.authorization for r in server.requests if r.status == 200}
    assert [(r.name, r.status) for r in results] == [
        ("models", "PASS"),
        ("chat", "PASS"),
        ("chat (streamed)", "PASS"),
        ("auth required", "PASS"),
        ("internal paths private", "SKIP"),
    ]
    assert authorizations == {"Bearer ya29.smoke-token"}
