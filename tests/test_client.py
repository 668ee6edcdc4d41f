"""components.client: outputs loading and validation, and the AsyncOpenAI for each platform (real SDK, fake server)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from components import client as client_module
from components.client import (
    GoogleTokenSource,
    OutputsError,
    build_async_client,
    client_from_outputs,
    load_outputs,
    parse_outputs,
    read_outputs_file,
    read_stack_outputs,
)
from tests.fake_openai import VERTEX_PREFIX, FakeBehaviour, FakeOpenAIServer

API_KEY = "sk-test-0123456789abcdef"
GCE = {
    "platform": "gce",
    "openaiBaseUrl": "https://llm.example.com/v1",
    "servedModelName": "gemma-4-26b",
    "apiKey": API_KEY,
    "loadBalancerIp": "203.0.113.10",
}
VERTEX = {
    "platform": "vertex",
    "openaiBaseUrl": f"https://123.us-central1-9.prediction.vertexai.goog{VERTEX_PREFIX}/v1",
    "servedModelName": "gemma-4-26b",
    "endpointId": "1234567890",
    "endpointName": "projects/p/locations/us-central1/endpoints/1234567890",
    "dedicatedEndpointDns": "123.us-central1-9.prediction.vertexai.goog",
    "project": "p",
    "region": "us-central1",
}


# --- outputs -------------------------------------------------------------------------------------------------
def test_parse_gce_outputs_keeps_the_key_secret() -> None:
    outputs = parse_outputs(GCE)
    assert outputs.platform == "gce"
    assert outputs.api_key is not None and outputs.api_key.get_secret_value() == API_KEY
    assert outputs.public_root_url == "https://llm.example.com"
    # The key never shows in a repr, str or dump that could end up in a log.
    assert API_KEY not in repr(outputs)
    assert API_KEY not in str(outputs)
    assert API_KEY not in outputs.model_dump_json()


def test_parse_vertex_outputs_needs_no_key_and_ignores_extra_keys() -> None:
    outputs = parse_outputs({**VERTEX, "someFutureOutput": 1})
    assert outputs.platform == "vertex"
    assert outputs.api_key is None
    assert outputs.endpoint_id == "1234567890"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"apiKey": None}, "apiKey: missing for platform gce"),
        ({"apiKey": "[secret]"}, "apiKey: is the redacted placeholder"),
        ({"platform": "gke"}, "platform: Input should be 'gce' or 'vertex' (got 'gke')"),
        (
            {"openaiBaseUrl": "https://llm.example.com"},
            "openaiBaseUrl: 'https://llm.example.com' is not an OpenAI",
        ),
        ({"openaiBaseUrl": "llm.example.com/v1"}, "must start with http:// or https://"),
        ({"servedModelName": ""}, "servedModelName: String should have at least 1 character"),
    ],
)
def test_bad_outputs_name_the_key_and_the_fix(change: dict[str, Any], expected: str) -> None:
    raw = {key: value for key, value in {**GCE, **change}.items() if value is not None}
    with pytest.raises(OutputsError) as caught:
        parse_outputs(raw)
    assert expected in str(caught.value)


def test_missing_required_output_is_named() -> None:
    raw = {key: value for key, value in GCE.items() if key != "servedModelName"}
    with pytest.raises(OutputsError, match="servedModelName: Field required") as caught:
        parse_outputs(raw)
    assert API_KEY not in str(caught.value)  # a "missing" error's input is the whole mapping


def test_an_invalid_api_key_value_is_never_echoed() -> None:
    secret_number = 987654321987
    with pytest.raises(OutputsError) as caught:
        parse_outputs({**GCE, "apiKey": secret_number})
    assert "apiKey" in str(caught.value)
    assert str(secret_number) not in str(caught.value)


def test_outputs_file_errors(tmp_path: Path) -> None:
    with pytest.raises(OutputsError, match="cannot read it"):
        read_outputs_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(OutputsError, match="not valid JSON"):
        read_outputs_file(bad)
    good = tmp_path / "outputs.json"
    good.write_text(json.dumps(GCE))
    assert read_outputs_file(good).served_model_name == "gemma-4-26b"


def test_load_outputs_needs_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(OutputsError, match="exactly one of --stack NAME or --outputs FILE"):
        load_outputs()
    with pytest.raises(OutputsError, match="exactly one"):
        load_outputs(stack="prod", outputs=GCE)
    assert load_outputs(outputs=GCE).platform == "gce"


def test_stack_without_pulumi_cli_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no pulumi
    with pytest.raises(OutputsError) as caught:
        read_stack_outputs("prod")
    message = str(caught.value)
    assert "`pulumi` CLI is not on PATH" in message
    assert "--outputs outputs.json" in message


def _fake_pulumi(directory: Path, script: str) -> Path:
    path = directory / "pulumi"
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_stack_outputs_come_from_pulumi_with_show_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    record = tmp_path / "argv.json"
    _fake_pulumi(
        tmp_path,
        "import json, os, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps({{'argv': sys.argv[1:], 'cwd': os.getcwd()}}))\n"
        f"print(json.dumps({GCE!r}))\n",
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    project = tmp_path / "project"
    project.mkdir()
    outputs = load_outputs(stack="prod", cwd=project)
    assert outputs.api_key is not None and outputs.api_key.get_secret_value() == API_KEY
    called = json.loads(record.read_text())
    assert called["argv"] == ["stack", "output", "--json", "--show-secrets", "--stack", "prod"]
    assert Path(called["cwd"]) == project


def test_failing_pulumi_reports_its_stderr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_pulumi(
        tmp_path, "import sys\nsys.stderr.write(\"error: no stack named 'prod' found\\n\")\nsys.exit(255)\n"
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(OutputsError, match=r"exited 255: error: no stack named 'prod' found"):
        read_stack_outputs("prod")


# --- gce client ----------------------------------------------------------------------------------------------
def test_gce_client_sends_the_api_key_as_bearer() -> None:
    with FakeOpenAIServer(FakeBehaviour(api_key=API_KEY)) as server:
        outputs = parse_outputs({**GCE, "openaiBaseUrl": server.base_url})

        async def call() -> str:
            async with build_async_client(outputs) as client:
                response = await client.chat.completions.create(
                    model=outputs.served_model_name, messages=[{"role": "user", "content": "hello"}]
                )
                return response.choices[0].message.content or ""

        assert asyncio.run(call()).startswith("echo: hello")
        assert [r.authorization for r in server.requests] == [f"Bearer {API_KEY}"]


# --- vertex token path ---------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, 12, 0, 0)

    def __call__(self) -> dt.datetime:
        return self.now


class FakeCredentials:
    """Stands in for google-auth credentials: each refresh mints the next token, valid for one hour."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.token: str | None = None
        self.expiry: dt.datetime | None = None
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        assert request == "fake-request"
        self.refreshes += 1
        self.token = f"ya29.token-{self.refreshes}"
        self.expiry = self.clock.now + dt.timedelta(hours=1)


