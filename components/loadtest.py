"""Load report: `python -m components.loadtest --stack prod --concurrency 16 --duration 60`.

N workers send streamed chat completions back to back for S seconds: the same traffic as
`vllm bench serve --max-concurrency N --request-rate inf`. Metrics use `vllm bench serve`'s definitions, so numbers
compare with vLLM's own benchmark (vllm-project/vllm: vllm/benchmarks/lib/endpoint_request_func.py,
`async_request_openai_chat_completions`, and vllm/benchmarks/serve.py, `calculate_metrics`):
- TTFT: from just before the request is sent to the first stream chunk that carries `choices` (vLLM's role-only first
  chunk counts, as in vllm bench);
- ITL: the gaps between consecutive chunks that carry `choices`, pooled over all requests;
- TPOT: per request, (E2EL - TTFT) / (output tokens - 1), only for requests with more than one output token;
- E2EL: from just before the request is sent to the last chunk that carries `choices` (not the usage chunk);
- output tokens: `usage.completion_tokens` from the final usage chunk (`stream_options.include_usage`);
- throughputs: successful requests and their output tokens divided by the benchmark duration, which runs from the
  first request until the last in-flight request finishes;
- percentiles: numpy's default `np.percentile` (linear interpolation between closest ranks); failed requests are
  counted by status and excluded from latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from components.client import OutputsError, build_async_client, load_outputs

PERCENTILES = (50.0, 90.0, 99.0)
DEFAULT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
Clock = Callable[[], float]


@dataclass
class RequestRecord:
    """One request, measured like vllm bench's RequestFuncOutput (times in seconds)."""

    start_s: float
    success: bool = False
    ttft_s: float = 0.0
    latency_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int = 0
    usage_reported: bool = False
    text: str = ""
    model: str | None = None
    error: str | None = None


def error_key(error: BaseException) -> str:
    """How a failure is counted: the HTTP status, or `timeout` / `connection` / the exception type."""
    if isinstance(error, openai.APIStatusError):
        return str(error.status_code)
    if isinstance(error, openai.APITimeoutError):  # a subclass of APIConnectionError: check it first
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection"
    return type(error).__name__


async def timed_chat_stream(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int | None,
    extra_body: dict[str, Any] | None = None,
    clock: Clock = time.perf_counter,
) -> RequestRecord:
    """One streamed chat completion, timed with vllm bench's definitions. Never raises for a request failure."""
    start = clock()
    record = RequestRecord(start_s=start)
    most_recent = start
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=cast("list[ChatCompletionMessageParam]", messages),
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra_body,
        )
        async for chunk in stream:
            timestamp = clock()
            if chunk.choices:
                if not record.success:
                    record.success = True
                    record.ttft_s = timestamp - start
                    record.model = chunk.model
                else:
                    record.itl_s.append(timestamp - most_recent)
                most_recent = timestamp
                record.text += chunk.choices[0].delta.content or ""
            elif chunk.usage is not None:
                record.output_tokens = chunk.usage.completion_tokens
                record.usage_reported = True
    except Exception as error:  # a load test counts failures instead of stopping
        record.success = False
        record.error = error_key(error)
        return record
    if not record.success:
        record.error = "no-token"  # vllm bench: "Never received a valid chunk to calculate TTFT"
        return record
    record.latency_s = most_recent - start
    if not record.usage_reported:
        # vllm bench falls back to a tokenizer; without one, count chunks (one token each on vLLM by default).
        record.output_tokens = len(record.itl_s)
    return record


def percentile(values: Sequence[float], p: float) -> float:
    """numpy's default `np.percentile(values, p)` (method "linear"), without numpy."""
    if not values:
        return 0.0  # vllm bench reports 0 for an empty metric (`np.percentile(x or 0, p)`)
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile p={p} must be within [0, 100]")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencyStats:
    count: int
    mean_s: float
    percentiles_s: dict[float, float]

    @classmethod
    def of(cls, values: Sequence[float], percentiles: Sequence[float] = PERCENTILES) -> LatencyStats:
        mean = sum(values) / len(values) if values else 0.0
        return cls(len(values), mean, {p: percentile(values, p) for p in percentiles})


@dataclass(frozen=True)
class LoadReport:
    concurrency: int
    duration_s: float
    completed: int
    failed: int
    errors_by_status: dict[str, int]
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    ttft: LatencyStats
    tpot: LatencyStats
    itl: LatencyStats
    e2el: LatencyStats
    output_tokens_from_usage: bool

    def to_json(self) -> dict[str, Any]:
        """Key names follow vllm bench's `--save-result` JSON (`mean_ttft_ms`, `p99_itl_ms`, ...)."""
        result: dict[str, Any] = {
            "max_concurrency": self.concurrency,
            "duration": self.duration_s,
            "completed": self.completed,
            "failed": self.failed,
            "errors_by_status": self.errors_by_status,
            "total_output_tokens": self.total_output_tokens,
            "request_throughput": self.request_throughput,
            "output_throughput": self.output_throughput,
            "output_tokens_from_usage": self.output_tokens_from_usage,
        }
        for name, stats in (("ttft", self.ttft), ("tpot", self.tpot), ("itl", self.itl), ("e2el", self.e2el)):
            result[f"mean_{name}_ms"] = stats.mean_s * 1000
            for p, value in stats.percentiles_s.items():
                result[f"p{int(p) if p == int(p) else p}_{name}_ms"] = value * 1000
        return result


