"""Smoke check after `pulumi up`: `python -m components.smoke --stack prod` (or `--outputs outputs.json`).

Checks, in order, and reports every one (PASS/FAIL/SKIP) before exiting non-zero if any failed:
1. `GET /v1/models` lists the served model name;
2. a non-streamed chat completion answers, from that model;
3. a streamed chat completion answers, from that model; prints TTFT and tokens/s (vllm bench definitions);
4. requests without the key, or with a wrong one, are rejected (401/403);
5. gce only: `/metrics`, `/tokenize` and `/invocations` are not reachable through the public URL (the LB's Cloud
   Armor policy denies everything outside `/v1/` and `/health` with 404; 403 is accepted too).
Nothing it prints contains the API key or the access token.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

from components.client import OutputsError, StackOutputs, build_async_client, load_outputs
from components.loadtest import timed_chat_stream

REJECTED_STATUS = frozenset({401, 403})
DENIED_STATUS = frozenset({403, 404})
# vLLM serves these outside /v1, where its --api-key does not apply; only the LB policy keeps them private.
INTERNAL_PATHS = ("/metrics", "/tokenize", "/invocations")
SMOKE_PROMPT = "Reply with one short sentence: what is 2 + 2?"
WRONG_KEY = "smoke-check-wrong-key"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # PASS | FAIL | SKIP
    detail: str


class CheckFailed(Exception):
    """Raised inside a check with the reason shown to the user."""


def _describe(error: BaseException) -> str:
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {error.message}"
    if isinstance(error, openai.APIConnectionError | httpx.TransportError):
        return f"cannot connect ({type(error).__name__}: {error})"
    return f"{type(error).__name__}: {error}"


async def check_models(client: openai.AsyncOpenAI, outputs: StackOutputs) -> str:
    page = await client.models.list()
    served = [model.id for model in page.data]
    if outputs.served_model_name not in served:
        raise CheckFailed(
            f"served model {outputs.served_model_name!r} is not in /v1/models, which lists {served}"
        )
    return f"/v1/models lists {served}"


async def check_chat(client: openai.AsyncOpenAI, outputs: StackOutputs, max_tokens: int) -> str:
    response = await client.chat.completions.create(
        model=outputs.served_model_name,
        messages=[{"role": "user", "content": SMOKE_PROMPT}],
        max_tokens=max_tokens,
        temperature=0,
    )
    if response.model != outputs.served_model_name:
        raise CheckFailed(f"answered by model {response.model!r}, expected {outputs.served_model_name!r}")
    content = response.choices[0].message.content if response.choices else None
    if not content:
        raise CheckFailed("the completion has no content")
    tokens = response.usage.completion_tokens if response.usage else "?"
    return f"{tokens} tokens: {content[:60]!r}"


async def check_stream(client: openai.AsyncOpenAI, outputs: StackOutputs, max_tokens: int) -> str:
    record = await timed_chat_stream(
        client,
        outputs.served_model_name,
        [{"role": "user", "content": SMOKE_PROMPT}],
        max_tokens=max_tokens,
    )
    if not record.success:
        raise CheckFailed(f"the stream failed: {record.error}")
    if record.model != outputs.served_model_name:
        raise CheckFailed(f"streamed by model {record.model!r}, expected {outputs.served_model_name!r}")
    if not record.text.strip():
        raise CheckFailed("the stream carried no content")
    decode_s = record.latency_s - record.ttft_s
    decode_rate = (record.output_tokens - 1) / decode_s if record.output_tokens > 1 and decode_s > 0 else 0.0
    overall_rate = record.output_tokens / record.latency_s if record.latency_s > 0 else 0.0
    return (
        f"TTFT {record.ttft_s * 1000:.0f} ms; {record.output_tokens} tokens in {record.latency_s:.2f} s: "
        f"{overall_rate:.1f} tokens/s overall, {decode_rate:.1f} tokens/s after the first token"
    )


async def check_auth_required(http: httpx.AsyncClient, outputs: StackOutputs) -> str:
    url = outputs.openai_base_url.rstrip("/") + "/models"
    seen = []
    for label, headers in (("no key", {}), ("a wrong key", {"Authorization": f"Bearer {WRONG_KEY}"})):
        response = await http.get(url, headers=headers)
        if response.status_code not in REJECTED_STATUS:
            raise CheckFailed(
                f"GET /v1/models with {label} returned HTTP {response.status_code}, expected 401 or 403: "
                "the endpoint is open to anyone (is vLLM running without --api-key?)"
            )
        seen.append(f"{label} -> {response.status_code}")
    return ", ".join(seen)


async def check_internal_paths_private(http: httpx.AsyncClient, outputs: StackOutputs) -> str:
    seen = []
    for path in INTERNAL_PATHS:
        response = await http.get(outputs.public_root_url + path)
        if response.status_code not in DENIED_STATUS:
            raise CheckFailed(
                f"GET {path} through the public URL returned HTTP {response.status_code}, expected 403/404: "
                "the load balancer's security policy must deny everything outside /v1/ and /health"
            )
        seen.append(f"{path} -> {response.status_code}")
    return ", ".join(seen)


async def _run_check(name: str, check: Callable[[], Awaitable[Any]]) -> CheckResult:
    try:
        detail = await check()
    except CheckFailed as failure:
        return CheckResult(name, "FAIL", str(failure))
    except (openai.OpenAIError, httpx.HTTPError, RuntimeError) as error:
        return CheckResult(name, "FAIL", _describe(error))
    return CheckResult(name, "PASS", detail or "")


async def run_smoke(
    outputs: StackOutputs,
    *,
    client: openai.AsyncOpenAI | None = None,
    timeout: float = 120.0,
    max_tokens: int = 32,
) -> list[CheckResult]:
    client = client or build_async_client(outputs, timeout=timeout, max_retries=1)
    results: list[CheckResult] = []
    async with client, httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
        results.append(await _run_check("models", lambda: check_models(client, outputs)))
        results.append(await _run_check("chat", lambda: check_chat(client, outputs, max_tokens)))
        results.append(await _run_check("chat (streamed)", lambda: check_stream(client, outputs, max_tokens)))
        results.append(await _run_check("auth required", lambda: check_auth_required(http, outputs)))
        if outputs.platform == "gce":
            results.append(
                await _run_check(
                    "internal paths private", lambda: check_internal_paths_private(http, outputs)
                )
            )
        else:
            results.append(
                CheckResult(
                    "internal paths private",
                    "SKIP",
                    "vertex: there is no public path; every route needs an IAM-authorised token",
                )
            )
    return results


def render(results: Sequence[CheckResult]) -> str:
    width = max(len(result.name) for result in results)
    return "\n".join(f"{result.status:<4}  {result.name:<{width}}  {result.detail}" for result in results)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m components.smoke", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--stack", help="Pulumi stack name (runs `pulumi stack output --json --show-secrets`)"
    )
    source.add_argument("--outputs", type=Path, help="JSON file of the stack outputs")
    parser.add_argument("--cwd", type=Path, help="Pulumi project directory for --stack (default: current)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="per-request timeout, seconds (default 120)"
    )
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per test completion (default 32)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        outputs = load_outputs(stack=args.stack, outputs_file=args.outputs, cwd=args.cwd)
    except OutputsError as error:
        print(f"smoke: {error}", file=sys.stderr)
        return 2
    print(f"smoke: {outputs.platform} endpoint {outputs.openai_base_url}, model {outputs.served_model_name}")
    results = asyncio.run(run_smoke(outputs, timeout=args.timeout, max_tokens=args.max_tokens))
    print(render(results))
    failed = [result for result in results if result.status == "FAIL"]
    if failed:
        print(
            f"smoke: FAILED {len(failed)} of {len(results)} checks: "
            + "; ".join(f"{r.name}: {r.detail}" for r in failed),
            file=sys.stderr,
        )
        return 1
    print("smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
