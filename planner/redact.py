"""Secrets never leave agiplan: the one place that knows them and scrubs text before it is printed or saved.

Known secrets are the values of the token variables below (read at call time) plus whatever the code
registers (`register_secret(api_key)` for `--api-key`); token-shaped strings (`hf_...`, `sk-...`,
`Bearer ...`) are masked too, since a server may echo a key we never saw, and so are the credentials a
URL carries: its user info (`http://user:password@host`) and the value of every query parameter whose
name says it holds one (`?key=...`, `?api_key=`, `?token=`, `?sig=`, `?password=`; a source's `?p=136649`
stays readable). The CLI error handler, every terminal line (planner/cli/_output.py), the
endpoint bench's error texts and everything written by `agiplan bench --out` pass through `redact`.
`header_value` checks a key before it goes into an HTTP header, without showing it.
"""

from __future__ import annotations

import os
import re
from typing import Any

from planner.errors import PlannerError

MASK = "***"
TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_TOKEN", "OPENAI_API_KEY", "AGIPLAN_API_KEY")
_MIN_SECRET_LEN = 6  # shorter values ("none", "x") are placeholders; masking them would garble messages
_PATTERNS = (
    re.compile(r"\bhf_[A-Za-z0-9]{10,}"),  # Hugging Face user access tokens
    re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"),  # OpenAI-style API keys
    re.compile(r"(?i)(?<=bearer )[^\s'\",;]+"),  # Authorization: Bearer <anything>
)
# scheme://[userinfo@]rest[?query][#fragment]; a URL ends at white space or a quote
_URL = re.compile(r"""(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/?#@'"<>]*@)?([^\s?#'"<>]*)(\?[^\s#'"<>]*)?""")
_SECRET_PARAM = re.compile(r"(?i)key|token|secret|pass|pwd|auth|sig|cred|session|code")
_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember `value` (an API key given on the command line) so `redact` masks it from now on."""
    if value and len(value.strip()) >= _MIN_SECRET_LEN:
        _registered.add(value.strip())


def known_secrets() -> set[str]:
    env = {v.strip() for name in TOKEN_ENV_VARS if (v := os.environ.get(name)) and len(v.strip()) >= _MIN_SECRET_LEN}
    return env | _registered


def redact(text: str) -> str:
    """`text` with every known secret and token-shaped string replaced by ***."""
    if not text:
        return text
    for secret in sorted(known_secrets(), key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pat in _PATTERNS:
        text = pat.sub(MASK, text)
    return _URL.sub(_masked_url, text) if "://" in text else text


def _masked_url(m: re.Match[str]) -> str:
    """A URL with its user info and secret-named query values masked: `http://***@host/p?key=***&q=1`."""
    scheme, userinfo, rest, query = m.group(1), m.group(2), m.group(3), m.group(4)
    out = scheme + (f"{MASK}@" if userinfo else "") + rest
    if query:
        params = [
            f"{name}={MASK}" if sep and _SECRET_PARAM.search(name) else f"{name}{sep}{value}"
            for name, sep, value in (p.partition("=") for p in query[1:].split("&"))
        ]
        out += "?" + "&".join(params)
    return out


def header_value(value: str, what: str) -> str:
    """`value` (an API key) as it may go into an HTTP header: surrounding white space dropped, then visible
    ASCII only (RFC 9110 field values; a newline would end the header and start another). The error names
    `what` and the offending character's position, never the value."""
    value = value.strip()
    for i, ch in enumerate(value):
        if not "!" <= ch <= "~":
            kind = "a line break" if ch in "\r\n" else "a space" if ch == " " else f"character U+{ord(ch):04X}"
            raise PlannerError(
                f"{what} holds {kind} at position {i + 1}, which an HTTP header cannot carry (not shown)."
            )
    if not value:
        raise PlannerError(f"{what} is empty.")
    return value


def redact_strings(data: Any) -> Any:
    """A copy of JSON-like `data` (dicts, lists, scalars) with `redact` applied to every string in it."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_strings(k): redact_strings(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact_strings(v) for v in data]
    return data
