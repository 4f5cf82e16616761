"""Run a GGUF in llama.cpp in process (llama-cpp-python, the [llama] extra) and read back what it allocated.

Imported lazily: nothing here loads llama_cpp until a function is called.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import PlannerError
from planner.measure.llama_log import BufferSizes, parse_buffer_sizes

_LOCK = threading.Lock()


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise PlannerError(
            "llama-cpp-python is not installed: pip install 'agiplan[llama]' (it compiles llama.cpp, ~11 min)."
        ) from e
    return llama_cpp


def require_llama_cpp() -> None:
    """Fail now, in one line, when llama-cpp-python cannot be imported: bench asks before it writes a
    synthetic file or starts a worker, not after."""
    _llama_cpp()


@contextlib.contextmanager
def captured_llama_log() -> Iterator[list[str]]:
    """Collect llama.cpp / ggml log text while the block runs (restores llama-cpp-python's logger after)."""
    llama_cpp = _llama_cpp()
    chunks: list[str] = []

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def _cb(level: int, text: bytes, user_data: Any) -> None:
        chunks.append(text.decode("utf-8", errors="replace"))

    with _LOCK:
        llama_cpp.llama_log_set(_cb, ctypes.c_void_p(0))
        try:
            yield chunks
        finally:
            from llama_cpp import _logger

            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@dataclass(frozen=True)
class LlamaParams:
    n_ctx: int  # total context over all slots (llama-server -c)
    n_seq_max: int = 1
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = True
    n_gpu_layers: int = 0
    n_ubatch: int = 512
    n_batch: int = 2048
    swa_full: bool = False
    kv_unified: bool = False
    n_threads: int | None = None
    no_perf: bool = True  # llama.cpp's default; False makes llama_perf_context() report timings
    embeddings: bool = False  # llama-server --embeddings: the context outputs embeddings (encoders)
    n_outputs_max: int = 0  # output rows a ubatch may have: 0 = n_batch (the library); llama-server sets n_seq_max


def ggml_type_id(name: str) -> int:
    from gguf import GGMLQuantizationType

    return int(GGMLQuantizationType[name.upper()])


@contextlib.contextmanager
def loaded_context(path: str | Path, p: LlamaParams) -> Iterator[tuple[Any, Any, list[str]]]:
    """Load `path` with params `p` through llama.cpp's C API; yields (model, context, log chunks).

    Frees both on exit. Raises PlannerError when llama.cpp refuses (the log's last lines say why).
    """
    llama_cpp = _llama_cpp()
    llama_cpp.llama_backend_init()
    with captured_llama_log() as log:
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = p.n_gpu_layers
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise PlannerError(f"llama.cpp could not load {path}: {''.join(log)[-300:].strip()}")
        ctx = None
        try:
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_ctx = p.n_ctx
            cparams.n_batch = p.n_batch
            cparams.n_ubatch = p.n_ubatch
            cparams.n_seq_max = p.n_seq_max
            cparams.type_k = ggml_type_id(p.type_k)
            cparams.type_v = ggml_type_id(p.type_v)
            cparams.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if p.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
            cparams.swa_full = p.swa_full
            cparams.kv_unified = p.kv_unified
            cparams.no_perf = p.no_perf
            cparams.embeddings = p.embeddings
            cparams.n_outputs_max = p.n_outputs_max
            if p.n_threads:
                cparams.n_threads = p.n_threads
                cparams.n_threads_batch = p.n_threads
            ctx = llama_cpp.llama_init_from_model(model, cparams)
            if not ctx:
                raise PlannerError(f"llama.cpp could not create a context: {''.join(log)[-300:].strip()}")
            yield model, ctx, log
        finally:
            if ctx:
                llama_cpp.llama_free(ctx)
            llama_cpp.llama_model_free(model)


def measure_buffers(path: str | Path, p: LlamaParams) -> tuple[BufferSizes, str]:
    """llama.cpp's own buffer sizes (model / KV / compute / output per device) for loading `path` with `p`."""
    with loaded_context(path, p) as (_model, _ctx, log):
        text = "".join(log)
    return parse_buffer_sizes(text), text


@dataclass(frozen=True)
class PerfCounters:
    """llama.cpp's own timing of a context since its last reset (`llama_perf_context`): prompt batches
    (more than one token per llama_decode) and single-token evaluations, in ms and tokens."""

    t_p_eval_ms: float
    n_p_eval: int
    t_eval_ms: float
    n_eval: int

    @property
    def prefill_tok_s(self) -> float | None:
        return self.n_p_eval / (self.t_p_eval_ms / 1000.0) if self.t_p_eval_ms > 0 else None

    @property
    def decode_tok_s(self) -> float | None:
        return self.n_eval / (self.t_eval_ms / 1000.0) if self.t_eval_ms > 0 else None


def perf_counters(ctx: Any) -> PerfCounters:
    """Read llama.cpp's perf counters of `ctx` (needs LlamaParams(no_perf=False) for the times)."""
    data = _llama_cpp().llama_perf_context(ctx)
    return PerfCounters(float(data.t_p_eval_ms), int(data.n_p_eval), float(data.t_eval_ms), int(data.n_eval))


def reset_perf(ctx: Any) -> None:
    _llama_cpp().llama_perf_context_reset(ctx)


def clear_memory(ctx: Any) -> None:
    """Drop every sequence from the context's KV cache (positions restart at 0)."""
    llama_cpp = _llama_cpp()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)


def n_vocab(model: Any) -> int:
    llama_cpp = _llama_cpp()
    return int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)))


def decode_tokens(ctx: Any, tokens: list[int], n_batch: int) -> None:
    """llama_decode `tokens` on sequence 0 after what it holds, in chunks of at most `n_batch`."""
    llama_cpp = _llama_cpp()
    for start in range(0, len(tokens), n_batch):
        chunk = tokens[start : start + n_batch]
        arr = (llama_cpp.llama_token * len(chunk))(*chunk)
        rc = llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(arr, len(chunk)))
        if rc != 0:
            raise PlannerError(f"llama_decode failed with code {rc} (context full or out of memory).")


def argmax_last_logits(ctx: Any, vocab_size: int) -> int:
    """Greedy next token: the index of the largest logit of the last output (synchronizes the context)."""
    import numpy as np

    ptr = _llama_cpp().llama_get_logits_ith(ctx, -1)
    if not ptr:
        raise PlannerError("llama.cpp returned no logits for the last token.")
    return int(np.ctypeslib.as_array(ptr, shape=(vocab_size,)).argmax())
