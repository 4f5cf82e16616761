"""estimate() speed on the calls `recommend()` makes: the three presets, agents with a $1,500 budget and the
README's example stack (seed server, $3,000), all four option kinds, recorded and replayed.

    python bench/estimate_speed.py                     # record here, replay cold and warm, CPU ms a call
    python bench/estimate_speed.py --save calls.pkl    # also keep the calls and their answers
    python bench/estimate_speed.py --replay calls.pkl  # replay calls saved by another version: same answers?

Cold: the estimator's memos emptied first (per model and config: layer table, KV layout, placements); warm:
the same calls again. A speed change must give every recorded Estimate back unchanged (==), which --replay
checks call by call against the answers saved by the code before it. CPU seconds (time.process_time), the
steadier figure on a shared machine; compare versions in one session, alternating.
"""

from __future__ import annotations

import argparse
import pickle
import time
from pathlib import Path

import yaml

import planner.plan.problem as problem
from planner.catalog import load_catalog
from planner.estimate import compute, kv, placement, speed
from planner.estimate import estimate as estimate_module
from planner.plan.problem import EstimateCache
from planner.plan.recommend import recommend
from planner.plan.request import DEFAULT_BUDGET_USD
from planner.plan.servers import DEFAULT_SERVER_SPEC, parse_server_spec
from planner.plan.stack import load_preset, parse_stack

ROOT = Path(__file__).resolve().parents[1]

# (inputs: spec, config, GPUs, host, keyword arguments), answer: an Estimate or ("error", message)
Call = tuple[tuple[object, ...], object]


def record() -> list[Call]:
    """Every estimate() call of recommend() on the cases, with its answer."""
    calls: list[Call] = []
    real = problem.estimate

    def recording(spec, cfg, gpus, host, **kw):  # type: ignore[no-untyped-def]
        try:
            out = real(spec, cfg, gpus, host, **kw)
        except Exception as exc:
            calls.append(((spec, cfg, tuple(gpus), host, kw), ("error", str(exc))))
            raise
        calls.append(((spec, cfg, tuple(gpus), host, kw), out))
        return out

    cat = load_catalog()
    main_server = parse_server_spec(DEFAULT_SERVER_SPEC, cat)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    readme_stack = parse_stack(yaml.safe_load(readme.split("```yaml\n", 1)[1].split("```", 1)[0]), "README")
    cases = [(load_preset(p), DEFAULT_BUDGET_USD) for p in ("deep", "agents", "ensemble")]
    cases += [(load_preset("agents"), 1500.0), (readme_stack, DEFAULT_BUDGET_USD)]
    problem.estimate = recording  # type: ignore[assignment]
    try:
        for stack, budget in cases:
            recommend(stack, [main_server], cat, budget_usd=budget, cache=EstimateCache(cat))
    finally:
        problem.estimate = real
    return calls


def replay(calls: list[Call]) -> tuple[float, int]:
    """CPU seconds to run every call again, and how many answers differ from the recorded ones."""
    differ = 0
    t0 = time.process_time()
    for (spec, cfg, gpus, host, kw), want in calls:
        try:
            got: object = estimate_module.estimate(spec, cfg, list(gpus), host, **kw)  # type: ignore[arg-type]
        except Exception as exc:
            got = ("error", str(exc))
        differ += got != want
    return time.process_time() - t0, differ


def clear_memos() -> None:
    """Empty every functools memo of the estimator's modules (what a fresh process starts with)."""
    for module in (estimate_module, compute, kv, placement, speed):
        for value in list(vars(module).values()):
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--save", type=Path, help="write the recorded calls and answers here (pickle)")
    ap.add_argument("--replay", type=Path, help="replay calls saved by --save (another version's answers)")
    args = ap.parse_args()
    if args.replay:
        calls: list[Call] = pickle.loads(args.replay.read_bytes())  # a file this script wrote
    else:
        calls = record()
        if args.save:
            args.save.write_bytes(pickle.dumps(calls))
    for label in ("cold", "warm"):
        if label == "cold":
            clear_memos()
        cpu_s, differ = replay(calls)
        print(
            f"{label}: {len(calls)} estimate() calls, {cpu_s:.2f} s CPU, {cpu_s / len(calls) * 1e3:.3f} ms a call, "
            f"{differ} answer(s) differ from the recorded ones"
        )


if __name__ == "__main__":
    main()
