"""vLLM: `vllm serve` per placement, with --gpu-memory-utilization as a fraction of each card's TOTAL memory.

vLLM reserves `utilization × total memory` of every GPU it uses, per instance, and fills what its weights
and activations leave with KV cache (docs.vllm.ai, engine args `--gpu-memory-utilization`). Two instances on
one card must therefore split the card: the fractions of all vLLM instances on a card, plus what other
engines' models hold there, stay ≤ UTILIZATION_CAP. A model split across servers uses pipeline parallelism
over a Ray cluster (`--pipeline-parallel-size N --distributed-executor-backend ray`; `ray start --head` on
the first server, `ray start --address` on the others).
"""

from __future__ import annotations

import json
import math

from planner.deploy import (
    KeyEnv,
    Process,
    RopeScaling,
    draft_placement,
    hf_repo,
    local_gpu_indices,
    placement_vendor,
    rope_scaling,
    vendor_of,
    visible_devices_env,
)
from planner.plan.schema import Placement, PlanServer

UTILIZATION_CAP = 0.95  # sum of fractions on one card; the rest is left for the driver / CUDA context
RAY_PORT = 6379  # `ray start --head` default GCS port
KEY_ENV = KeyEnv("VLLM_API_KEY", as_path=False)  # vllm serve's --api-key reads it (docs: OpenAI-compatible server)


def _card_bytes(p: Placement, index: int) -> int:
    b = p.memory_by_device.get(f"gpu{index}")
    if b is not None:
        return b
    return p.memory_bytes // max(1, len(p.gpu_indices))


def _ceil2(x: float) -> float:
    return math.ceil(round(x * 100, 6)) / 100


def memory_utilizations(server: PlanServer) -> dict[str, float]:
    """--gpu-memory-utilization per vLLM role on `server`: the plan's own value, else the bytes it planned on
    its fullest card ÷ that card's total. When the instances on a card would ask for more than the card
    (minus other engines' models) allows, they fall back to their planned bytes, then are scaled down."""
    cap = {d.index: d.capacity_bytes for d in server.devices if d.kind == "gpu"}
    vllm_ps = [p for p in server.placements if p.engine == "vllm" and not p.shares_base_with]

    def need(p: Placement) -> float:
        return max((_ceil2(_card_bytes(p, i) / cap[i]) for i in p.gpu_indices if cap.get(i)), default=0.9)

    util = {p.role: (p.gpu_memory_utilization or need(p)) for p in vllm_ps}
    for i, total in cap.items():
        on_card = [p for p in vllm_ps if i in p.gpu_indices]
        if not on_card or total <= 0:
            continue
        others = sum(
            _card_bytes(p, i)
            for p in server.placements
            if p.engine != "vllm" and i in p.gpu_indices and not p.shares_base_with
        )
        budget = UTILIZATION_CAP - others / total
        if sum(util[p.role] for p in on_card) > budget:
            for p in on_card:
                util[p.role] = min(util[p.role], need(p))
        s = sum(util[p.role] for p in on_card)
        if s > budget:
            for p in on_card:
                util[p.role] = math.floor(util[p.role] * max(budget, 0.0) / s * 100) / 100
    return util


def utilization_notes(server: PlanServer, util: dict[str, float]) -> list[str]:
    notes: list[str] = []
    for p in server.placements:
        if p.role in util and p.gpu_memory_utilization and abs(util[p.role] - p.gpu_memory_utilization) > 1e-9:
            notes.append(
                f"{p.role}: --gpu-memory-utilization {util[p.role]:.2f} instead of the plan's "
                f"{p.gpu_memory_utilization:.2f}, so that the vLLM instances on its card(s) sum to ≤ {UTILIZATION_CAP}."
            )
    return notes


def _quantization(quant: str) -> str | None:
    q = quant.upper()
    for prefix, value in (("AWQ", "awq"), ("GPTQ", "gptq"), ("FP8", "fp8")):
        if q.startswith(prefix):
            return value
    return None


def hf_overrides_rope(rope: RopeScaling) -> str:
    """`--hf-overrides` JSON that switches on a documented RoPE extension: the `rope_scaling` entry of the model's
    config.json, as the Qwen2.5 model cards tell vLLM users to add it ({"type": "yarn", "factor": 4.0,
    "original_max_position_embeddings": 32768}; transformers 4.x reads `rope_type`, and `type` for older configs).
    vLLM's --hf-overrides merges it into the loaded config (docs.vllm.ai engine args; its context-extension
    example replaced the older --rope-scaling flag with it). vLLM releases on transformers v5 name the entry
    `rope_parameters` (with `rope_theta` inside) instead: edit the key there."""
    entry: dict[str, object] = {"rope_type": rope.method, "factor": rope.factor}
    if rope.method == "yarn":
        entry["original_max_position_embeddings"] = rope.original_ctx
    return json.dumps({"rope_scaling": entry}, separators=(",", ":"))


