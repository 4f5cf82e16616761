"""The network between servers (`link`) in plans that split a model over two servers with llama.cpp RPC."""

from __future__ import annotations

import pytest

from planner.catalog import load_catalog
from planner.errors import PlannerError
from planner.estimate.speed import RpcLink
from planner.plan.contention import DEFAULT_LINK, link_label, parse_link
from planner.plan.recommend import recommend
from planner.plan.schema import Placement
from planner.plan.servers import DEFAULT_SERVER_SPEC, parse_server_spec
from planner.plan.stack import Stack, load_preset, parse_stack
from planner.plan.whatif import Scenario, apply_what_if


@pytest.mark.parametrize(
    ("text", "gbps"),
    [
        ("1GbE", 1.0),
        ("2.5GbE", 2.5),
        ("10 GbE", 10.0),
        ("25gbe", 25.0),
        ("40 Gbit/s", 40.0),
        ("100Gbps", 100.0),
        ("100MbE", 0.1),  # issue #11474's "slowish 100mb network"
    ],
)
def test_parse_link(text: str, gbps: float) -> None:
    assert parse_link(text).link_gbps == pytest.approx(gbps)


@pytest.mark.parametrize("text", ["fast", "10", "10 GB/s of love", "0GbE", "5000GbE", "1e3GbE", ""])
def test_parse_link_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="link"):
        parse_link(text)


def test_link_label() -> None:
    assert link_label(RpcLink(1.0)) == "1 Gbit/s"
    assert link_label(RpcLink(2.5)) == "2.5 Gbit/s"
    assert link_label(RpcLink(0.1)) == "100 Mbit/s"


def test_stack_link_default_and_error() -> None:
    roles = [{"name": "a", "models": ["llama-3-8b"]}]
    assert parse_stack({"roles": roles}, "s.yaml").link == DEFAULT_LINK == "1GbE"
    assert parse_stack({"roles": roles, "link": "10GbE"}, "s.yaml").link == "10GbE"
    with pytest.raises(PlannerError, match="link 'wifi': expected a line rate such as 1GbE"):
        parse_stack({"roles": roles, "link": "wifi"}, "s.yaml")


def _split_reasoner(stack: Stack) -> tuple[Placement, list[str]]:
    cat = load_catalog()
    main = parse_server_spec(DEFAULT_SERVER_SPEC, cat)
    plan = recommend(stack, [main], cat, kinds=("split",), budget_usd=3000).plan
    (opt,) = plan.options
    (p,) = [p for s in opt.servers for p in s.placements if p.split_hosts]
    return p, plan.assumptions


def test_split_plan_prices_the_link() -> None:
    """The same split plan (deep preset: a 70B-class reasoner over the seed server's two 4090s and a new server's
    GPU) at 1 GbE and at 10 GbE differs by exactly the link's time in planner.estimate.speed.rpc_decode_s /
    rpc_prefill_s_per_token (llama.cpp issues #11474, #10047, #8832): per decode step of one slot the hidden state
    goes there and back, 2 × 8192 × 4 bytes for a hidden size of 8192, 0.524 ms on 1 GbE and 0.052 ms on 10 GbE;
    each prompt token pays the same bytes."""
    deep = load_preset("deep")
    slow, notes_slow = _split_reasoner(deep)
    fast, notes_fast = _split_reasoner(deep.model_copy(update={"link": "10GbE"}))
    assert (slow.model, slow.quant, slow.devices) == (fast.model, fast.quant, fast.devices)  # the same plan
    assert slow.parallel == 1
    link_bytes = 2 * 8192 * 4  # qwen2.5-72b / llama-3.x-70b: hidden size 8192, f32 activations
    extra_s = link_bytes / 125e6 - link_bytes / 1.25e9  # 0.4719 ms: 1 GbE vs 10 GbE, the same 0.3 ms round trip
    assert 1 / slow.decode_tok_s_alone - 1 / fast.decode_tok_s_alone == pytest.approx(extra_s, rel=0.02)
    assert 1 / slow.prefill_tok_s - 1 / fast.prefill_tok_s == pytest.approx(extra_s, rel=0.02)
    # the ratios that follow: decode loses < 1 % (a 70B step is ~65 ms), prompt processing about a quarter
    assert fast.prefill_tok_s / slow.prefill_tok_s == pytest.approx(1.33, abs=0.05)
    assert any("over 1 Gbit/s (default 1GbE: the stack names no link)" in n for n in notes_slow)
    assert any("over 10 Gbit/s (the stack's link)" in n for n in notes_fast)


def test_what_if_link() -> None:
    cat = load_catalog()
    base = Scenario(load_preset("deep"), (parse_server_spec(DEFAULT_SERVER_SPEC, cat),), None)
    assert apply_what_if("link=10GbE", base, cat).stack.link == "10GbE"
    assert apply_what_if("link = 2.5 Gbit/s", base, cat).stack.link == "2.5 Gbit/s"
    with pytest.raises(PlannerError, match=r"what-if 'link=fast': link 'fast': expected a line rate"):
        apply_what_if("link=fast", base, cat)
