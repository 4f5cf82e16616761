"""Per-machine calibration profile: measured ÷ predicted speed per device, saved by `agiplan bench`.

The one home of calibration maths: the ratios a bench run gives (`calibrate_from_run`), their running
mean per device (`update_profile`) and the ratios applied to later estimates (`calibration_for_devices`).

Stored as JSON in $XDG_CONFIG_HOME/agiplan/calibration-<hostname>.json (default ~/.config). `estimate`
applies it to devices of this host and marks such figures "calibrated"; `recommend` does not (the servers
it plans are descriptions, not necessarily this machine).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import PlannerError
from planner.estimate.types import Device, DeviceCalibration
from planner.io import read_text_bounded, safe_file_name, validation_message, write_text_atomic

if TYPE_CHECKING:
    from planner.catalog.load import Catalog
    from planner.estimate.types import Estimate, RunConfig
    from planner.measure.batched_bench import SlotPoint
    from planner.measure.results import BenchRun, CalibrationUpdate
    from planner.model.arch import ModelSpec

SCHEMA_VERSION = 1
# a profile is a few KiB (one entry per device, a slot curve of ≤ 32 points per model): 4 MiB is hundreds of
# times that, and a file past it is not one agiplan wrote
_MAX_PROFILE_BYTES = 4 << 20


class SlotCurvePoint(BaseModel):
    """One batch size of a llama-batched-bench run: measured aggregate decode and the calibrated prediction."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    slots: int = Field(ge=1)
    measured_aggregate_tok_s: float = Field(gt=0)
    predicted_aggregate_tok_s: float = Field(gt=0)


class CalibrationEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use: no cost at start-up

    device_id: str
    decode_ratio: float = Field(gt=0, lt=100)
    prefill_ratio: float = Field(gt=0, lt=100)
    # measured ÷ predicted on the compute each extra busy slot adds to a decode step (from a slot curve)
    batch_ratio: float = Field(default=1.0, gt=0, lt=100)
    # CPU: measured ÷ predicted on the many-column kernels' pass over the weights (from a slot curve)
    pass_ratio: float = Field(default=1.0, gt=0, lt=100)
    samples: int = Field(ge=1)
    model: str
    measured_at: str
    slot_curve: list[SlotCurvePoint] = Field(default_factory=list)  # the last llama-batched-bench run


class CalibrationProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use: no cost at start-up

    schema_version: int
    hostname: str
    entries: dict[str, CalibrationEntry] = Field(default_factory=dict)


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "agiplan"


def profile_path(hostname: str | None = None) -> Path:
    host = hostname or socket.gethostname() or "localhost"
    return config_dir() / f"calibration-{safe_file_name(host)}.json"


def load_profile(path: Path | None = None) -> CalibrationProfile | None:
    """The saved profile of this host, None when there is none. A broken file is an error, not ignored."""
    p = path or profile_path()
    if not p.exists():
        return None
    try:
        raw = json.loads(read_text_bounded(p, "calibration profile", _MAX_PROFILE_BYTES))
    except json.JSONDecodeError as e:
        raise PlannerError(f"{p}: not a readable calibration profile ({e}). Delete it or rerun 'agiplan bench'.") from e
    if not isinstance(raw, dict) or raw.get("schema_version") != SCHEMA_VERSION:
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        raise PlannerError(
            f"{p}: calibration profile schema_version {version!r}, this agiplan reads {SCHEMA_VERSION}. "
            "Delete it and rerun 'agiplan bench'."
        )
    try:
        return CalibrationProfile.model_validate(raw)
    except ValidationError as e:
        raise PlannerError(f"{p}: {validation_message(e)}. Delete it and rerun 'agiplan bench'.") from e


def save_profile(profile: CalibrationProfile, path: Path | None = None) -> Path:
    """Write atomically (temp file in the same directory, then rename)."""
    p = path or profile_path(profile.hostname)
    write_text_atomic(p, profile.model_dump_json(indent=2))
    return p


