"""The validated catalog kept on disk between runs, so a command does not re-parse and re-validate the YAML.

Parsing the four YAML files, building the pydantic validators and cross-checking against gguf's type
table costs ~0.2-0.4 s per call; unpickling the result costs ~2 ms. The cache file is
`$AGIPLAN_CACHE_DIR/catalog/catalog-<key>.pickle` (else `$XDG_CACHE_HOME/agiplan/catalog/`, default
~/.cache), where the key is a SHA-256 of the catalog directory, the catalog files' bytes, the catalog
code (schema.py, load.py, this file) and the Python and pydantic versions: any edit gives a new key.

Safety: written atomically (temp file in the same directory, mode 0600, then os.replace); read only
when it is a regular file owned by this user and writable by nobody else, and only when its header
repeats the key. Anything wrong with it (corrupt, truncated, foreign, stale, unreadable) is ignored:
the YAML is parsed as usual and the cache rewritten. Writing is best effort (a read-only home just
means no cache). Only a catalog that validated is cached; errors are always reported afresh.
`AGIPLAN_CATALOG_CACHE=0` turns the cache off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from planner.io import agiplan_cache_dir, write_bytes_atomic

if TYPE_CHECKING:
    from planner.catalog.load import Catalog

ENV_SWITCH = "AGIPLAN_CATALOG_CACHE"
_MAGIC = b"agiplan-catalog-cache 1\n"
_CODE_FILES = ("schema.py", "load.py", "cache.py")


def cache_dir() -> Path:
    """$AGIPLAN_CACHE_DIR/catalog, else $XDG_CACHE_HOME/agiplan/catalog (default ~/.cache/agiplan/catalog)."""
    return agiplan_cache_dir("catalog")


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def catalog_key(root: Path) -> str | None:
    """Hex key of the catalog in `root` (see the module docstring); None when a file cannot be read
    (the loader then reports the problem)."""
    import pydantic.version

    from planner.catalog.load import FILES

    h = hashlib.sha256()
    h.update(f"{sys.version}\0{pydantic.version.VERSION}\0{root}\0".encode())
    code_dir = Path(__file__).resolve().parent
    try:
        for name in _CODE_FILES:
            h.update((code_dir / name).read_bytes())
        for name in FILES:
            data = (root / name).read_bytes()
            h.update(f"\0{name}\0{len(data)}\0".encode())
            h.update(data)
    except OSError:
        return None
    return h.hexdigest()


def _trusted(st: os.stat_result) -> bool:
    if not stat.S_ISREG(st.st_mode) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False
    getuid = getattr(os, "getuid", None)
    return getuid is None or st.st_uid == getuid()


def read_cached(path: Path, key: str, root: Path) -> Catalog | None:
    """The catalog pickled at `path` for `key`, or None when there is no usable cache file."""
    from planner.catalog.load import Catalog

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            if not _trusted(os.fstat(f.fileno())):
                return None
            head = f.read(len(_MAGIC) + len(key) + 1)
            if head != _MAGIC + key.encode() + b"\n":
                return None
            obj = pickle.loads(f.read())
    except Exception:  # any broken cache file means "parse the YAML"
        return None
    if not isinstance(obj, Catalog) or obj.root != root:
        return None
    return obj


def write_cached(path: Path, key: str, cat: Catalog) -> bool:
    """Atomically write the cache file; False (and no file) when that is not possible."""
    try:
        payload = pickle.dumps(cat, protocol=pickle.HIGHEST_PROTOCOL)
        write_bytes_atomic(path, _MAGIC + key.encode() + b"\n" + payload, mode=0o600)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        return False
    for old in path.parent.glob("catalog-*.pickle"):  # stale keys: an edited catalog or another version
        if old.name != path.name:
            with contextlib.suppress(OSError):
                old.unlink()
    return True


def cached_catalog(root: Path, load: Callable[[Path], Catalog]) -> Catalog:
    """`load(root)`, or the same catalog from the disk cache when the files and code are unchanged."""
    if not enabled():
        return load(root)
    key = catalog_key(root)
    if key is None:
        return load(root)
    path = cache_dir() / f"catalog-{key[:40]}.pickle"
    cat = read_cached(path, key, root)
    if cat is not None:
        return cat
    cat = load(root)
    write_cached(path, key, cat)
    return cat
