"""llama.cpp: `llama-server` per placement, and `ggml-rpc-server` workers for a model split across servers.

Flags (llama.cpp tools/server/README.md; tools/rpc/README.md and rpc-server.cpp for the worker):
  -m FNAME | -hf <user>/<model>[:quant]   the model
  -a, --alias STRING                      the name the API answers to (the role)
  -c N        total context of all slots = ctx per conversation × parallel (llama-server gives each slot c/np)
  -np N       slots (conversations at once)
  -ngl N      layers on GPUs (repeating layers + output head, as the estimator counts them)
  -ts N0,N1   proportions per visible GPU (only with two or more GPUs)
  -sm tensor -fit off   a placement planned with split mode tensor (EXPERIMENTAL: the cards share every layer,
              weights and KV split evenly; --fit does not support it, docs/multi-gpu.md)
  -ctk/-ctv   KV cache types; -fa on|off   flash attention
  -dev none   CPU only (no offload); --rpc host:port,...   remote ggml-rpc-server devices
  --embeddings  embedding models: without it llama-server answers /v1/embeddings with 501 "This server does
              not support embeddings. Start it with `--embeddings`"
  -b N -ub N  the micro-batch the plan's memory was sized for, where the plan records one: encoders (BERT,
              BGE-M3) run each input as one micro-batch (non-causal attention; longer inputs get "input is too
              large to process"), so N = ctx (planner.estimate.estimate.embedding_batch)
  --rope-scaling yarn|linear --rope-scale F --yarn-orig-ctx N   a context past the trained one, with the
              catalog's documented extension (plan's context_extension): Qwen2.5 YaRN factor 4 over 32,768
  -md FNAME | -hfd <user>/<model>[:quant]   the draft model (speculative decoding), with
  --spec-type draft-simple --spec-draft-n-max K --spec-draft-n-min M   b11434 needs the type named (its default is
              none) and removed --draft-max / --draft-min ("the argument has been removed. use --spec-draft-n-max")
  -ngld N     the draft's layers on the GPUs; -devd none with the target's -dev none (else it follows the target's
              devices and -ts); -ctkd/-ctvd its KV types (default f16; the plan gives it the role's)
  --host/--port
  --cors-origins localhost --no-cors-credentials   CORS for localhost pages only (default "*" with credentials)
  LLAMA_ARG_API_KEY_FILE (env of --api-key-file)  the key, for servers other hosts reach

On-demand roles (llama.cpp tools/server/README.md "Using multiple models"): one llama-server in router mode
per GPU set, started without a model and with `--models-preset <ini>`: one section per role (named as the
role, which the request's "model" selects) holding the same flags as a resident server's, `load-on-startup =
false`; `--models-max 1` keeps one of them loaded at a time (the plan's serial residency), and the router
loads a role on its first request (autoload) and unloads the other. `--sleep-idle-seconds` (inherited by the
router's model instances) puts an idle role to sleep: weights and KV cache freed, reloaded by the next request
(checked with b11434: /models shows "sleeping" after the idle time).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence

from planner.deploy import (
    Deployment,
    KeyEnv,
    Process,
    comment,
    draft_placement,
    local_gpu_indices,
    model_file,
    placement_vendor,
    rope_scaling,
    serves_embeddings,
    vendor_of,
    visible_devices_env,
)
from planner.errors import PlannerError
from planner.plan.schema import Placement, PlanServer

RPC_PORT = 50052  # ggml-rpc-server's default port (tools/rpc/README.md)
LLAMA_SERVER = "llama-server"
RPC_SERVER = "ggml-rpc-server"  # built as `rpc-server` before llama.cpp renamed the target (tools/rpc/CMakeLists.txt)
KEY_ENV = KeyEnv("LLAMA_ARG_API_KEY_FILE", as_path=True)  # env of --api-key-file (tools/server/README.md)
CORS_FLAGS = ("--cors-origins", "localhost", "--no-cors-credentials")
IDLE_UNLOAD_S = 600  # on-demand roles: --sleep-idle-seconds (asleep, memory freed, after 10 minutes idle)


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


def model_args(p: Placement, models_dir: str) -> list[str]:
    ref = model_file(p, models_dir)
    if ref.startswith("hf:"):
        return ["-hf", f"{ref[3:]}:{p.quant}" if ":" not in ref[3:] else ref[3:]]
    return ["-m", ref]


def model_flags(server: PlanServer, p: Placement, models_dir: str, rpc: list[str] | None = None) -> list[str]:
    """The flags that size and place one model (context, slots, layers, KV, devices): the same for a resident
    llama-server and for a role's section of a router's preset."""
    argv = ["-c", str(p.ctx * p.parallel), "-np", str(p.parallel), "-ngl", str(p.gpu_layers)]
    if p.n_cpu_moe:
        argv += ["--n-cpu-moe", str(p.n_cpu_moe)]
    if p.split_mode == "tensor":  # the cards share every layer, -ts even; --fit cannot size this mode (b11434)
        argv += ["-sm", "tensor", "-fit", "off"]
    elif len(p.gpu_indices) > 1 and not rpc:
        argv += ["-ts", ",".join(str(x) for x in tensor_split(server, p))]
    if not p.gpu_indices and not rpc:
        argv += ["-dev", "none"]
    argv += ["-ctk", p.kv_type, "-ctv", p.kv_type, "-fa", "on" if p.flash_attn else "off"]
    if rpc:
        argv += ["--rpc", ",".join(rpc)]
    if p.adapters:
        argv += ["--lora", ",".join(p.adapters)]
    if (rope := rope_scaling(p)) is not None:
        argv += ["--rope-scaling", rope.method, "--rope-scale", f"{rope.factor:g}"]
        argv += ["--yarn-orig-ctx", str(rope.original_ctx)] if rope.method == "yarn" else []
    if serves_embeddings(p):
        argv.append("--embeddings")
    if p.n_ubatch is not None:
        argv += ["-b", str(p.n_ubatch), "-ub", str(p.n_ubatch)]
    argv += draft_flags(p, models_dir, rpc)
    return argv


def draft_flags(p: Placement, models_dir: str, rpc: list[str] | None = None) -> list[str]:
    """The draft model's flags (module docstring): its file, the speculative type and token counts, its layers
    and devices as planned."""
    draft = draft_placement(p)
    if p.draft is None or draft is None:
        return []
    ref = model_file(draft, models_dir)
    if ref.startswith("hf:"):
        argv = ["-hfd", f"{ref[3:]}:{draft.quant}" if ":" not in ref[3:] else ref[3:]]
    else:
        argv = ["-md", ref]
    argv += ["--spec-type", "draft-simple"]
    argv += ["--spec-draft-n-max", str(p.draft.n_max), "--spec-draft-n-min", str(p.draft.n_min)]
    argv += ["-ngld", str(p.draft.gpu_layers)]
    if not p.gpu_indices and not rpc:
        argv += ["-devd", "none"]
    argv += ["-ctkd", p.kv_type, "-ctvd", p.kv_type]
    return argv


def server_argv(
    server: PlanServer,
    p: Placement,
    port: int,
    models_dir: str,
    rpc: list[str] | None = None,
    *,
    bind: str = "127.0.0.1",
) -> tuple[str, ...]:
    argv = [LLAMA_SERVER, *model_args(p, models_dir), "-a", p.role, *model_flags(server, p, models_dir, rpc)]
    argv += [*CORS_FLAGS, "--host", bind, "--port", str(port)]
    return tuple(argv)


def server_process(
    server: PlanServer,
    p: Placement,
    port: int,
    models_dir: str,
    addresses: Mapping[str, str],
    *,
    bind: str = "127.0.0.1",
    keyed: bool = False,
) -> Process:
    rpc = [f"{addresses.get(h, h)}:{RPC_PORT}" for h in p.split_hosts if h != server.name]
    vendor = placement_vendor(server, p)
    gpus = local_gpu_indices(server, p)
    note = (
        f"{p.model_name} {p.quant}: ctx {p.ctx} per conversation × {p.parallel} slot(s) = -c {p.ctx * p.parallel}; "
        f"planned {p.memory_bytes / 2**30:.2f} GiB, {p.decode_tok_s:.1f} tok/s per slot."
    )
    if p.n_ubatch is not None and serves_embeddings(p):
        note += (
            f"\nEmbedding model: -b/-ub {p.n_ubatch} so that one input of up to {p.n_ubatch} tokens fits one "
            "micro-batch (non-causal attention); the planned compute buffer is sized for it."
        )
    if (rope := rope_scaling(p)) is not None:
        note += (
            f"\nContext {p.ctx} is past the {rope.original_ctx} tokens it was trained on: {rope.method} RoPE scaling, "
            f"factor {rope.factor:g} (the catalog's documented extension: {p.context_extension})."
        )
    if p.draft is not None:
        note += (
            f"\nDraft {p.draft.model_name} {p.draft.quant} (speculative decoding, {p.draft.n_max} tokens a step): "
            f"planned {p.draft.memory_bytes / 2**30:.2f} GiB of the above, decode ×{p.draft.speedup:.2f} at acceptance "
            f"{p.draft.acceptance:.2f}."
        )
    if rpc:
        note += (
            f"\nSplit across servers: start {RPC_SERVER} on {', '.join(h for h in p.split_hosts if h != server.name)}"
            " first; layers go to every device in proportion to its free memory (tools/rpc/README.md)."
        )
    return Process(
        name=f"llama-server-{p.role}",
        engine="llama.cpp",
        kind="server",
        argv=server_argv(server, p, port, models_dir, rpc or None, bind=bind),
        env=tuple(visible_devices_env(vendor, gpus, "llama.cpp").items()),
        port=port,
        gpu_indices=gpus,
        vendor=vendor,
        roles=(p.role,),
        comment=note,
        key_env=(KEY_ENV,) if keyed else (),
    )


def router_groups(server: PlanServer, on_demand: Sequence[Placement]) -> list[list[Placement]]:
    """On-demand llama.cpp roles grouped by the GPUs they use: one router (one model loaded at a time) each."""
    groups: dict[tuple[int, ...], list[Placement]] = {}
    for p in on_demand:
        groups.setdefault(local_gpu_indices(server, p), []).append(p)
    return list(groups.values())


def router_process(
    server: PlanServer, n: int, group: Sequence[Placement], port: int, *, bind: str, keyed: bool
) -> Process:
    """llama-server in router mode for the on-demand roles of one GPU set (flags: module docstring)."""
    gpus = local_gpu_indices(server, group[0])
    vendor = placement_vendor(server, group[0])
    roles = tuple(p.role for p in group)
    swap = ", ".join(f"{p.role} {p.swap_in_s:.1f} s" for p in group if p.swap_in_s is not None)
    argv = (
        LLAMA_SERVER,
        "--models-preset",
        preset_path(n),
        "--models-max",
        "1",
        "--sleep-idle-seconds",
        str(IDLE_UNLOAD_S),
        *CORS_FLAGS,
        "--host",
        bind,
        "--port",
        str(port),
    )
    return Process(
        name=f"llama-router-{n}",
        engine="llama.cpp",
        kind="router",
        argv=argv,
        env=tuple(visible_devices_env(vendor, gpus, "llama.cpp").items()),
        port=port,
        gpu_indices=gpus,
        vendor=vendor,
        roles=roles,
        comment=(
            f"On-demand roles {', '.join(roles)} on GPUs {list(gpus) or 'none'}: nothing is loaded at start; a "
            "request naming a role loads it (and unloads the other), "
            f"after {IDLE_UNLOAD_S} s without requests it sleeps (memory freed)."
            + (f"\nPlanned swap-in: {swap}." if swap else "")
        ),
        key_env=(KEY_ENV,) if keyed else (),
    )


def preset_path(n: int) -> str:
    return f"llama-router-{n}.ini"


def _ini_value(value: str) -> str:
    """One INI value as llama.cpp's preset parser reads it (common/preset.cpp): a value ends at ';' or '#' and
    loses surrounding blanks, so such values cannot be written and are refused."""
    if any(c in value for c in ";#\r\n") or value != value.strip() or not value:
        raise PlannerError(f"deploy: {value!r} cannot be written into a llama-server preset (';', '#' or blanks).")
    return value


def preset_ini(server: PlanServer, group: Sequence[Placement], models_dir: str, header: str) -> str:
    """The `--models-preset` file of one router: a section per role with the flags of its resident form."""
    lines = [*comment(header), "version = 1", ""]
    for p in group:
        argv = [*model_args(p, models_dir), *model_flags(server, p, models_dir)]
        lines += comment(f"role {p.role}: {p.model_name} {p.quant}")
        lines.append(f"[{_ini_value(p.role)}]")
        lines.append("load-on-startup = false")
        i = 0
        while i < len(argv):
            key = argv[i].lstrip("-")
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("-"):
                lines.append(f"{key} = {_ini_value(nxt)}")
                i += 2
            else:
                lines.append(f"{key} = true")
                i += 1
        lines.append("")
    return "\n".join(lines)


def add_files(dep: Deployment, server: PlanServer, header: str, models_dir: str) -> None:
    """The preset file of each router process of `dep`."""
    by_role = {p.role: p for p in server.placements}
    for proc in dep.processes:
        if proc.kind == "router" and proc.engine == "llama.cpp":
            n = int(proc.name.rsplit("-", 1)[1])
            dep.add_file(preset_path(n), preset_ini(server, [by_role[r] for r in proc.roles], models_dir, header))


def _bind_address(address: str | None) -> str:
    """An IP address to bind to (ggml-rpc-server binds to an address, not a name), else all interfaces."""
    try:
        return str(ipaddress.ip_address(address or ""))
    except ValueError:
        return "0.0.0.0"


def rpc_worker(server: PlanServer, p: Placement, address: str | None = None) -> Process:
    """`ggml-rpc-server` on a second machine that holds part of `p`'s layers; exposes this server's GPUs that
    the plan puts layers on. It binds to this server's IP address when --address gives one (the worker has no
    authentication), else to all interfaces."""
    indices = local_gpu_indices(server, p) or tuple(d.index for d in server.devices if d.kind == "gpu")
    vendor = vendor_of(server.gpus[i] for i in indices)
    return Process(
        name=f"rpc-server-{p.role}",
        engine="llama.cpp",
        kind="rpc-worker",
        argv=(RPC_SERVER, "-H", _bind_address(address), "-p", str(RPC_PORT), "-c"),
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
