"""Files agiplan writes and reads back: atomic writes (never a half-written file) and schema-versioned JSON.

Every writer in the package goes through `write_bytes_atomic`: a temp file in the target's folder, flushed,
then renamed over the target, so an interrupted run leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from planner.errors import PlannerError

if TYPE_CHECKING:  # pydantic costs ~100 ms to import: only the readers below need it, at run time
    from pydantic import BaseModel, ValidationError

_M = TypeVar("_M", bound="BaseModel")


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename. `mode` sets permissions
    (None: mkstemp's 0600 widened to the usual 0644 minus the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o644 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def validation_message(e: ValidationError) -> str:
    """The first problem of a pydantic error as 'field.path: message (and N more)'."""
    first = e.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top)"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{loc}: {first['msg']}{more}"


def agiplan_cache_dir(sub: str) -> Path:
    """$AGIPLAN_CACHE_DIR/<sub>, else $XDG_CACHE_HOME/agiplan/<sub> (default ~/.cache/agiplan/<sub>)."""
    env = os.environ.get("AGIPLAN_CACHE_DIR")
    if env:
        return Path(env).expanduser() / sub
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "agiplan" / sub


def safe_file_name(text: str) -> str:
    """`text` with everything but letters, digits, '-', '_' and '.' replaced by '_' (a file name part)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def read_versioned_json(path: Path, kind: str, version: int) -> dict[str, Any]:
    """Read a saved agiplan JSON file and check its `kind` and `schema_version` (clear one-line errors)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PlannerError(f"{p}: no such file.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PlannerError(f"{p}: not a readable JSON file ({e}).") from e
    if not isinstance(raw, dict):
        raise PlannerError(f"{p}: expected a JSON object written by agiplan ({kind}).")
    if raw.get("kind") != kind:
        raise PlannerError(f"{p}: not an {kind} file (kind is {raw.get('kind')!r}).")
    if raw.get("schema_version") != version:
        raise PlannerError(
            f"{p}: {kind} schema_version {raw.get('schema_version')!r}; this agiplan reads version {version}. "
            "Re-create it with this version of agiplan."
        )
    return raw


def load_versioned(path: Path, kind: str, version: int, model: type[_M]) -> _M:
    """`read_versioned_json` and validate it as `model`; errors name the file and the field path."""
    from pydantic import ValidationError

    raw = read_versioned_json(path, kind, version)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise PlannerError(f"{path}: {validation_message(e)}.") from e
