"""An `openai.AsyncOpenAI` for a deployed stack, built from its outputs, for either platform.

The stack exports the same two things on both platforms: `openaiBaseUrl` and `servedModelName`. Only the credential
differs:
- gce: the vLLM `--api-key`, exported as the Pulumi secret `apiKey`;
- vertex: a Google OAuth access token from Application Default Credentials (ADC), refreshed before it expires.

Outputs come from a dict, a JSON file, or `pulumi stack output --json --show-secrets --stack NAME`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import openai
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.alias_generators import to_camel

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# google-auth itself refreshes 3m45s before expiry; a little more margin covers a long streamed request.
DEFAULT_REFRESH_MARGIN = dt.timedelta(minutes=5)
# Generation streams can take minutes; the LB's backend timeout is >= 300 s.
DEFAULT_TIMEOUT_S = 600.0
PULUMI_TIMEOUT_S = 120.0
# Fields whose values must never be echoed back in an error message.
_SECRET_FIELDS = frozenset({"apiKey", "api_key"})


class OutputsError(ValueError):
    """The stack outputs are missing, unreadable or invalid. The message says which key and how to fix it."""


class StackOutputs(BaseModel):
    """The subset of `pulumi stack output --json --show-secrets` that clients need.

    Unknown keys are ignored on purpose: a stack may export more than clients use.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    platform: Literal["gce", "vertex"]
    openai_base_url: str
    served_model_name: str = Field(min_length=1)
    # gce
    api_key: SecretStr | None = None
    load_balancer_ip: str | None = None
    # vertex
    endpoint_id: str | None = None
    endpoint_name: str | None = None
    dedicated_endpoint_dns: str | None = None
    project: str | None = None
    region: str | None = None

    @model_validator(mode="after")
    def _check(self) -> StackOutputs:
        url = self.openai_base_url
        if not url.startswith(("http://", "https://")) or not url.rstrip("/").endswith("/v1"):
            raise ValueError(
                f"openaiBaseUrl: {url!r} is not an OpenAI base URL; it must start with http:// or https:// and "
                "end in /v1 (e.g. https://llm.example.com/v1). Re-export the outputs of a stack deployed by this "
                "project."
            )
        if self.platform == "gce":
            if self.api_key is None or not self.api_key.get_secret_value():
                raise ValueError(
                    "apiKey: missing for platform gce. Export the outputs with `--show-secrets` "
                    "(`pulumi stack output --json --show-secrets --stack NAME`)."
                )
            if self.api_key.get_secret_value() == "[secret]":
                raise ValueError(
                    "apiKey: is the redacted placeholder '[secret]'. Export the outputs with `--show-secrets`."
                )
        return self

    @property
    def public_root_url(self) -> str:
        """The public URL without the trailing `/v1`, where `/health` and (never) `/metrics` live."""
        return self.openai_base_url.rstrip("/").removesuffix("/v1")


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid stack outputs ({source}):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(outputs)"
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        # Echo only a scalar of a non-secret key: a "missing" error's input is the whole mapping, apiKey included.
        echo = (
            key not in _SECRET_FIELDS
            and item["type"] != "value_error"
            and isinstance(value, str | int | float)
        )
        shown = f" (got {value!r})" if echo else ""
        lines.append(f"  {key}: {message}{shown}")
    return "\n".join(lines)


def parse_outputs(raw: Mapping[str, Any], source: str = "outputs") -> StackOutputs:
    """Validate a stack-outputs mapping; raise `OutputsError` naming the bad key (never echoing the key's value)."""
    if not isinstance(raw, Mapping):
        raise OutputsError(f"{source}: expected a JSON object of stack outputs, got {type(raw).__name__}")
    try:
        return StackOutputs.model_validate(dict(raw))
    except ValidationError as error:
        raise OutputsError(_format_validation_error(error, source)) from None


