"""What `agiplan recommend` does with its arguments, as one library call: the servers from specs and detect
files (or the seed's default server), the default budget, the recommendation, the what-ifs, and — when
nothing meets every target — the nearest relaxations. The CLI only parses arguments and renders the Plan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from planner.catalog import Catalog
from planner.errors import PlannerError
from planner.plan.recommend import recommend
from planner.plan.schema import Plan
from planner.plan.servers import (
    DEFAULT_SERVER_NOTE,
    DEFAULT_SERVER_SPEC,
    Server,
    parse_server_spec,
    server_from_detect,
)
from planner.plan.solver import MILP_TIME_LIMIT_S
from planner.plan.stack import Stack
from planner.plan.whatif import Scenario, apply_what_if, best_effort, nearest_relaxations, run_what_ifs

# The seed conversation asks about a "second, not very expensive" server: without a budget, agiplan does not
# shop beyond a mid-range desktop (CPU + 64 GiB + one RTX 4090-class card).
DEFAULT_BUDGET_USD = 3000.0


def assemble_servers(
    cat: Catalog, specs: Sequence[str] = (), detect_files: Sequence[Path] = ()
) -> tuple[list[Server], list[str]]:
    """The existing servers (specs first, the first one named "main" by default, then detect JSON files; the
    seed's server when none is given) and the notes the plan should carry about them."""
    servers = [
        parse_server_spec(spec, cat, default_name="main" if i == 0 else f"server{i + 1}")
        for i, spec in enumerate(specs)
    ]
    servers += [server_from_detect(f, cat) for f in detect_files]
    notes: list[str] = []
    if not servers:
        servers = [parse_server_spec(DEFAULT_SERVER_SPEC, cat)]
        notes.append(DEFAULT_SERVER_NOTE)
    names = [s.name for s in servers]
    if len(set(names)) != len(names):
        raise PlannerError(f"server names must differ: {', '.join(names)} (name them 'NAME: parts').")
    for s in servers:
        notes += [f"{s.name}: {n}" for n in s.notes]
    return servers, notes


def plan_stack(
    stack: Stack,
    servers: Sequence[Server],
    cat: Catalog,
    *,
    budget_usd: float | None = None,
    allow: Sequence[str] | None = None,
    what_ifs: Sequence[str] = (),
    time_limit_s: float = MILP_TIME_LIMIT_S,
    assumptions: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> Plan:
    """The plan `agiplan recommend` shows: the recommendation (budget: DEFAULT_BUDGET_USD when None, said in
    the notes), each what-if as a delta against it, and the nearest relaxations when nothing meets every
    target. Bad what-ifs are refused before the search."""
    notes: list[str] = []
    if budget_usd is None:
        budget_usd = DEFAULT_BUDGET_USD
        notes.append(
            f"no --budget given: new hardware capped at ${DEFAULT_BUDGET_USD:,.0f} (the seed's 'second, not very "
            "expensive' server); pass --budget USD to change it"
        )
    notes += assumptions
    base = Scenario(stack, tuple(servers), budget_usd)
    for w in what_ifs:
        apply_what_if(w, base, cat)
    rec = recommend(
        stack,
        list(servers),
        cat,
        budget_usd=budget_usd,
        allow=allow,
        assumptions=notes,
        time_limit_s=time_limit_s,
        progress=progress,
    )
    plan = rec.plan
    if what_ifs:
        deltas = run_what_ifs(what_ifs, base, plan, cat, allow=allow, cache=rec.cache, time_limit_s=time_limit_s)
        plan = plan.model_copy(update={"what_ifs": deltas})
    if plan.recommended is None:
        best = best_effort(plan)
        failing = best.failing_roles if best else [r.name for r in stack.roles]
        relaxations = nearest_relaxations(base, failing, cat, allow=allow, cache=rec.cache, time_limit_s=time_limit_s)
        plan = plan.model_copy(update={"relaxations": relaxations})
    return plan
