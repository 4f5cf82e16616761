"""planner/plan/milp.py relaxes planner.plan.problem.evaluate: every assignment evaluate() accepts (memory,
cores, the required server) is feasible in the MILP with a weighted value no worse than evaluate's key. Checked
per assignment, not only at the optimum (test_solver compares the optima with brute force): the MILP is
restricted to the assignment's own candidates, so a row family (memory, cores, tok/s under load, swap-in, the
page-cache switch) stricter than the rule it relaxes forces an item unplaced, one more floor missed, and its
optimum above the assignment's value."""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_solver import _synthetic_problem

from planner.plan.milp import solve_milp
from planner.plan.problem import UNPLACED, evaluate


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_accepted_assignment_is_feasible_in_the_milp(data: st.DataObject) -> None:
    p = _synthetic_problem(data)
    every = list(itertools.product(*[[*range(len(cs)), UNPLACED] for cs in p.cands]))
    picks = data.draw(st.lists(st.sampled_from(every), min_size=1, max_size=6, unique=True), label="assignments")
    for assign in picks:
        ev = evaluate(p, assign)
        if not ev.memory_ok:
            continue
        only = replace(p, cands=[[cs[ci]] if ci >= 0 else [] for cs, ci in zip(p.cands, assign, strict=True)])
        ev_only = evaluate(only, [0 if ci >= 0 else UNPLACED for ci in assign])
        assert ev_only.key == ev.key  # the same plan in the restricted problem
        ans = solve_milp(only, time_limit_s=10.0)
        assert ans.status == "optimal", (assign, ans.status)
        assert ans.objective is not None
        assert ans.objective <= ans.weights.value(ev.key) + 0.5, (assign, ev.key, ans.objective)
