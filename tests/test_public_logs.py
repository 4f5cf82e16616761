"""The public-log dataset (bench/data/public_logs.yaml) parses, cites its sources, and replays.

KV is the one figure agiplan claims exact, so every llama.cpp / Ollama row's logged KV total (and,
where the row fixes the layers per device, the KV per device) must come out of the estimator to the
MiB digit llama.cpp prints. Weights, compute and vLLM figures are measured by
bench/public_log_accuracy.py and reported there, not asserted, except where noted below.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[1]


def _load_bench() -> ModuleType:
    path = ROOT / "bench" / "public_log_accuracy.py"
    spec = importlib.util.spec_from_file_location("public_log_accuracy", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["public_log_accuracy"] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()
DATA = bench.load_dataset()
LLAMA_ROWS = [r for r in DATA.rows if r.engine != "vllm"]


def _logs_kv(row: Any) -> bool:
    """The row's excerpt shows a total KV line, or per-device KV lines with the layers per device fixed."""
    from planner.catalog import load_catalog

    comps = bench.replay(load_catalog(), row).comparisons
    return any(c.component == "kv_total" for c in comps) or (
        row.settings.device_layers is not None and any(c.component == "kv" for c in comps)
    )


KV_ROWS = [r for r in LLAMA_ROWS if _logs_kv(r)]  # e.g. the Yi-34B excerpt shows weights and compute only


@pytest.fixture(scope="module")
def catalog() -> Any:
    from planner.catalog import load_catalog

    return load_catalog()


def test_dataset_has_cited_rows_with_unique_ids() -> None:
    ids = [r.id for r in DATA.rows]
    assert len(ids) == len(set(ids))
    assert len(DATA.rows) >= 10
    for r in DATA.rows:
        # every row names the thread it came from (the schema's pattern) and where in it
        assert r.source.startswith("https://github.com/"), r.id
        assert r.source_detail.strip(), r.id
        assert r.build.strip(), r.id


def test_every_row_logs_something_comparable() -> None:
    for r in DATA.rows:
        lg = r.logged
        figures = [lg.weights_mib, lg.kv_mib, lg.compute_mib]
        scalars = [lg.kv_total_mib, lg.weights_gib, lg.kv_cache_gib, lg.kv_tokens, lg.gpu_blocks]
        assert any(figures) or any(s is not None for s in scalars), r.id


def test_schema_rejects_unknown_fields_and_uncited_rows() -> None:
    row = DATA.rows[0].model_dump()
    with pytest.raises(ValidationError):
        bench.Row.model_validate({**row, "typo_field": 1})
    with pytest.raises(ValidationError):
        bench.Row.model_validate({**row, "source": "somewhere on reddit"})


@pytest.mark.parametrize("row", KV_ROWS, ids=[r.id for r in KV_ROWS])
def test_kv_matches_the_log_exactly(row: Any, catalog: Any) -> None:
    rep = bench.replay(catalog, row)
    kv = [c for c in rep.comparisons if c.component in ("kv_total", "kv")]
    totals = [c for c in kv if c.component == "kv_total"]
    exact = totals if totals else kv  # per-device KV only where the row fixes layers per device
    assert exact, rep.notes
    for c in exact:
        # llama.cpp prints "%.2f MiB"
        assert round(c.predicted, 2) == c.logged, (row.id, c.device, c.predicted, c.logged)


def test_kv_split_follows_the_layer_split_on_partial_offload(catalog: Any) -> None:
    # pull/4957: 17 layers on the host, 15 on the GPU -> 34.00 / 30.00 MiB as logged
    row = next(r for r in DATA.rows if r.id == "mixtral-8x7b-q8-partial-offload")
    rep = bench.replay(catalog, row)
    per_device = {c.device: c for c in rep.comparisons if c.component == "kv"}
    assert per_device["CUDA_Host"].predicted == pytest.approx(34.0)
    assert per_device["CUDA0"].predicted == pytest.approx(30.0)


def test_weights_total_within_one_percent_where_the_quant_mix_is_current(catalog: Any) -> None:
    # issues/7217 (b2849, IQ4_XS): token_embd on the host to the 0.01 MiB, whole model within 1 %
    row = next(r for r in DATA.rows if r.id == "yi-34b-iq4xs-2gpu-fa")
    rep = bench.replay(catalog, row)
    by = {(c.component, c.device): c for c in rep.comparisons}
    assert round(by[("weights", "CUDA_Host")].predicted, 2) == 232.42
    total = by[("weights_total", "all")]
    assert total.error_pct is not None and abs(total.error_pct) < 1.0


def test_vllm_no_fit_row_is_judged_no_fit(catalog: Any) -> None:
    # issues/13061: max_model_len 131072 does not fit the KV left on 2x RTX 4090 -> vLLM refuses to start
    row = next(r for r in DATA.rows if r.id == "vllm-r1-distill-qwen-14b-tp2-4090")
    rep = bench.replay(catalog, row)
    fits = [c for c in rep.comparisons if c.component == "fits"]
    assert fits and fits[0].predicted == fits[0].logged == 0.0


def test_summary_reports_every_component() -> None:
    comps = [
        bench.Comparison("a", "kv", "CUDA0", 100.0, 100.0, "MiB"),
        bench.Comparison("b", "kv", "CUDA0", 100.0, 110.0, "MiB"),
        bench.Comparison("b", "fits", "all", 1.0, 0.0, "bool"),
    ]
    s = bench.summary(comps)
    assert s["kv"] == {"n": 2, "max_abs_pct": pytest.approx(10.0), "median_abs_pct": pytest.approx(5.0)}
    assert s["fits"] == {"n": 1, "wrong": 1}
