"""Bench any OpenAI-compatible server by URL (llama-server, Ollama, vLLM, LM Studio), streamed.

For each concurrency level c, c chat requests (`POST {base}/v1/chat/completions`, `stream: true`) start
together on c threads. Per request: time to first token (first streamed content), decode tok/s over the
tokens after the first ((n − 1) / (t_last − t_first)), tokens counted from the final `usage` chunk when
the server sends one (`stream_options.include_usage`), else one per content chunk. Per level: medians
and the aggregate throughput (all tokens ÷ wall time of the level).

Ollama (detected by `GET /api/version`) is also asked for its own timings (`POST /api/generate`,
`eval_count` / `eval_duration` in ns, `prompt_eval_*`) and for the memory of loaded models (`GET /api/ps`:
`size`, `size_vram`) — docs/api.md of ollama/ollama.

Standard library only (http.client): one dependency fewer, and streaming needs nothing more.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import socket
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from planner.errors import PlannerError, shown
from planner.redact import redact, register_secret

# One thread per request in flight: 256 is beyond what one server's slots serve at once (llama-server -np,
# vLLM --max-num-seqs default 256) and far below where thread creation fails (3000 did under a memory limit).
MAX_CONCURRENCY = 256
MAX_LEVELS = 32
# Bytes a reply may take. A streamed chunk is a few hundred bytes per token (one JSON event); a line of
# 64 KiB or a stream of 1 MiB + 16 KiB per requested token is far past any real reply and bounds memory
# against a server whose body never ends.
_LINE_MAX_BYTES = 64 << 10
_STREAM_BASE_BYTES = 1 << 20
_STREAM_BYTES_PER_TOKEN = 16 << 10
# Ollama's JSON replies: /api/version is ~20 bytes, /api/ps ~1 KiB a model, /api/generate carries the
# token ids of its context (a few bytes per token: ~1 MB at 128k). 16 MiB bounds them all.
_JSON_MAX_BYTES = 16 << 20

DEFAULT_PROMPT = (
    "Write a detailed, step by step explanation of how a hash map works, including collisions, "
    "resizing and the cost of each operation."
)


@dataclass(frozen=True)
class EndpointConfig:
    url: str  # http://host:port or http://host:port/v1
    model_name: str
    concurrency: tuple[int, ...] = (1,)
    max_tokens: int = 64
    prompt: str = DEFAULT_PROMPT
    timeout_s: float = 120.0
    api_key: str | None = None

    def check(self) -> None:
        register_secret(self.api_key)  # masked in every message and saved error from now on
        try:
            u = urllib.parse.urlsplit(self.url)
            u.port  # noqa: B018 - raises ValueError for a port outside 0..65535
        except ValueError as e:
            raise PlannerError(f"--endpoint {shown(redact(self.url))!r} is not a valid URL ({e}).") from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise PlannerError(f"--endpoint must be an http(s) URL such as http://127.0.0.1:8080, got {self.url!r}.")
        if not 0 < self.timeout_s < float("inf"):  # also NaN
            raise PlannerError(f"--timeout must be a positive number of seconds, got {self.timeout_s}.")
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise PlannerError("--concurrency takes positive integers, e.g. 1,4,8.")
        if max(self.concurrency) > MAX_CONCURRENCY or len(self.concurrency) > MAX_LEVELS:
            raise PlannerError(
                f"--concurrency takes at most {MAX_LEVELS} levels of at most {MAX_CONCURRENCY} requests each "
                "(one thread per request)."
            )
        if self.max_tokens < 2:
            raise PlannerError("--gen must be at least 2 tokens to measure decode speed.")


@dataclass
class StreamResult:
    ok: bool
    ttft_s: float | None = None
    n_tokens: int = 0
    decode_tok_s: float | None = None
    total_s: float = 0.0
    error: str | None = None


@dataclass
class LevelResult:
    concurrency: int
    results: list[StreamResult] = field(default_factory=list)
    wall_s: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> list[StreamResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> int:
        return len(self.results) - len(self.ok)

    @property
    def ttft_s(self) -> float | None:
        xs = [r.ttft_s for r in self.ok if r.ttft_s is not None]
        return statistics.median(xs) if xs else None

    @property
    def decode_tok_s(self) -> float | None:
        xs = [r.decode_tok_s for r in self.ok if r.decode_tok_s is not None]
        return statistics.median(xs) if xs else None

    @property
    def decode_spread_tok_s(self) -> tuple[float, float] | None:
        xs = [r.decode_tok_s for r in self.ok if r.decode_tok_s is not None]
        return (min(xs), max(xs)) if xs else None

    @property
    def aggregate_tok_s(self) -> float | None:
        n = sum(r.n_tokens for r in self.ok)
        return n / self.wall_s if self.wall_s > 0 and n else None

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.results if r.error]


def split_base(url: str) -> tuple[str, str]:
    """(server root, OpenAI base path) of `url`: 'http://h:1/v1' and 'http://h:1' both give ('http://h:1', '/v1')."""
    u = urllib.parse.urlsplit(url.rstrip("/"))
    root = f"{u.scheme}://{u.netloc}"
    path = u.path or ""
    if not path.endswith("/v1"):
        path = path + "/v1"
    return root, path


def _connection(root: str, timeout_s: float) -> http.client.HTTPConnection:
    u = urllib.parse.urlsplit(root)
    host = u.hostname or "localhost"
    if u.scheme == "https":
        return http.client.HTTPSConnection(host, u.port, timeout=timeout_s)
    return http.client.HTTPConnection(host, u.port, timeout=timeout_s)


class _Watchdog:
    """One daemon thread that shuts down the socket of every connection whose deadline has passed.

    A socket timeout bounds one recv, not a reply: a server that sends a byte a second never trips it
    (`--timeout 5` was ignored by such a drip). Shutting the socket down from here makes the blocked read
    in the request's thread return at once, whatever http.client was doing."""

    _POLL_S = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[socket.socket, tuple[float, threading.Event]] = {}
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, seconds: float) -> threading.Event:
        """Shut `sock` down `seconds` from now; the returned event is set when that happened. The socket,
        not its HTTPConnection: http.client drops `conn.sock` once a close-delimited reply has begun."""
        fired = threading.Event()
        with self._lock:
            self._due[sock] = (time.monotonic() + seconds, fired)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agiplan-deadline", daemon=True)
                self._thread.start()
        return fired

    def unwatch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._due.pop(sock, None)  # type: ignore[arg-type]

    def _run(self) -> None:
        while True:
            time.sleep(self._POLL_S)
            now = time.monotonic()
            with self._lock:
                if not self._due:
                    self._thread = None
                    return
                late = [(c, ev) for c, (due, ev) in self._due.items() if due <= now]
                for c, _ in late:
                    del self._due[c]
            for sock, fired in late:
                fired.set()
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


