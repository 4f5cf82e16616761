"""Write a Deployment into a folder, whole or not at all, plus `deploy.json` (kind agiplan-deploy, schema_version)
describing every process and endpoint.

Safety rules (issue #14): every file is written into a fresh temporary folder next to `--out`, each path
resolved and checked to stay inside it, files created new (O_EXCL, O_NOFOLLOW: no link is followed); only then
is the folder moved into place with one rename. `--out` must be a new folder, an empty one or an earlier
agiplan deployment (it holds deploy.json): a file, device node, symbolic link or someone else's folder is
refused. An earlier deployment's `logs/` and API key are kept (the other hosts hold the same key). A failure
(a full disk, a bad path) leaves the earlier deployment or nothing, and no temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

from planner.deploy import API_KEY_FILE, Deployment
from planner.errors import PlannerError

MANIFEST = "deploy.json"
KEPT = ("logs",)  # folders carried over from an earlier deployment in the same folder (its key is read, not moved)
_API_KEY_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits


def new_api_key() -> str:
    return "sk-" + secrets.token_urlsafe(_API_KEY_BYTES)  # LiteLLM wants master keys to start with sk-


def read_api_key(path: Path) -> str:
    """The key in `path` (first non-comment line, as llama-server --api-key-file reads it)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PlannerError(f"--api-key-file {path}: cannot read it ({e}).") from None
    keys = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not keys or not all(c.isalnum() or c in "-_." for c in keys[0]) or len(keys[0]) < 16:
        raise PlannerError(f"--api-key-file {path}: expected one key of 16+ letters, digits, '-', '_' or '.'.")
    return keys[0]


def _check_out(out: Path) -> bool:
    """Is `out` an earlier deployment to replace? Raises for anything that is not a new, empty or agiplan
    folder. Uses lstat: a symbolic link is refused, never followed."""
    try:
        st = out.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise PlannerError(f"--out {out}: is a symbolic link; give the folder itself.")
    if not stat.S_ISDIR(st.st_mode):
        raise PlannerError(f"--out {out}: exists and is not a directory.")
    entries = list(out.iterdir())
    if not entries:
        return True
    manifest = out / MANIFEST
    if not (manifest.is_file() and not manifest.is_symlink()):
        raise PlannerError(
            f"--out {out}: holds files but no {MANIFEST} (not an agiplan deployment); give a new or empty folder."
        )
    return True


def _check_replaced(out: Path, names: list[str]) -> None:
    """Only regular files of an earlier deployment are replaced: one of the names to write that is there as a
    link, device node, FIFO or folder is refused (the issue: --out replaced device nodes and links)."""
    for rel in names:
        try:
            st = (out / rel).lstat()
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            raise PlannerError(f"--out {out}: {rel} cannot be written (a parent is not a folder).") from None
        if not stat.S_ISREG(st.st_mode):
            raise PlannerError(f"--out {out}: {rel} exists and is not a regular file; remove it first.")


def _inside(root: Path, rel: str) -> Path:
    """`root/rel`, refused unless `rel` is a plain relative path that resolves inside `root`."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise PlannerError(f"deploy: file name {rel!r} would leave the output folder.")
    target = root / rel
    if not target.resolve().is_relative_to(root.resolve()):
        raise PlannerError(f"deploy: file name {rel!r} would leave the output folder.")
    return target


def _create(path: Path, data: bytes, mode: int) -> None:
    """A new regular file (never an existing one, never through a link), flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # the umask may have cleared bits


def write_deployment(dep: Deployment, out_dir: Path, *, api_key: str | None = None) -> list[Path]:
    """Write every file of `dep` as the folder `out_dir`; returns the paths written (under `out_dir`).

    `api_key`: the key of the servers other hosts reach (kept in `api-key`, mode 0600); default: the earlier
    deployment's, else a new one."""
    out = Path(out_dir)
    replace = _check_out(out)
    parent = out.parent if str(out.parent) else Path(".")
    if api_key is None and replace and (out / API_KEY_FILE).is_file():
        api_key = read_api_key(out / API_KEY_FILE)
    if replace:
        _check_replaced(out, [*dep.files, API_KEY_FILE, MANIFEST])
    key = api_key or new_api_key()
    written: list[Path] = []
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.agiplan-", dir=parent))
    except OSError as e:
        raise PlannerError(f"cannot write into {parent}: {e.strerror or e}.") from None
    old: Path | None = None
    swapped = False
    try:
        for rel, text in sorted(dep.files.items()):
            _create(_inside(tmp, rel), text.encode("utf-8"), 0o755 if rel in dep.executable else 0o644)
            written.append(out / rel)
        _create(tmp / API_KEY_FILE, (key + "\n").encode(), 0o600)
        written.append(out / API_KEY_FILE)
        _create(tmp / MANIFEST, (json.dumps(dep.manifest(), indent=2) + "\n").encode(), 0o644)
        written.append(out / MANIFEST)
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if replace:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.rename(out, old / "d")
            try:
                os.rename(tmp, out)
            except OSError:
                os.rename(old / "d", out)  # put the earlier deployment back
                raise
            swapped = True
            for name in KEPT:  # the new deployment is in place; keep the earlier logs
                kept = old / "d" / name
                if kept.is_dir() and not kept.is_symlink():
                    with contextlib.suppress(OSError):
                        os.rename(kept, out / name)
        else:
            os.rename(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PlannerError(f"cannot write into {out}: {e.strerror or e}; nothing was changed.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None and swapped:
            shutil.rmtree(old, ignore_errors=True)  # the earlier deployment, now replaced
        elif old is not None:
            with contextlib.suppress(OSError):
                old.rmdir()  # empty once the earlier deployment is back in place; kept (not deleted) otherwise
    with contextlib.suppress(OSError):
        os.chmod(out / API_KEY_FILE, 0o600)
    return written
