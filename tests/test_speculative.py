"""Speculative decoding: the expected tokens per step, the speed-up and how it falls with busy slots, the draft's
memory in an estimate, and the vocabulary check.

Expected numbers are worked out from the formula in each row's comment (Leviathan et al. 2023, eq. 1) or from
llama.cpp b11434's own rules (common/speculative.cpp); the draft's memory against the real llama-server is in
tests/test_speculative_vs_llama_server.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.catalog import load_catalog
from planner.errors import EstimateError
from planner.estimate.devices import gpu_devices, host_device
from planner.estimate.estimate import estimate
from planner.estimate.speculative import (
    DraftConfig,
    Vocabulary,
    check_draft_vocabulary,
    default_acceptance,
    expected_tokens_per_step,
    speculative_speed,
    vocabulary,
)
from planner.estimate.types import RunConfig
from planner.sources.resolve import resolve_model

MIB = 2**20

TOKENS_PER_STEP = [
    # (acceptance a, drafted k, E = (1 − a^(k+1)) / (1 − a))
    (0.0, 4, 1.0),  # nothing accepted: the target's own token only
    (1.0, 4, 5.0),  # everything accepted: k + 1
    (0.5, 1, 1.5),  # (1 − 0.25) / 0.5
    (0.7, 5, (1 - 0.7**6) / 0.3),  # 2.94: the chat default at issue #5877's n_draft 5
    (0.8, 10, (1 - 0.8**11) / 0.2),  # 4.57: the code default at PR #10455's draft 10
]


@pytest.mark.parametrize(("a", "k", "expected"), TOKENS_PER_STEP)
def test_expected_tokens_per_step(a: float, k: int, expected: float) -> None:
    assert expected_tokens_per_step(a, k) == pytest.approx(expected)


def test_speed_up_of_one_step() -> None:
    """a = 0.7, k = 5, a draft step a tenth of the target's, verification 1.05 target steps: E = 2.94 tokens in
    5 × 0.1 + 1.05 = 1.55 steps → ×1.90."""
    s = speculative_speed(
        acceptance=0.7, n_draft=5, slots=1, draft_step_s=0.001, verify_step_s=0.0105, plain_step_s=0.01
    )
    assert s.step_s == pytest.approx(0.0155)
    assert s.speedup == pytest.approx((1 - 0.7**6) / 0.3 / 1.55)
    assert s.aggregate_tok_s == s.decode_tok_s_per_slot


def test_defaults_by_task() -> None:
    assert default_acceptance("coder") == 0.8  # PR #10455: 2.6× on code
    assert default_acceptance("chat") == 0.7  # issue #5877: 1.71× on free text
    assert default_acceptance(None) == 0.7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_max": 0}, "n_max"),
        ({"n_min": 5, "n_max": 4}, "n_min"),
        ({"acceptance": 1.5}, "acceptance"),
    ],
)
def test_bad_draft_settings_are_one_line_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(EstimateError, match=message):
        DraftConfig(resolve_model("gemma-3-270m"), **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ vocabulary


@pytest.mark.parametrize(
    ("target", "draft", "ok"),
    [
        ("gemma-3-27b", "gemma-3-270m", True),  # 262,208 vs 262,144 tokens: 64 apart, one family
        ("llama-3.3-70b", "llama-3.2-3b", True),  # Llama 3.2 keeps Llama 3's tokenizer
        ("qwen2.5-72b", "qwen2.5-7b", True),
        ("llama-2-70b", "mistral-7b", False),  # both 32,000 tokens, different ones
        ("qwen2.5-72b", "llama-3.2-3b", False),  # 152,064 vs 128,256
        ("llama-3.1-70b", "deepseek-r1-distill-llama-8b", False),  # the distill's own special tokens
    ],
)
def test_draft_vocabulary(target: str, draft: str, ok: bool) -> None:
    cat = load_catalog()
    t, d = vocabulary(resolve_model(target), cat), vocabulary(resolve_model(draft), cat)
    if ok:
        check_draft_vocabulary(t, d)
    else:
        with pytest.raises(EstimateError, match="draft"):
            check_draft_vocabulary(t, d)


def test_vocabulary_size_rule_of_llama_cpp() -> None:
    """Unknown families (GGUF files) fall back to llama.cpp's own size rule: at most 128 tokens apart."""
    check_draft_vocabulary(Vocabulary("a.gguf", None, 32000), Vocabulary("b.gguf", None, 32128))
    with pytest.raises(EstimateError, match="within 128 tokens"):
        check_draft_vocabulary(Vocabulary("a.gguf", None, 32000), Vocabulary("b.gguf", None, 32129))


# ------------------------------------------------------------------------------------------ in an estimate


def _host():  # type: ignore[no-untyped-def]
    return host_device(load_catalog(), None, None)


