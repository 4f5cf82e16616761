"""Bench a running deployment role by role: `agiplan bench --plan plan.json --deployment DIR`.

`agiplan deploy` writes `deploy.json` into its folder: every role of the deployed option with the base URL and
model name it is served under (its router's, for on-demand llama.cpp roles), whether it is an embedder, and
whether its engine asks for the deployment's key (kept in the folder's `api-key`, mode 0600; read here,
registered with planner.redact, sent as a bearer token, never printed or saved). Each role is measured alone,
one after the other, against the plan's figures for that role alone (`decode_tok_s_alone`, `prefill_tok_s`):

- chat roles: one warm-up request (for an on-demand role it loads the model: its time is set beside the plan's
  swap-in estimate), then `repetitions` rounds of `parallel` streamed requests at once (the role's planned
  slots) through planner.measure.endpoint (TTFT, aggregate tok/s, the client's decode tok/s), then one round of
  `parallel` non-streamed requests whose answers carry the engine's own `timings` (llama-server: README
  "Timings and context usage"; `cache_prompt: false` so the whole prompt is processed). Where the engine
  reports them, decode and prefill tok/s per conversation are the medians of its `predicted_per_second` and
  `prompt_per_second`: a server may send several tokens in one network packet, and the gaps between chunks
  the client sees then say nothing about decoding (tiny models: 100,000 "tok/s"). Elsewhere (vLLM, Ollama's
  /v1) decode is the client's figure and prefill is not measured;
- embedders: `repetitions` POST /v1/embeddings of the bench prompt; prefill tok/s = the server's
  usage.prompt_tokens ÷ the request's wall time (the plan's embedder speed is prefill).

Memory is not measured through an endpoint: the plan's figures stay on the predicted side only.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from planner.deploy import API_KEY_FILE, DEPLOY_KIND, DEPLOY_SCHEMA_VERSION, serves_embeddings
from planner.deploy.write import MANIFEST, read_api_key
from planner.errors import PlannerError, shown
from planner.io import load_versioned
from planner.measure.endpoint import DEFAULT_PROMPT, EndpointConfig, LevelResult, bench_level, split_base, stream_chat
from planner.measure.results import BenchRun, Measured, Predicted, residuals
from planner.plan.schema import Placement, Plan
from planner.redact import redact, register_secret


class _ManifestEndpoint(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    server: str
    engine: str
    base_url: str
    model: str
    embedding: bool | None = None  # absent in deployments written before agiplan recorded it
    api_key: bool | None = None


class _Manifest(BaseModel):
    """The part of deploy.json the bench reads (the rest describes processes)."""

    model_config = ConfigDict(extra="ignore")

    kind: str
    schema_version: int
    option: int = Field(ge=0)
    server: str
    endpoints: list[_ManifestEndpoint]


@dataclass(frozen=True)
class DeployedRole:
    """One role of a running deployment: where it answers and what the plan predicted for it."""

    placement: Placement
    server: str
    engine: str
    url: str
    model_name: str
    embedding: bool
    keyed: bool


@dataclass(frozen=True)
class Deployed:
    folder: Path
    option: int
    roles: list[DeployedRole]
    api_key: str | None


def load_deployed(plan: Plan, plan_path: Path, folder: Path) -> Deployed:
    """The roles of the deployment in `folder`, each matched to its placement in `plan`. Refuses a folder
    that is not an agiplan deployment, one of another plan option, and roles the plan does not have."""
    manifest_path = Path(folder) / MANIFEST
    if not manifest_path.is_file():
        raise PlannerError(f"--deployment {folder}: no {MANIFEST}; give a folder written by 'agiplan deploy'.")
    key_path = Path(folder) / API_KEY_FILE
    key = read_api_key(key_path) if key_path.is_file() else None
    register_secret(key)  # masked in every message and saved error from here on
    man = load_versioned(manifest_path, DEPLOY_KIND, DEPLOY_SCHEMA_VERSION, _Manifest)
    if not 0 <= man.option < len(plan.options):
        raise PlannerError(
            f"--deployment {folder} deploys option {man.option}, which {plan_path} does not have "
            f"(it has {len(plan.options)}); bench it with the plan it was deployed from."
        )
    by_role = {p.role: p for s in plan.options[man.option].servers for p in s.placements}
    roles: list[DeployedRole] = []
    for e in man.endpoints:
        p = by_role.get(e.role)
        if p is None:
            raise PlannerError(
                f"--deployment {folder}: role {shown(redact(e.role))!r} is not in option {man.option} of {plan_path}; "
                "bench it with the plan it was deployed from."
            )
        embedding = e.embedding if e.embedding is not None else serves_embeddings(p)
        roles.append(DeployedRole(p, e.server, e.engine, e.base_url, e.model, embedding, bool(e.api_key)))
    if key is None and any(r.keyed for r in roles):
        raise PlannerError(f"--deployment {folder}: no {API_KEY_FILE} file, and some of its servers ask for the key.")
    return Deployed(Path(folder), man.option, roles, key)


def predicted_alone(p: Placement) -> Predicted:
    """The plan's figures for role `p` running alone (memory as planned; speeds without other roles)."""
    mem = p.memory
    return Predicted(
        weights_bytes=mem.weights_bytes,
        kv_cache_bytes=mem.kv_cache_bytes,
        compute_bytes=mem.compute_bytes,
        overhead_bytes=mem.overhead_bytes,
        decode_tok_s=p.decode_tok_s_alone,
        prefill_tok_s=p.prefill_tok_s,
    )


