"""Bench a GGUF in llama.cpp in process (llama-cpp-python): memory it allocates, prefill and decode speed.

One run loads the model with the run's context (llama.cpp total = ctx × parallel, n_seq_max = parallel),
KV types, flash attention and GPU layers, reads llama.cpp's own buffer lines (model / KV / compute /
output per device), samples the process's RSS and asks NVML for GPU memory. Then, after a short warm-up,
each repetition:

1. clears the KV cache and fills `depth_tokens` of context (not timed);
2. times `n_prompt` tokens in one llama_decode (prefill tok/s, and time to first token including the
   greedy pick of the first token);
3. times `n_gen` single-token llama_decode calls, each followed by a greedy argmax over the logits
   (decode tok/s; no sampler beyond the argmax).

llama.cpp's own perf counters (`llama_perf_context`: t_p_eval_ms / n_p_eval, t_eval_ms / n_eval) are read
for the same repetition, so agiplan's wall-clock figures can be compared with llama.cpp's (bench/
bench_vs_llama_timings.py). Like llama-bench, tokens are random ids: speed does not depend on them.

Also a worker entry point (`python -m planner.measure.bench_llama`) that `agiplan bench --plan` starts
once per role, so that several models run at the same time in separate processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.measure.llama_log import BufferSizes, parse_buffer_sizes
from planner.measure.results import Measured

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True)
class LlamaBenchConfig:
    """One llama.cpp run. `ctx` is per conversation (slot); llama.cpp gets ctx × parallel cells."""

    ctx: int = 2048
    parallel: int = 1
    kv_type_k: str = "f16"
    kv_type_v: str = "f16"
    flash_attn: bool = True
    gpu_layers: int = 0
    n_ubatch: int = 512
    n_batch: int = 2048
    swa_full: bool = False
    n_prompt: int = 128
    n_gen: int = 32
    depth_tokens: int = 0
    repetitions: int = 3
    warmup: bool = True
    n_threads: int | None = None
    seed: int = 1234

    def check(self) -> None:
        if self.ctx <= 0 or self.parallel <= 0:
            raise PlannerError("--ctx and --parallel must be positive.")
        if self.n_prompt < 2 or self.n_gen < 1 or self.repetitions < 1:
            raise PlannerError("a bench needs a prompt of at least 2 tokens, 1 generated token and 1 repetition.")
        need = self.depth_tokens + self.n_prompt + self.n_gen
        if need > self.ctx:
            raise PlannerError(
                f"depth {self.depth_tokens} + prompt {self.n_prompt} + generated {self.n_gen} = {need} tokens "
                f"do not fit in a context of {self.ctx}; raise --ctx or lower --depth / --prompt / --gen."
            )


def default_threads() -> int:
    import psutil

    return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def llama_params(cfg: LlamaBenchConfig) -> object:
    from planner.measure.llama_runner import LlamaParams

    return LlamaParams(
        n_ctx=cfg.ctx * cfg.parallel,
        n_seq_max=cfg.parallel,
        type_k=cfg.kv_type_k,
        type_v=cfg.kv_type_v,
        flash_attn=cfg.flash_attn,
        n_gpu_layers=cfg.gpu_layers,
        n_ubatch=cfg.n_ubatch,
        n_batch=cfg.n_batch,
        swa_full=cfg.swa_full,
        n_threads=cfg.n_threads or default_threads(),
        no_perf=False,
        n_outputs_max=cfg.parallel,  # as llama-server reserves (server_output_limits): one output per slot
    )


@dataclass
class LlamaBenchResult:
    """Raw figures of one run; lists hold one value per completed repetition."""

    buffers: BufferSizes
    peak_rss_bytes: int
    baseline_rss_bytes: int
    gpu_memory_bytes: int | None
    load_s: float
    n_prompt: int
    n_gen: int
    depth_tokens: int
    prefill_tok_s: list[float] = field(default_factory=list)
    decode_tok_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    llama_prefill_tok_s: list[float] = field(default_factory=list)
    llama_decode_tok_s: list[float] = field(default_factory=list)
    interrupted: bool = False

    @property
    def weights_bytes(self) -> int:
        return self.buffers.total("model")

    @property
    def kv_cache_bytes(self) -> int:
        return self.buffers.total("KV") + self.buffers.total("RS")

    @property
    def compute_bytes(self) -> int:
        return self.buffers.total("compute")

    @property
    def output_bytes(self) -> int:
        return self.buffers.total("output")

    def to_measured(self) -> Measured:
        def med(xs: list[float]) -> float | None:
            return round(statistics.median(xs), 3) if xs else None

        def spread(xs: list[float]) -> tuple[float, float] | None:
            return (round(min(xs), 3), round(max(xs), 3)) if xs else None

        return Measured(
            weights_bytes=self.weights_bytes,
            kv_cache_bytes=self.kv_cache_bytes,
            compute_bytes=self.compute_bytes,
            output_bytes=self.output_bytes,
            peak_rss_bytes=self.peak_rss_bytes,
            baseline_rss_bytes=self.baseline_rss_bytes,
            gpu_memory_bytes=self.gpu_memory_bytes,
            decode_tok_s=med(self.decode_tok_s),
            decode_spread_tok_s=spread(self.decode_tok_s),
            prefill_tok_s=med(self.prefill_tok_s),
            prefill_spread_tok_s=spread(self.prefill_tok_s),
            ttft_s=med(self.ttft_s),
            llama_decode_tok_s=med(self.llama_decode_tok_s),
            llama_prefill_tok_s=med(self.llama_prefill_tok_s),
            load_s=round(self.load_s, 3),
            repetitions=len(self.decode_tok_s),
            n_prompt=self.n_prompt,
            n_gen=self.n_gen,
            depth_tokens=self.depth_tokens,
        )


def _one_pass(
    ctx: object,
    vocab_size: int,
    rng: random.Random,
    cfg: LlamaBenchConfig,
    n_prompt: int,
    n_gen: int,
    progress: Callable[[], None] | None = None,
) -> tuple[float, float, float, float | None, float | None]:
    """One repetition: (prefill tok/s, decode tok/s, ttft s, llama.cpp prefill tok/s, llama.cpp decode tok/s)."""
    from planner.measure import llama_runner as lr

    lr.clear_memory(ctx)
    if cfg.depth_tokens:
        lr.decode_tokens(ctx, [rng.randrange(vocab_size) for _ in range(cfg.depth_tokens)], cfg.n_batch)
        lr.argmax_last_logits(ctx, vocab_size)  # synchronize before the timed part
    prompt = [rng.randrange(vocab_size) for _ in range(n_prompt)]
    lr.reset_perf(ctx)
    t0 = time.perf_counter()
    lr.decode_tokens(ctx, prompt, cfg.n_batch)
    t1 = time.perf_counter()
    tok = lr.argmax_last_logits(ctx, vocab_size)
    t_first = time.perf_counter()
    prefill = n_prompt / (t1 - t0)
    # decode: one token per llama_decode, greedy pick from the logits each step
    t2 = time.perf_counter()
    for _ in range(n_gen):
        lr.decode_tokens(ctx, [tok], 1)
        tok = lr.argmax_last_logits(ctx, vocab_size)
        if progress is not None:
            progress()
    t3 = time.perf_counter()
    perf = lr.perf_counters(ctx)
    return prefill, n_gen / (t3 - t2), t_first - t0, perf.prefill_tok_s, perf.decode_tok_s


def run_llama_bench(
    path: str | Path,
    cfg: LlamaBenchConfig,
    *,
    progress: ProgressFn | None = None,
    ready: Callable[[], None] | None = None,
) -> LlamaBenchResult:
    """Load `path` with `cfg`, measure memory and speed. Ctrl-C (KeyboardInterrupt) stops between tokens and
    returns what was measured so far with `interrupted=True` (the model and context are freed)."""
    from planner.measure import llama_runner as lr
    from planner.measure.host import RssSampler, gpu_process_memory_bytes

    cfg.check()
    rng = random.Random(cfg.seed)
    sampler = RssSampler().start()
    t_load = time.perf_counter()
    result: LlamaBenchResult | None = None
    try:
        with lr.loaded_context(path, llama_params(cfg)) as (model, ctx, log):  # type: ignore[arg-type]
            load_s = time.perf_counter() - t_load
            result = LlamaBenchResult(
                buffers=parse_buffer_sizes("".join(log)),
                peak_rss_bytes=0,
                baseline_rss_bytes=sampler.baseline_bytes,
                gpu_memory_bytes=gpu_process_memory_bytes(),
                load_s=load_s,
                n_prompt=cfg.n_prompt,
                n_gen=cfg.n_gen,
                depth_tokens=cfg.depth_tokens,
            )
            vocab_size = lr.n_vocab(model)
            if ready is not None:
                ready()
            total = cfg.n_gen * (cfg.repetitions + (1 if cfg.warmup else 0))
            done = 0

            def tick() -> None:
                nonlocal done
                done += 1
                if progress is not None:
                    progress("decode", done, total)

            try:
                if cfg.warmup:
                    if progress is not None:
                        progress("warm-up", done, total)
                    _one_pass(ctx, vocab_size, rng, cfg, min(cfg.n_prompt, 32), cfg.n_gen, tick)
                for _ in range(cfg.repetitions):
                    pf, dec, ttft, lpf, ldec = _one_pass(ctx, vocab_size, rng, cfg, cfg.n_prompt, cfg.n_gen, tick)
                    result.prefill_tok_s.append(pf)
                    result.decode_tok_s.append(dec)
                    result.ttft_s.append(ttft)
                    if lpf is not None:
                        result.llama_prefill_tok_s.append(lpf)
                    if ldec is not None:
                        result.llama_decode_tok_s.append(ldec)
            except KeyboardInterrupt:
                result.interrupted = True
            gpu = gpu_process_memory_bytes()
            if gpu is not None:
                result.gpu_memory_bytes = max(gpu, result.gpu_memory_bytes or 0)
    finally:
        peak = sampler.stop()
    if result is None:  # pragma: no cover - loaded_context raises instead
        raise PlannerError(f"llama.cpp did not load {path}.")
    result.peak_rss_bytes = peak
    return result


# ------------------------------------------------------------------------------------ worker process


def worker_main(argv: list[str] | None = None) -> int:
    """`python -m planner.measure.bench_llama PATH CONFIG_JSON`: load, print `ready`, wait for a line on
    stdin (the go signal, so that several workers decode at the same time), bench, print one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m planner.measure.bench_llama MODEL.gguf CONFIG_JSON\n")
        return 2
    path, raw = args
    cfg = LlamaBenchConfig(**json.loads(raw))

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()

    try:
        res = run_llama_bench(path, cfg, ready=ready)
    except PlannerError as e:
        sys.stdout.write(json.dumps({"error": str(e)}) + "\n")
        return 1
    except KeyboardInterrupt:
        return 130
    payload = {"measured": res.to_measured().model_dump(mode="json"), "interrupted": res.interrupted}
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()
    return 0