def update_profile(
    device_id: str, decode_ratio: float, prefill_ratio: float, model: str, path: Path | None = None
) -> CalibrationProfile:
    """Fold one measurement into the profile (running mean over samples) and save it."""
    prof = load_profile(path) or CalibrationProfile(
        schema_version=SCHEMA_VERSION, hostname=socket.gethostname() or "localhost"
    )
    old = prof.entries.get(device_id)
    if old is None:
        entry = CalibrationEntry(
            device_id=device_id,
            decode_ratio=decode_ratio,
            prefill_ratio=prefill_ratio,
            samples=1,
            model=model,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    else:
        n = old.samples
        entry = CalibrationEntry(
            device_id=device_id,
            decode_ratio=(old.decode_ratio * n + decode_ratio) / (n + 1),
            prefill_ratio=(old.prefill_ratio * n + prefill_ratio) / (n + 1),
            batch_ratio=old.batch_ratio,
            pass_ratio=old.pass_ratio,
            samples=n + 1,
            model=model,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
            slot_curve=old.slot_curve,
        )
    prof.entries[device_id] = entry
    save_profile(prof, path)
    return prof


def calibration_for_devices(devices: Iterable[Device], path: Path | None = None) -> dict[str, DeviceCalibration]:
    """Ratios for the given devices that this host's profile holds (none when there is no profile)."""
    prof = load_profile(path)
    if prof is None:
        return {}
    out: dict[str, DeviceCalibration] = {}
    for d in devices:
        e = prof.entries.get(d.id)
        if e is not None:
            out[d.id] = DeviceCalibration(e.decode_ratio, e.prefill_ratio, e.batch_ratio, e.pass_ratio)
    return out


def calibrate_from_run(
    spec: ModelSpec,
    cfg: RunConfig,
    est: Estimate,
    run: BenchRun,
    gpus: list[Device],
    host: Device,
    cat: Catalog,
    path: Path | None = None,
) -> list[CalibrationUpdate]:
    """measured ÷ predicted per device, for runs that sit on one device (CPU only, or all on one GPU),
    folded into this host's profile; each update says how the run's estimate moves. A run split over
    several devices is not calibrated (a note on `run` says so); one without both speeds gives nothing."""
    from planner.estimate.devices import host_device
    from planner.estimate.estimate import estimate
    from planner.measure.results import CalibrationUpdate

    m = run.measured
    if m.decode_tok_s is None or m.prefill_tok_s is None:
        return []
    used = [d for d in est.devices if d.layers or d.holds_output]
    if len(used) != 1:
        run.notes.append("not calibrated: the model is split over several devices")
        return []
    targets = [(used[0].device, est)]
    if used[0].device.kind == "cpu" and host.id != "cpu":
        # `agiplan estimate` without --cpu plans with the generic host; calibrate that one too, against
        # its own prediction, so both ways of asking get this machine's speed.
        generic = host_device(cat, None, host.capacity_bytes / 2**30)
        targets.append((generic, estimate(spec, cfg, gpus, generic)))
    updates = []
    for dev, e in targets:
        dr = m.decode_tok_s / e.speed.decode_tok_s
        pr = m.prefill_tok_s / e.speed.prefill_tok_s
        prof = update_profile(dev.id, dr, pr, run.model, path)
        h = dev if dev.kind == "cpu" and dev.id != host.id else host
        after = estimate(spec, cfg, gpus, h, calibration=calibration_for_devices([*gpus, h], path))
        entry = prof.entries[dev.id]
        updates.append(
            CalibrationUpdate(
                device_id=dev.id,
                decode_ratio=entry.decode_ratio,
                prefill_ratio=entry.prefill_ratio,
                profile_path=str(path or profile_path()),
                samples=entry.samples,
                decode_tok_s_before=round(e.speed.decode_tok_s, 3),
                decode_tok_s_after=round(after.speed.decode_tok_s, 3),
                prefill_tok_s_before=round(e.speed.prefill_tok_s, 3),
                prefill_tok_s_after=round(after.speed.prefill_tok_s, 3),
            )
        )
    return updates


@dataclass(frozen=True)
class SlotCurveFit:
    """Ratios a slot curve gives one device, and the curve predicted before and after them."""

    device_id: str
    decode_ratio: float
    prefill_ratio: float
    batch_ratio: float
    pass_ratio: float
    points: tuple[SlotCurvePoint, ...]  # predicted = after calibration, on the points it was fitted to
    predicted_before_tok_s: tuple[float, ...]
    profile_path: str


@dataclass(frozen=True)
class StepParts:
    """A decode step's seconds as the estimator splits them for a fit: `a_s` is divided by one ratio, `b_s` by
    another, `fixed_s` by neither."""

    a_s: float
    b_s: float
    fixed_s: float


def _probe_parts(step: Callable[[float, float], float]) -> StepParts:
    """Split a step into the parts two ratios divide, from three evaluations: step(a, b) = a_s / a + b_s / b +
    fixed_s, so halving the time of a part by doubling its ratio reveals it."""
    x = step(1.0, 1.0)
    a = 2.0 * (x - step(2.0, 1.0))
    b = 2.0 * (x - step(1.0, 2.0))
    return StepParts(a, b, x - a - b)


def fit_slot_curve(parts: Sequence[StepParts], measured_step_s: Sequence[float]) -> tuple[float, float]:
    """The two ratios (for `a_s`, for `b_s`) minimising the squared relative error of
    t = a_s / ratio_a + b_s / ratio_b + fixed_s against the measured step times. A part that is zero at every
    point (the GPU has no many-column pass) keeps its ratio at 1 and the other is fitted alone."""
    # unknowns u = 1 / ratio_a, v = 1 / ratio_b; rows weighted by 1 / measured
    rows = [(p.a_s / t, p.b_s / t, (t - p.fixed_s) / t) for p, t in zip(parts, measured_step_s, strict=True)]
    saa = sum(a * a for a, _, _ in rows)
    sbb = sum(b * b for _, b, _ in rows)
    sab = sum(a * b for a, b, _ in rows)
    say = sum(a * y for a, _, y in rows)
    sby = sum(b * y for _, b, y in rows)
    det = saa * sbb - sab * sab
    if saa > 0 and sbb > 0 and abs(det) > 1e-9 * saa * sbb:
        return _ratio((say * sbb - sby * sab) / det), _ratio((saa * sby - sab * say) / det)
    if sbb > 0 and sbb >= saa:
        return 1.0, _ratio(sby / sbb)
    return (_ratio(say / saa) if saa > 0 else 1.0), 1.0


def _ratio(inverse: float) -> float:
    return min(99.0, max(0.01, 1.0 / inverse)) if inverse > 0 else 99.0


def calibrate_from_slot_curve(
    spec: ModelSpec,
    curve: Sequence[SlotPoint],
    *,
    gpus: list[Device],
    host: Device,
    gpu_layers: int,
    flash_attn: bool,
    model: str,
    path: Path | None = None,
    save: bool = True,
) -> SlotCurveFit:
    """Fit this host's ratios to a llama-batched-bench slot curve and save them, with the curve, in the profile.

    The one-sequence point sets the prefill ratio (its prompt speed) and the decode ratio (its step: the
    one-column kernels' pass over the weights); the points of two or more sequences set, with those fixed,
    the pass ratio of the CPU's many-column kernels and the batch ratio of the per-sequence compute (least
    squares on relative error; on a GPU only the batch ratio). With three points (1, 6, 12: the default of
    `bench --batched`) every ratio is fitted on its own point(s) and the curve at 2, 4, 8, 16 is a prediction
    (bench/batched_accuracy.py measures it). The model must sit on one device (the CPU with `gpu_layers` 0,
    or one GPU); a curve replaces the device's ratios. `save` False fits and reports without touching the
    profile."""
    from planner.estimate.estimate import estimate
    from planner.estimate.types import RunConfig

    if not curve:
        raise PlannerError("no slot curve to calibrate from.")
    points = sorted(curve, key=lambda p: p.slots)
    one = next((p for p in points if p.slots == 1), None)
    if one is None:
        raise PlannerError(
            "a slot curve calibrates from one sequence up: include 1 in the sequence counts (e.g. --batched 1,6,12)."
        )

    def config(p: SlotPoint) -> RunConfig:
        return RunConfig(
            ctx=p.prompt_tokens + p.gen_tokens,
            parallel=p.slots,
            flash_attn=flash_attn,
            gpu_layers=gpu_layers,
            depth_tokens=p.mean_depth_tokens,
            prompt_tokens=p.prompt_tokens,
        )

    first = estimate(spec, config(one), gpus, host, suggest=False)
    used = [d for d in first.devices if d.layers or d.holds_output]
    if len(used) != 1:
        raise PlannerError("a slot curve calibrates one device: run the model on the CPU (-ngl 0) or on one GPU.")
    dev = used[0].device

    def step_s(p: SlotPoint, cal: DeviceCalibration | None) -> float:
        calibration = {dev.id: cal} if cal else None
        return (
            1.0
            / estimate(spec, config(p), gpus, host, calibration=calibration, suggest=False).speed.decode_tok_s_per_slot
        )

    prefill_ratio = min(99.0, max(0.01, one.prefill_tok_s / one.slots / first.speed.prefill_tok_s))
    # one sequence: the decode ratio divides its memory part (a_s); nothing else depends on it at B = 1
    single = _probe_parts(lambda d, _b: step_s(one, DeviceCalibration(d, prefill_ratio)))
    decode_ratio = _ratio((one.step_s - single.fixed_s) / single.a_s) if single.a_s > 0 else 1.0
    many = [p for p in points if p.slots >= 2]

    def many_parts(p: SlotPoint) -> StepParts:
        # a_s: the many-column pass (pass ratio), b_s: the per-sequence compute (batch ratio)
        return _probe_parts(lambda a, b: step_s(p, DeviceCalibration(decode_ratio, prefill_ratio, b, a)))

    parts = [many_parts(p) for p in many]
    pass_ratio, batch_ratio = fit_slot_curve(parts, [p.step_s for p in many]) if many else (1.0, 1.0)
    after = DeviceCalibration(decode_ratio, prefill_ratio, batch_ratio, pass_ratio)
    fitted = [
        SlotCurvePoint(
            slots=p.slots,
            measured_aggregate_tok_s=p.aggregate_decode_tok_s,
            predicted_aggregate_tok_s=p.slots / step_s(p, after),
        )
        for p in points
    ]
    before = tuple(p.slots / step_s(p, None) for p in points)
    prof = load_profile(path) or CalibrationProfile(
        schema_version=SCHEMA_VERSION, hostname=socket.gethostname() or "localhost"
    )
    old = prof.entries.get(dev.id)
    entry = CalibrationEntry(
        device_id=dev.id,
        decode_ratio=decode_ratio,
        prefill_ratio=prefill_ratio,
        batch_ratio=batch_ratio,
        pass_ratio=pass_ratio,
        samples=(old.samples + 1) if old else 1,
        model=model,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        slot_curve=fitted,
    )
    saved = ""
    if save:
        prof.entries[dev.id] = entry
        saved = str(save_profile(prof, path))
    return SlotCurveFit(
        device_id=dev.id,
        decode_ratio=decode_ratio,
        prefill_ratio=prefill_ratio,
        batch_ratio=batch_ratio,
        pass_ratio=pass_ratio,
        points=tuple(fitted),
        predicted_before_tok_s=before,
        profile_path=saved,
    )