def test_draft_memory_is_its_own_context_at_the_targets_ctx() -> None:
    """The draft adds what it would take alone at the same ctx × slots (llama.cpp gives the draft context the
    target's n_ctx), less the process baseline counted once; its KV is its own layers' at that ctx. The target's
    output buffer grows to k + 1 rows per slot for verification (src/llama-context.cpp output_reserve)."""
    target, draft = resolve_model("gemma-3-27b"), resolve_model("gemma-3-270m")
    cfg = RunConfig(ctx=8192, parallel=2)
    alone = estimate(draft, cfg, [], _host(), suggest=False).devices[-1].memory
    plain = estimate(target, cfg, [], _host(), suggest=False).devices[-1].memory
    with_draft = estimate(target, replace(cfg, draft=DraftConfig(draft)), [], _host(), suggest=False)
    assert with_draft.draft is not None
    d = with_draft.draft.memory[-1]
    assert (d.weights_bytes, d.kv_cache_bytes, d.compute_bytes) == (
        alone.weights_bytes,
        alone.kv_cache_bytes,
        alone.compute_bytes,
    )
    # its output buffer (the 150 MiB process baseline counted once), and the target's output buffer grown from one
    # row per slot to k + 1 = 4: 2 slots × 3 more rows × Gemma 3 27B's 262,208 tokens × 4 B
    verify = 2 * 3 * 262208 * 4
    assert with_draft.draft.verify_output_bytes == verify
    assert d.overhead_bytes == alone.overhead_bytes - 150 * MIB + verify
    assert with_draft.devices[-1].memory == plain + d


def test_draft_goes_on_the_gpus_and_the_target_fits_around_it() -> None:
    """Llama 3.3 70B Q4_K_M at ctx 8192 just fits 2 × RTX 4090 (81 of 81 layers); a Llama 3.1 8B draft takes all
    of its layers to the GPUs first, so the target keeps fewer layers there, and every GPU still fits its margin."""
    cat = load_catalog()
    gpus = gpu_devices(cat, ["rtx-4090", "rtx-4090"])
    target, draft = resolve_model("llama-3.3-70b"), resolve_model("llama-3.1-8b")
    cfg = RunConfig(ctx=8192)
    plain = estimate(target, cfg, gpus, _host(), suggest=False)
    sped = estimate(target, replace(cfg, draft=DraftConfig(draft)), gpus, _host(), suggest=False)
    assert sped.draft is not None
    assert sped.draft.gpu_layers == 33  # 32 layers + output
    assert sum(m.weights_bytes for m in sped.draft.memory[:-1]) > 0
    assert sped.gpu_layers < plain.gpu_layers
    assert all(u.fits for u in sped.devices if u.device.is_gpu)


def test_speed_up_falls_with_busy_slots() -> None:
    """On the CPU every token of the verification pass costs its compute, and from two columns on the matmuls take
    the many-column kernels (speed.py's CPU batched rule: the 4-token pass of a 27B costs about 2.2 plain steps):
    a 270M draft for a 27B target still pays at one slot (×1.14 at the default acceptance 0.7, k = 3), and at 8
    slots, where the pass carries 8 × 4 tokens, the speed-up falls below its one-slot value."""
    target, draft = resolve_model("gemma-3-27b"), resolve_model("gemma-3-270m")
    one = estimate(target, RunConfig(ctx=4096, draft=DraftConfig(draft)), [], _host(), suggest=False)
    eight = estimate(target, RunConfig(ctx=4096, parallel=8, draft=DraftConfig(draft)), [], _host(), suggest=False)
    assert one.draft is not None and eight.draft is not None
    assert one.draft.single.speedup > 1.05
    assert eight.draft.speed.speedup < one.draft.single.speedup
    assert one.speed.decode_tok_s == pytest.approx(one.draft.single.decode_tok_s_per_slot)
    assert eight.speed.aggregate_tok_s == pytest.approx(8 * eight.draft.speed.decode_tok_s_per_slot)


@settings(max_examples=15, deadline=None)
@given(a=st.floats(0.0, 1.0), k=st.integers(1, 16))
def test_more_acceptance_never_slows_a_step(a: float, k: int) -> None:
    lo = speculative_speed(acceptance=a, n_draft=k, slots=1, draft_step_s=1e-3, verify_step_s=1e-2, plain_step_s=1e-2)
    hi = speculative_speed(
        acceptance=min(1.0, a + 0.05), n_draft=k, slots=1, draft_step_s=1e-3, verify_step_s=1e-2, plain_step_s=1e-2
    )
    assert 1.0 <= lo.tokens_per_step <= k + 1
    assert hi.decode_tok_s_per_slot >= lo.decode_tok_s_per_slot


@pytest.mark.parametrize("engine", ["ollama", "vllm"])
def test_draft_on_other_engines_is_a_clear_error(engine: str) -> None:
    cfg = RunConfig(engine=engine, draft=DraftConfig(resolve_model("gemma-3-270m")))  # type: ignore[arg-type]
    gpus = gpu_devices(load_catalog(), ["rtx-4090"])
    with pytest.raises(EstimateError, match=r"llama\.cpp only"):
        estimate(resolve_model("gemma-3-27b"), cfg, gpus, _host())
