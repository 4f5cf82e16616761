"""`recommend` with a draft model named by the stack: the placement counts the draft's memory, decodes at the
speculative rate, records the draft for deploy, and re-estimates to the same numbers; a draft whose vocabulary
the target does not share is a one-line error."""

from __future__ import annotations

import pytest

from planner.catalog import load_catalog
from planner.errors import PlannerError
from planner.estimate.devices import gpu_device, host_device
from planner.estimate.estimate import estimate
from planner.plan.problem import EstimateCache
from planner.plan.recommend import recommend
from planner.plan.servers import parse_server_spec
from planner.plan.stack import parse_stack
from planner.sources.resolve import resolve_model

CAT = load_catalog()
SERVER = "main: 2x rtx-4090, ryzen-9-7950x, 128GiB"


def _stack(draft: object) -> dict[str, object]:
    role = {"name": "reasoner", "models": ["llama-3.3-70b"], "quants": ["Q4_K_M"], "ctx": 8192, "min_tok_s": 15}
    return {"roles": [{**role, "draft": draft}] if draft is not None else [role]}


def _placement(draft: object):  # type: ignore[no-untyped-def]
    rec = recommend(
        parse_stack(_stack(draft)),
        [parse_server_spec(SERVER, CAT)],
        CAT,
        budget_usd=0,
        cache=EstimateCache(CAT),
        kinds=("one-server-concurrent",),
    )
    option = rec.plan.options[0]
    server = option.servers[0]
    return server, server.placements[0]


def test_a_draft_is_counted_and_speeds_the_role_up() -> None:
    """Llama 3.3 70B Q4_K_M with a Llama 3.2 3B Q4_K_M draft on 2 × RTX 4090: both fit on the GPUs; the draft's
    3.3 GiB are in the placement, and decode per slot is the plain rate × the speculative speed-up (a = 0.7,
    k = 3: 2.53 tokens a step)."""
    _, plain = _placement(None)
    server, p = _placement("llama-3.2-3b:Q4_K_M")
    assert p.draft is not None
    assert (p.draft.model, p.draft.quant, p.draft.n_max, p.draft.acceptance) == ("llama-3.2-3b", "Q4_K_M", 3, 0.7)
    assert p.draft.gpu_layers == 29  # 28 layers + output, on the target's GPUs
    assert p.memory_bytes == plain.memory_bytes + p.draft.memory_bytes
    assert p.decode_tok_s_alone == pytest.approx(plain.decode_tok_s_alone * p.draft.speedup, rel=1e-3)
    assert p.draft.speedup > 1.5
    # the plan re-estimates to the same numbers (the guarantee tests/test_plan_properties.py checks)
    gpus = [gpu_device(CAT, server.gpus[i]) for i in p.gpu_indices]
    host = host_device(CAT, server.cpu, server.ram_bytes / 2**30)
    est = estimate(resolve_model(p.model), p.run_config(), gpus, host, quant=p.estimate_quant(), suggest=False)
    assert est.memory.total_bytes == p.memory_bytes
    assert est.speed.decode_tok_s_per_slot == pytest.approx(p.decode_tok_s_alone, rel=1e-4)


def test_a_draft_of_another_vocabulary_is_refused() -> None:
    with pytest.raises(PlannerError, match=r"role 'reasoner': draft qwen2.5-7b has the qwen2 tokenizer") as e:
        _placement("qwen2.5-7b")
    assert "\n" not in str(e.value)
