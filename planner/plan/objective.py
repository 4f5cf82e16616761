"""The objective a plan is ranked by, and the rules every search shares: decode floors (a role's `min_tok_s`,
else the default of its task), quant quality tiers, the quality points of one placement, and the tolerances
of every threshold comparison (`problem.evaluate`, the branch and bound and the MILP all call these).

Ranking (docs/solver.md, README "recommend"), smaller key is better:
1. floors missed (decode tok/s under the planned load, swap-in, residency);
2. quality points, summed over roles: the role's model preference first (PREFERENCE_STEP per place in its
   list), then the quant's tier (TIER_STEP per tier); a placement that misses its floor even alone loses
   SHORTFALL_POINTS × its relative shortfall, so when nothing meets a floor the fastest choice wins, not the
   best quant at 0.8 tok/s; a placed role scores at least 1, an unplaced one 0;
3. cost; 4. devices holding layers (a host counts as HOST_DEVICE_WEIGHT GPUs): at the same model, tier and
   cost the plan on fewer devices, GPUs before CPU layers — the faster one, as a proxy. Speed is not scored
   finer than that: points that depend on the devices would loosen the weight-size bound the server-set
   search prunes with (planner.plan.options._SetBound; measured: it then solved all 10 sets of the pruning
   test instead of fewer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from planner.catalog import Catalog


class Key(NamedTuple):
    """How a plan ranks (smaller is better, compared in this order): a tuple, so plain tuples of the same four
    numbers (a bound, a bar) compare with it."""

    floors_missed: int
    neg_points: int  # −(quality points)
    cost_cents: int
    devices: int  # GPUs holding layers, a host counting HOST_DEVICE_WEIGHT


# ------------------------------------------------------------------------------------------ tolerances

# Every threshold is compared with this relative slack, in the plan's favour: a role at exactly its floor
# meets it whatever the floating-point path (evaluate sums step times in one order, the branch and bound in
# another). The MILP adds its own, larger TARGET_SLACK on top (planner.plan.milp: a relaxation).
REL_TOL = 1e-9


# The recommender's tolerance on quality: a plan meeting every floor whose points are within this many per role
# of the best plan's is "a plan within tolerance". 10 points is the smallest difference two such plans can have
# (the points are 3000 − 100 per model place − 30 per tier: multiples of 10), a third of a quant tier, and the
# recommender's own tolerance before the objective was restated (10 points per role, then 0.01 mean KLD). The
# server-set search settles each purchasable set to this tolerance first, then exactly while --time-limit
# allows (planner.plan.options.solve_two_server): a set that cannot beat the best plan by more than this is
# dismissed by the relaxation in ~0.01 s, where proving that it cannot beat it at all takes 2–5 s.
QUALITY_TOLERANCE_PER_ROLE = 10


def tolerance_points(n_roles: int) -> int:
    """The recommender's tolerance for a plan of `n_roles` model roles, in quality points."""
    return QUALITY_TOLERANCE_PER_ROLE * max(1, n_roles)


def floor_step_s(floor_tok_s: float) -> float:
    """The longest decode step (s) that still meets `floor_tok_s`: the tolerance written once."""
    return 1.0 / (floor_tok_s * (1 - REL_TOL))


def below_floor(tok_s: float, floor_tok_s: float | None) -> bool:
    """Does `tok_s` miss the floor (None: no floor)?"""
    return floor_tok_s is not None and tok_s < floor_tok_s * (1 - REL_TOL)


def over_limit(value: float, limit: float | None) -> bool:
    """Does `value` exceed `limit` (a swap-in time in s; None: no limit)?"""
    return limit is not None and value > limit * (1 + REL_TOL)


# ------------------------------------------------------------------------------------------ floors


@dataclass(frozen=True)
class TaskFloor:
    """The decode floor a role of this task gets when its stack gives no `min_tok_s`, and why."""

    task: str
    decode_tok_s: float | None  # per slot, under load; None: the floor is a prefill rate
    prefill_tok_s: float | None
    reason: str


