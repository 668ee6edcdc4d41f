"""components.batch: real async concurrency, retries, input order, and resume after an interruption with nothing
lost or duplicated (real openai SDK against the fake server; the interruption tests kill a real subprocess)."""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import random
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from components.batch import (
    BatchInputError,
    Progress,
    RetryPolicy,
    backoff_delay,
    main,
    read_prompts,
    run_batch,
)
from components.client import build_async_client, parse_outputs
from tests.fake_openai import FakeBehaviour, FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]


def write_prompts(path: Path, count: int) -> list[str]:
    ids = [f"q{i:03d}" for i in range(count)]
    path.write_text("".join(json.dumps({"id": rid, "prompt": f"prompt {rid}"}) + "\n" for rid in ids))
    return ids


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Whole lines only (a hard kill may leave a torn last line, which the next run drops)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def assert_complete_and_ordered(out: Path, ids: list[str]) -> None:
    results = read_lines(out)
    assert [r["id"] for r in results] == ids  # every row once, in input order
    assert [r["index"] for r in results] == list(range(len(ids)))
    for result in results:
        assert result["status"] == "ok"
        # The fake echoes the prompt: each result belongs to its own row.
        assert result["content"].startswith(f"echo: prompt {result['id']} ")


def outputs_file(tmp_path: Path, server: FakeOpenAIServer, **changes: str) -> Path:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({**server.gce_outputs(), **changes}))
    return path


def batch_argv(tmp_path: Path, server: FakeOpenAIServer, *extra: str) -> list[str]:
    return [
        "--in", str(tmp_path / "prompts.jsonl"), "--out", str(tmp_path / "results.jsonl"),
        "--outputs", str(outputs_file(tmp_path, server)), "--backoff-base", "0.01", "--no-progress", *extra,
    ]  # fmt: skip


def run_rows(server: FakeOpenAIServer, rows_path: Path, out: Path, **kwargs: Any) -> Any:
    outputs = parse_outputs(server.gce_outputs())
    rows = read_prompts(rows_path)

    async def go() -> Any:
        async with build_async_client(outputs, max_retries=0) as client:
            return await run_batch(
                client, outputs.served_model_name, rows, out, progress_enabled=False, **kwargs
            )

    return asyncio.run(go())


# --- input ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", ":2: not valid JSON"),
        ('["a list"]', ":2: expected a JSON object"),
        ('{"prompt": "x", "temprature": 0.2}', ":2: unknown key(s) ['temprature']; allowed keys:"),
        ('{"id": "b"}', ":2: needs exactly one of 'prompt' (a string) or 'messages'"),
        ('{"prompt": "x", "messages": []}', ":2: needs exactly one of 'prompt'"),
        ('{"messages": [{"content": "no role"}]}', ":2: 'messages' must be a non-empty list of objects"),
        ('{"prompt": ""}', ":2: 'prompt' must be a non-empty string"),
        ('{"prompt": "x", "max_tokens": 0}', ":2: 'max_tokens' must be a positive integer, got 0"),
        ('{"id": true, "prompt": "x"}', ":2: 'id' must be a non-empty string or an integer, got True"),
        ('{"id": "a", "prompt": "again"}', ":2: id 'a' repeats line 1; ids must be unique"),
    ],
)
def test_bad_prompt_lines_name_file_line_and_fix(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"id": "a", "prompt": "first"}\n' + line + "\n")
    with pytest.raises(BatchInputError) as caught:
        read_prompts(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_prompt_rows_get_ids_messages_and_params(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"prompt": "hi", "max_tokens": 5}\n\n'
        '{"id": 7, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}\n'
    )
    first, second = read_prompts(path)
    assert (first.id, first.index, first.messages, first.params) == (
        "line-1", 0, [{"role": "user", "content": "hi"}], {"max_tokens": 5},
    )  # fmt: skip
    assert (second.id, second.index, second.lineno) == ("7", 1, 3)


