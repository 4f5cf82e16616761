"""The saved bench result: round trip, kind / version / field checks with one-line errors, residuals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from planner.errors import PlannerError
from planner.measure.results import (
    BENCH_KIND,
    BENCH_SCHEMA_VERSION,
    BenchResult,
    BenchRun,
    HostSummary,
    Measured,
    Predicted,
    load_result,
    residuals,
    save_result,
)


def _result() -> BenchResult:
    pred = Predicted(
        weights_bytes=259_858_104, kv_cache_bytes=18_874_368, compute_bytes=539_492_352, decode_tok_s=50.0,
        prefill_tok_s=400.0,
    )  # fmt: skip
    meas = Measured(
        weights_bytes=259_858_104, kv_cache_bytes=18_874_368, compute_bytes=539_492_352, decode_tok_s=55.0,
        prefill_tok_s=300.0, peak_rss_bytes=400_000_000,
    )  # fmt: skip
    run = BenchRun(model="Gemma 3 270m", engine="llama.cpp", kind="model", ctx=1024, predicted=pred, measured=meas)
    host = HostSummary(hostname="h", cpu="AMD EPYC", cores=2, threads=2, ram_total_bytes=24 * 2**30)
    return BenchResult(agiplan_version="0.1.0", host=host, runs=[run], complete=True)


def test_round_trip(tmp_path: Path) -> None:
    res = _result()
    out = tmp_path / "sub" / "bench.json"
    save_result(res, out)
    raw = json.loads(out.read_text())
    assert raw["kind"] == BENCH_KIND and raw["schema_version"] == BENCH_SCHEMA_VERSION
    # the stable keys
    run = raw["runs"][0]
    assert {"model", "engine", "ctx", "predicted", "measured", "verdict"} <= set(run)
    assert {"weights_bytes", "kv_cache_bytes", "compute_bytes", "decode_tok_s", "prefill_tok_s"} <= set(
        run["predicted"]
    )
    assert {"peak_rss_bytes", "ttft_s", "decode_tok_s", "prefill_tok_s"} <= set(run["measured"])
    assert load_result(out) == res
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # atomic: no temp file left


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(kind="agiplan-plan"), "not an agiplan-bench file"),
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d["runs"][0].update(surprise=1), "runs.0.surprise: Extra inputs are not permitted"),
        (lambda d: d["runs"][0].update(verdict="great"), "runs.0.verdict"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    data = _result().model_dump(mode="json")
    edit(data)
    p = tmp_path / "b.json"
    p.write_text(json.dumps(data))
    with pytest.raises(PlannerError, match=message):
        load_result(p)


def test_residuals_are_relative_and_skip_missing() -> None:
    res = _result().runs[0]
    assert res.predicted is not None
    r = residuals(res.predicted, res.measured)
    assert r == {
        "weights_bytes": 0.0,
        "kv_cache_bytes": 0.0,
        "compute_bytes": 0.0,
        "decode_tok_s": 0.1,  # 55 / 50 - 1
        "prefill_tok_s": -0.25,  # 300 / 400 - 1
    }
    assert residuals(res.predicted, Measured(decode_tok_s=25.0)) == {"decode_tok_s": -0.5}


def test_failed_is_true_for_fail_or_error_verdicts() -> None:
    res = _result()
    assert not res.failed
    res.runs.append(BenchRun(model="x", engine="openai", kind="endpoint", ctx=0, verdict="error"))
    assert res.failed
