"""Run the real `llama-batched-bench` and read its slot curve: aggregate decode speed at 1, 2, 4 … sequences.

llama-batched-bench (llama.cpp tools/batched-bench) decodes B independent sequences together, as
llama-server's continuous batching does with `-np B` busy slots: each of the B sequences gets a prompt of
`-npp` tokens (prefilled as one batch), then `-ntg` tokens are generated for all of them at once. Its
JSONL lines (`--output-format jsonl`) give `speed_tg` = B × ntg / t_tg, the aggregate decode speed, and
`speed_pp` = B × npp / t_pp. The process runs in its own process group and is killed with it on a timeout
or Ctrl-C: no orphan is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from planner.errors import PlannerError
from planner.measure.llama_tools import find_tools
from planner.measure.processes import stop_group

DEFAULT_SLOTS = (1, 2, 4, 8, 16)
# what calibration needs (planner/calibration.calibrate_from_slot_curve): one sequence (the one-column kernels
# and the prompt speed), a count that is not a multiple of 4 and one that is (the CPU's many-column kernels
# pass over the weights twice at 6, once at 12: that separates the pass from the per-sequence cost)
CALIBRATION_SLOTS = (1, 6, 12)
DEFAULT_PROMPT_TOKENS = 128
DEFAULT_GEN_TOKENS = 32


@dataclass(frozen=True)
class SlotPoint:
    """One line of llama-batched-bench: B sequences of `prompt_tokens` + `gen_tokens`."""

    slots: int
    prompt_tokens: int
    gen_tokens: int
    prefill_tok_s: float  # all B prompts together
    aggregate_decode_tok_s: float  # all B sequences together

    @property
    def step_s(self) -> float:
        """Seconds per decode step (one token for each of the B sequences)."""
        return self.slots / self.aggregate_decode_tok_s

    @property
    def mean_depth_tokens(self) -> int:
        """Tokens in each sequence's KV cache, on average over the timed generation."""
        return self.prompt_tokens + self.gen_tokens // 2


@dataclass(frozen=True)
class BatchedBenchResult:
    points: tuple[SlotPoint, ...]
    threads: int
    gpu_layers: int
    command: tuple[str, ...]
    build: str  # llama-server --version's line, e.g. "version: 11434 (…)"


def parse_batched_bench(text: str) -> list[SlotPoint]:
    """The JSONL lines of llama-batched-bench's output (other lines are its log and are skipped)."""
    points = []
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("{") and '"speed_tg"' in line):
            continue
        try:
            row = json.loads(line)
            point = SlotPoint(
                slots=int(row["pl"]),
                prompt_tokens=int(row["pp"]),
                gen_tokens=int(row["tg"]),
                prefill_tok_s=float(row["speed_pp"]),
                aggregate_decode_tok_s=float(row["speed_tg"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise PlannerError(f"llama-batched-bench printed a line agiplan cannot read ({e}): {line[:200]}") from e
        if point.aggregate_decode_tok_s <= 0 or point.slots < 1:
            raise PlannerError(f"llama-batched-bench reported no decode speed: {line[:200]}")
        points.append(point)
    return points


def batched_bench_command(
    binary: Path,
    model: Path,
    *,
    slots: Sequence[int],
    prompt_tokens: int,
    gen_tokens: int,
    threads: int,
    gpu_layers: int,
    flash_attn: bool,
) -> list[str]:
    """The command line: a context that holds every sequence of the largest batch (each sequence gets
    c / n_seq_max cells), one line of JSON per batch size."""
    n_ctx = max(slots) * (prompt_tokens + gen_tokens)
    return [
        str(binary),
        "-m",
        str(model),
        "-c",
        str(n_ctx),
        "-b",
        "2048",
        "-ub",
        "512",
        "-npp",
        str(prompt_tokens),
        "-ntg",
        str(gen_tokens),
        "-npl",
        ",".join(str(s) for s in slots),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-ngl",
        str(gpu_layers),
        "-fa",
        "on" if flash_attn else "off",
        "--output-format",
        "jsonl",
    ]


def check_slots(slots: Sequence[int]) -> None:
    if not slots or any(s < 1 for s in slots) or max(slots) > 512:
        raise PlannerError(f"batch sizes must be 1 … 512 sequences, got {list(slots)}.")


def run_batched_bench(
    model: Path,
    *,
    slots: Sequence[int] = DEFAULT_SLOTS,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    gen_tokens: int = DEFAULT_GEN_TOKENS,
    threads: int | None = None,
    gpu_layers: int = 0,
    flash_attn: bool = False,
    timeout_s: float = 600.0,
    repetitions: int = 1,
) -> BatchedBenchResult:
    """Run llama-batched-bench on `model` `repetitions` times and return its slot curve: per batch size the
    run with the best decode speed (slower runs are interference from other processes, not the engine).
    `timeout_s` bounds each run."""
    check_slots(slots)
    if repetitions < 1:
        raise PlannerError(f"repetitions must be at least 1, got {repetitions}.")
    if prompt_tokens < 1 or gen_tokens < 1:
        raise PlannerError("prompt and generated tokens must be at least 1.")
    if not model.is_file():
        raise PlannerError(f"{model}: no such GGUF file.")
    tools = find_tools()
    n_threads = threads if threads is not None else (os.cpu_count() or 1)
    cmd = batched_bench_command(
        tools.path("llama-batched-bench"),
        model,
        slots=slots,
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        threads=n_threads,
        gpu_layers=gpu_layers,
        flash_attn=flash_attn,
    )
    best: dict[int, SlotPoint] = {}
    for _ in range(repetitions):
        for p in _run_once(cmd, tools.env(), timeout_s):
            if p.slots not in best or p.aggregate_decode_tok_s > best[p.slots].aggregate_decode_tok_s:
                best[p.slots] = p
    return BatchedBenchResult(
        points=tuple(best[s] for s in sorted(best)),
        threads=n_threads,
        gpu_layers=gpu_layers,
        command=tuple(cmd),
        build=tools.build(),
    )


def _run_once(cmd: list[str], env: dict[str, str], timeout_s: float) -> list[SlotPoint]:
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killed with everything it started
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_group(proc, 0)
        raise PlannerError(f"llama-batched-bench did not finish within {timeout_s:g} s; it was stopped.") from None
    except BaseException:  # Ctrl-C included: never leave the benchmark running
        stop_group(proc, 0)
        raise
    points = parse_batched_bench(out + "\n" + err)
    if proc.returncode != 0 or not points:
        tail = (err.strip().splitlines() or ["no output"])[-1]
        raise PlannerError(f"llama-batched-bench failed (exit {proc.returncode}): {tail[:300]}")
    return points