def serve_argv(
    p: Placement, port: int, utilization: float, pipeline: int, *, bind: str = "127.0.0.1"
) -> tuple[str, ...]:
    argv = ["vllm", "serve", hf_repo(p), "--served-model-name", p.role]
    argv += ["--host", bind, "--port", str(port)]
    argv += ["--max-model-len", str(p.ctx), "--max-num-seqs", str(p.parallel)]
    argv += ["--gpu-memory-utilization", f"{utilization:.2f}"]
    argv += ["--tensor-parallel-size", str(max(1, p.tensor_parallel))]
    if pipeline > 1:
        argv += ["--pipeline-parallel-size", str(pipeline), "--distributed-executor-backend", "ray"]
    q = _quantization(p.quant)
    if q:
        argv += ["--quantization", q]
    if p.kv_type.lower().startswith("fp8"):
        argv += ["--kv-cache-dtype", "fp8"]
    if p.adapters:
        argv += ["--enable-lora", "--lora-modules", *(f"{a.rsplit('/', 1)[-1]}={a}" for a in p.adapters)]
    if (rope := rope_scaling(p)) is not None:
        argv += ["--hf-overrides", hf_overrides_rope(rope)]
    if (spec := speculative_config(p)) is not None:
        argv += ["--speculative-config", spec]
    return tuple(argv)


def speculative_config(p: Placement) -> str | None:
    """--speculative-config for a draft model (docs.vllm.ai features/speculative_decoding/draft_model: `{"model":
    REPO, "num_speculative_tokens": K, "method": "draft_model"}`, vLLM PR #24322): the draft's checkpoint and the
    tokens drafted a step; None without a draft."""
    draft = draft_placement(p)
    if p.draft is None or draft is None:
        return None
    config = {"model": hf_repo(draft), "num_speculative_tokens": p.draft.n_max, "method": "draft_model"}
    return json.dumps(config, separators=(",", ":"))


def serve_process(
    server: PlanServer, p: Placement, port: int, util: dict[str, float], *, bind: str = "127.0.0.1", keyed: bool = False
) -> list[Process]:
    """The `vllm serve` process (and a Ray head before it when the model spans servers). An on-demand role's
    instance is not started at boot (vLLM has no model switcher): its script is run when the role is needed."""
    vendor = placement_vendor(server, p)
    gpus = local_gpu_indices(server, p)
    env = visible_devices_env(vendor, gpus, "vllm")
    boot = p.residency == "always"
    pipeline = max(1, len(p.split_hosts))
    u = util.get(p.role, 0.9)
    comment = (
        f"{p.model_name} {p.quant}: --max-model-len {p.ctx} per conversation, --max-num-seqs {p.parallel}; "
        f"--gpu-memory-utilization {u:.2f} of each card's TOTAL memory (vLLM reserves it all, KV fills the rest)."
    )
    if _quantization(p.quant) and not p.model.startswith("hf:"):
        comment += f"\nUse a {p.quant} checkpoint of {hf_repo(p)} (vLLM reads its quantization config)."
    procs: list[Process] = []
    if pipeline > 1:
        procs.append(
            Process(
                name=f"ray-head-{p.role}",
                engine="vllm",
                kind="ray-head",
                argv=("ray", "start", "--head", f"--port={RAY_PORT}", "--block"),
                env=tuple(env.items()),
                port=RAY_PORT,
                gpu_indices=gpus,
                vendor=vendor,
                roles=(p.role,),
                comment=f"Ray head for {p.role}: start before vllm serve; workers join with ray start --address.",
            )
        )
        comment += f"\nPipeline-parallel over {pipeline} servers ({', '.join(p.split_hosts)}): Ray workers first."
    if not boot:
        comment += "\nOn demand: not started by start.sh; run this script when the role is needed, stop it after."
    procs.append(
        Process(
            name=f"vllm-{p.role}",
            engine="vllm",
            kind="server",
            argv=serve_argv(p, port, u, pipeline, bind=bind),
            env=tuple(env.items()),
            port=port,
            gpu_indices=gpus,
            vendor=vendor,
            roles=(p.role,),
            comment=comment,
            key_env=(KEY_ENV,) if keyed else (),
            boot=boot,
        )
    )
    return procs


def ray_worker(server: PlanServer, p: Placement, head_host: str) -> Process:
    indices = local_gpu_indices(server, p) or tuple(d.index for d in server.devices if d.kind == "gpu")
    vendor = vendor_of(server.gpus)
    if vendor in ("mixed", "cpu"):  # vLLM has no Vulkan build: a mixed server is pinned the CUDA way
        vendor = "nvidia"
    return Process(
        name=f"ray-worker-{p.role}",
        engine="vllm",
        kind="ray-worker",
        argv=("ray", "start", f"--address={head_host}:{RAY_PORT}", "--block"),
        env=tuple(visible_devices_env(vendor, indices, "vllm").items()),
        port=None,
        gpu_indices=indices,
        vendor=vendor,
        roles=(p.role,),
        comment=f"Ray worker for {p.role} ({p.model_name}): joins the head on {head_host}; same vLLM version on both.",
    )
