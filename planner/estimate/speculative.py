"""Speculative decoding with a draft model: its settings, the expected speed-up, and whether a draft fits a target.

A small draft model proposes k tokens one at a time; the target checks all of them in ONE pass over k + 1
tokens and keeps the longest prefix it agrees with, plus one token of its own. With a per-token acceptance
rate a (the chance the target accepts a drafted token, taken as independent of position), a step yields on
average (Leviathan, Kalman & Matias 2023, "Fast Inference from Transformers via Speculative Decoding", eq. 1)

    E[tokens per step] = (1 − a^(k+1)) / (1 − a)        (k + 1 when a = 1)

and costs k decode steps of the draft plus one target pass over k + 1 tokens per sequence:

    t_step(B) = k × t_draft(B) + t_target(B × (k + 1))
    decode tok/s per slot = E / t_step(B),   aggregate = B × E / t_step(B)

where t(N) is the time of one batched decode step of N tokens as the estimator's batched-decode model gives it
(planner.estimate.speed: weights read once, each extra token's compute). With one busy slot the target's pass
over k + 1 tokens costs little more than one token (decode is memory-bound), which is where the speed-up comes
from. With B busy slots the verification pass already carries B × (k + 1) tokens: past the matrix-vector range
(8 columns on CUDA / ROCm) and on the CPU every token costs its compute, so the pass grows with B while the
tokens it yields per slot do not, and the speed-up falls, below 1 when the step is compute-bound.

llama.cpp b11434 (common/speculative.cpp, tools/server/server-context.cpp): `-md FILE --spec-type draft-simple`
loads the draft into its own context with the target's total context (`cparams.n_ctx = llama_n_ctx(ctx_tgt)`),
the same slots, n_batch and n_ubatch, one output per slot, and its own KV types (`-ctkd/-ctvd`, default f16);
its layers go to the devices `-devd` names (default: the target's) up to `-ngld`. `--spec-draft-n-max K`
(default 3) drafts at most K tokens; `--spec-draft-n-min M` (default 0) skips drafts shorter than M. A draft is
usable only if its vocabulary matches the target's: same tokenizer type, BOS/EOS, and sizes within 128 tokens
(`common_speculative_are_compatible`, SPEC_VOCAB_MAX_SIZE_DIFFERENCE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.errors import EstimateError
from planner.model.arch import ModelSpec, Source

if TYPE_CHECKING:
    from planner.catalog.load import Catalog

# llama.cpp b11434 common/common.h common_params_speculative_draft: n_max = 3, n_min = 0
LLAMA_CPP_DRAFT_N_MAX = 3
LLAMA_CPP_DRAFT_N_MIN = 0
# common/speculative.cpp SPEC_VOCAB_MAX_SIZE_DIFFERENCE: draft and target vocabularies may differ by this many tokens
VOCAB_MAX_SIZE_DIFFERENCE = 128

# Per-token acceptance rate a by the role's task when the stack or command line gives none. Both are checked
# against published llama.cpp runs through the formula above (the draft's step cost taken from the ratio of the
# models' weight bytes, verification ≈ 1.05 single-token steps):
# - chat and free text 0.7: Llama 3.1 8B Q8_0 with a Llama 3.2 1B Q8_0 draft, n_draft 5, RTX 3060: 72 % of the
#   drafted tokens accepted, 32.49 → 55.47 tok/s = 1.71× (llama.cpp issue #5877, 2024-11-19); a = 0.7 gives
#   E = 2.94 tokens a step and 1.63×.
# - code 0.8: Qwen2.5-Coder-32B Q4_K_S with a Qwen2.5-Coder-1.5B IQ4_XS draft, draft 10: 65.5 tok/s against
#   ~25 without, 2.6× (llama.cpp PR #10455, 2024-11-25); a = 0.8 gives E = 4.57 and 2.85×. Code repeats
#   identifiers and syntax a small model predicts well (PR #10290: "code blocks are very efficiently speculated").
ACCEPTANCE_BY_TASK: dict[str, float] = {
    "coder": 0.8,
    "chat": 0.7,
    "reasoner": 0.7,
    "summarizer": 0.7,
    "vision": 0.7,
}
DEFAULT_ACCEPTANCE = 0.7  # a role without a task: free text
ACCEPTANCE_SOURCE = (
    "default by task (coder 0.8, text 0.7) checked against llama.cpp issue #5877 (1.71× measured) and PR #10455 (2.6×)"
)
SPECULATIVE_SOURCE = (
    "Leviathan et al. 2023: E = (1 − a^(k+1)) / (1 − a) tokens per step of k draft decodes + one target pass "
    "over k + 1 tokens per slot (the batched-decode model)"
)


def verification_output_bytes(vocab_size: int, slots: int, n_draft: int, n_batch: int) -> int:
    """What the target's host output buffer grows by to verify drafts: llama_context::output_reserve sizes it for
    max(outputs of the batch, slots) rows of n_vocab floats (src/llama-context.cpp), one row per slot at load, and
    a verification batch asks for k + 1 rows per slot, at most n_batch (server_output_limits,
    tools/server/server-context.cpp). The load log does not show it: the buffer is reallocated at the first
    verification."""
    rows = min(n_batch, slots * (n_draft + 1))
    return max(0, rows - slots) * vocab_size * 4


def default_acceptance(task: str | None) -> float:
    """The acceptance rate assumed for a role's task (ACCEPTANCE_BY_TASK), free text's for any other."""
    return ACCEPTANCE_BY_TASK.get(task or "", DEFAULT_ACCEPTANCE)


@dataclass(frozen=True)
class DraftConfig:
    """The draft model of a deployment and how llama-server runs it.

    `acceptance` is the per-token acceptance rate a (None: the default for `task`); `gpu_layers` the draft's
    -ngld (None: all of its layers on the target's GPUs, none without GPUs); KV types are -ctkd / -ctvd."""

    spec: ModelSpec
    quant: str | None = None
    n_max: int = LLAMA_CPP_DRAFT_N_MAX
    n_min: int = LLAMA_CPP_DRAFT_N_MIN
    acceptance: float | None = None
    task: str | None = None
    gpu_layers: int | None = None
    kv_type_k: str = "f16"
    kv_type_v: str = "f16"

    def __post_init__(self) -> None:
        if self.n_max < 1:
            raise EstimateError(f"draft: n_max (--spec-draft-n-max) must be at least 1, got {self.n_max}.")
        if not 0 <= self.n_min <= self.n_max:
            raise EstimateError(f"draft: n_min must be between 0 and n_max ({self.n_max}), got {self.n_min}.")
        if self.acceptance is not None and not 0.0 <= self.acceptance <= 1.0:
            raise EstimateError(f"draft: acceptance rate must be in [0, 1], got {self.acceptance}.")

    @property
    def acceptance_rate(self) -> float:
        return self.acceptance if self.acceptance is not None else default_acceptance(self.task)

    @property
    def acceptance_source(self) -> Source:
        if self.acceptance is not None:
            return Source("formula", "acceptance rate as given")
        return Source("catalog", ACCEPTANCE_SOURCE)


def expected_tokens_per_step(acceptance: float, n_draft: int) -> float:
    """Tokens one verification step yields on average: (1 − a^(k+1)) / (1 − a), k + 1 at a = 1 (Leviathan et al.
    2023, eq. 1; the accepted draft tokens plus the target's own)."""
    if acceptance >= 1.0:
        return float(n_draft + 1)
    return (1.0 - acceptance ** (n_draft + 1)) / (1.0 - acceptance)


@dataclass(frozen=True)
class SpeculativeSpeed:
    """Decode speed with a draft at `slots` busy slots, and what it is made of (seconds per step)."""

    slots: int
    n_draft: int
    acceptance: float
    tokens_per_step: float
    draft_step_s: float  # one decode step of the draft over `slots` sequences
    verify_step_s: float  # one target pass over slots × (n_draft + 1) tokens
    plain_step_s: float  # one target decode step of `slots` tokens (no draft)

    @property
    def step_s(self) -> float:
        return self.n_draft * self.draft_step_s + self.verify_step_s

    @property
    def decode_tok_s_per_slot(self) -> float:
        return self.tokens_per_step / self.step_s

    @property
    def aggregate_tok_s(self) -> float:
        return self.slots * self.decode_tok_s_per_slot

    @property
    def speedup(self) -> float:
        """Per-slot decode speed with the draft ÷ without it."""
        return self.decode_tok_s_per_slot * self.plain_step_s


def speculative_speed(
    *, acceptance: float, n_draft: int, slots: int, draft_step_s: float, verify_step_s: float, plain_step_s: float
) -> SpeculativeSpeed:
    """Combine the step times the batched-decode model gives into the speed with a draft (module docstring)."""
    return SpeculativeSpeed(
        slots=max(1, slots),
        n_draft=n_draft,
        acceptance=acceptance,
        tokens_per_step=expected_tokens_per_step(acceptance, n_draft),
        draft_step_s=draft_step_s,
        verify_step_s=verify_step_s,
        plain_step_s=plain_step_s,
    )


@dataclass(frozen=True)
class Vocabulary:
    """What the catalog or a file knows of a model's tokenizer: its family (None: unknown) and size."""

    model: str
    family: str | None
    size: int


# Catalog families that share one tokenizer (the model cards: Llama 3.1 / 3.2 / 3.3 keep Llama 3's 128K tiktoken
# vocabulary; Qwen1.5, Qwen2 and Qwen2.5 one byte-level BPE of 151,643 tokens; Mixtral is Mistral 7B v0.1's). A
# family not listed is its own. Fine-tunes with their own special tokens (deepseek-r1-distill) are their own family.
TOKENIZER_FAMILY: dict[str, str] = {
    "llama-3.1": "llama-3",
    "llama-3.2": "llama-3",
    "llama-3.3": "llama-3",
    "qwen1.5": "qwen2",
    "qwen2.5": "qwen2",
    "mixtral": "mistral",
}


def vocabulary(spec: ModelSpec, catalog: Catalog) -> Vocabulary:
    """The tokenizer family (catalog models only; a file's is unknown) and vocabulary size of `spec`."""
    family = None
    if spec.catalog_id is not None:
        entry = catalog.model(spec.catalog_id)
        family = TOKENIZER_FAMILY.get(entry.family, entry.family)
    return Vocabulary(spec.ref, family, spec.arch.vocab_size)


def check_draft_vocabulary(target: Vocabulary, draft: Vocabulary) -> None:
    """Raise EstimateError when the draft cannot draft for the target: llama.cpp refuses vocabularies more than
    128 tokens apart, and agiplan refuses tokenizer families it knows to differ (Llama 2 and Mistral both have
    32,000 tokens, different ones)."""
    if target.family is not None and draft.family is not None and target.family != draft.family:
        raise EstimateError(
            f"draft {draft.model} has the {draft.family} tokenizer, {target.model} the {target.family} one; "
            "a draft must share the target's vocabulary (pick a smaller model of the same family)."
        )
    if abs(target.size - draft.size) > VOCAB_MAX_SIZE_DIFFERENCE:
        raise EstimateError(
            f"draft {draft.model} has {draft.size} tokens, {target.model} {target.size}; llama.cpp needs "
            f"vocabularies within {VOCAB_MAX_SIZE_DIFFERENCE} tokens of each other (pick a draft of the same family)."
        )
