"""Batch runner: `python -m components.batch --in prompts.jsonl --out results.jsonl --stack prod`.

Unlike the seed's example (a synchronous client called inside `async` functions, so its "50 concurrent" requests ran
one at a time), requests really overlap: one `AsyncOpenAI`, at most `--concurrency` requests in flight (a semaphore).

Input: one JSON object per line, `{"id": "q1", "prompt": "..."}` or `{"id": "q1", "messages": [...]}`, plus optional
sampling keys (`max_tokens`, `temperature`, ...). A row without `id` gets `line-N` (its line number).

Output and resume (how order and exactly-once are kept):
- The output file is also the journal. Each finished row is appended as one JSON line (with its `id` and input
  `index`) and flushed at once, so an interruption (Ctrl-C, a kill, a lost VM) loses at most the requests in flight.
- A rerun with the same `--out` reads it, drops a torn last line, and sends only the rows with no result yet. Rows are
  matched by `id`, so nothing is requested twice once written and nothing is written twice.
- When every row has a result, the file is rewritten in input order (temp file + fsync + atomic rename). Until then
  (during a run, or after an interruption) lines are in completion order.
- 429, 5xx, timeouts and connection errors are retried with exponential backoff and full jitter, honouring
  `Retry-After`. A row that still fails is left pending (not written), so the next run retries it. Other 4xx (e.g.
  400, prompt too long) are final and written as `"status": "error"` rows. 401/403/404 mean a wrong key, URL or model
  for every row: the run stops.
- An exclusive lock on the output file stops two runs from writing the same journal.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from components.client import OutputsError, build_async_client, load_outputs

# Per-row keys passed to chat.completions.create; anything else is a typo and is rejected.
SAMPLING_KEYS = frozenset(
    {"max_tokens", "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "n"}
)
ROW_KEYS = frozenset({"id", "prompt", "messages"}) | SAMPLING_KEYS
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))
FATAL_STATUS = frozenset({401, 403, 404})


class BatchInputError(ValueError):
    """The prompts or the existing results file are malformed; the message names the file, line and fix."""


class BatchFatalError(RuntimeError):
    """An error that every row would hit (wrong key, URL or model): the run stops."""


@dataclass(frozen=True)
class PromptRow:
    index: int  # position among the input's non-blank lines
    id: str
    lineno: int
    messages: list[dict[str, Any]]
    params: dict[str, Any]


def _parse_row(obj: Any, path: Path, lineno: int, index: int) -> PromptRow:
    where = f"{path}:{lineno}"
    if not isinstance(obj, dict):
        raise BatchInputError(f'{where}: expected a JSON object such as {{"id": "q1", "prompt": "..."}}')
    unknown = sorted(set(obj) - ROW_KEYS)
    if unknown:
        raise BatchInputError(f"{where}: unknown key(s) {unknown}; allowed keys: {sorted(ROW_KEYS)}")
    if ("prompt" in obj) == ("messages" in obj):
        raise BatchInputError(
            f"{where}: needs exactly one of 'prompt' (a string) or 'messages' (a list of {{role, content}})"
        )
    if "prompt" in obj:
        prompt = obj["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise BatchInputError(f"{where}: 'prompt' must be a non-empty string, got {prompt!r}")
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = obj["messages"]
        if (
            not isinstance(messages, list)
            or not messages
            or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages
            )
        ):
            raise BatchInputError(
                f"{where}: 'messages' must be a non-empty list of objects with 'role' and 'content', "
                f'e.g. [{{"role": "user", "content": "Hi"}}]'
            )
    raw_id = obj.get("id", f"line-{lineno}")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise BatchInputError(f"{where}: 'id' must be a non-empty string or an integer, got {raw_id!r}")
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise BatchInputError(f"{where}: 'max_tokens' must be a positive integer, got {max_tokens!r}")
    params = {key: obj[key] for key in SAMPLING_KEYS if key in obj}
    return PromptRow(index=index, id=str(raw_id), lineno=lineno, messages=messages, params=params)


def read_prompts(path: Path) -> list[PromptRow]:
    rows: list[PromptRow] = []
    first_line: dict[str, int] = {}
    try:
        handle = path.open(encoding="utf-8")
    except OSError as error:
        raise BatchInputError(f"{path}: cannot read it ({error.strerror})") from None
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise BatchInputError(
                    f"{path}:{lineno}: not valid JSON ({error.msg}); each line must be one JSON object"
                ) from None
            row = _parse_row(obj, path, lineno, len(rows))
            if row.id in first_line:
                raise BatchInputError(
                    f"{path}:{lineno}: id {row.id!r} repeats line {first_line[row.id]}; ids must be unique "
                    "because resume matches results to prompts by id"
                )
            first_line[row.id] = lineno
            rows.append(row)
    return rows


def read_results(
    out_path: Path, known_ids: Mapping[str, PromptRow], journal: IO[bytes] | None = None
) -> dict[str, Any]:
    """Results already in the journal, by id. A torn last line (killed mid-write) is cut off the file."""
    if journal is None:
        if not out_path.exists():
            return {}
        data = out_path.read_bytes()
    else:
        journal.seek(0)
        data = journal.read()
    complete, newline, tail = data.rpartition(b"\n")
    if tail:
        # The bytes after the last newline are an unfinished write: never a whole record.
        keep = len(complete) + len(newline)
        print(f"batch: {out_path}: dropping an incomplete last line ({len(tail)} bytes)", file=sys.stderr)
        if journal is not None:
            journal.truncate(keep)
        else:
            os.truncate(out_path, keep)
    results: dict[str, Any] = {}
    for lineno, line in enumerate(complete.split(b"\n") if newline else [], start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise BatchInputError(
                f"{out_path}:{lineno}: not valid JSON; the results file is damaged. Fix or remove that line "
                "(its row is then sent again)."
            ) from None
        rid = record.get("id") if isinstance(record, dict) else None
        if not isinstance(rid, str) or record.get("status") not in ("ok", "error"):
            raise BatchInputError(
                f"{out_path}:{lineno}: not a result written by this tool (no 'id'/'status')"
            )
        if rid not in known_ids:
            raise BatchInputError(
                f"{out_path}:{lineno}: result id {rid!r} is not in the prompts file; this results file belongs to "
                "another input. Use a different --out."
            )
        if rid in results:
            print(
                f"batch: {out_path}:{lineno}: duplicate result for id {rid!r}; keeping the first",
                file=sys.stderr,
            )
            continue
        results[rid] = record
    return results


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_s: float = 1.0
    cap_s: float = 60.0


def backoff_delay(
    attempt: int, policy: RetryPolicy, rng: random.Random, retry_after_s: float | None = None
) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**attempt)), but never less than the server's Retry-After.

    (AWS Architecture Blog, "Exponential Backoff And Jitter": full jitter spreads retries of many clients best.)
    """
    ceiling = min(policy.cap_s, policy.base_s * 2**attempt)
    delay = rng.uniform(0.0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, policy.cap_s))
    return delay


