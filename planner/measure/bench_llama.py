"""Bench a GGUF on the real llama-server (the pinned llama.cpp tools): memory it allocates, prefill and decode speed.

One run starts llama-server (planner.measure.server_memory) with the run's context (total = ctx × parallel over
`parallel` slots), KV types, flash attention and GPU layers, as `agiplan deploy` writes it, reads llama.cpp's
own buffer lines from its log (model / KV / compute / output per device), samples the server process's RSS
(psutil) and asks NVML for its GPU memory. Then, after a short warm-up, each repetition sends one
`/completion` request of random token ids (like llama-bench, speed does not depend on them; no tokenizer is
involved), greedy, end of sequence ignored:

1. with `depth_tokens`, a first request fills the slot's cache with them (not timed);
2. the timed request evaluates `n_prompt` more tokens and generates `n_gen`.

Prefill and decode tok/s are llama-server's own `timings` of that request (prompt_per_second,
predicted_per_second); the time to first token is its wall time here less llama-server's generation time.
Several models at once (`run_workers`, for `agiplan bench --plan`): one llama-server each, all loaded before
any starts decoding.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import statistics
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from planner.errors import PlannerError, shown
from planner.measure.host import RssSampler, gpu_process_memory_bytes
from planner.measure.llama_log import BufferSizes
from planner.measure.llama_tools import find_tools
from planner.measure.results import Measured
from planner.measure.server_memory import RunningServer, ServerLoad, started_server

_REQUEST_TIMEOUT_S = 600.0  # one request: a long prompt on a slow CPU takes minutes

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
    n_cpu_moe: int = 0  # llama-server --n-cpu-moe (a plan's MoE placement)

    def check(self) -> None:
        if self.ctx <= 0 or self.parallel <= 0:
            raise PlannerError("--ctx and --parallel must be positive.")
        if self.n_prompt < 2 or self.n_gen < 2 or self.repetitions < 1:
            # llama-server samples the first token from the prompt's logits: decode speed needs a second one
            raise PlannerError("a bench needs a prompt of at least 2 tokens, 2 generated tokens and 1 repetition.")
        need = self.depth_tokens + self.n_prompt + self.n_gen
        if need > self.ctx:
            raise PlannerError(
                f"depth {self.depth_tokens} + prompt {self.n_prompt} + generated {self.n_gen} = {need} tokens "
                f"do not fit in a context of {self.ctx}; raise --ctx or lower --depth / --prompt / --gen."
            )


def default_threads() -> int:
    return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def server_load(cfg: LlamaBenchConfig) -> ServerLoad:
    """The llama-server start for `cfg`: ctx × parallel cells over `parallel` slots, as `agiplan deploy` writes
    it (llama-server reserves one output row per slot itself)."""
    return ServerLoad(
        n_ctx=cfg.ctx * cfg.parallel,
        n_parallel=cfg.parallel,
        type_k=cfg.kv_type_k,
        type_v=cfg.kv_type_v,
        flash_attn=cfg.flash_attn,
        n_ubatch=cfg.n_ubatch,
        n_batch=cfg.n_batch,
        swa_full=cfg.swa_full,
        n_gpu_layers=cfg.gpu_layers,
        n_threads=cfg.n_threads or default_threads(),
        n_cpu_moe=cfg.n_cpu_moe,
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


@dataclass(frozen=True)
class Timings:
    """llama-server's own timing of one /completion request (its `timings` object): `prompt_n` tokens
    evaluated after `cache_n` reused from the slot's cache, `predicted_n` tokens generated (the first one is
    sampled from the prompt's logits, so `predicted_ms` covers predicted_n - 1 decode steps and sampling)."""

    cache_n: int
    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float

    @property
    def prefill_tok_s(self) -> float | None:
        return self.prompt_n / (self.prompt_ms / 1000.0) if self.prompt_n > 0 and self.prompt_ms > 0 else None

    @property
    def decode_tok_s(self) -> float | None:
        """llama-server's predicted_per_second; None below 2 tokens (a single token has no decode step)."""
        return (
            self.predicted_n / (self.predicted_ms / 1000.0) if self.predicted_n > 1 and self.predicted_ms > 0 else None
        )


