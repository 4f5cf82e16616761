"""Files agiplan writes and reads back: atomic writes (never a half-written file) and schema-versioned JSON.

Every writer in the package goes through `write_bytes_atomic`: a temp file in the target's folder, flushed,
then renamed over the target, so an interrupted run leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from planner.errors import PlannerError, shown

if TYPE_CHECKING:  # pydantic costs ~100 ms to import: only the readers below need it, at run time
    from pydantic import BaseModel, ValidationError

_M = TypeVar("_M", bound="BaseModel")

# Saved files agiplan reads back (plans, bench results): kilobytes per role and server, and both counts are
# bounded (stack.MAX_ROLES, servers.MAX_GPUS_PER_SERVER); 64 MiB is far above anything agiplan writes and
# keeps a hostile or endless file (a FIFO is refused anyway) from filling memory.
SAVED_JSON_MAX_BYTES = 64 << 20


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


def open_regular_file(path: Path, what: str) -> int:
    """A read-only descriptor of `path`, which must be a regular file (checked on the open descriptor).

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer (it would hang
    `estimate ./fifo.gguf` forever); a device, socket, FIFO or directory is refused with a one-line
    error saying what it is. Regular files ignore O_NONBLOCK, so reads behave as usual."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise PlannerError(f"{p}: no such file.") from None
    except IsADirectoryError:
        raise PlannerError(f"{p}: is a directory, not a {what}.") from None
    except PermissionError:
        raise PlannerError(f"{p}: permission denied.") from None
    except OSError as e:
        raise PlannerError(f"{p}: cannot open ({e.strerror or e}).") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = (
            "a directory" if stat.S_ISDIR(mode)
            else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "not a regular file"
        )  # fmt: skip
        raise PlannerError(f"{p}: is {kind}; a {what} must be a regular file.")
    return fd


def read_bytes_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file, refused past `max_bytes` (read at most one byte more, so a huge or
    endless file costs nothing)."""
    p = Path(path)
    fd = open_regular_file(p, what)
    try:
        with os.fdopen(fd, "rb") as f:
            # the size first: read(n) allocates n bytes up front, so a small file must not ask for the limit
            size = os.fstat(f.fileno()).st_size
            raw = b"" if size > max_bytes else f.read(size + 1)
            if size < len(raw) <= max_bytes:  # it grew while read: take what fits the limit
                raw += f.read(max_bytes + 1 - len(raw))
    except OSError as e:
        raise PlannerError(f"{p}: cannot read ({e.strerror or e}).") from None
    if size > max_bytes or len(raw) > max_bytes:
        raise PlannerError(f"{p}: larger than the {max_bytes >> 10} KiB agiplan reads for a {what}.")
    return raw


def read_text_bounded(path: Path, what: str, max_bytes: int) -> str:
    """`read_bytes_bounded` as UTF-8 text (a file a person edits)."""
    raw = read_bytes_bounded(path, what, max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PlannerError(f"{path}: not UTF-8 text (byte {e.start}).") from None


def read_versioned_json(path: Path, kind: str, version: int) -> dict[str, Any]:
    """Read a saved agiplan JSON file and check its `kind` and `schema_version` (clear one-line errors)."""
    p = Path(path)
    data = read_bytes_bounded(p, f"{kind} file", SAVED_JSON_MAX_BYTES)
    try:
        raw = json.loads(data)
    except (RecursionError, ValueError) as e:  # ValueError: bad JSON, not UTF-8, an integer of > 4300 digits
        raise PlannerError(f"{p}: not a readable JSON file ({shown(str(e))}).") from None
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