def stream_chat(cfg: EndpointConfig, stop: threading.Event | None = None) -> StreamResult:
    """One streamed chat completion; never raises for server or network errors (they go to `error`)."""
    root, base = split_base(cfg.url)
    body = json.dumps(
        {
            "model": cfg.model_name,
            "messages": [{"role": "user", "content": cfg.prompt}],
            "max_tokens": cfg.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,  # llama-server and vLLM: generate max_tokens; others ignore the field
        }
    )
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    conn = _connection(root, cfg.timeout_s)
    t0 = time.perf_counter()
    t_first: float | None = None
    t_last: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    late = threading.Event()
    sock: socket.socket | None = None
    max_bytes = _STREAM_BASE_BYTES + cfg.max_tokens * _STREAM_BYTES_PER_TOKEN
    got_bytes = 0

    def too_late() -> StreamResult:
        return StreamResult(
            ok=False, ttft_s=None if t_first is None else t_first - t0, n_tokens=chunks,
            total_s=time.perf_counter() - t0, error=f"no complete response within {cfg.timeout_s:g} s",
        )  # fmt: skip

    try:
        conn.connect()  # bounded by the socket timeout; the reply by the deadline below
        sock = conn.sock
        assert sock is not None
        with _live_lock:
            _live.add(sock)
        late = _watchdog.watch(sock, cfg.timeout_s - (time.perf_counter() - t0))  # the whole reply gets --timeout
        conn.request("POST", base + "/chat/completions", body=body, headers=headers)
        if stop is not None and stop.is_set():  # connected after the abort below ran: stop here
            return StreamResult(ok=False, total_s=time.perf_counter() - t0, error="interrupted")
        resp = conn.getresponse()
        if resp.status != 200:
            detail = _server_text(resp.read(300).decode("utf-8", errors="replace"))
            if late.is_set():
                return too_late()
            return StreamResult(ok=False, total_s=time.perf_counter() - t0, error=f"HTTP {resp.status}: {detail}")
        finished = False
        while True:
            if stop is not None and stop.is_set():
                return StreamResult(ok=False, total_s=time.perf_counter() - t0, error="interrupted")
            if late.is_set() or time.perf_counter() - t0 > cfg.timeout_s:
                return too_late()
            raw = resp.readline(_LINE_MAX_BYTES)
            if not raw:
                if late.is_set():  # the watchdog closed the socket: that is the deadline, not the end
                    return too_late()
                break
            got_bytes += len(raw)
            if got_bytes > max_bytes:
                return StreamResult(
                    ok=False, total_s=time.perf_counter() - t0,
                    error=f"the server sent more than {max_bytes >> 20} MiB for {cfg.max_tokens} tokens: stopped",
                )  # fmt: skip
            line = raw.decode("utf-8", errors="replace").strip()
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                finished = True
                break
            try:
                event = json.loads(data)
            except (json.JSONDecodeError, RecursionError):
                continue
            if not isinstance(event, dict):  # garbage: not an OpenAI chunk
                continue
            if event.get("error"):
                error = _server_text(str(event["error"]))
                return StreamResult(ok=False, total_s=time.perf_counter() - t0, error=f"server: {error}")
            usage = event.get("usage")
            ct = usage.get("completion_tokens") if isinstance(usage, dict) else None
            if isinstance(ct, float) and math.isfinite(ct) and ct.is_integer():
                ct = int(ct)  # 1e30 in JSON is a float: still a count, checked against max_tokens below
            if isinstance(ct, int) and not isinstance(ct, bool):
                usage_tokens = ct
            choices = event.get("choices")
            for choice in choices if isinstance(choices, list) else []:
                if not isinstance(choice, dict):
                    continue
                finished = finished or bool(choice.get("finish_reason"))
                raw_delta = choice.get("delta")
                delta: dict[str, Any] = raw_delta if isinstance(raw_delta, dict) else {}
                text = delta.get("content") or delta.get("reasoning_content") or choice.get("text")
                if isinstance(text, str) and text:
                    now = time.perf_counter()
                    t_first = now if t_first is None else t_first
                    t_last = now
                    chunks += 1
    except (OSError, http.client.HTTPException) as e:
        if stop is not None and stop.is_set():  # our own abort (Ctrl-C) closed the socket
            return StreamResult(ok=False, total_s=time.perf_counter() - t0, error="interrupted")
        if late.is_set():
            return too_late()
        return StreamResult(ok=False, total_s=time.perf_counter() - t0, error=_server_text(f"{type(e).__name__}: {e}"))
    finally:
        _watchdog.unwatch(sock)
        with _live_lock:
            _live.discard(sock)
        conn.close()
    total = time.perf_counter() - t0
    if t_first is None:
        return StreamResult(ok=False, total_s=total, error="the server streamed no tokens")
    if not finished:  # connection closed mid-stream: keep what arrived, but it is not a complete response
        return StreamResult(
            ok=False, ttft_s=t_first - t0, n_tokens=chunks, total_s=total,
            error=f"the stream ended after {chunks} token(s) without finishing ([DONE] or finish_reason)",
        )  # fmt: skip
    if chunks > cfg.max_tokens:  # every content chunk holds at least one token
        return StreamResult(
            ok=False, ttft_s=t_first - t0, n_tokens=chunks, total_s=total,
            error=f"the server streamed {chunks} chunks of text for max_tokens {cfg.max_tokens}",
        )  # fmt: skip
    if usage_tokens is not None and usage_tokens > cfg.max_tokens:
        # a server's own count past what was asked for is not a measurement (1e30 gave "3.4e34 tok/s")
        return StreamResult(
            ok=False, ttft_s=t_first - t0, n_tokens=chunks, total_s=total,
            error=f"the server reported {usage_tokens:g} completion tokens for max_tokens {cfg.max_tokens}",
        )  # fmt: skip
    n = usage_tokens if usage_tokens is not None and usage_tokens >= chunks else chunks
    decode = None
    if t_last is not None and t_last > t_first and n > 1:
        decode = (n - 1) / (t_last - t_first)
    return StreamResult(ok=True, ttft_s=t_first - t0, n_tokens=n, decode_tok_s=decode, total_s=total)