def _server_json(url: str, path: str, timeout_s: float, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST `body` to) `path` of the llama-server at `url` and parse its JSON reply; any failure (no
    answer, an HTTP error, a reply that is not JSON) is a PlannerError naming the path."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException) as e:
        raise PlannerError(f"llama-server at {url} did not answer {path}: {e}") from None
    finally:
        conn.close()
    text = raw.decode(errors="replace")
    if resp.status != 200:
        raise PlannerError(f"llama-server refused {path} (HTTP {resp.status}): {shown(text)}")
    try:
        return json.loads(text)
    except ValueError:
        raise PlannerError(f"llama-server's reply to {path} is not JSON: {shown(text)}") from None


def completion(url: str, tokens: list[int], n_predict: int, *, cache_prompt: bool, timeout_s: float) -> Timings:
    """POST /completion: `tokens` (ids, so no tokenizer is involved) then `n_predict` greedy tokens, end of
    sequence ignored; llama-server's `timings` of it. A refusal or a dropped connection is a PlannerError."""
    body = {
        "prompt": tokens, "n_predict": n_predict, "ignore_eos": True, "cache_prompt": cache_prompt,
        "samplers": ["top_k"], "top_k": 1, "stream": False,
    }  # fmt: skip
    reply = _server_json(url, "/completion", timeout_s, body)
    try:
        t = reply["timings"]
        return Timings(
            int(t.get("cache_n", 0)), int(t["prompt_n"]), float(t["prompt_ms"]), int(t["predicted_n"]),
            float(t["predicted_ms"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PlannerError(f"llama-server's /completion reply has no timings: {shown(str(reply))}") from None


def n_vocab(url: str, timeout_s: float = 10.0) -> int:
    """The vocabulary size llama-server reports (`GET /v1/models`: data[0].meta.n_vocab)."""
    reply = _server_json(url, "/v1/models", timeout_s)
    try:
        return int(reply["data"][0]["meta"]["n_vocab"])
    except (KeyError, IndexError, TypeError, ValueError):
        raise PlannerError(f"llama-server's /v1/models reply has no n_vocab: {shown(str(reply))}") from None


def _one_pass(
    url: str, vocab_size: int, rng: random.Random, cfg: LlamaBenchConfig, n_prompt: int, n_gen: int
) -> tuple[Timings, float]:
    """One repetition: llama-server's timings of `n_prompt` random tokens (after `depth_tokens` already cached)
    and `n_gen` generated ones, and the time to the first token (the request's wall time less llama-server's
    generation time: HTTP, prompt evaluation and the first pick)."""
    timeout_s = _REQUEST_TIMEOUT_S
    depth = [rng.randrange(vocab_size) for _ in range(cfg.depth_tokens)]
    if depth:  # fill the slot's cache: the timed request reuses it (cache_prompt) and evaluates the rest
        completion(url, depth, 1, cache_prompt=True, timeout_s=timeout_s)
    prompt = depth + [rng.randrange(vocab_size) for _ in range(n_prompt)]
    t0 = time.perf_counter()
    t = completion(url, prompt, n_gen, cache_prompt=bool(depth), timeout_s=timeout_s)
    wall_s = time.perf_counter() - t0
    return t, max(0.0, wall_s - t.predicted_ms / 1000.0)


@dataclass
class _Loaded:
    """A llama-server that loaded the model, the RSS sampler of its process, and the result it fills."""

    server: RunningServer
    sampler: RssSampler
    result: LlamaBenchResult
    vocab_size: int


def _load(stack: contextlib.ExitStack, path: str | Path, cfg: LlamaBenchConfig, env: dict[str, str]) -> _Loaded:
    """Start llama-server for `cfg` (stopped when `stack` closes) and read what it allocated."""
    cfg.check()
    model = Path(path)
    if not model.is_file():
        raise PlannerError(f"{path}: no such GGUF file.")
    samplers: list[RssSampler] = []

    def watch(pid: int) -> None:  # from before the model loads: the baseline is the bare process
        samplers.append(RssSampler(pid=pid).start())
        stack.callback(samplers[0].stop)  # its thread ends however the start ends

    server = stack.enter_context(started_server(find_tools(), model, server_load(cfg), env=env, on_start=watch))
    (sampler,) = samplers
    stack.callback(sampler.stop)  # the last samples, before the server stops (closing runs last in, first out)
    result = LlamaBenchResult(
        buffers=server.buffers,
        peak_rss_bytes=0,
        baseline_rss_bytes=sampler.baseline_bytes,
        gpu_memory_bytes=gpu_process_memory_bytes(server.proc.pid),
        load_s=server.load_s,
        n_prompt=cfg.n_prompt,
        n_gen=cfg.n_gen,
        depth_tokens=cfg.depth_tokens,
    )
    return _Loaded(server, sampler, result, n_vocab(server.url))


def _measure(loaded: _Loaded, cfg: LlamaBenchConfig, progress: ProgressFn | None = None) -> LlamaBenchResult:
    """The warm-up and the timed repetitions on a loaded server; Ctrl-C keeps what was measured
    (`interrupted`). Peak RSS and GPU memory are read at the end."""
    rng = random.Random(cfg.seed)
    res, url = loaded.result, loaded.server.url
    total = cfg.n_gen * (cfg.repetitions + (1 if cfg.warmup else 0))
    done = 0
    try:
        if cfg.warmup:
            if progress is not None:
                progress("warm-up", done, total)
            _one_pass(url, loaded.vocab_size, rng, cfg, min(cfg.n_prompt, 32), cfg.n_gen)
            done += cfg.n_gen
        for _ in range(cfg.repetitions):
            if progress is not None:
                progress("decode", done, total)
            t, ttft_s = _one_pass(url, loaded.vocab_size, rng, cfg, cfg.n_prompt, cfg.n_gen)
            done += cfg.n_gen
            if t.prefill_tok_s is not None:
                res.prefill_tok_s.append(t.prefill_tok_s)
                res.llama_prefill_tok_s.append(t.prefill_tok_s)
            if t.decode_tok_s is not None:
                res.decode_tok_s.append(t.decode_tok_s)
                res.llama_decode_tok_s.append(t.decode_tok_s)
            res.ttft_s.append(ttft_s)
    except KeyboardInterrupt:
        res.interrupted = True
    gpu = gpu_process_memory_bytes(loaded.server.proc.pid)
    if gpu is not None:
        res.gpu_memory_bytes = max(gpu, res.gpu_memory_bytes or 0)
    res.peak_rss_bytes = loaded.sampler.stop()
    return res


def run_llama_bench(
    path: str | Path,
    cfg: LlamaBenchConfig,
    *,
    progress: ProgressFn | None = None,
    ready: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
) -> LlamaBenchResult:
    """Start llama-server on `path` with `cfg`, measure memory and speed, stop it. Ctrl-C (KeyboardInterrupt)
    stops between requests and returns what was measured so far with `interrupted=True`; the server's
    process group is stopped however this ends."""
    with contextlib.ExitStack() as stack:
        loaded = _load(stack, path, cfg, env or {})
        if ready is not None:
            ready()
        return _measure(loaded, cfg, progress)


# ------------------------------------------------------------------------------------ several at once


@dataclass(frozen=True)
class WorkerJob:
    """One model to bench on its own llama-server (`key` names it in the outcome; `env` adds variables such
    as CUDA_VISIBLE_DEVICES for the GPUs a plan placed it on)."""

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
    """Bench `jobs` at the same time, one llama-server each: all load, then all start decoding together.

    Each server runs in its own process group; whatever ends this (a failure, Ctrl-C), every group is stopped
    before it returns or re-raises: no child process is left behind."""
    outcomes = {j.key: WorkerOutcome(j.key) for j in jobs}

    def note(key: str, what: str) -> None:
        if on_event is not None:
            on_event(key, what)

    with contextlib.ExitStack() as stack:
        loaded: list[tuple[WorkerJob, _Loaded]] = []
        for job in jobs:
            note(job.key, "loading")
            try:
                loaded.append((job, _load(stack, job.path, job.cfg, job.env)))
                note(job.key, "loaded")
            except PlannerError as e:
                outcomes[job.key].error = str(e)
                note(job.key, "failed")
        pool = ThreadPoolExecutor(max_workers=max(1, len(loaded)), thread_name_prefix="agiplan-bench")
        try:
            futures = []
            for job, ld in loaded:
                futures.append((job, pool.submit(_measure, ld, job.cfg)))
                note(job.key, "running")
            for job, fut in futures:
                try:
                    res = fut.result()
                except PlannerError as e:
                    outcomes[job.key].error = str(e)
                    note(job.key, "failed")
                    continue
                outcomes[job.key].measured = res.to_measured()
                outcomes[job.key].interrupted = res.interrupted
                note(job.key, "done")
        finally:
            # on Ctrl-C the servers stop first (the stack closes after this), which ends the threads' requests
            pool.shutdown(wait=False, cancel_futures=True)
    return [outcomes[j.key] for j in jobs]
