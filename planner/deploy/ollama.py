"""Ollama: one `ollama serve` instance per GPU set (pinned with CUDA_VISIBLE_DEVICES / ROCR_VISIBLE_DEVICES),
a Modelfile per role (`FROM`, `PARAMETER num_ctx`, `ADAPTER`) and `ollama create` against that instance.

Ollama's settings are per server process (envconfig/config.go): OLLAMA_HOST, OLLAMA_NUM_PARALLEL,
OLLAMA_MAX_LOADED_MODELS, OLLAMA_KV_CACHE_TYPE, OLLAMA_FLASH_ATTENTION. So roles that differ in GPUs,
slots, KV type or flash attention get separate instances on separate ports. `num_ctx` is per request;
Ollama allocates num_ctx × OLLAMA_NUM_PARALLEL (its FAQ), matching agiplan's ctx-per-conversation.
Ollama's KV cache types are f16, q8_0 and q4_0 (docs/faq.md).

Residency: Ollama loads a model on its first request and unloads it after OLLAMA_KEEP_ALIVE (default 5
minutes; a negative value keeps it loaded, docs/faq.md). "always" roles get their own instance with
OLLAMA_KEEP_ALIVE=-1 and room for all of them (OLLAMA_MAX_LOADED_MODELS); on-demand roles share an instance
with OLLAMA_MAX_LOADED_MODELS=1, so they take turns, and unload after ON_DEMAND_KEEP_ALIVE.
"""

from __future__ import annotations

import shlex
import unicodedata

from planner.deploy import (
    LOOPBACK,
    Deployment,
    Endpoint,
    Process,
    RopeScaling,
    comment,
    gpu_vendor,
    model_file,
    placement_vendor,
    rope_scaling,
    serves_embeddings,
    visible_devices_env,
)
from planner.errors import PlannerError
from planner.plan.schema import Placement, PlanServer

OLLAMA_PORT = 11434  # Ollama's default port (OLLAMA_HOST default 127.0.0.1:11434)
OLLAMA_KV_TYPES = ("f16", "q8_0", "q4_0")
ON_DEMAND_KEEP_ALIVE = "10m"


def _modelfile_value(value: str) -> str:
    """One Modelfile argument: Ollama's parser reads to the end of the line, so a line break (refused by the
    plan schema already) would start a new instruction; quoted when it holds blanks or quotes."""
    if any(unicodedata.category(c) == "Cc" or c in "\u2028\u2029" for c in value):
        raise PlannerError(f"deploy: {value!r} cannot be written into a Modelfile (control character).")
    if any(not c.isprintable() or c.isspace() or c == '"' for c in value):
        if '"""' in value:
            raise PlannerError(f"deploy: {value!r} cannot be written into a Modelfile.")
        return f'"""{value}"""'
    return value


def _from_line(p: Placement, models_dir: str) -> str:
    ref = model_file(p, models_dir)
    if ref.startswith("hf:"):
        return f"hf.co/{ref[3:]}:{p.quant}"
    return ref


def modelfile(p: Placement, models_dir: str, header: str) -> str:
    lines = [
        *comment(header),
        *comment(f"role {p.role}: {p.model_name} {p.quant}, {p.ctx} tokens per conversation × {p.parallel} slot(s)"),
        f"FROM {_modelfile_value(_from_line(p, models_dir))}",
        f"PARAMETER num_ctx {p.ctx}",
    ]
    if (rope := rope_scaling(p)) is not None:
        lines[-1:-1] = comment(extension_note(p.role, rope))
    lines += [f"ADAPTER {_modelfile_value(a)}" for a in p.adapters]
    return "\n".join(lines) + "\n"


def extension_note(role: str, rope: RopeScaling) -> str:
    """Ollama's Modelfile has no RoPE / YaRN parameter (docs/modelfile.md lists num_ctx, sampling and stop
    parameters only): what the plan's extension needs from the GGUF itself."""
    return (
        f"{role}: the plan runs it past its trained {rope.original_ctx} tokens with {rope.method} RoPE scaling, "
        f"factor {rope.factor:g}; Ollama's Modelfile has no parameter for it, so the GGUF's own rope scaling "
        "metadata must carry it (else serve this role with llama.cpp, which takes --rope-scaling)."
    )


def _key(p: Placement) -> tuple[tuple[int, ...], int, str, bool, str]:
    return (tuple(p.gpu_indices), p.parallel, p.kv_type, p.flash_attn, p.residency)