def _retry_after_s(error: BaseException) -> float | None:
    if not isinstance(error, openai.APIStatusError):
        return None
    value = error.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP-date: rare from vLLM/GFE; the jittered backoff applies instead


class RetriesExhausted(Exception):
    def __init__(self, row: PromptRow, reason: str) -> None:
        super().__init__(f"{row.id}: {reason}")
        self.row = row
        self.reason = reason


def _reason(error: BaseException) -> str:
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}"
    return type(error).__name__


async def complete_row(
    client: openai.AsyncOpenAI,
    model: str,
    row: PromptRow,
    defaults: Mapping[str, Any],
    policy: RetryPolicy,
    rng: random.Random,
    sleep: Callable[[float], Any] = asyncio.sleep,
) -> dict[str, Any]:
    """The result record for one row; raises RetriesExhausted or BatchFatalError."""
    last: BaseException | None = None
    for attempt in range(policy.max_attempts):
        started = time.perf_counter()
        try:
            response = await client.chat.completions.create(
                model=model,
                messages=cast("list[ChatCompletionMessageParam]", row.messages),
                **{**defaults, **row.params},
            )
        except openai.APIStatusError as error:
            if error.status_code in FATAL_STATUS:
                raise BatchFatalError(
                    f"HTTP {error.status_code} on row {row.id!r}: {error.message}. Every row would fail: check the "
                    "API key / credentials, the base URL and the served model name."
                ) from None
            if error.status_code not in RETRYABLE_STATUS:
                return {
                    "id": row.id,
                    "index": row.index,
                    "status": "error",
                    "error": {
                        "status_code": error.status_code,
                        "type": type(error).__name__,
                        "message": error.message,
                    },
                    "attempts": attempt + 1,
                }
            last = error
        except openai.APIConnectionError as error:  # includes timeouts
            last = error
        else:
            choice = response.choices[0]
            return {
                "id": row.id,
                "index": row.index,
                "status": "ok",
                "content": choice.message.content,
                "finish_reason": choice.finish_reason,
                "model": response.model,
                "usage": response.usage.model_dump(exclude_none=True) if response.usage else None,
                "attempts": attempt + 1,
                "latency_s": round(time.perf_counter() - started, 4),
            }
        if attempt + 1 < policy.max_attempts:
            await sleep(backoff_delay(attempt, policy, rng, _retry_after_s(last)))
    assert last is not None
    raise RetriesExhausted(row, f"{_reason(last)} after {policy.max_attempts} attempts")