def read_outputs_file(path: Path) -> StackOutputs:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise OutputsError(
            f"--outputs {path}: cannot read it ({error.strerror}). Create it with "
            f"`pulumi stack output --json --show-secrets --stack NAME > {path}`."
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise OutputsError(
            f"--outputs {path}: not valid JSON ({error.msg} at line {error.lineno})."
        ) from None
    return parse_outputs(raw, source=str(path))


Runner = Callable[..., subprocess.CompletedProcess[str]]


def read_stack_outputs(stack: str, cwd: Path | None = None, runner: Runner = subprocess.run) -> StackOutputs:
    """Run `pulumi stack output --json --show-secrets --stack STACK` (needs the pulumi CLI and a login)."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise OutputsError(
            f"--stack {stack}: the `pulumi` CLI is not on PATH. Install it (https://www.pulumi.com/docs/install/), "
            f"or export the outputs where it is installed with `pulumi stack output --json --show-secrets "
            f"--stack {stack} > outputs.json` and pass `--outputs outputs.json` instead."
        )
    command = [pulumi, "stack", "output", "--json", "--show-secrets", "--stack", stack]
    try:
        done = runner(command, cwd=cwd, capture_output=True, text=True, timeout=PULUMI_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise OutputsError(
            f"--stack {stack}: `pulumi stack output` did not finish in {PULUMI_TIMEOUT_S:.0f} s"
        ) from None
    if done.returncode != 0:
        # stderr is pulumi's own diagnostic (e.g. "no stack named 'x' found"); it never contains output values.
        raise OutputsError(
            f"--stack {stack}: `pulumi stack output` exited {done.returncode}: {done.stderr.strip()[:500]}. "
            "Run it from the project directory (or pass --cwd) and check `pulumi stack ls`."
        )
    try:
        raw = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise OutputsError(
            f"--stack {stack}: `pulumi stack output --json` printed something that is not JSON"
        ) from None
    return parse_outputs(raw, source=f"stack {stack}")


def load_outputs(
    *,
    stack: str | None = None,
    outputs_file: Path | None = None,
    outputs: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
) -> StackOutputs:
    """Exactly one source: a stack name, an outputs JSON file, or an already-loaded mapping."""
    given = [
        name
        for name, value in (("stack", stack), ("outputs_file", outputs_file), ("outputs", outputs))
        if value
    ]
    if len(given) != 1:
        raise OutputsError(f"give exactly one of --stack NAME or --outputs FILE (got {given or 'neither'})")
    if stack:
        return read_stack_outputs(stack, cwd=cwd)
    if outputs_file:
        return read_outputs_file(Path(outputs_file))
    assert outputs is not None
    return parse_outputs(outputs)


class GoogleCredentials(Protocol):
    """The part of `google.auth.credentials.Credentials` this module uses (a fake implements it in tests)."""

    token: str | None
    expiry: dt.datetime | None

    def refresh(self, request: Any) -> None: ...


def _utcnow_naive() -> dt.datetime:
    # google-auth keeps `expiry` as a naive UTC datetime.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _default_google_request() -> Any:
    try:
        from google.auth.transport.requests import Request
    except ImportError:  # google-auth's HTTP transport needs the optional `requests` package
        raise RuntimeError(
            "refreshing a Google access token needs the `requests` package: pip install 'google-auth[requests]'"
        ) from None
    return Request()


class GoogleTokenSource:
    """An async callable that returns a valid Google access token, refreshing it `margin` before expiry.

    `AsyncOpenAI(api_key=token_source)` awaits it before every request, so a long-running batch never sends an
    expired token. google-auth's refresh is blocking I/O, so it runs in a worker thread; a thread lock makes
    concurrent callers share one refresh.
    """

    def __init__(
        self,
        credentials: GoogleCredentials | None = None,
        *,
        margin: dt.timedelta = DEFAULT_REFRESH_MARGIN,
        clock: Callable[[], dt.datetime] = _utcnow_naive,
        request_factory: Callable[[], Any] = _default_google_request,
    ) -> None:
        self._credentials = credentials
        self._margin = margin
        self._clock = clock
        self._request_factory = request_factory
        self._lock = threading.Lock()

    def _needs_refresh(self) -> bool:
        creds = self._credentials
        if creds is None or not creds.token:
            return True
        return creds.expiry is not None and self._clock() >= creds.expiry - self._margin

    def _refresh_blocking(self) -> None:
        with self._lock:
            if not self._needs_refresh():  # another caller refreshed while this one waited
                return
            if self._credentials is None:
                self._credentials = _application_default_credentials()
            request = self._request_factory()
            try:
                self._credentials.refresh(request)
            except Exception as error:
                raise RuntimeError(
                    f"could not refresh the Google access token ({type(error).__name__}); check ADC with "
                    "`gcloud auth application-default print-access-token`"
                ) from error
            if not self._credentials.token:
                raise RuntimeError("google-auth refreshed the credentials but returned no access token")

    async def __call__(self) -> str:
        if self._needs_refresh():
            await asyncio.to_thread(self._refresh_blocking)
        assert self._credentials is not None and self._credentials.token
        return self._credentials.token


def _application_default_credentials() -> GoogleCredentials:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError:
        raise RuntimeError(
            "no Google Application Default Credentials found: run `gcloud auth application-default login`, "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or run on GCP)"
        ) from None
    return credentials


def build_async_client(
    outputs: StackOutputs,
    *,
    token_source: Callable[[], Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_retries: int = 2,
) -> openai.AsyncOpenAI:
    """An `AsyncOpenAI` pointed at the stack. `token_source` overrides ADC on vertex (tests pass a fake)."""
    api_key: str | Callable[[], Any]
    if outputs.platform == "gce":
        assert outputs.api_key is not None  # validated in StackOutputs
        api_key = outputs.api_key.get_secret_value()
    else:
        api_key = token_source if token_source is not None else GoogleTokenSource()
    return openai.AsyncOpenAI(
        api_key=api_key, base_url=outputs.openai_base_url, timeout=timeout, max_retries=max_retries
    )


def client_from_outputs(
    outputs: StackOutputs | Mapping[str, Any],
    *,
    token_source: Callable[[], Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_retries: int = 2,
) -> openai.AsyncOpenAI:
    """`build_async_client` for either parsed outputs or the raw mapping `pulumi stack output --json` prints."""
    parsed = outputs if isinstance(outputs, StackOutputs) else parse_outputs(outputs)
    return build_async_client(parsed, token_source=token_source, timeout=timeout, max_retries=max_retries)