def instances(
    server: PlanServer, host: str, models_dir: str, *, bind: str = LOOPBACK
) -> tuple[list[Process], list[Endpoint], list[str]]:
    """One Ollama instance per distinct (GPUs, slots, KV type, flash attention, residency) among the server's
    roles."""
    groups: dict[tuple[tuple[int, ...], int, str, bool, str], list[Placement]] = {}
    for p in server.placements:
        if p.engine == "ollama" and not p.shares_base_with:
            groups.setdefault(_key(p), []).append(p)
    procs: list[Process] = []
    eps: list[Endpoint] = []
    notes: list[str] = []
    for n, ((gpus, parallel, kv, fa, residency), ps) in enumerate(groups.items()):
        port = OLLAMA_PORT + n
        vendor = placement_vendor(server, ps[0])
        env = {"OLLAMA_HOST": f"{bind}:{port}"}
        env.update(visible_devices_env(vendor, gpus, "ollama"))
        if not gpus and server.gpus:
            # Ollama docs/gpu.md: an invalid GPU id ("-1") forces the CPU.
            cpu_vendor = gpu_vendor(server.gpus[0])
            env["ROCR_VISIBLE_DEVICES" if cpu_vendor == "amd" else "CUDA_VISIBLE_DEVICES"] = "-1"
        always = residency == "always"
        env["OLLAMA_NUM_PARALLEL"] = str(parallel)
        env["OLLAMA_MAX_LOADED_MODELS"] = str(len({p.model for p in ps}) if always else 1)
        env["OLLAMA_KEEP_ALIVE"] = "-1" if always else ON_DEMAND_KEEP_ALIVE
        env["OLLAMA_KV_CACHE_TYPE"] = kv
        env["OLLAMA_FLASH_ATTENTION"] = "1" if fa else "0"
        notes += [extension_note(p.role, rope) for p in ps if (rope := rope_scaling(p)) is not None]
        notes += [
            f"{p.role}: Ollama has no speculative decoding, so the draft model {p.draft.model_name} is not used and "
            f"the role decodes without its ×{p.draft.speedup:.2f} (run it on llama.cpp to use the draft)."
            for p in ps
            if p.draft is not None
        ]
        if kv not in OLLAMA_KV_TYPES:
            notes.append(f"ollama-{n}: KV type {kv} is not one of Ollama's ({', '.join(OLLAMA_KV_TYPES)}).")
        if bind != LOOPBACK:
            notes.append(
                f"ollama-{n} listens on {bind}:{port} for the router on another host and Ollama has no API key: "
                "allow only the router's address to that port (firewall)."
            )
        roles = tuple(p.role for p in ps)
        setup = tuple(("ollama", "create", p.role, "-f", f"ollama/{p.role}.Modelfile") for p in ps)
        procs.append(
            Process(
                name=f"ollama-{n}",
                engine="ollama",
                kind="server",
                argv=("ollama", "serve"),
                env=tuple(env.items()),
                port=port,
                gpu_indices=gpus,
                vendor=vendor,
                roles=roles,
                setup=setup,
                comment=(
                    f"Ollama instance {n} on port {port}, GPUs {list(gpus) or 'none'}: roles {', '.join(roles)}; "
                    f"{parallel} slot(s) each, KV {kv}; "
                    + ("kept loaded (always)." if always else f"loaded on request, one at a time ({residency}).")
                ),
            )
        )
        keyed = bind != LOOPBACK  # Ollama has no key and ignores the one sent (the firewall note above)
        eps += [Endpoint(p.role, server.name, "ollama", host, port, p.role, serves_embeddings(p), keyed) for p in ps]
    return procs, eps, notes


def add_files(dep: Deployment, server: PlanServer, header: str, models_dir: str) -> None:
    """Modelfiles and a `-create.sh` per instance (run once the instance answers)."""
    for proc in dep.processes:
        if proc.engine != "ollama" or not proc.setup:
            continue
        lines = ["#!/usr/bin/env bash", *comment(header), "set -euo pipefail", 'cd "$(dirname "$0")"']
        lines.append(f"export OLLAMA_HOST={shlex.quote(f'{LOOPBACK}:{proc.port}')}")
        lines += [" ".join(shlex.quote(a) for a in cmd) for cmd in proc.setup]
        dep.add_file(f"{proc.name}-create.sh", "\n".join(lines) + "\n", executable=True)
    for p in server.placements:
        if p.engine == "ollama" and not p.shares_base_with:
            dep.add_file(f"ollama/{p.role}.Modelfile", modelfile(p, models_dir, header))
