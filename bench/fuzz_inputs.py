"""Fuzz every input agiplan reads from outside: GGUF files, stack YAML, plan JSON, server files (detect JSON
and --server strings), bench result files, and HTTP replies from a loopback OpenAI endpoint and a loopback Hub.

    python bench/fuzz_inputs.py                   # 2,000 cases per kind (the longer run, by hand)
    python bench/fuzz_inputs.py --cases 200 --kind gguf --kind hub

Each case is a seeded mutation of a real, valid input (random.Random(seed, case): the same numbers give the
same cases). Its only allowed outcomes are a result or a PlannerError of one line; anything else stops the
run with the kind, the case number and the exception. Per kind it reports the cases run, how many loaded and
how many were refused, the slowest case (wall time) and the peak of Python allocations during one case
(tracemalloc: the reader's own buffers, not the interpreter). tests/test_fuzz_inputs.py runs every kind with
a small fixed count in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import struct
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the planner package, and the tests' fixture builders

from planner.errors import PlannerError  # noqa: E402

Case = Callable[[random.Random], object]

POISON: list[Any] = [
    None, True, False, -1, 0, 2**70, -(2**70), 1e308, float("inf"), float("nan"), 3.5, "", "x" * 5000,
    "\x1b[31mred\n second", "1", "8192", [], {}, [[[[[[[[[[]]]]]]]]]], {"a": {"b": 1}}, 10**400,
]  # fmt: skip
YAML_BYTES = b"[]{}:-&*!|>'\"\n #0123456789.e_x\t,?%@`\\"
ABSURD_U64 = (2**60, 2**63 - 1, 2**64 - 1, 2**32, 2**31 + 1, 10**12, 0)


@dataclass
class KindStats:
    kind: str
    cases: int = 0
    loaded: int = 0
    refused: int = 0
    worst_s: float = 0.0
    worst_case: int = -1
    peak_bytes: int = 0


# ------------------------------------------------------------------------------------------ mutations


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def mutate_doc(rng: random.Random, doc: Any) -> Any:
    """A deep copy of a JSON-like `doc` with 1-3 values replaced by poison, deleted, or a key added."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        paths = list(_paths(doc))[1:]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        action = rng.random()
        if action < 0.15 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action < 0.25 and isinstance(parent, dict):
            parent["surprise"] = copy.deepcopy(rng.choice(POISON))
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(POISON))
    return doc


