"""`hf:owner/name[@revision][/file.gguf]` -> ModelSpec, through huggingface_hub's session, cached for offline use.

Every Hub reply is read in a stream, bounded in bytes, and all of one lookup share one deadline
($AGIPLAN_HUB_TIMEOUT_S, default 120 s). Transformer repos: config.json + the safetensors headers (range
requests: 8-byte length, JSON header) -> exact tensor bytes by dtype. GGUF repos: the file matching
`quant`, of which only the header is fetched with growing range requests (2 MiB, doubling, 64 MiB
cap) and parsed by the same reader as local files. What was resolved is kept under
`$AGIPLAN_CACHE_DIR` or `$HF_HOME/agiplan` (default ~/.cache/huggingface/agiplan), so the same ref works
offline afterwards (`HF_HUB_OFFLINE=1` or no network).

Environment is read at call time (not at import, as huggingface_hub's constants are): HF_ENDPOINT,
HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN. Tokens never appear in messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import HubError, ModelSourceError, PlannerError, shown
from planner.io import read_bytes_bounded, write_bytes_atomic
from planner.model.arch import ModelSpec, ModelWeights, Source, TensorInfo
from planner.sources.gguf_file import (
    MAX_HEADER_BYTES,
    MAX_TENSORS,
    GGUFHeader,
    merge_split_headers,
    parse_gguf_header,
    parse_header_prefix,
    spec_from_header,
    split_name,
    split_parts,
)
from planner.sources.hf_config import arch_from_hf_config

_DEFAULT_ENDPOINT = "https://huggingface.co"
_REF_RE = re.compile(
    r"^(?:hf:|hf://|huggingface:)?(?P<owner>[\w.\-]+)/(?P<name>[\w.\-]+)(?:@(?P<rev>[\w.\-/]+?))?"
    r"(?:/(?P<file>.+\.gguf))?$"
)
_SAFETENSORS_HEADER_MAX = 100 << 20  # safetensors refuses headers above 100 MB too
# Bytes one Hub reply may take (an endless /api/models body took 14.8 GB; a Hub ignoring Range sent the
# whole file, 3.97 GB). model info: ~150 bytes a file, 32 MiB is 200k files; config.json is a few KiB (with
# an id2label table for 20k classes ~1 MB): 8 MiB; model.safetensors.index.json ~80 bytes a tensor
# (DeepSeek V3's ~92k entries ~8 MB): 64 MiB.
_INFO_MAX_BYTES = 32 << 20
_CONFIG_MAX_BYTES = 8 << 20
_INDEX_MAX_BYTES = 64 << 20
# Every Hub read of one `load_hf` shares one deadline (a dripping Hub hung forever: the session has no
# timeout). $AGIPLAN_HUB_TIMEOUT_S overrides it; a header of 64 MiB at 1 MB/s still fits.
_HUB_TIMEOUT_S = 120.0
# A cache record holds config.json and the safetensors headers of every shard (each under 100 MB by the
# format, ~1 MB in practice): 256 MiB.
_RECORD_MAX_BYTES = 256 << 20
_CACHE_VERSION = 1
# llama.cpp file-type names as they appear in GGUF file names (longest first so Q4_K_M beats Q4_K).
_QUANT_NAME_RE = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:IQ\d_[A-Z0-9]+(?:_[A-Z0-9]+)?|Q\d_K(?:_[A-Z]{1,2})?|Q\d_\d|TQ\d_\d|BF16|F16|F32|"
    r"MXFP4(?:_MOE)?))(?![A-Za-z0-9])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class HubRef:
    """A parsed `hf:` reference."""

    repo_id: str
    revision: str | None
    filename: str | None

    @property
    def display(self) -> str:
        return f"hf:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def parse_ref(ref: str) -> HubRef:
    """`hf:owner/name`, `hf:owner/name@rev`, `hf:owner/name/file.gguf`, `hf:owner/name@rev/file.gguf`."""
    m = _REF_RE.match(ref.strip())
    if not m or ".." in ref:
        raise HubError(
            f"'{ref}' is not a Hugging Face reference; use hf:owner/name, hf:owner/name@revision or "
            "hf:owner/name/file.gguf"
        )
    return HubRef(f"{m.group('owner')}/{m.group('name')}", m.group("rev"), m.group("file"))


# --- environment (read per call) --------------------------------------------------------------


def _truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


def _offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or _DEFAULT_ENDPOINT).rstrip("/")


def _hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface"


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return _hf_home() / "hub"


def cache_dir() -> Path:
    """Where agiplan keeps resolved Hub headers: $AGIPLAN_CACHE_DIR or $HF_HOME/agiplan."""
    if os.environ.get("AGIPLAN_CACHE_DIR"):
        return Path(os.environ["AGIPLAN_CACHE_DIR"]).expanduser()
    return _hf_home() / "agiplan"


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        write_bytes_atomic(path, data)
    except OSError as e:
        raise HubError(f"cannot write the agiplan cache under {cache_dir()} ({e.strerror or e})") from None


def _safe(s: str) -> str:
    return re.sub(r"[^\w.\-]", "_", s)


def _record_path(ref: HubRef, quant: str | None) -> Path:
    owner, name = ref.repo_id.split("/", 1)
    what = ref.filename or (f"quant-{quant.upper()}" if quant else "default")
    return (
        cache_dir() / "hub" / f"{_safe(owner)}--{_safe(name)}" / _safe(ref.revision or "main") / (_safe(what) + ".json")
    )


# --- errors ----------------------------------------------------------------------------------------


def _network_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for mod, attr in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
        try:
            m = __import__(mod)
            errs.append(getattr(m, attr))
        except (ImportError, AttributeError):
            pass
    return tuple(errs)


def _offline_error(ref: HubRef) -> HubError:
    return HubError(
        f"{ref.display} is not in the local cache and the Hub cannot be reached (offline). "
        "Run once with network, or use a local .gguf path."
    )


# --- HTTP helpers (huggingface_hub's session, so proxies / auth / user agent are the library's) ----


def _hub_timeout_s() -> float:
    raw = os.environ.get("AGIPLAN_HUB_TIMEOUT_S")
    if not raw:
        return _HUB_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise HubError(f"AGIPLAN_HUB_TIMEOUT_S must be a positive number of seconds, got {shown(raw)!r}")
    return value


@dataclass
class _Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def _status_error(reply: _Reply, ref: HubRef, what: str) -> HubError:
    """The Hub's error replies as one line (X-Error-Code as huggingface_hub reads it)."""
    code = reply.headers.get("x-error-code", "")
    status = reply.status
    where = f" ({what})" if what else ""
    if code == "GatedRepo":
        return HubError(f"{ref.display} is gated: accept the license on huggingface.co/{ref.repo_id} and set HF_TOKEN")
    if code == "RevisionNotFound":
        return HubError(f"{ref.display}: no such revision '{ref.revision}' in {ref.repo_id}")
    if code == "RepoNotFound":
        return HubError(f"{ref.display}: no such repository on the Hub (or it is private: set HF_TOKEN)")
    if code == "EntryNotFound":
        return HubError(f"{ref.display}: file not found in the repository{where}")
    if status == 429:
        return HubError(f"{ref.display}: the Hub is rate limiting requests (HTTP 429); retry later")
    if status in (401, 403):
        return HubError(f"{ref.display}: access denied (HTTP {status}); check HF_TOKEN")
    return HubError(f"{ref.display}: Hub request failed (HTTP {status}){where}")


