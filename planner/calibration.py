"""Per-machine calibration profile: measured ÷ predicted speed per device, saved by `agiplan bench`.

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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from planner.errors import PlannerError
from planner.estimate.types import Device, DeviceCalibration
from planner.io import safe_file_name, validation_message, write_text_atomic

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
