"""planner/plan/objective.py: the default floors, the quant tiers, the points and the shared tolerances."""

from __future__ import annotations

import typing

import pytest

from planner.catalog import load_catalog
from planner.plan.objective import (
    MODEL_POINTS,
    PREFERENCE_STEP,
    QUANT_TIERS,
    SHORTFALL_POINTS,
    TASK_FLOORS,
    TIER_STEP,
    Points,
    below_floor,
    combo_points,
    floor_step_s,
    over_limit,
    quant_tier,
    role_task,
    shortfall,
)
from planner.plan.stack import Task

CAT = load_catalog()


def test_every_stack_task_has_a_default_floor_with_a_reason() -> None:
    assert set(typing.get_args(Task)) == set(TASK_FLOORS)
    for f in TASK_FLOORS.values():
        assert (f.decode_tok_s is None) != (f.prefill_tok_s is None), f.task  # one kind of floor each
        assert len(f.reason) > 30, f.task


@pytest.mark.parametrize(
    ("task", "first_model", "expected"),
    [
        ("coder", "qwen2.5-72b", "coder"),  # the role's own task wins
        (None, "qwen2.5-72b", "reasoner"),  # catalog roles: [reasoner, chat, coder, summarizer]
        (None, "deepseek-coder-6.7b", "coder"),
        (None, "bge-m3", "embedding"),
        (None, "hf:someone/not-in-the-catalog", "chat"),  # unknown model: the chat floor
    ],
)
def test_role_task_picks_the_floor_source(task: str | None, first_model: str, expected: str) -> None:
    assert role_task(CAT, task, first_model) == expected


def test_tiers_follow_the_catalog_kld() -> None:
    """Cuts from catalog quants.yaml (llama.cpp's Llama 3 8B scoreboard, mean KLD vs FP16): Q8_0 0.0014 and
    Q6_K 0.0055 near-lossless; Q5_K_M 0.0108, Q4_K_M 0.0313, IQ4_XS 0.0363, Q4_K_S 0.0431 good; Q3_K_M 0.1019,
    IQ3_M 0.1025 degraded; IQ3_XS 0.1387 poor."""
    tiers = {q: quant_tier(CAT.quants[q].quality_loss or 0.0).name for q in ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M")}
    assert tiers == {"Q8_0": "near-lossless", "Q6_K": "near-lossless", "Q5_K_M": "good", "Q4_K_M": "good"}
    assert quant_tier(CAT.quants["IQ4_XS"].quality_loss or 0.0).name == "good"
    assert quant_tier(CAT.quants["Q4_K_S"].quality_loss or 0.0).name == "good"
    assert quant_tier(CAT.quants["Q3_K_M"].quality_loss or 0.0).name == "degraded"
    assert quant_tier(CAT.quants["IQ3_M"].quality_loss or 0.0).name == "degraded"
    assert quant_tier(CAT.quants["IQ3_XS"].quality_loss or 0.0) is QUANT_TIERS[-1]


def test_points_rank_model_then_tier_then_shortfall() -> None:
    # a model place outweighs every tier step; a placed role always outscores an unplaced one (0 points)
    assert TIER_STEP * (len(QUANT_TIERS) - 1) < PREFERENCE_STEP
    assert Points(0, 3, 0.0).total > Points(1, 0, 0.0).total
    assert Points(8, 3, 1.0).total >= 1 and Points(30, 3, 1.0).total == 1
    # 5 % of shortfall costs as much as a model place (SHORTFALL_POINTS = 2000, PREFERENCE_STEP = 100)
    assert Points(0, 0, 0.05).total == Points(1, 0, 0.0).total == MODEL_POINTS - 100
    assert SHORTFALL_POINTS * 0.05 == PREFERENCE_STEP
    # the combo bound the server-set search prunes with is never below a placement's points
    for pref, tier, short in [(0, 0, 0.0), (2, 1, 0.3), (5, 3, 1.0)]:
        assert combo_points(pref, tier) >= Points(pref, tier, short).total
    # the quality part (quality_score) leaves speed out
    assert Points(0, 1, 0.5).quality == Points(0, 1, 0.0).quality == 1000 - TIER_STEP


def test_tolerances_are_in_the_plans_favour() -> None:
    assert not below_floor(15.0 * (1 - 1e-12), 15.0)  # equal but for rounding: meets
    assert below_floor(14.99, 15.0)
    assert not below_floor(0.1, None)
    assert not over_limit(10.0 * (1 + 1e-12), 10.0) and over_limit(10.01, 10.0)
    assert floor_step_s(15.0) == pytest.approx(1 / 15.0)
    assert shortfall(12.0, 15.0) == pytest.approx(0.2) and shortfall(15.0, 15.0) == 0.0