@dataclass
class _Hub:
    """The Hub's HTTP API through huggingface_hub's session (proxies, user agent, auth are the library's),
    every reply read in a stream: at most a given number of bytes, all before one deadline."""

    ref: HubRef
    endpoint: str
    token: str | None
    timeout_s: float = _HUB_TIMEOUT_S

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.timeout_s

    def headers(self) -> dict[str, str]:
        # not huggingface_hub's build_hf_headers: with its user agent the same endless reply peaked at
        # 431 MiB RSS instead of 60 MiB (httpx2 2.17, cause not found); the Hub needs only the token
        out = {"User-Agent": "agiplan"}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        return out

    def url(self, filename: str, revision: str) -> str:
        from huggingface_hub import hf_hub_url

        return str(hf_hub_url(self.ref.repo_id, filename, revision=revision, endpoint=self.endpoint))

    def _late(self) -> HubError:
        return HubError(
            f"{self.ref.display}: the Hub did not answer within {self.timeout_s:g} s "
            "(AGIPLAN_HUB_TIMEOUT_S); retry, or raise the limit"
        )

    def get(
        self, url: str, *, max_bytes: int, what: str, extra: dict[str, str] | None = None, head: bool = False
    ) -> _Reply:
        """One request; the body is read up to `max_bytes` (an error past that, unless `extra` asks for a
        Range, which keeps only its length) and before the deadline."""
        from huggingface_hub import get_session

        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._late()
        headers = {**self.headers(), "Accept-Encoding": "identity", **(extra or {})}
        timeout_errors = _timeout_errors()
        try:
            method = "HEAD" if head else "GET"
            with get_session().stream(method, url, headers=headers, timeout=left, follow_redirects=True) as r:
                parts: list[bytes] = []  # joined once at the end: growing one buffer reallocates it
                n_bytes = 0
                reply = _Reply(int(r.status_code), {k.lower(): v for k, v in r.headers.items()}, b"")
                if head:
                    return reply
                limit = max_bytes if reply.status < 400 else 64 << 10
                for chunk in r.iter_bytes():
                    parts.append(chunk)
                    n_bytes += len(chunk)
                    if n_bytes > limit:
                        if (extra and "Range" in extra) or reply.status >= 400:
                            break
                        raise HubError(
                            f"{self.ref.display}: the Hub sent more than {max_bytes >> 20} MiB for {what}; "
                            "stopped reading"
                        )
                    if time.monotonic() > self.deadline:
                        raise self._late()
                reply.body = b"".join(parts)[:limit]
                return reply
        except timeout_errors:
            raise self._late() from None

    def get_ok(self, url: str, *, max_bytes: int, what: str, extra: dict[str, str] | None = None) -> bytes:
        reply = self.get(url, max_bytes=max_bytes, what=what, extra=extra)
        if reply.status >= 400:
            raise _status_error(reply, self.ref, what)
        return reply.body

    def fetcher(self, filename: str, revision: str) -> Callable[[int, int], bytes]:
        url = self.url(filename, revision)

        def fetch(start: int, stop: int) -> bytes:
            # a Hub that ignores Range answers 200 with the whole file: only `stop` bytes are read of it
            reply = self.get(url, max_bytes=stop, what=filename, extra={"Range": f"bytes={start}-{stop - 1}"})
            if reply.status >= 400:
                raise _status_error(reply, self.ref, filename)
            data = reply.body
            if reply.status == 200:  # server ignored the range: keep the part asked for
                data = data[start:stop]
            return data

        return fetch

    def model_info(self) -> tuple[str, dict[str, int | None]]:
        """(commit sha, {file name: size}) from GET /api/models/{repo}[/revision/{rev}]?blobs=true, as
        huggingface_hub's HfApi.model_info(files_metadata=True) asks for it."""
        url = f"{self.endpoint}/api/models/{self.ref.repo_id}"
        if self.ref.revision:
            url += "/revision/" + urllib.parse.quote(self.ref.revision, safe="")
        info = _parse_json(self.get_ok(url + "?blobs=true", max_bytes=_INFO_MAX_BYTES, what="model info"),
                           f"{self.ref.display} model info")  # fmt: skip
        siblings = info.get("siblings") if isinstance(info, dict) else None
        if not isinstance(siblings, list):
            raise HubError(f"{self.ref.display}: the Hub's model info has no file list")
        files: dict[str, int | None] = {}
        for sib in siblings:
            name = sib.get("rfilename") if isinstance(sib, dict) else None
            if isinstance(name, str):
                size = sib.get("size")
                files[name] = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None
        sha = info.get("sha")
        return str(sha if isinstance(sha, str) and sha else self.ref.revision or "main"), files

    def download_json(self, filename: str, revision: str, max_bytes: int) -> Any:
        data = self.get_ok(self.url(filename, revision), max_bytes=max_bytes, what=filename)
        return _parse_json(data, f"{self.ref.display}/{filename}")

    def size(self, filename: str, revision: str) -> int:
        reply = self.get(self.url(filename, revision), max_bytes=0, what=filename, head=True)
        if reply.status >= 400:
            raise _status_error(reply, self.ref, filename)
        raw = reply.headers.get("x-linked-size") or reply.headers.get("content-length")
        if raw is None or not raw.isdigit() or len(raw) > 20:
            raise HubError(f"{self.ref.display}: the Hub did not report the size of {filename}")
        return int(raw)