def _run(r: DeployedRole) -> BenchRun:
    p = r.placement
    return BenchRun(
        model=p.model_name, engine=r.engine, kind="deployed", role=p.role, server=r.server, quant=p.quant,
        ctx=p.ctx, parallel=p.parallel, kv_type=p.kv_type, flash_attn=p.flash_attn, gpu_layers=p.gpu_layers,
        concurrency=p.parallel, predicted=predicted_alone(p), min_tok_s=p.min_tok_s,
    )  # fmt: skip


def bench_chat_role(r: DeployedRole, api_key: str | None, n_gen: int, repetitions: int, timeout_s: float) -> BenchRun:
    """A warm-up request, then `repetitions` rounds of the role's planned slots at once."""
    p = r.placement
    run = _run(r)
    cfg = EndpointConfig(
        url=r.url, model_name=r.model_name, concurrency=(p.parallel,), max_tokens=n_gen, timeout_s=timeout_s,
        api_key=api_key if r.keyed else None,
    )  # fmt: skip
    cfg.check()
    first = stream_chat(cfg)
    if not first.ok:
        run.verdict, run.error = "error", f"first request: {first.error}"
        return run
    merged = LevelResult(concurrency=p.parallel)
    for _ in range(max(1, repetitions)):
        level = bench_level(cfg, p.parallel)
        merged.results += level.results
        merged.wall_s += level.wall_s
        if level.interrupted:
            raise KeyboardInterrupt
    ok = merged.ok
    timings = engine_timings(cfg, p.parallel)
    run.measured = Measured(
        ttft_s=_r(merged.ttft_s),
        decode_tok_s=_r(merged.decode_tok_s),
        decode_spread_tok_s=merged.decode_spread_tok_s,
        aggregate_tok_s=_r(merged.aggregate_tok_s),
        repetitions=len(ok),
        n_gen=n_gen,
        requests_ok=len(ok),
        requests_failed=merged.failed,
    )
    decode = [t.decode_tok_s for t in timings if t.decode_tok_s]
    prefill = [t.prefill_tok_s for t in timings if t.prefill_tok_s]
    if decode:
        m = run.measured
        m.llama_decode_tok_s = _r(statistics.median(decode))
        m.llama_prefill_tok_s = _r(statistics.median(prefill)) if prefill else None
        run.notes.append(
            f"decode and prefill tok/s: the engine's own timings of {len(decode)} request(s) at once; "
            f"the client saw {m.decode_tok_s} tok/s between streamed chunks"
        )
        m.decode_tok_s, m.decode_spread_tok_s = m.llama_decode_tok_s, (round(min(decode), 3), round(max(decode), 3))
        m.prefill_tok_s, m.n_prompt = m.llama_prefill_tok_s, timings[0].prompt_tokens
    if p.residency == "on-demand" and ok:
        answer_s = statistics.median(x.total_s for x in ok)
        run.measured.load_s = _r(max(0.0, first.total_s - answer_s))
        planned = f"; the plan's swap-in estimate {p.swap_in_s:.2f} s" if p.swap_in_s is not None else ""
        run.notes.append(
            f"on demand: the first request took {first.total_s:.2f} s, {answer_s:.2f} s more than an answer once "
            f"loaded (load_s){planned}"
        )
    _finish(run, decode=True, errors=merged.errors)
    return run


@dataclass(frozen=True)
class EngineTimings:
    """The engine's own figures for one completion (llama-server's `timings`)."""

    decode_tok_s: float | None
    prefill_tok_s: float | None
    prompt_tokens: int | None


def engine_timings(cfg: EndpointConfig, n: int) -> list[EngineTimings]:
    """`n` non-streamed chat completions at once; the `timings` of each answer that has them (none for an
    engine that does not report them, or when a request fails: the streamed rounds already count failures)."""
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="agiplan-timings") as pool:
        answers = list(pool.map(lambda _: _completion(cfg), range(n)))
    out: list[EngineTimings] = []
    for a in answers:
        t = a.get("timings") if isinstance(a, dict) else None
        if not isinstance(t, dict):
            continue
        out.append(
            EngineTimings(
                decode_tok_s=_positive(t.get("predicted_per_second")),
                prefill_tok_s=_positive(t.get("prompt_per_second")),
                prompt_tokens=t.get("prompt_n") if isinstance(t.get("prompt_n"), int) else None,
            )
        )
    return out