TASK_FLOORS: dict[str, TaskFloor] = {
    f.task: f
    for f in (
        TaskFloor(
            "chat",
            15.0,
            None,
            "a reader reads ~4–5 words/s (~6–7 tokens/s); twice that keeps the text ahead of the eye",
        ),
        TaskFloor(
            "reasoner",
            15.0,
            None,
            "a reasoning answer runs 1,000–2,000 tokens of thought and text: ~2 minutes at 15 tok/s, "
            "beyond that a person stops waiting",
        ),
        TaskFloor(
            "coder",
            20.0,
            None,
            "an edit of 300–600 tokens should land in under 30 s, and agents loop over many of them",
        ),
        TaskFloor(
            "summarizer",
            10.0,
            None,
            "a summary is short (200–400 tokens) and not read as it streams: under 40 s is fine",
        ),
        TaskFloor("vision", 10.0, None, "captions and short answers about an image (100–300 tokens)"),
        TaskFloor(
            "embedding",
            None,
            1000.0,
            "an embedder only reads: at 1,000 tokens/s a 512-token query is a vector in 0.5 s, and 1M tokens of "
            "documents in ~17 minutes",
        ),
    )
}
DEFAULT_TASK = "chat"  # a role naming models the catalog does not tag gets the chat floor


# ------------------------------------------------------------------------------------------ quality tiers


@dataclass(frozen=True)
class QuantTier:
    """Quants whose mean KLD vs FP16 (Llama 3 8B, llama.cpp's perplexity scoreboard, catalog quants.yaml)
    is at most `max_kld`; ΔPPL is that table's perplexity increase at the cut."""

    index: int
    name: str
    max_kld: float
    reason: str


QUANT_TIERS: tuple[QuantTier, ...] = (
    QuantTier(0, "near-lossless", 0.006, "Q6_K and up: KLD <= 0.0055, ΔPPL <= 0.022 — no one tells them from FP16"),
    QuantTier(
        1,
        "good",
        0.05,
        "Q5_K_M down to IQ4_XS / Q4_K_S: KLD 0.011–0.043, ΔPPL 0.06–0.27 — the usual serving quants",
    ),
    QuantTier(2, "degraded", 0.12, "Q4_0, Q3_K_M, IQ3_M: KLD 0.07–0.11, ΔPPL up to 0.73 — noticeably worse"),
    QuantTier(3, "poor", math.inf, "IQ3_XS and below: KLD >= 0.14, ΔPPL >= 0.93"),
)


def quant_tier(kld: float) -> QuantTier:
    """The tier of a quant with mean KLD `kld`."""
    return next(t for t in QUANT_TIERS if kld <= t.max_kld)


# ------------------------------------------------------------------------------------------ points

MODEL_POINTS = 3000  # a placed role at its first-choice model and the top tier (room for the shortfall below)
PREFERENCE_STEP = 100  # per place down the role's model list: above every tier difference (3 × TIER_STEP)
TIER_STEP = 30  # per quant tier
SHORTFALL_POINTS = 2000  # × relative shortfall of a placement that misses its floor alone (5 % = a model place)
QUALITY_POINTS = 1000  # the model-and-tier part of a top placement: quality_score's unit


@dataclass(frozen=True)
class Points:
    """The quality points of one placement, by part (their sum is what the search maximizes)."""

    preference: int  # 0 for the first model of the list, 1 for the second, ...
    tier: int
    shortfall_rel: float  # 1 − alone / floor when below the floor alone, else 0

    @property
    def total(self) -> int:
        """At least 1: a placed role always outscores an unplaced one (0 points, and the same one floor missed);
        MODEL_POINTS leaves room for a full shortfall at the first 9 places of a model list."""
        raw = MODEL_POINTS - PREFERENCE_STEP * self.preference - TIER_STEP * self.tier
        return max(1, raw - round(SHORTFALL_POINTS * self.shortfall_rel))

    @property
    def quality(self) -> int:
        """The model-and-tier part, out of QUALITY_POINTS (what quality_score reports; speed left out)."""
        return max(0, QUALITY_POINTS - PREFERENCE_STEP * self.preference - TIER_STEP * self.tier)


def combo_points(preference: int, tier: int) -> int:
    """An upper bound on the points of any placement of this model and quant (no shortfall): the bound the
    server-set search prunes with."""
    return Points(preference, tier, 0.0).total


def shortfall(tok_s: float, floor_tok_s: float | None) -> float:
    """The relative shortfall of a rate against a floor: 1 − tok_s / floor when below it, else 0."""
    if floor_tok_s is None or floor_tok_s <= 0 or not below_floor(tok_s, floor_tok_s):
        return 0.0
    return 1.0 - tok_s / floor_tok_s


def role_task(cat: Catalog, task: str | None, first_model: str | None) -> str:
    """The task whose default floor a role gets: its own, else the first catalog tag of its first model."""
    if task is not None:
        return task
    m = cat.models.get(first_model or "")
    if m is not None:
        for tag in m.roles:
            if tag in TASK_FLOORS:
                return tag
    return DEFAULT_TASK
