"""components.loadtest: vllm bench serve's metric definitions, checked on synthetic records and against the fake
server's known latency distribution (real openai SDK)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from components.client import StackOutputs, build_async_client, parse_outputs
from components.loadtest import (
    RequestRecord,
    main,
    percentile,
    run_load,
    summarize,
    timed_chat_stream,
)
from tests.fake_openai import FakeBehaviour, FakeOpenAIServer, FakeOpenAIServerProcess

REPO = Path(__file__).resolve().parents[1]


# --- percentiles: numpy's default (linear) method, values worked out by hand ----------------------------------
@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([10, 7, 4, 3, 2, 1], 50, 3.5),  # the example in numpy's np.percentile docs
        (list(range(1, 11)), 90, 9.1),  # rank 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9)
        (list(range(1, 11)), 99, 9.91),
        ([0, 10], 99, 9.9),
        ([5], 99, 5),
        ([3, 1, 2], 0, 1),
        ([3, 1, 2], 100, 3),
        ([], 50, 0.0),  # vllm bench reports 0 for an empty metric
    ],
)
def test_percentile_matches_numpy_linear(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == pytest.approx(expected)


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


# --- summarize: vllm bench's calculate_metrics on synthetic records -------------------------------------------
def test_summarize_follows_vllm_bench_definitions() -> None:
    records = [
        # TTFT 0.1, three gaps, E2EL 0.7 with 4 output tokens -> TPOT (0.7 - 0.1) / 3 = 0.2
        RequestRecord(
            start_s=0.0,
            success=True,
            ttft_s=0.1,
            latency_s=0.7,
            itl_s=[0.0, 0.2, 0.4],
            output_tokens=4,
            usage_reported=True,
        ),
        # one output token: no TPOT (vllm bench skips output_len <= 1), no gaps
        RequestRecord(
            start_s=0.5,
            success=True,
            ttft_s=0.3,
            latency_s=0.3,
            itl_s=[],
            output_tokens=1,
            usage_reported=True,
        ),
        RequestRecord(start_s=0.6, error="429"),
        RequestRecord(start_s=0.7, error="429"),
        RequestRecord(start_s=0.8, error="timeout"),
    ]
    report = summarize(records, duration_s=2.0, concurrency=3)
    assert (report.completed, report.failed) == (2, 3)
    assert report.errors_by_status == {"429": 2, "timeout": 1}
    assert report.total_output_tokens == 5
    assert report.request_throughput == pytest.approx(1.0)  # 2 successes / 2 s; failures do not count
    assert report.output_throughput == pytest.approx(2.5)
    assert report.ttft.mean_s == pytest.approx(0.2)
    assert report.ttft.percentiles_s[50] == pytest.approx(0.2)
    assert report.ttft.percentiles_s[90] == pytest.approx(0.28)
    assert report.tpot.count == 1 and report.tpot.mean_s == pytest.approx(0.2)
    # ITL pools the gaps of all requests: [0.0, 0.2, 0.4]
    assert report.itl.count == 3 and report.itl.percentiles_s[50] == pytest.approx(0.2)
    assert report.e2el.percentiles_s[99] == pytest.approx(0.696)  # 0.3 + 0.99 * (0.7 - 0.3)
    as_json = report.to_json()
    assert as_json["p99_e2el_ms"] == pytest.approx(696.0)
    assert as_json["mean_ttft_ms"] == pytest.approx(200.0)
    assert as_json["errors_by_status"] == {"429": 2, "timeout": 1}


# --- one stream, timed with a clock that ticks once per reading --------------------------------------------------
class TickClock:
    """Each reading is 1.0 later than the previous one, so every timestamp names the event that read it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_stream_timestamps_follow_vllm_bench() -> None:
    with FakeOpenAIServer(FakeBehaviour(output_tokens=4)) as server:
        outputs = parse_outputs(server.gce_outputs())

        async def one() -> RequestRecord:
            async with build_async_client(outputs, max_retries=0) as client:
                return await timed_chat_stream(
                    client, outputs.served_model_name, [{"role": "user", "content": "a b c"}],
                    max_tokens=16, clock=TickClock(),
                )  # fmt: skip

        record = asyncio.run(one())
    # Readings: 1 start, 2 role-only chunk, 3-6 the four tokens, 7 the usage chunk ([DONE] is not yielded).
    assert record.success and record.text == "echo: a b c"
    assert record.ttft_s == 1.0  # the role-only chunk counts as the first token, as in vllm bench
    assert record.itl_s == [1.0, 1.0, 1.0, 1.0]
    assert record.latency_s == 5.0  # ends at the last chunk with choices, not at the usage chunk
    assert (record.output_tokens, record.usage_reported, record.model) == (4, True, "gemma-4-26b")
    report = summarize([record], duration_s=10.0, concurrency=1)
    assert report.tpot.mean_s == pytest.approx((5.0 - 1.0) / (4 - 1))


