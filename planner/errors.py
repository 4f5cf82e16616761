"""The one error family of agiplan: every user-facing failure is a PlannerError with a message saying what to do.

The CLI turns these into one line on stderr and a non-zero exit (see planner/cli/_errors.py);
anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PlannerError(Exception):
    """Base of all expected errors. `exit_code` is what the CLI exits with."""

    exit_code: int = 2


class UnknownIdError(PlannerError):
    """An id (model, quant, hardware, engine) that is not in the catalog."""

    def __init__(self, kind: str, given: str, known: Iterable[str], hint: str = "") -> None:
        self.kind = kind
        self.given = given
        self.suggestions = closest(given, known)
        msg = f"Unknown {kind} '{given}'."
        if self.suggestions:
            msg += " Did you mean " + ", ".join(self.suggestions) + "?"
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class CatalogError(PlannerError):
    """Catalog data that does not validate: names the file and the field path."""


class ModelSourceError(PlannerError):
    """A model file or repository that cannot be read (missing, corrupt, truncated, absurd header)."""


class HubError(ModelSourceError):
    """Hugging Face Hub failures: offline and not cached, gated, not found, rate-limited."""


class EstimateError(PlannerError):
    """Inputs the estimator cannot work with (context <= 0, no device, unsupported engine/format)."""


class HardwareError(PlannerError):
    """Hardware description or detection problems the user can act on."""


def shown(value: str, limit: int = 80) -> str:
    """A string taken from a file or a server (a GGUF key, a tensor name, a response body) as it may appear
    in a one-line message: control characters escaped (no newlines, no terminal escape sequences),
    at most `limit` characters."""
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in value[:limit])
    return out + ("..." if len(value) > limit else "")


def closest(given: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The `n` known ids nearest to `given` (difflib ratio), for 'did you mean' messages."""
    known_list = list(known)
    lowered = {k.lower(): k for k in known_list}
    hits = difflib.get_close_matches(given.lower(), list(lowered), n=n, cutoff=0.5)
    if not hits:
        hits = [k for k in lowered if given.lower() in k][:n]
    return [lowered[h] for h in hits]