def summarize(
    records: Sequence[RequestRecord],
    duration_s: float,
    concurrency: int,
    percentiles: Sequence[float] = PERCENTILES,
) -> LoadReport:
    """vllm bench's `calculate_metrics`, restricted to what this report shows."""
    ok = [r for r in records if r.success]
    itls = array("d")  # pooled over requests; a compact buffer because long runs collect millions of gaps
    tpots: list[float] = []
    for record in ok:
        itls.extend(record.itl_s)
        if record.output_tokens > 1:
            tpots.append((record.latency_s - record.ttft_s) / (record.output_tokens - 1))
    total_output = sum(r.output_tokens for r in ok)
    errors = Counter(r.error or "unknown" for r in records if not r.success)
    safe_duration = duration_s if duration_s > 0 else float("inf")
    return LoadReport(
        concurrency=concurrency,
        duration_s=duration_s,
        completed=len(ok),
        failed=len(records) - len(ok),
        errors_by_status=dict(sorted(errors.items())),
        total_output_tokens=total_output,
        request_throughput=len(ok) / safe_duration,
        output_throughput=total_output / safe_duration,
        ttft=LatencyStats.of([r.ttft_s for r in ok], percentiles),
        tpot=LatencyStats.of(tpots, percentiles),
        itl=LatencyStats.of(itls, percentiles),
        e2el=LatencyStats.of([r.latency_s for r in ok], percentiles),
        output_tokens_from_usage=all(r.usage_reported for r in ok),
    )


def render_report(report: LoadReport) -> str:
    errors = ", ".join(f"{key}: {count}" for key, count in report.errors_by_status.items()) or "none"
    lines = [
        "{:=^60}".format(" Load test result (vllm bench serve definitions) "),
        f"{'Concurrency:':<40} {report.concurrency}",
        f"{'Benchmark duration (s):':<40} {report.duration_s:.2f}",
        f"{'Successful requests:':<40} {report.completed}",
        f"{'Failed requests:':<40} {report.failed}",
        f"{'Errors by status:':<40} {errors}",
        f"{'Total output tokens:':<40} {report.total_output_tokens}"
        + ("" if report.output_tokens_from_usage else "  (no usage chunk: counted stream chunks)"),
        f"{'Request throughput (req/s):':<40} {report.request_throughput:.2f}",
        f"{'Output token throughput (tok/s):':<40} {report.output_throughput:.2f}",
    ]
    titles = {
        "ttft": "Time to First Token",
        "tpot": "Time per Output Token (excl. 1st token)",
        "itl": "Inter-token Latency",
        "e2el": "End-to-end Latency",
    }
    for name, title in titles.items():
        stats: LatencyStats = getattr(report, name)
        lines.append(f"{title:-^60}")
        lines.append(f"{f'Mean {name.upper()} (ms):':<40} {stats.mean_s * 1000:.2f}")
        for p, value in stats.percentiles_s.items():
            label = f"P{int(p) if p == int(p) else p} {name.upper()} (ms):"
            lines.append(f"{label:<40} {value * 1000:.2f}")
    lines.append("=" * 60)
    return "\n".join(lines)