def _timeout_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [TimeoutError]
    for mod in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            errs.append(__import__(mod).TimeoutException)
    return tuple(errs)


def _parse_json(data: bytes, label: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # ValueError: bad JSON, not UTF-8, an integer of > 4300 digits
        raise HubError(f"{label}: not valid JSON") from None


# --- GGUF repos ----------------------------------------------------------------------------------


def _quant_of(filename: str) -> str | None:
    m = _QUANT_NAME_RE.search(Path(filename).name)
    return m.group(1).upper() if m else None


def choose_gguf(files: list[str], quant: str | None, display: str) -> str:
    """Pick the GGUF file for `quant` (case-insensitive in the file name); prefer a single file over
    a split set (then its first part). Without `quant`: Q4_K_M if there is one, else the only model."""
    models = [f for f in files if f.lower().endswith(".gguf") and "mmproj" not in Path(f).name.lower()]
    if not models:
        raise HubError(f"{display}: the repository has no .gguf files and no config.json")
    if quant is None:
        singles = {f for f in models if (sp := split_parts(Path(f).name)) is None or sp[1] == 1}
        if len(singles) == 1:
            return singles.pop()
        quant = "Q4_K_M"
        explicit = False
    else:
        explicit = True
    pat = re.compile(r"(?<![A-Za-z0-9])" + re.escape(quant) + r"(?![A-Za-z0-9])", re.IGNORECASE)
    hits = sorted(f for f in models if pat.search(Path(f).name))
    if not hits:
        available = sorted({q for f in models if (q := _quant_of(f))})
        hint = "pick one with --quant" if not explicit else "choose another --quant"
        raise HubError(
            f"{display}: no {quant.upper() if explicit else 'default (Q4_K_M)'} GGUF file; available: "
            f"{', '.join(available) or ', '.join(Path(f).name for f in models[:10])} ({hint})"
        )
    singles_hit = [f for f in hits if split_parts(Path(f).name) is None]
    if singles_hit:
        return singles_hit[0]
    firsts = [f for f in hits if (sp := split_parts(Path(f).name)) is not None and sp[1] == 1]
    return firsts[0] if firsts else hits[0]


def _gguf_parts(filename: str) -> list[str]:
    sp = split_parts(Path(filename).name)
    if sp is None:
        return [filename]
    prefix, _, count = sp
    folder = str(Path(filename).parent)
    names = [split_name(prefix, i, count) for i in range(1, count + 1)]
    return [n if folder == "." else f"{folder}/{n}" for n in names]


def _fetch_gguf(hub: _Hub, sha: str, files: dict[str, int | None], filename: str) -> dict[str, Any]:
    """Fetch the header(s) of a GGUF (all parts of a split one) and save them; returns the record."""
    parts = _gguf_parts(filename)
    missing = [p for p in parts if p not in files]
    if missing:
        raise HubError(f"{hub.ref.display}: split GGUF is missing part(s) {', '.join(missing[:3])} on the Hub")
    entries = []
    n_tensors = 0
    for part in parts:
        size = files.get(part)
        if size is None:
            size = _remote_size(hub, part, sha)
        label = f"{hub.ref.display}/{part}"
        header, raw = parse_header_prefix(hub.fetcher(part, sha), file_size=size, label=label)
        n_tensors += len(header.tensors)
        if n_tensors > MAX_TENSORS:  # the bound is the model's, not a part's
            raise ModelSourceError(
                f"{label}: more than {MAX_TENSORS} tensors in its split parts (the limit for a real model)"
            )
        blob = f"{_safe(sha)}--{_safe(part)}.header"
        _atomic_write(_record_dir(hub.ref) / blob, bytes(raw))
        entries.append({"name": part, "size": size, "header": blob})
    return {"kind": "gguf", "sha": sha, "endpoint": hub.endpoint, "parts": entries}


def _remote_size(hub: _Hub, filename: str, sha: str) -> int:
    return hub.size(filename, sha)


def _record_dir(ref: HubRef) -> Path:
    owner, name = ref.repo_id.split("/", 1)
    return cache_dir() / "hub" / f"{_safe(owner)}--{_safe(name)}" / "headers"


def _spec_from_gguf_record(rec: dict[str, Any], ref: HubRef, raw_ref: str) -> ModelSpec:
    headers: list[tuple[GGUFHeader, int]] = []
    for part in rec["parts"]:
        label = f"{ref.display}/{part['name']}"
        path = _record_dir(ref) / part["header"]
        try:
            raw = read_bytes_bounded(path, "cached GGUF header", MAX_HEADER_BYTES)
        except PlannerError:
            raise _offline_error(ref) from None
        headers.append((parse_gguf_header(raw, file_size=int(part["size"]), label=label), int(part["size"])))
    first, extra, total = merge_split_headers(headers, ref.display)
    name0 = rec["parts"][0]["name"]
    source = Source("hub", f"{rec['endpoint']}/{ref.repo_id}@{rec['sha']}/{name0}")
    return spec_from_header(
        first,
        ref=raw_ref,
        source=source,
        file_bytes=total,
        extra_tensors=extra,
        label=f"{ref.display}/{name0}",
    )


# --- safetensors repos ----------------------------------------------------------------------------

# HF parameter names -> llama.cpp GGUF names (convert_hf_to_gguf.py / gguf-py tensor_mapping.py).
_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.language_model.embed_tokens.weight": "token_embd.weight",
    "language_model.model.embed_tokens.weight": "token_embd.weight",
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "model.embeddings.word_embeddings.weight": "token_embd.weight",
    "lm_head.weight": "output.weight",
    "language_model.lm_head.weight": "output.weight",
    "model.norm.weight": "output_norm.weight",
    "model.language_model.norm.weight": "output_norm.weight",
    "language_model.model.norm.weight": "output_norm.weight",
}
_LAYER_RE = re.compile(r"^(?:.*\.)?(?:layers|layer|h|blocks)\.(\d+)\.(.+)$")
_LAYER_PARTS = [
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.qkv_proj", "attn_qkv"),
    ("attention.self.query", "attn_q"),
    ("attention.self.key", "attn_k"),
    ("attention.self.value", "attn_v"),
    ("attention.output.dense", "attn_output"),
    ("attention.output.LayerNorm", "attn_output_norm"),
    ("intermediate.dense", "ffn_up"),
    ("output.dense", "ffn_down"),
    ("output.LayerNorm", "layer_output_norm"),
    ("mlp.gate_up_proj", "ffn_up"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("mlp.gate", "ffn_gate_inp"),
    ("block_sparse_moe.gate", "ffn_gate_inp"),
    ("mlp.shared_expert_gate", "ffn_gate_inp_shexp"),
    ("mlp.shared_expert.gate_proj", "ffn_gate_shexp"),
    ("mlp.shared_expert.up_proj", "ffn_up_shexp"),
    ("mlp.shared_expert.down_proj", "ffn_down_shexp"),
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "ffn_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
]
_EXPERT_RE = re.compile(r"^(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(\w+)\.(.+)$")
_EXPERT_PARTS = {
    "w1": "ffn_gate_exps",
    "w3": "ffn_up_exps",
    "w2": "ffn_down_exps",
    "gate_proj": "ffn_gate_exps",
    "up_proj": "ffn_up_exps",
    "down_proj": "ffn_down_exps",
}


def gguf_tensor_name(hf_name: str) -> str:
    """llama.cpp's name for a transformers parameter; keeps layer index, embedding/output and expert identity.
    Routed experts become `blk.N.ffn_{gate,up,down}_exps.E.weight` (llama.cpp merges them into one tensor)."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    m = _LAYER_RE.match(hf_name)
    if not m:
        return hf_name
    layer, rest = m.group(1), m.group(2)
    em = _EXPERT_RE.match(rest)
    if em:
        kind = _EXPERT_PARTS.get(em.group(2), em.group(2) + "_exps")
        return f"blk.{layer}.{kind}.{em.group(1)}.{em.group(3)}"
    for hf_part, gg in _LAYER_PARTS:
        if rest.startswith(hf_part + "."):
            return f"blk.{layer}.{gg}.{rest[len(hf_part) + 1 :]}"
    return f"blk.{layer}.{rest}"


_ST_DTYPES = {
    "F64",
    "F32",
    "F16",
    "BF16",
    "I64",
    "I32",
    "I16",
    "I8",
    "U8",
    "U16",
    "U32",
    "U64",
    "BOOL",
    "F8_E4M3",
    "F8_E5M2",
    "F8_E8M0",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "C64",
}


def parse_safetensors_header(raw: bytes, label: str) -> dict[str, Any]:
    """The JSON header of a safetensors file from its first bytes (8-byte LE length + JSON)."""
    if len(raw) < 8:
        raise ModelSourceError(f"{label}: not a safetensors file (too short)")
    n = int.from_bytes(raw[:8], "little")
    if n > _SAFETENSORS_HEADER_MAX:
        raise ModelSourceError(f"{label}: safetensors header of {n} bytes is implausible")
    if len(raw) < 8 + n:
        raise ModelSourceError(f"{label}: truncated safetensors header")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (ValueError, UnicodeDecodeError):
        raise ModelSourceError(f"{label}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ModelSourceError(f"{label}: safetensors header is not a JSON object")
    return header


def tensors_from_safetensors(header: dict[str, Any], label: str) -> list[TensorInfo]:
    out: list[TensorInfo] = []
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = str(meta["dtype"]).upper()
            shape = tuple(int(d) for d in meta["shape"])
            start, stop = (int(x) for x in meta["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelSourceError(f"{label}: malformed entry for tensor '{name}'") from None
        if dtype not in _ST_DTYPES or stop < start or any(d < 0 for d in shape):
            raise ModelSourceError(f"{label}: tensor '{name}' has dtype {dtype} / offsets {start}..{stop}")
        # ggml order: innermost (row length) first.
        out.append(TensorInfo(gguf_tensor_name(name), tuple(reversed(shape)) or (1,), dtype, stop - start))
    return out


def _fetch_safetensors_header(hub: _Hub, filename: str, sha: str) -> dict[str, Any]:
    label = f"{hub.ref.display}/{filename}"
    fetch = hub.fetcher(filename, sha)
    first = fetch(0, 100_000)  # a Range reply: never more than asked for
    if len(first) < 8:
        raise ModelSourceError(f"{label}: not a safetensors file (too short)")
    n = int.from_bytes(first[:8], "little")
    if n > _SAFETENSORS_HEADER_MAX:
        raise ModelSourceError(f"{label}: safetensors header of {n} bytes is implausible")
    if len(first) < 8 + n:
        first += fetch(len(first), 8 + n)
    return parse_safetensors_header(first, label)


def _shards(hub: _Hub, files: dict[str, int | None], sha: str) -> list[str]:
    if "model.safetensors.index.json" in files:
        index = hub.download_json("model.safetensors.index.json", sha, _INDEX_MAX_BYTES)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise HubError(f"{hub.ref.display}/model.safetensors.index.json: no weight_map of file names")
        shards = sorted(set(weight_map.values()))
        if shards:
            return shards
    if "model.safetensors" in files:
        return ["model.safetensors"]
    return sorted(f for f in files if f.endswith(".safetensors") and "/" not in f)


def _fetch_transformers(hub: _Hub, sha: str, files: dict[str, int | None]) -> dict[str, Any]:
    config = hub.download_json("config.json", sha, _CONFIG_MAX_BYTES)
    shards = _shards(hub, files, sha)
    if not shards:
        raise HubError(
            f"{hub.ref.display}: no safetensors weights (only .bin or none); cannot count parameters exactly"
        )
    headers = {s: _fetch_safetensors_header(hub, s, sha) for s in shards}
    return {
        "kind": "safetensors",
        "sha": sha,
        "endpoint": hub.endpoint,
        "config": config,
        "headers": headers,
        "file_bytes": sum(int(files.get(s) or 0) for s in shards) or None,
    }


def _checkpoint_type(config: dict[str, Any], weights: list[TensorInfo]) -> str | None:
    q = config.get("quantization_config")
    if isinstance(q, dict) and q.get("quant_method"):
        bits = q.get("bits") or q.get("w_bit")
        return f"{str(q['quant_method']).upper()}" + (f"-INT{bits}" if bits else "")
    by: dict[str, int] = {}
    for t in weights:
        by[t.ggml_type] = by.get(t.ggml_type, 0) + t.n_bytes
    return max(by, key=lambda k: by[k]) if by else None


def _spec_from_st_record(rec: dict[str, Any], ref: HubRef, raw_ref: str) -> ModelSpec:
    source = Source("hub", f"{rec['endpoint']}/{ref.repo_id}@{rec['sha']}")
    tensors: list[TensorInfo] = []
    for shard, header in sorted(rec["headers"].items()):
        tensors += tensors_from_safetensors(header, f"{ref.display}/{shard}")
    arch = arch_from_hf_config(rec["config"], source, name=ref.repo_id)
    names = {t.name for t in tensors}
    from dataclasses import replace

    tied = "output.weight" not in names if "token_embd.weight" in names else arch.tied_embeddings
    arch = replace(arch, params_total=sum(t.n_elements for t in tensors), tied_embeddings=tied)
    weights = ModelWeights(
        tensors=tuple(tensors),
        source=source,
        exact=True,
        file_type=_checkpoint_type(rec["config"], tensors),
        file_bytes=rec.get("file_bytes"),
    )
    return ModelSpec(ref=raw_ref, arch=arch, weights=weights, format="safetensors")


# --- entry point ---------------------------------------------------------------------------------


def _spec_from_record(rec: dict[str, Any], ref: HubRef, raw_ref: str) -> ModelSpec:
    if rec.get("kind") == "gguf":
        return _spec_from_gguf_record(rec, ref, raw_ref)
    return _spec_from_st_record(rec, ref, raw_ref)


def _load_record(path: Path) -> dict[str, Any] | None:
    try:  # agiplan's own cache, still read as outside input: a regular file, bounded
        rec = json.loads(read_bytes_bounded(path, "Hub cache record", _RECORD_MAX_BYTES))
    except (PlannerError, ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or rec.get("version") != _CACHE_VERSION:
        return None
    return rec


def load_hf(ref: str, *, quant: str | None = None, token: str | None = None) -> ModelSpec:
    """Resolve `hf:owner/name[@rev][/file.gguf]` to a ModelSpec (exact tensor bytes), online or from cache."""
    hub_ref = parse_ref(ref)
    record_path = _record_path(hub_ref, quant)
    if _offline():
        rec = _load_record(record_path)
        if rec is None:
            raise _offline_error(hub_ref)
        return _spec_from_record(rec, hub_ref, ref)

    hub = _Hub(hub_ref, _endpoint(), token or os.environ.get("HF_TOKEN") or None, _hub_timeout_s())
    net = _network_errors()
    try:
        sha, files = hub.model_info()
        if hub_ref.filename:
            if hub_ref.filename not in files:
                ggufs = [f for f in files if f.endswith(".gguf")]
                raise HubError(
                    f"{hub_ref.display}: no file '{hub_ref.filename}' in the repository; GGUF files: "
                    f"{', '.join(ggufs[:10]) or 'none'}"
                )
            rec = _fetch_gguf(hub, sha, files, hub_ref.filename)
        elif "config.json" in files and not (quant and any(f.endswith(".gguf") for f in files)):
            rec = _fetch_transformers(hub, sha, files)
        else:
            rec = _fetch_gguf(hub, sha, files, choose_gguf(sorted(files), quant, hub_ref.display))
    except net:
        # No network (connection refused, DNS, timeout, huggingface_hub's own offline mode): use the cache.
        rec_cached = _load_record(record_path)
        if rec_cached is None:
            raise _offline_error(hub_ref) from None
        return _spec_from_record(rec_cached, hub_ref, ref)
    rec["version"] = _CACHE_VERSION
    spec = _spec_from_record(rec, hub_ref, ref)  # validate before caching
    _atomic_write(record_path, json.dumps(rec).encode())
    return spec
