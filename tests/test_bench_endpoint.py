"""The endpoint bench against a REAL OpenAI-compatible server on loopback (the pinned llama-server serving the
PyPI Gemma GGUF), plus the failure paths (nothing listening, server gone mid-way) and the
parsing of Ollama's documented timings."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bench_fixtures import free_port, llama_server

from planner.errors import PlannerError
from planner.measure.endpoint import (
    EndpointConfig,
    bench_endpoint,
    is_ollama,
    ollama_ps,
    parse_ollama_timings,
    split_base,
    stream_chat,
)


@pytest.fixture(scope="module")
def server_url(gemma_gguf_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(gemma_gguf_path, tmp_path_factory.mktemp("server") / "llama-server.log") as url:
        yield url


@pytest.mark.parametrize(
    ("url", "root", "base"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "/v1"),  # llama-server, LM Studio
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080", "/v1"),  # the OpenAI base URL form
        ("http://localhost:11434/v1/", "http://localhost:11434", "/v1"),  # Ollama's OpenAI path, trailing /
        ("https://gw.example/llm", "https://gw.example", "/llm/v1"),  # behind a proxy prefix
    ],
)
def test_split_base(url: str, root: str, base: str) -> None:
    assert split_base(url) == (root, base)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (EndpointConfig(url="127.0.0.1:8080", model_name="m"), "http"),
        (EndpointConfig(url="http://h:1", model_name="m", concurrency=(0,)), "positive integers"),
        (EndpointConfig(url="http://h:1", model_name="m", max_tokens=1), "at least 2"),
    ],
)
def test_config_errors(cfg: EndpointConfig, message: str) -> None:
    with pytest.raises(PlannerError, match=message):
        cfg.check()


def test_ollama_timings_from_its_documented_fields() -> None:
    # docs/api.md of ollama/ollama, "Generate a completion" response example (durations in nanoseconds)
    data = {
        "total_duration": 10706818083,
        "load_duration": 6338219291,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 130079000,
        "eval_count": 259,
        "eval_duration": 4232710000,
    }
    t = parse_ollama_timings(data)
    assert t.eval_tokens == 259 and t.prompt_tokens == 26
    assert t.eval_tok_s == pytest.approx(259 / 4.23271)  # 61.19 tok/s
    assert t.prompt_tok_s == pytest.approx(26 / 0.130079)
    assert t.load_s == pytest.approx(6.338219291)


def test_nothing_listening_is_an_error_and_stops() -> None:
    cfg = EndpointConfig(url=f"http://127.0.0.1:{free_port()}", model_name="m", concurrency=(1, 4), timeout_s=5)
    levels = bench_endpoint(cfg)
    assert len(levels) == 1  # the first level failed completely: the next is not tried
    assert levels[0].failed == 1 and not levels[0].ok
    assert "ConnectionRefusedError" in levels[0].errors[0]


@pytest.mark.engines
@pytest.mark.slow
def test_real_server_streams_tokens(server_url: str) -> None:
    r = stream_chat(EndpointConfig(url=server_url, model_name="gemma", max_tokens=8))
    assert r.ok, r.error
    assert r.n_tokens == 8  # one streamed chunk per token, max_tokens reached (ignore_eos or a long answer)
    assert r.ttft_s is not None and r.decode_tok_s is not None
    assert r.ttft_s < r.total_s


@pytest.mark.engines
@pytest.mark.slow  # 5.7 s here (load 11), after the server's 6.5 s start
def test_real_server_concurrency_levels(server_url: str) -> None:
    cfg = EndpointConfig(url=server_url + "/v1", model_name="gemma", concurrency=(1, 2), max_tokens=6)
    levels = bench_endpoint(cfg)
    assert [lv.concurrency for lv in levels] == [1, 2]
    for lv in levels:
        assert lv.failed == 0, lv.errors
        assert [r.n_tokens for r in lv.results] == [6] * lv.concurrency
        assert lv.ttft_s is not None and lv.aggregate_tok_s is not None
        assert lv.aggregate_tok_s == pytest.approx(6 * lv.concurrency / lv.wall_s)


@pytest.mark.engines
@pytest.mark.slow  # 8.8 s here (load 11): its own server start
def test_server_gone_mid_way_keeps_the_levels_measured(gemma_gguf_path: Path, tmp_path: Path) -> None:
    with llama_server(gemma_gguf_path, tmp_path / "llama-server.log") as url:
        first = bench_endpoint(EndpointConfig(url=url, model_name="gemma", concurrency=(1,), max_tokens=4))
    # the server is stopped now: the next level fails, the one before is kept by the caller
    second = bench_endpoint(EndpointConfig(url=url, model_name="gemma", concurrency=(2,), max_tokens=4, timeout_s=5))
    assert first[0].failed == 0 and first[0].ok[0].n_tokens == 4
    assert second[0].failed == 2 and second[0].aggregate_tok_s is None


# --- issue 15: hostile servers on loopback (real sockets, http.server) -----------------------------


class _Hostile(BaseHTTPRequestHandler):
    """What a broken or hostile server does, by path: an endless body, a body that drips a byte at a time,
    a stream that claims 1e30 generated tokens."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection closes: it can be endless
    stop = threading.Event()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _endless(self, piece: bytes, pause_s: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        with contextlib.suppress(OSError):
            while not self.stop.is_set():
                self.wfile.write(piece)
                self.wfile.flush()
                if pause_s:
                    time.sleep(pause_s)

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._endless(b'{"version": "' + b"9" * 65536, 0)  # never ends, as fast as the socket takes it
        else:
            self._endless(b"{", 0.2)  # one byte every 0.2 s

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if "drip" in self.path:
            self._endless(b"d", 0.2)  # 'data: ...' one byte at a time, never a full line
        elif "huge" in self.path:
            self.send_response(200)
            self.end_headers()
            for i in range(4):
                chunk = {"choices": [{"delta": {"content": f"t{i}"}, "finish_reason": "length" if i == 3 else None}]}
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            usage = {"choices": [], "usage": {"completion_tokens": 10**30}}  # an integer in the JSON
            self.wfile.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        else:
            self._endless(b"data: {}\n", 0)  # endless valid-looking lines


@pytest.fixture(scope="module")
def hostile_url() -> Iterator[str]:
    _Hostile.stop.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    _Hostile.stop.set()
    httpd.shutdown()
    httpd.server_close()


def test_endless_version_body_is_read_to_a_limit(hostile_url: str) -> None:
    """GET /api/version whose body never ends: 13.3 GB in 41 s before; now at most 16 MiB are read."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        assert is_ollama(hostile_url, timeout_s=5) is False
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5 and peak < 40 << 20, peak


def test_dripping_json_reply_ends_at_the_timeout(hostile_url: str) -> None:
    """GET /api/ps dripping a byte every 0.2 s: the socket timeout never trips; the deadline does."""
    t0 = time.perf_counter()
    assert ollama_ps(hostile_url, timeout_s=1.0) is None
    assert time.perf_counter() - t0 < 2.0


def test_dripping_stream_ends_at_the_timeout(hostile_url: str) -> None:
    """A stream that sends one byte every 0.2 s and never a newline ignored --timeout before (readline
    waited for a line of up to 1 MiB); now the whole reply gets --timeout."""
    t0 = time.perf_counter()
    r = stream_chat(EndpointConfig(url=hostile_url + "/drip", model_name="m", timeout_s=1.0))
    elapsed = time.perf_counter() - t0
    assert not r.ok and r.error == "no complete response within 1 s", r.error
    assert elapsed < 2.0, elapsed


def test_endless_stream_is_cut_at_its_byte_limit(hostile_url: str) -> None:
    """Endless `data: {}` lines: 1 MiB + 16 KiB per requested token (1.06 MiB for 4 tokens), then stop."""
    t0 = time.perf_counter()
    r = stream_chat(EndpointConfig(url=hostile_url + "/endless", model_name="m", max_tokens=4, timeout_s=30))
    assert not r.ok and r.error == "the server sent more than 1 MiB for 4 tokens: stopped", r.error
    assert time.perf_counter() - t0 < 5


def test_reported_tokens_past_the_request_are_not_a_measurement(hostile_url: str) -> None:
    """completion_tokens 1e30 for max_tokens 4 was taken as measured: 3.4e34 tok/s."""
    r = stream_chat(EndpointConfig(url=hostile_url + "/huge", model_name="m", max_tokens=4, timeout_s=10))
    assert not r.ok and r.decode_tok_s is None
    assert r.error == "the server reported 1e+30 completion tokens for max_tokens 4", r.error


def test_ollama_timings_past_the_request_are_refused() -> None:
    with pytest.raises(ValueError, match="eval_count 1000000 for num_predict 64"):
        parse_ollama_timings({"eval_count": 10**6, "eval_duration": 1}, max_tokens=64)
    with pytest.raises(ValueError, match="negative"):
        parse_ollama_timings({"eval_count": 5, "eval_duration": -1})


def test_concurrency_is_bounded_before_threads_start() -> None:
    """--concurrency 3000 failed with "can't start new thread" under a memory limit."""
    cfg = EndpointConfig(url="http://127.0.0.1:1", model_name="m", concurrency=(1, 3000))
    with pytest.raises(PlannerError, match="at most 32 levels of at most 256 requests each"):
        cfg.check()