def config_json(cfg: LlamaBenchConfig) -> str:
    return json.dumps(asdict(cfg))


@dataclass(frozen=True)
class WorkerJob:
    """One model to bench in its own process (`key` names it in the outcome; `env` adds variables such as
    CUDA_VISIBLE_DEVICES for the GPUs a plan placed it on)."""

    key: str
    path: Path
    cfg: LlamaBenchConfig
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class WorkerOutcome:
    key: str
    measured: Measured | None = None
    error: str | None = None
    interrupted: bool = False


def run_workers(jobs: list[WorkerJob], *, on_event: Callable[[str, str], None] | None = None) -> list[WorkerOutcome]:
    """Bench `jobs` at the same time, one process each: all load, then all start decoding together.

    Each worker runs in its own session, so a Ctrl-C reaches only this process, which then terminates every
    worker (and waits for it) before re-raising: no child process is left behind.
    """
    import subprocess
    import tempfile

    outcomes = {j.key: WorkerOutcome(j.key) for j in jobs}
    procs: list[tuple[WorkerJob, subprocess.Popen[str], Any]] = []

    def note(key: str, what: str) -> None:
        if on_event is not None:
            on_event(key, what)

    try:
        for job in jobs:
            err = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in the finally below
            env = {**os.environ, **job.env}
            proc = subprocess.Popen(
                [sys.executable, "-m", "planner.measure.bench_llama", str(job.path), config_json(job.cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                start_new_session=True,
            )
            procs.append((job, proc, err))
            note(job.key, "loading")
        ready: list[tuple[WorkerJob, subprocess.Popen[str], Any]] = []
        for job, proc, err in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line == "ready":
                ready.append((job, proc, err))
                note(job.key, "loaded")
            else:
                outcomes[job.key].error = _worker_error(line, proc, err)
                note(job.key, "failed")
        for job, proc, _err in ready:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            note(job.key, "running")
        for job, proc, err in ready:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                outcomes[job.key].error = _worker_error(line, proc, err)
                note(job.key, "failed")
                continue
            if "error" in payload:
                outcomes[job.key].error = str(payload["error"])
            else:
                outcomes[job.key].measured = Measured.model_validate(payload["measured"])
                outcomes[job.key].interrupted = bool(payload.get("interrupted"))
            proc.wait(timeout=60)
            note(job.key, "done")
    finally:
        for _job, proc, err in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            err.close()
    return [outcomes[j.key] for j in jobs]


def _worker_error(line: str, proc: Any, err: Any) -> str:
    if line.startswith("{"):
        try:
            return str(json.loads(line).get("error", line))
        except json.JSONDecodeError:
            pass
    try:
        proc.wait(timeout=5)
    except Exception:
        proc.kill()
    err.seek(0)
    tail = err.read()[-300:].strip()
    return f"worker exited with code {proc.returncode}: {tail or line or 'no output'}"


if __name__ == "__main__":  # pragma: no cover - exercised through agiplan bench --plan
    raise SystemExit(worker_main())
