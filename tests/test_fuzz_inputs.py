"""The fuzz harness of bench/fuzz_inputs.py in CI: every input kind with a fixed, small number of seeded cases
(the same cases on every run). Each case must load or end in a one-line PlannerError; beyond that, no case
may take more than 5 s or allocate more than 64 MiB (tracemalloc peak within one case). The longer run is
`python bench/fuzz_inputs.py` (2,000 cases per kind)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("fuzz_inputs", REPO / "bench" / "fuzz_inputs.py")
assert _spec is not None and _spec.loader is not None
fuzz_inputs = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_inputs"] = fuzz_inputs
_spec.loader.exec_module(fuzz_inputs)

CASES = 60  # per kind: about 1-3 s each on the 2-core CI machine


@pytest.mark.parametrize("kind", fuzz_inputs.KINDS)
def test_fuzz_every_input_kind(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_ENDPOINT", "AGIPLAN_HUB_TIMEOUT_S", "AGIPLAN_CACHE_DIR", "HF_HOME"):  # the hub kind sets them
        monkeypatch.delenv(var, raising=False)
    stats = fuzz_inputs.run_kind(kind, CASES, seed=15)
    assert stats.cases == CASES and stats.loaded + stats.refused == CASES
    assert stats.refused > 0  # the mutations reach the checks (every kind refuses some of its cases)
    assert stats.worst_s < 5.0, (kind, stats.worst_case, stats.worst_s)
    assert stats.peak_bytes < 64 << 20, (kind, stats.worst_case, stats.peak_bytes)