async def run_load(
    client: openai.AsyncOpenAI,
    model: str,
    prompts: Sequence[list[dict[str, Any]]],
    *,
    concurrency: int,
    duration_s: float,
    num_requests: int | None = None,
    max_tokens: int | None = 128,
    extra_body: dict[str, Any] | None = None,
    clock: Clock = time.perf_counter,
) -> tuple[list[RequestRecord], float]:
    """Closed loop: `concurrency` workers each send the next prompt as soon as their previous request ends.

    No new request starts after `duration_s` (or after `num_requests`); requests in flight then run to completion and
    count, as in vllm bench, whose duration ends when the last request returns.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency} must be >= 1")
    records: list[RequestRecord] = []
    start = clock()
    deadline = start + duration_s
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while clock() < deadline and (num_requests is None or issued < num_requests):
            messages = prompts[issued % len(prompts)]
            issued += 1
            records.append(
                await timed_chat_stream(
                    client, model, messages, max_tokens=max_tokens, extra_body=extra_body, clock=clock
                )
            )

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    for record in records:
        record.start_s -= start
    return records, clock() - start


def write_plot(records: Sequence[RequestRecord], path: Path) -> bool:
    """A PNG of TTFT and E2EL over time plus an ITL histogram; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [r for r in records if r.success]
    figure, (over_time, histogram) = plt.subplots(1, 2, figsize=(12, 4.5))
    starts = [r.start_s for r in ok]
    over_time.scatter(starts, [r.latency_s * 1000 for r in ok], s=6, label="E2EL")
    over_time.scatter(starts, [r.ttft_s * 1000 for r in ok], s=6, label="TTFT")
    over_time.set_xlabel("request start (s)")
    over_time.set_ylabel("latency (ms)")
    over_time.legend()
    histogram.hist([gap * 1000 for r in ok for gap in r.itl_s], bins=50)
    histogram.set_xlabel("inter-token latency (ms)")
    histogram.set_ylabel("count")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.loadtest",
        description="Closed-loop load test of a deployed endpoint, reported with vllm bench serve's metrics.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--stack", help="Pulumi stack name (runs `pulumi stack output --json --show-secrets`)"
    )
    source.add_argument("--outputs", type=Path, help="JSON file of the stack outputs")
    parser.add_argument("--cwd", type=Path, help="Pulumi project directory for --stack (default: current)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent requests (default 8)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds to keep starting requests (default 60)"
    )
    parser.add_argument("--num-requests", type=int, help="stop starting requests after this many")
    parser.add_argument(
        "--max-tokens", type=int, default=128, help="max output tokens per request (default 128)"
    )
    parser.add_argument("--ignore-eos", action="store_true", help="vLLM: always generate --max-tokens tokens")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message every request sends")
    prompt.add_argument("--prompts", type=Path, help="JSONL prompts in the batch format, used round-robin")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed requests first; a failure aborts (default 1)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (vllm bench key names)")
    parser.add_argument("--plot", type=Path, help="write a latency PNG here (needs matplotlib)")
    return parser


def _validate(args: argparse.Namespace) -> str | None:
    if args.concurrency < 1:
        return f"--concurrency {args.concurrency}: must be >= 1"
    if not args.duration > 0:
        return f"--duration {args.duration}: must be > 0 seconds"
    if args.num_requests is not None and args.num_requests < 1:
        return f"--num-requests {args.num_requests}: must be >= 1"
    if args.max_tokens < 1:
        return f"--max-tokens {args.max_tokens}: must be >= 1"
    if args.warmup < 0:
        return f"--warmup {args.warmup}: must be >= 0"
    return None


async def _main(args: argparse.Namespace) -> int:
    from components.batch import BatchInputError, read_prompts

    problem = _validate(args)
    if problem:
        print(f"loadtest: {problem}", file=sys.stderr)
        return 2
    try:
        outputs = load_outputs(stack=args.stack, outputs_file=args.outputs, cwd=args.cwd)
        if args.prompts:
            prompts = [row.messages for row in read_prompts(args.prompts)]
            if not prompts:
                raise BatchInputError(f"--prompts {args.prompts}: the file has no prompts")
        else:
            prompts = [[{"role": "user", "content": args.prompt}]]
    except (OutputsError, BatchInputError) as error:
        print(f"loadtest: {error}", file=sys.stderr)
        return 2
    # No SDK retries: a retried request would hide its failure and stretch its latency.
    client = build_async_client(outputs, timeout=args.timeout, max_retries=0)
    model = outputs.served_model_name
    extra_body = {"ignore_eos": True} if args.ignore_eos else None
    async with client:
        for _ in range(args.warmup):
            warm = await timed_chat_stream(
                client, model, prompts[0], max_tokens=args.max_tokens, extra_body=extra_body
            )
            if not warm.success:
                print(
                    f"loadtest: the warm-up request to {outputs.openai_base_url} failed ({warm.error}); "
                    "fix that first (try `python -m components.smoke`)",
                    file=sys.stderr,
                )
                return 2
        print(
            f"loadtest: {args.concurrency} concurrent streams for {args.duration:g} s against "
            f"{outputs.openai_base_url} ({model})",
            file=sys.stderr,
        )
        records, duration = await run_load(
            client,
            model,
            prompts,
            concurrency=args.concurrency,
            duration_s=args.duration,
            num_requests=args.num_requests,
            max_tokens=args.max_tokens,
            extra_body=extra_body,
        )
    report = summarize(records, duration, args.concurrency)
    print(json.dumps(report.to_json(), indent=2) if args.json else render_report(report))
    if args.plot:
        if write_plot(records, args.plot):
            print(f"loadtest: wrote {args.plot}", file=sys.stderr)
        else:
            print(
                "loadtest: --plot skipped: matplotlib is not installed (pip install matplotlib)",
                file=sys.stderr,
            )
    return 0 if report.completed else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        print("loadtest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
