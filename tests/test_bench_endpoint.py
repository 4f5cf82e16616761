"""The endpoint bench against a REAL OpenAI-compatible server on loopback (llama-cpp-python's server extra
serving the PyPI Gemma GGUF), plus the failure paths (nothing listening, server gone mid-way) and the
parsing of Ollama's documented timings."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bench_fixtures import free_port, llama_server

from planner.errors import PlannerError
from planner.measure.endpoint import (
    EndpointConfig,
    bench_endpoint,
    parse_ollama_timings,
    split_base,
    stream_chat,
)


@pytest.fixture(scope="module")
def server_url(gemma_gguf_path: Path) -> Iterator[str]:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("uvicorn")
    pytest.importorskip("sse_starlette")
    with llama_server(gemma_gguf_path) as url:
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


@pytest.mark.llama
@pytest.mark.slow
def test_real_server_streams_tokens(server_url: str) -> None:
    r = stream_chat(EndpointConfig(url=server_url, model_name="gemma", max_tokens=8))
    assert r.ok, r.error
    assert r.n_tokens == 8  # one streamed chunk per token, max_tokens reached (ignore_eos or a long answer)
    assert r.ttft_s is not None and r.decode_tok_s is not None
    assert r.ttft_s < r.total_s


@pytest.mark.llama
def test_real_server_concurrency_levels(server_url: str) -> None:
    cfg = EndpointConfig(url=server_url + "/v1", model_name="gemma", concurrency=(1, 2), max_tokens=6)
    levels = bench_endpoint(cfg)
    assert [lv.concurrency for lv in levels] == [1, 2]
    for lv in levels:
        assert lv.failed == 0, lv.errors
        assert [r.n_tokens for r in lv.results] == [6] * lv.concurrency
        assert lv.ttft_s is not None and lv.aggregate_tok_s is not None
        assert lv.aggregate_tok_s == pytest.approx(6 * lv.concurrency / lv.wall_s)


@pytest.mark.llama
def test_server_gone_mid_way_keeps_the_levels_measured(gemma_gguf_path: Path) -> None:
    pytest.importorskip("uvicorn")
    with llama_server(gemma_gguf_path) as url:
        first = bench_endpoint(EndpointConfig(url=url, model_name="gemma", concurrency=(1,), max_tokens=4))
    # the server is stopped now: the next level fails, the one before is kept by the caller
    second = bench_endpoint(EndpointConfig(url=url, model_name="gemma", concurrency=(2,), max_tokens=4, timeout_s=5))
    assert first[0].failed == 0 and first[0].ok[0].n_tokens == 4
    assert second[0].failed == 2 and second[0].aggregate_tok_s is None
