"""Write a Deployment's files into a directory: each file atomically (temp file + rename), scripts 0755,
plus `deploy.json` (kind agiplan-deploy, schema_version) describing every process and endpoint."""

from __future__ import annotations

import json
from pathlib import Path

from planner.deploy import Deployment
from planner.errors import PlannerError
from planner.io import write_text_atomic

MANIFEST = "deploy.json"


def write_deployment(dep: Deployment, out_dir: Path) -> list[Path]:
    """Write every file of `dep` under `out_dir` (created if needed); returns the paths written."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PlannerError(f"--out {out}: exists and is not a directory.")
    written: list[Path] = []
    try:
        for rel, text in sorted(dep.files.items()):
            target = out / rel
            write_text_atomic(target, text, 0o755 if rel in dep.executable else 0o644)
            written.append(target)
        write_text_atomic(out / MANIFEST, json.dumps(dep.manifest(), indent=2) + "\n")
    except OSError as e:
        raise PlannerError(f"cannot write into {out}: {e.strerror or e}.") from e
    written.append(out / MANIFEST)
    return written