def _vertex_server(tokens: set[str]) -> FakeOpenAIServer:
    return FakeOpenAIServer(FakeBehaviour(api_key=None, accepted_tokens=tokens, path_prefix=VERTEX_PREFIX))


def test_vertex_token_is_refreshed_before_expiry() -> None:
    clock = FakeClock()
    credentials = FakeCredentials(clock)
    source = GoogleTokenSource(credentials, clock=clock, request_factory=lambda: "fake-request")
    with _vertex_server({"ya29.token-1", "ya29.token-2"}) as server:
        outputs = parse_outputs({**VERTEX, "openaiBaseUrl": server.base_url})

        async def scenario() -> None:
            async with build_async_client(outputs, token_source=source, max_retries=0) as client:
                await client.models.list()  # first use: fetch token-1
                clock.now += dt.timedelta(minutes=50)  # 10 min left: still outside the 5 min margin
                await client.models.list()
                clock.now += dt.timedelta(minutes=6)  # 4 min left: inside the margin, refresh first
                await client.chat.completions.create(
                    model=outputs.served_model_name, messages=[{"role": "user", "content": "hi"}]
                )

        asyncio.run(scenario())
        assert [r.authorization for r in server.requests] == [
            "Bearer ya29.token-1",
            "Bearer ya29.token-1",
            "Bearer ya29.token-2",
        ]
        assert all(r.status == 200 for r in server.requests)
        assert server.requests[0].path == f"{VERTEX_PREFIX}/v1/models"
    assert credentials.refreshes == 2


def test_concurrent_requests_share_one_refresh() -> None:
    class SlowCredentials(FakeCredentials):
        def refresh(self, request: Any) -> None:
            time.sleep(0.05)  # a real token exchange takes a while: every caller arrives during it
            super().refresh(request)

    clock = FakeClock()
    credentials = SlowCredentials(clock)
    source = GoogleTokenSource(credentials, clock=clock, request_factory=lambda: "fake-request")

    async def many() -> set[str]:
        return set(await asyncio.gather(*(source() for _ in range(20))))

    assert asyncio.run(many()) == {"ya29.token-1"}
    assert credentials.refreshes == 1


def test_adc_is_used_when_no_credentials_are_given(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth

    clock = FakeClock()
    credentials = FakeCredentials(clock)
    seen_scopes: list[Any] = []

    def fake_default(scopes: Any = None, **_: Any) -> tuple[FakeCredentials, str]:
        seen_scopes.append(scopes)
        return credentials, "p"

    monkeypatch.setattr(google.auth, "default", fake_default)
    source = GoogleTokenSource(clock=clock, request_factory=lambda: "fake-request")
    assert asyncio.run(source()) == "ya29.token-1"
    assert seen_scopes == [["https://www.googleapis.com/auth/cloud-platform"]]


def test_missing_adc_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_credentials(**_: Any) -> None:
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(RuntimeError, match="gcloud auth application-default login"):
        asyncio.run(GoogleTokenSource()())


def test_a_failed_refresh_is_a_clear_error() -> None:
    class Broken(FakeCredentials):
        def refresh(self, request: Any) -> None:
            raise OSError("network unreachable")

    source = GoogleTokenSource(Broken(FakeClock()), request_factory=lambda: "fake-request")
    with pytest.raises(RuntimeError, match="could not refresh the Google access token"):
        asyncio.run(source())


def test_vertex_client_without_token_source_uses_adc_source() -> None:
    client = build_async_client(parse_outputs(VERTEX))
    assert isinstance(client._api_key_provider, client_module.GoogleTokenSource)
    assert str(client.base_url) == VERTEX["openaiBaseUrl"] + "/"


def test_client_from_outputs_accepts_the_raw_mapping() -> None:
    with FakeOpenAIServer(FakeBehaviour(api_key=API_KEY)) as server:

        async def call() -> list[str]:
            async with client_from_outputs({**GCE, "openaiBaseUrl": server.base_url}) as client:
                return [model.id async for model in client.models.list()]

        assert asyncio.run(call()) == ["gemma-4-26b"]
    with pytest.raises(OutputsError, match="apiKey"):
        client_from_outputs({**GCE, "apiKey": "[secret]"})