# --- end to end against the fake's known distribution ---------------------------------------------------------
# 50 requests; request k (in server arrival order) waits 16k ms (0..784 ms) for its first chunk, then sends 4 tokens
# 200 ms apart. No assertion depends on the machine's speed (no timed tests):
# - lower bounds are exact: the client's clock starts before the server starts sleeping, so overhead only adds;
# - upper bounds are orderings against the known schedule, each with hundreds of ms of room yet crossed by a
#   wrong definition: a measured p50 stays below the true p90 (392 vs 706 ms TTFT, 992 vs 1306 ms E2EL; p90, p99
#   or max reported as p50 lands above it), and a measured TTFT pX stays below the true E2EL pX (600 ms apart;
#   TTFT measured to the end of the stream, or E2EL reported as TTFT, lands above it). p50 reported for p90 falls
#   under p90's lower bound (392 < 706 ms), p90 for p99 likewise (706 < 776 ms).
# - inter-token gaps depend on scheduling, so they are checked through exact identities with the records.
SCHEDULE = tuple(0.016 * k for k in range(50))
ITL = 0.200
TOKENS = 4
CONCURRENCY = 25
ROUNDING = 0.001  # the fake's sleeps and float sums, not the machine's speed


def _load(outputs: StackOutputs, content: str, **load: Any) -> tuple[list[RequestRecord], float]:
    """One closed-loop run of a single prompt against the fake, with the SDK's own retries off."""

    async def run() -> tuple[list[RequestRecord], float]:
        async with build_async_client(outputs, max_retries=0) as client:
            prompts = [[{"role": "user", "content": content}]]
            return await run_load(client, outputs.served_model_name, prompts, duration_s=60.0, **load)

    return asyncio.run(run())


def test_percentiles_match_the_fake_latency_distribution() -> None:
    behaviour = FakeBehaviour(ttft_schedule_s=SCHEDULE, itl_s=ITL, output_tokens=TOKENS)
    # In its own process, the fake's threads do not compete with the client for the GIL.
    with FakeOpenAIServerProcess(behaviour) as server:
        outputs = parse_outputs(server.gce_outputs())

        records, duration = _load(
            outputs, "tell me a story", concurrency=CONCURRENCY, num_requests=len(SCHEDULE), max_tokens=64
        )
    # The fake served exactly the schedule once: the true distribution is known.
    served = sorted(r.ttft_s for r in server.chat_requests() if r.ttft_s is not None)
    assert served == pytest.approx(sorted(SCHEDULE))
    assert server.peak_in_flight == CONCURRENCY

    report = summarize(records, duration, concurrency=CONCURRENCY)
    assert (report.completed, report.failed) == (50, 0)
    assert report.total_output_tokens == 50 * TOKENS
    assert report.request_throughput == pytest.approx(50 / duration)
    assert report.output_throughput == pytest.approx(50 * TOKENS / duration)

    # By hand: p50 = 16 * 24.5 = 392 ms, p90 = 16 * 44.1 = 705.6 ms, p99 = 16 * 48.51 = 776.16 ms.
    true_ttft = {50: 0.392, 90: 0.7056, 99: 0.77616}
    true_e2el = {p: ttft + (TOKENS - 1) * ITL for p, ttft in true_ttft.items()}
    for p, expected in true_ttft.items():
        assert percentile(SCHEDULE, p) == pytest.approx(expected)
        assert report.ttft.percentiles_s[p] >= expected - ROUNDING, p
        assert report.e2el.percentiles_s[p] >= true_e2el[p] - ROUNDING, p
        assert report.ttft.percentiles_s[p] < true_e2el[p], p  # TTFT ends at the first chunk, not the last
    assert report.ttft.percentiles_s[50] < true_ttft[90]
    assert report.e2el.percentiles_s[50] < true_e2el[90]

    # Per request the gaps are [~0 (vLLM's role chunk -> first token), 200, 200, 200] ms; whatever the scheduling,
    # they tile the stream from the first chunk to the last, and ITL pools them over all requests.
    ok = [r for r in records if r.success]
    for record in ok:
        assert record.ttft_s is not None and record.latency_s is not None
        assert len(record.itl_s) == TOKENS
        assert sum(record.itl_s) == pytest.approx(record.latency_s - record.ttft_s)
    gaps = [gap for r in ok for gap in r.itl_s]
    assert report.itl.count == 50 * TOKENS
    for p in (50, 90, 99):
        assert report.itl.percentiles_s[p] == pytest.approx(percentile(gaps, p)), p
    tpots = [
        (r.latency_s - r.ttft_s) / (TOKENS - 1)
        for r in ok
        if r.latency_s is not None and r.ttft_s is not None
    ]
    assert report.tpot.percentiles_s[50] == pytest.approx(percentile(tpots, 50))