class Progress:
    """A dependency-free progress bar on stderr: redrawn in place on a terminal, a line per 10% otherwise."""

    def __init__(
        self,
        total: int,
        already: int,
        stream: IO[str] | None = None,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.done, self.errors, self.pending = total, already, 0, 0
        self._start_done = already
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._tty = self._stream.isatty()
        self._clock = clock
        self._started = clock()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, *, ok: bool = True, written: bool = True) -> None:
        if written:
            self.done += 1
            self.errors += 0 if ok else 1
        else:
            self.pending += 1
        self.draw()

    def line(self) -> str:
        width = 30
        fraction = self.done / self.total if self.total else 1.0
        filled = int(width * fraction)
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = (self.done - self._start_done) / elapsed
        remaining = self.total - self.done - self.pending
        eta = f"{remaining / rate:.0f}s" if rate > 0 else "?"
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {fraction:4.0%} "
            f"errors={self.errors} pending={self.pending} {rate:.1f} rows/s ETA {eta}"
        )

    def draw(self, force: bool = False) -> None:
        if not self._enabled:
            return
        if self._tty:
            now = self._clock()
            if force or now - self._last_draw >= 0.1 or self.done == self.total:
                self._last_draw = now
                self._stream.write("\r" + self.line())
                self._stream.flush()
            return
        decile = int(10 * self.done / self.total) if self.total else 10
        if force or decile > self._last_decile:
            self._last_decile = decile
            self._stream.write(self.line() + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._enabled and self._tty:
            self._stream.write("\r" + self.line() + "\n")
            self._stream.flush()


@dataclass(frozen=True)
class BatchSummary:
    total: int
    skipped: int  # already in the output when the run started
    ok: int
    errors: int
    pending: int  # gave up after retries this run; the next run retries them
    error_rows: int  # rows whose result in the output is an error, from this run or an earlier one
    finalized: bool  # the output was rewritten in input order


def _lock(handle: IO[bytes], out_path: Path) -> None:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BatchInputError(
            f"{out_path}: another batch run is writing this file; wait for it or use a different --out"
        ) from None


def finalize(out_path: Path, rows: Sequence[PromptRow], results: Mapping[str, Any]) -> None:
    """Rewrite the output in input order, atomically: a crash here leaves the old journal intact."""
    tmp = out_path.with_name(out_path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(results[row.id], ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out_path)
    directory = os.open(out_path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


async def run_batch(
    client: openai.AsyncOpenAI,
    model: str,
    rows: Sequence[PromptRow],
    out_path: Path,
    *,
    concurrency: int = 16,
    defaults: Mapping[str, Any] | None = None,
    policy: RetryPolicy | None = None,
    rng: random.Random | None = None,
    progress_enabled: bool = True,
    progress_stream: IO[str] | None = None,
) -> BatchSummary:
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency} must be >= 1")
    policy = policy or RetryPolicy()
    rng = rng or random.Random()
    defaults = dict(defaults or {})
    by_id = {row.id: row for row in rows}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # "a+b": create if missing, every write appends; the same handle holds the lock and reads the journal.
    with out_path.open("a+b") as journal:
        _lock(journal, out_path)
        results = read_results(out_path, by_id, journal)
        todo = [row for row in rows if row.id not in results]
        progress = Progress(len(rows), len(results), progress_stream, progress_enabled)
        counts = {"ok": 0, "error": 0, "pending": 0}
        semaphore = asyncio.Semaphore(concurrency)
        fatal: list[BatchFatalError] = []
        tasks: set[asyncio.Task[None]] = set()

        async def one(row: PromptRow) -> None:
            try:
                record = await complete_row(client, model, row, defaults, policy, rng)
            except RetriesExhausted as gave_up:
                counts["pending"] += 1
                print(f"\nbatch: row {row.id!r} left pending: {gave_up.reason}", file=sys.stderr)
                progress.update(written=False)
                return
            except BatchFatalError as error:
                fatal.append(error)
                for task in tasks:
                    if task is not asyncio.current_task():
                        task.cancel()
                return
            # One write + flush per row, with no await in between: a row is on disk whole or not at all.
            journal.write((json.dumps(record, ensure_ascii=False) + "\n").encode())
            journal.flush()
            results[row.id] = record
            counts[record["status"]] += 1
            progress.update(ok=record["status"] == "ok")

        try:
            progress.draw(force=True)
            for row in todo:
                await semaphore.acquire()  # at most `concurrency` requests (and tasks) in flight
                if fatal:
                    semaphore.release()
                    break
                task = asyncio.create_task(one(row))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                # Released when the task ends in any way, even if cancelled before it ever ran.
                task.add_done_callback(lambda _task: semaphore.release())
            if tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
        finally:
            # On an interruption, stop the requests in flight before the journal closes: none may write after.
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
            progress.close()
            journal.flush()
            os.fsync(journal.fileno())
        if fatal:
            raise fatal[0]
        complete = all(row.id in results for row in rows)
        if complete:
            finalize(out_path, rows, results)
    return BatchSummary(
        total=len(rows),
        skipped=len(rows) - len(todo),
        ok=counts["ok"],
        errors=counts["error"],
        pending=counts["pending"],
        error_rows=sum(1 for record in results.values() if record["status"] == "error"),
        finalized=complete,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.batch",
        description="Run a JSONL file of prompts against a deployed endpoint; resumable, results in input order.",
    )
    parser.add_argument("--in", dest="input", type=Path, required=True, help="prompts JSONL")
    parser.add_argument("--out", type=Path, required=True, help="results JSONL (also the resume journal)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--stack", help="Pulumi stack name (runs `pulumi stack output --json --show-secrets`)"
    )
    source.add_argument("--outputs", type=Path, help="JSON file of the stack outputs")
    parser.add_argument("--cwd", type=Path, help="Pulumi project directory for --stack (default: current)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--max-tokens", type=int, help="default max_tokens for rows that do not set it")
    parser.add_argument("--temperature", type=float, help="default temperature for rows that do not set it")
    parser.add_argument("--max-attempts", type=int, default=6, help="attempts per row on 429/5xx (default 6)")
    parser.add_argument(
        "--backoff-base", type=float, default=1.0, help="first backoff ceiling, seconds (default 1)"
    )
    parser.add_argument(
        "--backoff-cap", type=float, default=60.0, help="largest backoff, seconds (default 60)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="per-request timeout, seconds (default 600)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _validate(args: argparse.Namespace) -> str | None:
    if args.concurrency < 1:
        return f"--concurrency {args.concurrency}: must be >= 1"
    if args.max_attempts < 1:
        return f"--max-attempts {args.max_attempts}: must be >= 1"
    if args.max_tokens is not None and args.max_tokens < 1:
        return f"--max-tokens {args.max_tokens}: must be >= 1"
    if args.backoff_base < 0 or args.backoff_cap < 0:
        return "--backoff-base/--backoff-cap: must be >= 0 seconds"
    if args.input.resolve() == args.out.resolve():
        return f"--out {args.out}: must differ from --in"
    return None


async def _main(args: argparse.Namespace) -> int:
    problem = _validate(args)
    if problem:
        print(f"batch: {problem}", file=sys.stderr)
        return 2
    try:
        rows = read_prompts(args.input)
        outputs = load_outputs(stack=args.stack, outputs_file=args.outputs, cwd=args.cwd)
    except (BatchInputError, OutputsError) as error:
        print(f"batch: {error}", file=sys.stderr)
        return 2
    defaults = {
        k: v for k, v in (("max_tokens", args.max_tokens), ("temperature", args.temperature)) if v is not None
    }
    # This module owns retries (backoff + jitter, Retry-After, pending rows), so the SDK's own are off.
    client = build_async_client(outputs, timeout=args.timeout, max_retries=0)
    policy = RetryPolicy(args.max_attempts, args.backoff_base, args.backoff_cap)
    async with client:
        try:
            summary = await run_batch(
                client,
                outputs.served_model_name,
                rows,
                args.out,
                concurrency=args.concurrency,
                defaults=defaults,
                policy=policy,
                progress_enabled=not args.no_progress,
            )
        except (BatchInputError, BatchFatalError) as error:
            print(f"batch: {error}", file=sys.stderr)
            return 2
    print(
        f"batch: {summary.total} rows: {summary.skipped} already done, {summary.ok} ok, {summary.errors} errors, "
        f"{summary.pending} pending; {summary.error_rows} error rows in total -> {args.out}"
        + ("" if summary.finalized else " (not complete: rerun the same command to resume)"),
        file=sys.stderr,
    )
    return 0 if summary.finalized and summary.error_rows == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        print(
            f"\nbatch: interrupted; finished rows are saved in {args.out}. Rerun the same command to resume.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
