"""llama.cpp: `llama-server` per placement, and `ggml-rpc-server` workers for a model split across servers.

Flags (llama.cpp tools/server/README.md; tools/rpc/README.md and rpc-server.cpp for the worker):
  -m FNAME | -hf <user>/<model>[:quant]   the model
  -a, --alias STRING                      the name the API answers to (the role)
  -c N        total context of all slots = ctx per conversation × parallel (llama-server gives each slot c/np)
  -np N       slots (conversations at once)
  -ngl N      layers on GPUs (repeating layers + output head, as the estimator counts them)
  -ts N0,N1   proportions per visible GPU (only with two or more GPUs)
  -ctk/-ctv   KV cache types; -fa on|off   flash attention
  -dev none   CPU only (no offload); --rpc host:port,...   remote ggml-rpc-server devices
  --embeddings  embedding models: without it llama-server answers /v1/embeddings with 501 "This server does
              not support embeddings. Start it with `--embeddings`"
  -b N -ub N  the micro-batch the plan's memory was sized for, where the plan records one: encoders (BERT,
              BGE-M3) run each input as one micro-batch (non-causal attention; longer inputs get "input is too
              large to process"), so N = ctx (planner.estimate.estimate.embedding_batch)
  --host/--port
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.deploy import Process, model_file, placement_vendor, serves_embeddings, vendor_of, visible_devices_env
from planner.plan.schema import Placement, PlanServer

RPC_PORT = 50052  # ggml-rpc-server's default port (tools/rpc/README.md)
LLAMA_SERVER = "llama-server"
RPC_SERVER = "ggml-rpc-server"  # built as `rpc-server` before llama.cpp renamed the target (tools/rpc/CMakeLists.txt)


def tensor_split(server: PlanServer, p: Placement) -> list[int]:
    """-ts proportions: the plan's bytes on each of the placement's GPUs, in MiB (llama.cpp normalises them)."""
    out: list[int] = []
    for i in p.gpu_indices:
        b = p.memory_by_device.get(f"gpu{i}")
        if b is None:
            dev = next((d for d in server.devices if d.index == i), None)
            b = dev.capacity_bytes if dev else 1
        out.append(max(1, round(b / 2**20)))
    return out


def server_argv(
    server: PlanServer, p: Placement, port: int, models_dir: str, rpc: list[str] | None = None
) -> tuple[str, ...]:
    ref = model_file(p, models_dir)
    if ref.startswith("hf:"):
        model = ["-hf", f"{ref[3:]}:{p.quant}" if ":" not in ref[3:] else ref[3:]]
    else:
        model = ["-m", ref]
    argv = [LLAMA_SERVER, *model, "-a", p.role]
    argv += ["-c", str(p.ctx * p.parallel), "-np", str(p.parallel), "-ngl", str(p.gpu_layers)]
    if p.n_cpu_moe:
        argv += ["--n-cpu-moe", str(p.n_cpu_moe)]
    if len(p.gpu_indices) > 1 and not rpc:
        argv += ["-ts", ",".join(str(x) for x in tensor_split(server, p))]
    if not p.gpu_indices and not rpc:
        argv += ["-dev", "none"]
    argv += ["-ctk", p.kv_type, "-ctv", p.kv_type, "-fa", "on" if p.flash_attn else "off"]
    if rpc:
        argv += ["--rpc", ",".join(rpc)]
    if p.adapters:
        argv += ["--lora", ",".join(p.adapters)]
    if serves_embeddings(p):
        argv.append("--embeddings")
    if p.n_ubatch is not None:
        argv += ["-b", str(p.n_ubatch), "-ub", str(p.n_ubatch)]
    argv += ["--host", "0.0.0.0", "--port", str(port)]
    return tuple(argv)


def server_process(
    server: PlanServer, p: Placement, port: int, models_dir: str, addresses: Mapping[str, str]
) -> Process:
    rpc = [f"{addresses.get(h, h)}:{RPC_PORT}" for h in p.split_hosts if h != server.name]
    vendor = placement_vendor(server, p)
    comment = (
        f"{p.model_name} {p.quant}: ctx {p.ctx} per conversation × {p.parallel} slot(s) = -c {p.ctx * p.parallel}; "
        f"planned {p.memory_bytes / 2**30:.2f} GiB, {p.decode_tok_s:.1f} tok/s per slot."
    )
    if p.n_ubatch is not None and serves_embeddings(p):
        comment += (
            f"\nEmbedding model: -b/-ub {p.n_ubatch} so that one input of up to {p.n_ubatch} tokens fits one "
            "micro-batch (non-causal attention); the planned compute buffer is sized for it."
        )
    if rpc:
        comment += (
            f"\nSplit across servers: start {RPC_SERVER} on {', '.join(h for h in p.split_hosts if h != server.name)}"
            " first; layers go to every device in proportion to its free memory (tools/rpc/README.md)."
        )
    return Process(
        name=f"llama-server-{p.role}",
        engine="llama.cpp",
        kind="server",
        argv=server_argv(server, p, port, models_dir, rpc or None),
        env=tuple(visible_devices_env(vendor, p.gpu_indices, "llama.cpp").items()),
        port=port,
        gpu_indices=tuple(p.gpu_indices),
        vendor=vendor,
        roles=(p.role,),
        comment=comment,
    )


def rpc_worker(server: PlanServer, p: Placement) -> Process:
    """`ggml-rpc-server` on a second machine that holds part of `p`'s layers; exposes this server's GPUs."""
    indices = tuple(d.index for d in server.devices if d.kind == "gpu")
    vendor = vendor_of(server.gpus)
    return Process(
        name=f"rpc-server-{p.role}",
        engine="llama.cpp",
        kind="rpc-worker",
        argv=(RPC_SERVER, "-H", "0.0.0.0", "-p", str(RPC_PORT), "-c"),
        env=tuple(visible_devices_env(vendor, indices, "llama.cpp").items()),
        port=RPC_PORT,
        gpu_indices=indices,
        vendor=vendor,
        roles=(p.role,),
        comment=(
            f"Worker for {p.role} ({p.model_name}) whose llama-server runs elsewhere with --rpc <this host>:{RPC_PORT}."
            "\nThe RPC port has no authentication: open it only to the head server. -c caches tensors locally."
        ),
    )

