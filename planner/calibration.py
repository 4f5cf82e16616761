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
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import PlannerError
from planner.estimate.types import Device, DeviceCalibration
from planner.io import safe_file_name, validation_message, write_text_atomic

if TYPE_CHECKING:
    from planner.catalog.load import Catalog
    from planner.estimate.types import Estimate, RunConfig
    from planner.measure.results import BenchRun, CalibrationUpdate
    from planner.model.arch import ModelSpec

SCHEMA_VERSION = 1


class CalibrationEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built on first use: no cost at start-up

    device_id: str
    decode_ratio: float = Field(gt=0, lt=100)
    prefill_ratio: float = Field(gt=0, lt=100)
    samples: int = Field(ge=1)
    model: str
    measured_at: str


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
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
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
            samples=n + 1,
            model=model,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
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
            out[d.id] = DeviceCalibration(e.decode_ratio, e.prefill_ratio)
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