def mutate_bytes(rng: random.Random, data: bytes, alphabet: bytes | None = None) -> bytes:
    """1-4 of: truncate, flip bytes, insert or delete a run, duplicate a region, overwrite 8 bytes with an
    absurd little-endian u64 (a length or a count in a binary header)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            del out[rng.randrange(len(out)) :]
        elif op == 1 and out:
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] = rng.randrange(256)
        elif op == 2:
            pool = alphabet or bytes(range(256))
            out[at:at] = bytes(rng.choice(pool) for _ in range(rng.randint(1, 16)))
        elif op == 3 and out:
            del out[at : at + rng.randint(1, 64)]
        elif op == 4 and out:
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 256)] * rng.randint(1, 4)
        elif op == 5 and len(out) >= 8:
            at = rng.randrange(len(out) - 7)
            out[at : at + 8] = struct.pack("<Q", rng.choice(ABSURD_U64))
    return bytes(out)


# ------------------------------------------------------------------------------------------ kinds


def _tiny_gguf(path: Path) -> bytes:
    """A real, valid GGUF (gguf.GGUFWriter): llama, 2 layers, 32 wide, a 40-token vocabulary."""
    from conftest import write_tiny_gguf

    return write_tiny_gguf(path, hidden=32, heads=2, head_dim=16, ffn=64, vocab=40).read_bytes()


def kind_gguf(work: Path) -> Case:
    from planner.sources.gguf_file import read_gguf

    seed = _tiny_gguf(work)
    target = work / "case.gguf"

    def case(rng: random.Random) -> object:
        target.write_bytes(mutate_bytes(rng, seed))
        return read_gguf(target)

    return case


def kind_stack(work: Path) -> Case:
    import yaml

    from planner.plan.stack import PRESETS, load_stack, preset_dir

    texts = [(preset_dir() / f"{name}.yaml").read_bytes() for name in PRESETS]
    docs = [yaml.safe_load(t) for t in texts]
    target = work / "stack.yaml"

    def case(rng: random.Random) -> object:
        if rng.random() < 0.5:
            target.write_text(yaml.safe_dump(mutate_doc(rng, rng.choice(docs)), allow_unicode=True))
        else:
            target.write_bytes(mutate_bytes(rng, rng.choice(texts), YAML_BYTES))
        return load_stack(target)

    return case


def _json_case(work: Path, name: str, doc: Any, load: Callable[[Path], object]) -> Case:
    text = json.dumps(doc).encode()
    target = work / name

    def case(rng: random.Random) -> object:
        if rng.random() < 0.6:
            target.write_text(json.dumps(mutate_doc(rng, doc)))
        else:
            target.write_bytes(mutate_bytes(rng, text, b'{}[]",:0123456789eE.-tfn \\'))
        return load(target)

    return case


def kind_plan(work: Path) -> Case:
    from test_report_fixtures import agents_plan

    from planner.plan.schema import load_plan

    return _json_case(work, "plan.json", agents_plan().model_dump(mode="json"), load_plan)


def kind_bench(work: Path) -> Case:
    """A bench result with a model run and an endpoint run, through both of its readers (bench and report)."""
    from planner.measure.results import BenchResult, BenchRun, HostSummary, Measured, Predicted, load_result
    from planner.report import load_bench

    pred = Predicted(weights_bytes=259_858_104, kv_cache_bytes=18_874_368, compute_bytes=539_492_352,
                     decode_tok_s=50.0, prefill_tok_s=400.0)  # fmt: skip
    meas = Measured(weights_bytes=259_858_104, kv_cache_bytes=18_874_368, decode_tok_s=55.0, prefill_tok_s=300.0,
                    peak_rss_bytes=400_000_000, decode_spread_tok_s=(50.0, 60.0))  # fmt: skip
    runs = [
        BenchRun(model="Gemma 3 270m", engine="llama.cpp", kind="model", ctx=1024, predicted=pred, measured=meas),
        BenchRun(model="m", engine="openai", kind="endpoint", ctx=2048, concurrency=4, measured=meas,
                 verdict="measured"),
    ]  # fmt: skip
    host = HostSummary(hostname="h", cpu="AMD EPYC", cores=2, threads=2, ram_total_bytes=24 * 2**30)
    doc = BenchResult(agiplan_version="0.1.0", host=host, runs=runs, complete=True).model_dump(mode="json")

    def load(path: Path) -> object:
        load_result(path)
        return load_bench(path)

    return _json_case(work, "bench.json", doc, load)


def kind_server(work: Path) -> Case:
    from planner.catalog import load_catalog
    from planner.hardware.detect import CpuInfo, GpuInfo, HostInfo, write_host_json
    from planner.plan.servers import parse_server_spec, server_from_detect

    cat = load_catalog()
    host = HostInfo(
        hostname="box",
        gpus=[GpuInfo(0, "NVIDIA GeForce RTX 4090", "nvidia", 24564 * 2**20, 2**30, 2**30, "550", "rtx-4090", "nvml")],
        cpu=CpuInfo("AMD Ryzen 9 7950X 16-Core Processor", "amd", 16, 32, True, True, "ryzen-9-7950x"),
        ram_total_bytes=128 * 2**30,
        ram_available_bytes=120 * 2**30,
        disk_read_gbs=6.8,
    )
    seed_file = work / "seed-host.json"
    write_host_json(seed_file, host)
    json_case = _json_case(work, "host.json", json.loads(seed_file.read_text()), lambda p: server_from_detect(p, cat))
    words = ["main:", "2x", "rtx-4090", "ryzen-9-7950x", "128GiB", "1000000000x", "9" * 30 + "x", ",", "x", "TiB",
             "rx-7900-xtx", "0x", "-1x", "1e9GiB", "\x1b[2J", ":", " ", "64", "GB", "core-i9-13900k"]  # fmt: skip

    def case(rng: random.Random) -> object:
        if rng.random() < 0.5:
            return json_case(rng)
        spec = "".join(rng.choice(words) + rng.choice(["", " ", ", "]) for _ in range(rng.randint(1, 8)))
        return parse_server_spec(spec, cat)

    return case


class _Replies(BaseHTTPRequestHandler):
    """Answers every request with the status and body set for the current case; HTTP/1.0, so the body
    ends when the connection closes."""

    protocol_version = "HTTP/1.0"
    reply: tuple[int, bytes] = (200, b"")

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        status, body = type(self).reply
        with contextlib.suppress(OSError):
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()


@contextlib.contextmanager
def _loopback(handler: type[_Replies]) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sse(tokens: int, usage: Any) -> bytes:
    events = [{"choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]} for i in range(tokens)]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    events.append({"choices": [], "usage": {"completion_tokens": usage}})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def kind_endpoint(work: Path, stack: contextlib.ExitStack) -> Case:
    from planner.measure.endpoint import EndpointConfig, is_ollama, stream_chat

    class Handler(_Replies):
        pass

    url = stack.enter_context(_loopback(Handler))
    valid = _sse(4, 4)
    cfg = EndpointConfig(url=url, model_name="m", max_tokens=4, timeout_s=2.0)

    def case(rng: random.Random) -> object:
        body = mutate_bytes(rng, valid, b'data: {}[]",:\n0123456789e')
        if rng.random() < 0.2:
            body = _sse(rng.randint(0, 8), rng.choice(POISON[:12]))
        Handler.reply = (rng.choice([200, 200, 200, 500, 404]), body)
        r = stream_chat(cfg)
        # sanity of what a reply may make agiplan believe: no more tokens than asked for, a finite speed
        if r.ok and not (r.n_tokens <= cfg.max_tokens and (r.decode_tok_s is None or r.decode_tok_s < 1e9)):
            raise AssertionError(f"implausible measurement accepted: {r}")
        is_ollama(url, timeout_s=2.0)
        if not r.ok:  # a failed request is bench's refusal: its error is shown and saved as one line
            raise PlannerError(r.error or "")
        return r

    return case


def kind_hub(work: Path, stack: contextlib.ExitStack) -> Case:
    from planner.sources.huggingface import load_hf

    class Handler(_Replies):
        gguf = b""
        info = b""

        def do_GET(self) -> None:  # model info, or the GGUF (Range ignored: the handler cannot tell)
            type(self).reply = (type(self).reply[0], self.info if "/api/models/" in self.path else self.gguf)
            self._answer()

    url = stack.enter_context(_loopback(Handler))
    os.environ.update(HF_ENDPOINT=url, AGIPLAN_HUB_TIMEOUT_S="2", AGIPLAN_CACHE_DIR=str(work / "hub-cache"),
                      HF_HOME=str(work / "hf"))  # fmt: skip
    os.environ.pop("HF_HUB_OFFLINE", None)
    gguf = _tiny_gguf(work)
    info = {"sha": "a" * 40, "siblings": [{"rfilename": "m-Q4_K_M.gguf", "size": len(gguf)}]}

    def case(rng: random.Random) -> object:
        Handler.info = json.dumps(mutate_doc(rng, info)).encode() if rng.random() < 0.5 else json.dumps(info).encode()
        Handler.gguf = mutate_bytes(rng, gguf) if rng.random() < 0.7 else gguf
        Handler.reply = (rng.choice([200, 200, 200, 206, 401, 404, 429, 500]), b"")
        return load_hf("hf:o/m")

    return case


KINDS = ("gguf", "stack", "plan", "server", "bench", "endpoint", "hub")


def make_case(kind: str, work: Path, stack: contextlib.ExitStack) -> Case:
    if kind == "endpoint":
        return kind_endpoint(work, stack)
    if kind == "hub":
        return kind_hub(work, stack)
    return {"gguf": kind_gguf, "stack": kind_stack, "plan": kind_plan, "server": kind_server, "bench": kind_bench}[
        kind
    ](work)


# ------------------------------------------------------------------------------------------ the run


def run_kind(kind: str, cases: int, seed: int = 0) -> KindStats:
    """`cases` seeded cases of one kind; raises AssertionError naming the case on any unexpected outcome."""
    stats = KindStats(kind)
    saved_env = dict(os.environ)  # the hub kind points HF_ENDPOINT and caches at its loopback server
    with tempfile.TemporaryDirectory(prefix=f"agiplan-fuzz-{kind}-") as tmp, contextlib.ExitStack() as stack:
        stack.callback(lambda: (os.environ.clear(), os.environ.update(saved_env)))
        case = make_case(kind, Path(tmp), stack)
        with contextlib.suppress(PlannerError):  # untimed: the first case pays the lazy imports
            case(random.Random(f"{seed}:{kind}:warm-up"))
        tracemalloc.start()
        try:
            for i in range(cases):
                rng = random.Random(f"{seed}:{kind}:{i}")
                tracemalloc.reset_peak()
                t0 = time.perf_counter()
                try:
                    case(rng)
                except PlannerError as e:
                    msg = str(e)
                    if not msg.strip() or "\n" in msg.strip():
                        raise AssertionError(f"{kind} case {i}: not a one-line message: {msg[:300]!r}") from e
                    stats.refused += 1
                except Exception as e:
                    raise AssertionError(f"{kind} case {i} (seed {seed}): {type(e).__name__}: {e}"[:2000]) from e
                else:
                    stats.loaded += 1
                elapsed = time.perf_counter() - t0
                stats.cases += 1
                if elapsed > stats.worst_s:
                    stats.worst_s, stats.worst_case = elapsed, i
                stats.peak_bytes = max(stats.peak_bytes, tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000, help="cases per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", action="append", choices=KINDS, help="only these kinds (repeatable)")
    args = ap.parse_args(argv)
    print(f"{'kind':<9} {'cases':>6} {'loaded':>6} {'refused':>7} {'worst case (#)':>18} {'peak (tracemalloc)':>19}")
    for kind in args.kind or KINDS:
        s = run_kind(kind, args.cases, args.seed)
        print(f"{s.kind:<9} {s.cases:>6} {s.loaded:>6} {s.refused:>7} {s.worst_s * 1000:>9.0f} ms (#{s.worst_case:<4})"
              f"{s.peak_bytes / 2**20:>15.1f} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