def test_errors_are_counted_by_status_and_kept_out_of_latencies() -> None:
    behaviour = FakeBehaviour(ttft_schedule_s=(0.005,), faults=deque([429, 500, 429]))
    with FakeOpenAIServer(behaviour) as server:
        outputs = parse_outputs(server.gce_outputs())

        records, duration = _load(outputs, "x", concurrency=2, num_requests=10, max_tokens=4)
    report = summarize(records, duration, concurrency=2)
    assert (report.completed, report.failed) == (7, 3)
    assert report.errors_by_status == {"429": 2, "500": 1}
    assert report.ttft.count == 7


def test_wrong_key_counts_as_401() -> None:
    with FakeOpenAIServer() as server:
        outputs = parse_outputs({**server.gce_outputs(), "apiKey": "wrong"})

        records, duration = _load(outputs, "x", concurrency=1, num_requests=3)
    assert summarize(records, duration, 1).errors_by_status == {"401": 3}


# --- the command ------------------------------------------------------------------------------------------------
def _outputs_file(tmp_path: Path, server: FakeOpenAIServer, **changes: str) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({**server.gce_outputs(), **changes}))
    return path


def test_command_prints_the_report(tmp_path: Path) -> None:
    with FakeOpenAIServer(FakeBehaviour(ttft_schedule_s=(0.01,), itl_s=0.002)) as server:
        outputs = _outputs_file(tmp_path, server)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "components.loadtest",
                "--outputs",
                str(outputs),
                "--concurrency",
                "3",
                "--duration",
                "0.5",
                "--max-tokens",
                "6",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    for line in (
        "Request throughput (req/s):",
        "Output token throughput (tok/s):",
        "P50 TTFT (ms):",
        "P90 ITL (ms):",
        "P99 E2EL (ms):",
        "Errors by status:",
    ):
        assert line in done.stdout
    assert "test-api-key" not in done.stdout + done.stderr


def test_command_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "latency.png"
    with FakeOpenAIServer() as server:
        code = main(
            [
                "--outputs",
                str(_outputs_file(tmp_path, server)),
                "--concurrency",
                "2",
                "--duration",
                "5",
                "--num-requests",
                "6",
                "--json",
                "--plot",
                str(plot),
            ]
        )
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)
    assert report["completed"] == 6 and report["max_concurrency"] == 2
    assert {"p50_ttft_ms", "p90_itl_ms", "p99_e2el_ms", "mean_tpot_ms"} <= set(report)
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in captured.err and not plot.exists()
    else:
        assert plot.read_bytes()[:4] == b"\x89PNG"


def test_failed_warmup_aborts_with_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAIServer() as server:
        code = main(["--outputs", str(_outputs_file(tmp_path, server, apiKey="wrong")), "--duration", "1"])
        assert len(list(server.chat_requests())) == 1  # the warm-up only
    assert code == 2
    assert "warm-up request" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "0"], "--concurrency 0: must be >= 1"),
        (["--duration", "0"], "--duration 0.0: must be > 0"),
        (["--num-requests", "0"], "--num-requests 0: must be >= 1"),
    ],
)
def test_bad_arguments(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = tmp_path / "o.json"
    outputs.write_text("{}")
    assert main(["--outputs", str(outputs), *argv]) == 2
    assert message in capsys.readouterr().err