def _positive(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and 0 < x < float("inf") else None


def _post_json(
    url: str, path: str, body: dict[str, object], api_key: str | None, timeout_s: float
) -> tuple[int, bytes]:
    """(HTTP status, body) of one POST to `path` under the OpenAI base of `url`; raises OSError / HTTPException."""
    root, base = split_base(url)
    u = urllib.parse.urlsplit(root)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    connection = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = connection(u.hostname or "localhost", u.port, timeout=timeout_s)
    try:
        conn.request("POST", base + path, body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(1 << 24)
    finally:
        conn.close()


def _completion(cfg: EndpointConfig) -> object:
    body: dict[str, object] = {
        "model": cfg.model_name,
        "messages": [{"role": "user", "content": cfg.prompt}],
        "max_tokens": cfg.max_tokens,
        "temperature": 0,
        "ignore_eos": True,  # llama-server and vLLM: generate max_tokens
        "cache_prompt": False,  # llama-server: process the whole prompt, so prefill is timed
    }
    try:
        status, raw = _post_json(cfg.url, "/chat/completions", body, cfg.api_key, cfg.timeout_s)
        return json.loads(raw) if status == 200 else None
    except (OSError, http.client.HTTPException, ValueError, RecursionError):
        return None


def embed_once(url: str, model: str, text: str, api_key: str | None, timeout_s: float) -> tuple[int, float]:
    """(usage.prompt_tokens, wall seconds) of one POST /v1/embeddings; PlannerError on any other answer."""
    t0 = time.perf_counter()
    try:
        status, raw = _post_json(url, "/embeddings", {"model": model, "input": text}, api_key, timeout_s)
    except (OSError, http.client.HTTPException) as e:
        raise PlannerError(f"POST /v1/embeddings: {type(e).__name__}: {shown(redact(str(e)), limit=200)}") from None
    elapsed = time.perf_counter() - t0
    if status != 200:
        raise PlannerError(
            f"POST /v1/embeddings: HTTP {status}: {shown(redact(raw.decode(errors='replace')), limit=200)}"
        )
    try:
        tokens = json.loads(raw)["usage"]["prompt_tokens"]
    except (ValueError, KeyError, TypeError):
        tokens = None
    if not isinstance(tokens, int) or tokens <= 0:
        raise PlannerError("POST /v1/embeddings: the answer has no usage.prompt_tokens to time prefill with")
    return tokens, elapsed


def bench_embedding_role(r: DeployedRole, api_key: str | None, repetitions: int, timeout_s: float) -> BenchRun:
    """`repetitions` embeddings of the bench prompt (after one warm-up): prefill tok/s, median and spread."""
    run = _run(r)
    key = api_key if r.keyed else None
    try:
        embed_once(r.url, r.model_name, DEFAULT_PROMPT, key, timeout_s)
        rates = []
        for _ in range(max(1, repetitions)):
            tokens, seconds = embed_once(r.url, r.model_name, DEFAULT_PROMPT, key, timeout_s)
            rates.append(tokens / seconds)
    except PlannerError as e:
        run.verdict, run.error = "error", str(e)
        return run
    run.measured = Measured(
        prefill_tok_s=_r(statistics.median(rates)),
        prefill_spread_tok_s=(round(min(rates), 3), round(max(rates), 3)),
        n_prompt=tokens,
        repetitions=len(rates),
        requests_ok=len(rates) + 1,
        requests_failed=0,
    )
    run.notes.append(f"embeddings: {tokens} prompt tokens per request, timed end to end (prefill tok/s)")
    _finish(run, decode=False, errors=[])
    return run


def _finish(run: BenchRun, *, decode: bool, errors: list[str]) -> None:
    """Residuals against the plan and the verdict: pass / fail against the role's tok/s floor (chat roles),
    "measured" without one, "error" when nothing was measured or a request failed."""
    m = run.measured
    if run.predicted is not None:
        run.residuals = {k: v for k, v in residuals(run.predicted, m).items() if k.endswith("_tok_s")}
    speed = m.decode_tok_s if decode else m.prefill_tok_s
    if errors or speed is None:
        run.verdict = "error"
        run.error = "; ".join(sorted(set(errors)))[:500] or "no speed measured"
    elif decode and run.min_tok_s is not None:
        run.verdict = "pass" if speed >= run.min_tok_s else "fail"
    else:
        run.verdict = "measured"


def bench_role(r: DeployedRole, api_key: str | None, *, n_gen: int, repetitions: int, timeout_s: float) -> BenchRun:
    if r.embedding:
        return bench_embedding_role(r, api_key, repetitions, timeout_s)
    return bench_chat_role(r, api_key, n_gen, repetitions, timeout_s)


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