def bench_level(
    cfg: EndpointConfig, concurrency: int, stop: threading.Event | None = None, poll_s: float = 0.2
) -> LevelResult:
    """`concurrency` streamed requests at once. Ctrl-C sets `stop` so the streams end, and returns what finished."""
    stop = stop or threading.Event()
    level = LevelResult(concurrency=concurrency)
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="agiplan-endpoint")
    futures: list[Future[StreamResult]] = [pool.submit(stream_chat, cfg, stop) for _ in range(concurrency)]
    try:
        pending: set[Future[StreamResult]] = set(futures)
        while pending:
            _done, pending = wait(pending, timeout=poll_s)
    except KeyboardInterrupt:
        stop.set()
        _abort_live_connections()  # a request blocked on a silent server would otherwise wait out --timeout
        level.interrupted = True
    finally:
        pool.shutdown(wait=True)
    level.wall_s = time.perf_counter() - t0
    level.results = [_outcome(f) for f in futures if f.done()]
    return level


_live_lock = threading.Lock()
_live: set[socket.socket] = set()  # sockets of requests in flight (all threads)


def _abort_live_connections() -> None:
    """Shut down the sockets of every request in flight, so threads blocked in a read return at once."""
    with _live_lock:
        socks = list(_live)
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _outcome(f: Future[StreamResult]) -> StreamResult:
    """A request whose thread raised (a bug or an unforeseen reply) still counts, as a failure."""
    exc = f.exception()
    if exc is None:
        return f.result()
    return StreamResult(ok=False, error=_server_text(f"{type(exc).__name__}: {exc}"))


