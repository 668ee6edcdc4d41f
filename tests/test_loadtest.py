"""components.loadtest: vllm bench serve's metric definitions, checked on synthetic records and against the fake
server's known latency distribution (real openai SDK)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.client import build_async_client, parse_outputs
from components.loadtest import (
    RequestRecord,
    main,
    percentile,
    run_load,
    summarize,
)
from tests.fake_openai import FakeBehaviour, FakeOpenAIServer

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
        # TTFT 0.1, three gaps, E2EL 0.4 with 4 output tokens -> TPOT (0.4 - 0.1) / 3 = 0.1
        RequestRecord(
            start_s=0.0,
            success=True,
            ttft_s=0.1,
            latency_s=0.4,
            itl_s=[0.0, 0.1, 0.2],
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
    assert report.tpot.count == 1 and report.tpot.mean_s == pytest.approx(0.1)
    # ITL pools the gaps of all requests: [0.0, 0.1, 0.2]
    assert report.itl.count == 3 and report.itl.percentiles_s[50] == pytest.approx(0.1)
    assert report.e2el.percentiles_s[99] == pytest.approx(0.399)
    as_json = report.to_json()
    assert as_json["p99_e2el_ms"] == pytest.approx(399.0)
    assert as_json["mean_ttft_ms"] == pytest.approx(200.0)
    assert as_json["errors_by_status"] == {"429": 2, "timeout": 1}


# --- end to end against the fake's known distribution ---------------------------------------------------------
# 100 requests; request k (in server arrival order) waits 10 + 2k ms for its first chunk, then 4 tokens 25 ms
# apart. Client-side overhead only adds latency, so each measured TTFT/E2EL percentile lies in
# [true, true + slack]; inter-token gaps can shrink or grow by the jitter, so they get a symmetric tolerance.
SCHEDULE = tuple(0.010 + 0.002 * k for k in range(100))
ITL = 0.025
TOKENS = 4
SLACK = 0.040


def test_percentiles_match_the_fake_latency_distribution() -> None:
    behaviour = FakeBehaviour(ttft_schedule_s=SCHEDULE, itl_s=ITL, output_tokens=TOKENS)
    with FakeOpenAIServer(behaviour) as server:
        outputs = parse_outputs(server.gce_outputs())

        async def load() -> tuple[list[RequestRecord], float]:
            async with build_async_client(outputs, max_retries=0) as client:
                return await run_load(
                    client,
                    outputs.served_model_name,
                    [[{"role": "user", "content": "tell me a story"}]],
                    concurrency=10,
                    duration_s=60.0,
                    num_requests=len(SCHEDULE),
                    max_tokens=64,
                )

        records, duration = asyncio.run(load())
        # The fake served exactly the schedule once: the true distribution is known.
        served = sorted(r.ttft_s for r in server.chat_requests() if r.ttft_s is not None)
        assert served == pytest.approx(sorted(SCHEDULE))
        assert server.peak_in_flight == 10

    report = summarize(records, duration, concurrency=10)
    assert (report.completed, report.failed) == (100, 0)
    assert report.total_output_tokens == 100 * TOKENS
    assert report.request_throughput == pytest.approx(100 / duration)
    assert report.output_throughput == pytest.approx(400 / duration)

    true_e2el = [t + (TOKENS - 1) * ITL for t in SCHEDULE]
    for p in (50, 90, 99):
        true_ttft = percentile(SCHEDULE, p)
        assert true_ttft - 0.001 <= report.ttft.percentiles_s[p] <= true_ttft + SLACK, p
        assert (
            percentile(true_e2el, p) - 0.001
            <= report.e2el.percentiles_s[p]
            <= percentile(true_e2el, p) + SLACK
        )
    # By hand: p50 = 10 + 2 * 49.5 = 109 ms, p90 = 10 + 2 * 89.1 = 188.2 ms, p99 = 10 + 2 * 98.01 = 206.02 ms.
    assert percentile(SCHEDULE, 90) == pytest.approx(0.1882)
    # Per request the gaps are [~0 (vLLM's role chunk -> first token), 25, 25, 25] ms: p50 and p90 are 25 ms.
    assert report.itl.count == 100 * TOKENS
    assert report.itl.percentiles_s[50] == pytest.approx(ITL, abs=0.015)
    assert report.itl.percentiles_s[90] == pytest.approx(ITL, abs=0.015)
    assert report.tpot.percentiles_s[50] == pytest.approx(ITL, abs=0.015)


def test_errors_are_counted_by_status_and_kept_out_of_latencies() -> None:
    behaviour = FakeBehaviour(
        ttft_schedule_s=(0.005,), faults=__import__("collections").deque([429, 500, 429])
    )
    with FakeOpenAIServer(behaviour) as server:
        outputs = parse_outputs(server.gce_outputs())

        async def load() -> tuple[list[RequestRecord], float]:
            async with build_async_client(outputs, max_retries=0) as client:
                return await run_load(
                    client,
                    outputs.served_model_name,
                    [[{"role": "user", "content": "x"}]],
                    concurrency=2,
                    duration_s=60.0,
                    num_requests=10,
                    max_tokens=4,
                )

        records, duration = asyncio.run(load())
    report = summarize(records, duration, concurrency=2)
    assert (report.completed, report.failed) == (7, 3)
    assert report.errors_by_status == {"429": 2, "500": 1}
    assert report.ttft.count == 7


def test_wrong_key_counts_as_401() -> None:
    with FakeOpenAIServer() as server:
        outputs = parse_outputs({**server.gce_outputs(), "apiKey": "wrong"})

        async def load() -> tuple[list[RequestRecord], float]:
            async with build_async_client(outputs, max_retries=0) as client:
                return await run_load(
                    client,
                    outputs.served_model_name,
                    [[{"role": "user", "content": "x"}]],
                    concurrency=1,
                    duration_s=60.0,
                    num_requests=3,
                )

        records, duration = asyncio.run(load())
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