# --- backoff ----------------------------------------------------------------------------------------------------
def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    policy = RetryPolicy(max_attempts=10, base_s=0.5, cap_s=8.0)
    rng = random.Random(7)
    for attempt, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        delays = [backoff_delay(attempt, policy, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # jitter spans the whole window...
        assert min(delays) < 0.2 * ceiling  # ...from near zero


def test_backoff_honours_retry_after_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=30.0)
    rng = random.Random(1)
    assert backoff_delay(0, policy, rng, retry_after_s=5.0) == 5.0
    assert backoff_delay(0, policy, rng, retry_after_s=600.0) == 30.0


# --- concurrency, order, retries ------------------------------------------------------------------------------
def test_requests_really_run_concurrently_up_to_the_limit(tmp_path: Path) -> None:
    ids = write_prompts(tmp_path / "prompts.jsonl", 32)
    with FakeOpenAIServer(FakeBehaviour(ttft_schedule_s=(0.15,))) as server:
        summary = run_rows(server, tmp_path / "prompts.jsonl", tmp_path / "results.jsonl", concurrency=8)
        # A sync client inside async functions (the seed's bug) would show 1 here.
        assert server.peak_in_flight == 8
    assert (summary.ok, summary.pending, summary.finalized) == (32, 0, True)
    assert_complete_and_ordered(tmp_path / "results.jsonl", ids)


def test_results_are_in_input_order_even_when_they_finish_in_reverse(tmp_path: Path) -> None:
    ids = write_prompts(tmp_path / "prompts.jsonl", 6)
    # All six start together and the earlier rows wait longer (300, 250, ... 50 ms), so they finish in reverse.
    delays = {f"prompt {rid}": 0.30 - 0.05 * k for k, rid in enumerate(ids)}
    with FakeOpenAIServer(FakeBehaviour(ttft_by_prompt_s=delays)) as server:
        run_rows(server, tmp_path / "prompts.jsonl", tmp_path / "results.jsonl", concurrency=6)
        assert server.peak_in_flight == 6
    assert_complete_and_ordered(tmp_path / "results.jsonl", ids)


def test_429_and_5xx_are_retried(tmp_path: Path) -> None:
    ids = write_prompts(tmp_path / "prompts.jsonl", 10)
    behaviour = FakeBehaviour(faults=deque([429, 500, 503, 429]), retry_after_s=0)
    with FakeOpenAIServer(behaviour) as server:
        summary = run_rows(
            server, tmp_path / "prompts.jsonl", tmp_path / "results.jsonl",
            concurrency=2, policy=RetryPolicy(max_attempts=5, base_s=0.01, cap_s=0.05),
        )  # fmt: skip
        statuses = [r.status for r in server.chat_requests()]
    assert sorted(statuses) == sorted([200] * 10 + [429, 500, 503, 429])
    assert (summary.ok, summary.errors, summary.pending) == (10, 0, 0)
    results = read_lines(tmp_path / "results.jsonl")
    assert sum(r["attempts"] for r in results) == 14
    assert_complete_and_ordered(tmp_path / "results.jsonl", ids)


def test_a_row_still_failing_after_retries_stays_pending_and_the_rerun_completes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = write_prompts(tmp_path / "prompts.jsonl", 3)
    with FakeOpenAIServer(FakeBehaviour(faults=deque([500, 502]))) as server:
        argv = batch_argv(tmp_path, server, "--concurrency", "1", "--max-attempts", "2")
        assert main(argv) == 1
        assert "rerun the same command to resume" in capsys.readouterr().err
        assert [r["id"] for r in read_lines(tmp_path / "results.jsonl")] == ids[1:]  # q000 not written
        assert main(argv) == 0
        requested = [r.user_text for r in server.chat_requests() if r.status == 200]
    assert requested == [f"prompt {rid}" for rid in [*ids[1:], ids[0]]]  # q001/q002 were not sent again
    assert_complete_and_ordered(tmp_path / "results.jsonl", ids)


def test_a_400_is_a_final_error_row(tmp_path: Path) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 3)
    with FakeOpenAIServer(FakeBehaviour(faults=deque([400]))) as server:
        assert main(batch_argv(tmp_path, server, "--concurrency", "1")) == 1
        assert len(list(server.chat_requests())) == 3  # no retry of a 400
    results = read_lines(tmp_path / "results.jsonl")
    assert [r["status"] for r in results] == ["error", "ok", "ok"]
    assert results[0]["error"]["status_code"] == 400


def test_a_wrong_key_stops_the_run_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 20)
    with FakeOpenAIServer() as server:
        argv = batch_argv(tmp_path, server, "--concurrency", "4")
        outputs_file(tmp_path, server, apiKey="not-the-key")
        argv[argv.index("--outputs") + 1] = str(tmp_path / "outputs.json")
        assert main(argv) == 2
        assert len(list(server.chat_requests())) <= 4  # stopped at the first wave
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "check the API key" in err
    assert "not-the-key" not in err
    assert read_lines(tmp_path / "results.jsonl") == []