def _server_text(text: str) -> str:
    """Text from a server as it may be shown or saved: secrets masked (a server may echo the key),
    control characters escaped, at most 300 characters."""
    return shown(redact(text.strip()), limit=300)


def bench_endpoint(
    cfg: EndpointConfig,
    *,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> list[LevelResult]:
    """Every concurrency level in order. Stops after a level where every request failed (the server is
    gone) or after Ctrl-C; the levels measured so far are returned."""
    cfg.check()
    stop = stop or threading.Event()
    out: list[LevelResult] = []
    for i, c in enumerate(cfg.concurrency):
        if progress is not None:
            progress(i, len(cfg.concurrency))
        level = bench_level(cfg, c, stop)
        out.append(level)
        if level.interrupted or stop.is_set() or not level.ok:
            break
    if progress is not None:
        progress(len(out), len(cfg.concurrency))
    return out


# ---------------------------------------------------------------------------------------------- Ollama


def _get_json(root: str, path: str, timeout_s: float, body: dict[str, Any] | None = None) -> Any:
    """A JSON reply, or None for any failure: at most _JSON_MAX_BYTES, within `timeout_s` in all."""
    conn = _connection(root, timeout_s)
    t0 = time.perf_counter()
    sock: socket.socket | None = None
    try:
        conn.connect()
        sock = conn.sock
        assert sock is not None
        late = _watchdog.watch(sock, timeout_s - (time.perf_counter() - t0))
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        parts: list[bytes] = []
        n_bytes = 0
        while n_bytes <= _JSON_MAX_BYTES:  # in pieces: read(n) would allocate the whole limit up front
            piece = resp.read(64 << 10)
            if not piece:
                break
            parts.append(piece)
            n_bytes += len(piece)
        if resp.status != 200 or late.is_set() or n_bytes > _JSON_MAX_BYTES:
            return None
        raw = b"".join(parts)
        return json.loads(raw)
    except (OSError, http.client.HTTPException, ValueError, RecursionError):  # ValueError: JSON, UTF-8
        return None
    finally:
        _watchdog.unwatch(sock)
        conn.close()


def is_ollama(url: str, timeout_s: float = 5.0) -> bool:
    root, _ = split_base(url)
    data = _get_json(root, "/api/version", timeout_s)
    return isinstance(data, dict) and "version" in data


@dataclass(frozen=True)
class OllamaTimings:
    """Ollama's own figures for one non-streamed generate (durations are nanoseconds in its API)."""

    prompt_tokens: int
    prompt_tok_s: float | None
    eval_tokens: int
    eval_tok_s: float | None
    load_s: float


def ollama_timings(cfg: EndpointConfig) -> OllamaTimings | None:
    root, _ = split_base(cfg.url)
    body = {"model": cfg.model_name, "prompt": cfg.prompt, "stream": False, "options": {"num_predict": cfg.max_tokens}}
    data = _get_json(root, "/api/generate", cfg.timeout_s, body)
    if not isinstance(data, dict) or "eval_count" not in data:
        return None
    try:
        return parse_ollama_timings(data, cfg.max_tokens)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):  # fields of the wrong type: no timings
        return None


def parse_ollama_timings(data: dict[str, Any], max_tokens: int | None = None) -> OllamaTimings:
    """Ollama's counts and nanosecond durations. Raises ValueError for figures that cannot be true: a
    negative count or duration, or more generated tokens than `max_tokens` asked for."""

    def rate(n: int, ns: int) -> float | None:
        return n / (ns / 1e9) if ns else None

    pc, pd = int(data.get("prompt_eval_count", 0)), int(data.get("prompt_eval_duration", 0))
    ec, ed = int(data.get("eval_count", 0)), int(data.get("eval_duration", 0))
    load_ns = int(data.get("load_duration", 0))
    if min(pc, pd, ec, ed, load_ns) < 0:
        raise ValueError("negative count or duration")
    if max_tokens is not None and ec > max_tokens:
        raise ValueError(f"eval_count {ec} for num_predict {max_tokens}")
    return OllamaTimings(pc, rate(pc, pd), ec, rate(ec, ed), load_ns / 1e9)


def ollama_ps(url: str, timeout_s: float = 5.0) -> list[dict[str, Any]] | None:
    """Loaded models as Ollama reports them: [{name, size (bytes), size_vram (bytes), context_length?}]."""
    root, _ = split_base(url)
    data = _get_json(root, "/api/ps", timeout_s)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return None
    return [m for m in data["models"] if isinstance(m, dict) and isinstance(m.get("size_vram", 0), int)]