# --- resume -------------------------------------------------------------------------------------------------------
def _wait_for_lines(path: Path, count: int, proc: subprocess.Popen[str], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(read_lines(path)) >= count:
            return
        assert proc.poll() is None, "the batch finished before it could be interrupted"
        time.sleep(0.01)
    raise AssertionError(f"{path} never reached {count} lines")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_interrupted_run_resumes_with_nothing_lost_or_duplicated(tmp_path: Path, how: str) -> None:
    ids = write_prompts(tmp_path / "prompts.jsonl", 60)
    out = tmp_path / "results.jsonl"
    with FakeOpenAIServer(FakeBehaviour(ttft_schedule_s=(0.1,))) as server:
        command = [
            sys.executable,
            "-m",
            "components.batch",
            *batch_argv(tmp_path, server, "--concurrency", "4"),
        ]
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for_lines(out, 12, proc)
            proc.send_signal(getattr(signal, how))
            _, stderr = proc.communicate(timeout=30)
        finally:
            proc.kill()
        if how == "SIGINT":
            assert proc.returncode == 130
            assert "Rerun the same command to resume" in stderr
        first = read_lines(out)
        assert 12 <= len(first) < 60
        assert len({r["id"] for r in first}) == len(first)
        sent_before = len(list(server.chat_requests()))

        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"{len(first)} already done" in done.stderr
        resent = {r.user_text for r in list(server.chat_requests())[sent_before:]}

    assert resent.isdisjoint({f"prompt {r['id']}" for r in first})  # finished rows are never requested again
    assert_complete_and_ordered(out, ids)
    # Rows finished in the first run keep their first result (nothing overwritten).
    final = {r["id"]: r for r in read_lines(out)}
    assert all(final[r["id"]] == r for r in first)


def test_a_torn_last_line_is_dropped_and_that_row_redone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = write_prompts(tmp_path / "prompts.jsonl", 3)
    out = tmp_path / "results.jsonl"
    with FakeOpenAIServer() as server:
        assert main(batch_argv(tmp_path, server)) == 0
        lines = out.read_text().splitlines(keepends=True)
        out.write_text(lines[0] + lines[1][:25])  # q001's line was cut mid-write
        # This run leaves q001 pending (one 500, one attempt) and writes q002: the journal is not rewritten, so
        # q002's line must not have been glued onto the torn one.
        server.mutate(lambda b: b.faults.extend([500]))
        assert main(batch_argv(tmp_path, server, "--concurrency", "1", "--max-attempts", "1")) == 1
        assert [r["id"] for r in read_lines(out)] == ["q000", "q002"]
        assert main(batch_argv(tmp_path, server)) == 0
        resent = [(r.user_text, r.status) for r in server.chat_requests()][3:]
    assert "dropping an incomplete last line" in capsys.readouterr().err
    assert resent == [("prompt q001", 500), ("prompt q002", 200), ("prompt q001", 200)]
    assert_complete_and_ordered(out, ids)


def test_results_of_another_input_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 2)
    (tmp_path / "results.jsonl").write_text(json.dumps({"id": "other", "index": 0, "status": "ok"}) + "\n")
    with FakeOpenAIServer() as server:
        assert main(batch_argv(tmp_path, server)) == 2
        assert list(server.chat_requests()) == []
    assert "result id 'other' is not in the prompts file" in capsys.readouterr().err


def test_two_runs_cannot_share_an_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 2)
    out = tmp_path / "results.jsonl"
    with out.open("a") as held, FakeOpenAIServer() as server:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert main(batch_argv(tmp_path, server)) == 2
    assert "another batch run is writing this file" in capsys.readouterr().err


def test_a_finished_output_is_not_sent_again(tmp_path: Path) -> None:
    ids = write_prompts(tmp_path / "prompts.jsonl", 4)
    with FakeOpenAIServer() as server:
        assert main(batch_argv(tmp_path, server)) == 0
        assert main(batch_argv(tmp_path, server)) == 0
        assert len(list(server.chat_requests())) == 4
    assert_complete_and_ordered(tmp_path / "results.jsonl", ids)


# --- progress -----------------------------------------------------------------------------------------------------
class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_on_a_terminal_and_prints_deciles_otherwise() -> None:
    log = io.StringIO()
    progress = Progress(20, already=0, stream=log)
    progress.draw(force=True)  # as run_batch does before the first request
    for i in range(20):
        progress.update(ok=i != 3)
    lines = log.getvalue().splitlines()
    assert len(lines) == 11  # the start, then one line per 10 %
    assert lines[0].startswith("[" + "." * 30 + "] 0/20")
    assert lines[-1].startswith("[" + "#" * 30 + "] 20/20 100% errors=1")

    tty = FakeTty()
    progress = Progress(4, already=2, stream=tty)
    progress.update()
    progress.update(written=False)
    progress.close()
    assert "\r[" in tty.getvalue()
    assert "3/4" in tty.getvalue() and "pending=1" in tty.getvalue()
