"""Turn one server of a saved plan into ready-to-run engine commands, config files and a router config.

Entry points: `build_deployment(plan, server, option=None, ...) -> Deployment` (pure: returns file
contents) and `planner.deploy.write.write_deployment(dep, out_dir)` (atomic writes). Engine modules
(llama_cpp, ollama, vllm) turn placements into `Process`es; compose and router render them.

Flags emitted are only those the engines document (see tests/test_deploy_flags.py for the lists and
their sources). agiplan's semantics: a placement's `ctx` is per conversation, so llama-server gets
`-c ctx*parallel -np parallel`, Ollama `num_ctx ctx` with OLLAMA_NUM_PARALLEL=parallel (Ollama
multiplies them itself), vLLM `--max-model-len ctx --max-num-seqs parallel`.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from planner.errors import PlannerError, UnknownIdError
from planner.plan.schema import Placement, Plan, PlanOption, PlanServer

DEPLOY_SCHEMA_VERSION = 1
DEPLOY_KIND = "agiplan-deploy"
DEFAULT_MODELS_DIR = "/models"

ProcessKind = Literal["server", "rpc-worker", "ray-head", "ray-worker"]


@dataclass(frozen=True)
class Process:
    """One long-running process on the server: its environment, its argv and the port it listens on."""

    name: str  # file stem: llama-server-reasoner, vllm-coder, ollama-0, rpc-server-reasoner
    engine: str
    kind: ProcessKind
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    port: int | None = None
    gpu_indices: tuple[int, ...] = ()
    vendor: str = "nvidia"
    roles: tuple[str, ...] = ()
    setup: tuple[tuple[str, ...], ...] = ()  # commands run once after the process is up (ollama create)
    comment: str = ""

    def shell(self) -> str:
        """`ENV=... argv ...` as one shell command line, every token quoted."""
        return shell_line(dict(self.env), self.argv)


@dataclass(frozen=True)
class Endpoint:
    """Where a role is served: OpenAI-compatible base URL and the model name to send."""

    role: str
    server: str
    engine: str
    host: str
    port: int
    model_name: str  # what the engine answers to: llama-server --alias, vLLM --served-model-name, ollama model
    embedding: bool = False  # served for /v1/embeddings, not chat

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


@dataclass
class Deployment:
    """Everything for one server of one option: processes, endpoints of every role of the option, files."""

    option_index: int
    option_kind: str
    server: str
    processes: list[Process]
    endpoints: list[Endpoint]  # all roles of the option (the router needs every server's)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text
    executable: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, object]:
        return {
            "kind": DEPLOY_KIND,
            "schema_version": DEPLOY_SCHEMA_VERSION,
            "option": self.option_index,
            "option_kind": self.option_kind,
            "server": self.server,
            "processes": [
                {
                    "name": p.name,
                    "engine": p.engine,
                    "kind": p.kind,
                    "port": p.port,
                    "gpu_indices": list(p.gpu_indices),
                    "roles": list(p.roles),
                    "env": dict(p.env),
                    "argv": list(p.argv),
                    "setup": [list(s) for s in p.setup],
                }
                for p in self.processes
            ],
            "endpoints": [
                {"role": e.role, "server": e.server, "engine": e.engine, "base_url": e.base_url, "model": e.model_name}
                for e in self.endpoints
            ],
            "files": sorted(self.files),
            "notes": self.notes,
        }


def shell_line(env: Mapping[str, str], argv: tuple[str, ...] | list[str]) -> str:
    parts = [f"{k}={shlex.quote(v)}" for k, v in env.items()]
    parts += [shlex.quote(a) for a in argv]
    return " ".join(parts)


def pick_option(plan: Plan, option: int | None) -> tuple[int, PlanOption]:
    """The option to deploy: `option` (index into plan.options) or the recommended one."""
    if not plan.options:
        raise PlannerError("The plan has no options to deploy; re-run agiplan recommend.")
    if option is None:
        if plan.recommended is None:
            raise PlannerError(
                "No option of this plan meets its targets (recommended is null); pick one with --option N "
                f"(0..{len(plan.options) - 1})."
            )
        option = plan.recommended
    if not 0 <= option < len(plan.options):
        raise PlannerError(f"--option {option}: this plan has options 0..{len(plan.options) - 1}.")
    return option, plan.options[option]


def find_server(opt: PlanOption, name: str) -> PlanServer:
    for s in opt.servers:
        if s.name == name:
            return s
    raise UnknownIdError("server", name, [s.name for s in opt.servers], hint=f"Servers of this {opt.kind} option.")


def gpu_vendor(gpu_id: str) -> str:
    """nvidia / amd / intel from the catalog; nvidia when the id is not in the catalog."""
    from planner.catalog import load_catalog

    cat = load_catalog()
    return cat.gpus[gpu_id].vendor if gpu_id in cat.gpus else "nvidia"


def vendor_of(gpu_ids: Iterable[str]) -> str:
    """The one vendor of these GPUs; "cpu" for none, "mixed" for several (llama.cpp's Vulkan build)."""
    vendors = {gpu_vendor(g) for g in gpu_ids}
    if not vendors:
        return "cpu"
    return vendors.pop() if len(vendors) == 1 else "mixed"


def serves_embeddings(p: Placement) -> bool:
    """Is `p` an embedding model? As the plan records it; a plan written before agiplan recorded it gets the
    model looked up (catalog, GGUF header, cached Hub metadata), and False when that fails."""
    return p.embedding if p.embedding is not None else _is_embedding_model(p.model)


@functools.lru_cache(maxsize=64)
def _is_embedding_model(ref: str) -> bool:
    from planner.errors import PlannerError
    from planner.sources.resolve import resolve_model

    try:
        return resolve_model(ref).arch.is_embedding
    except (PlannerError, OSError, ValueError):
        return False


def placement_vendor(server: PlanServer, p: Placement) -> str:
    return vendor_of(server.gpus[i] for i in p.gpu_indices if 0 <= i < len(server.gpus))


def visible_devices_env(vendor: str, indices: tuple[int, ...] | list[int], engine: str) -> dict[str, str]:
    """Pin a process to GPUs by index. NVIDIA: CUDA_VISIBLE_DEVICES. AMD: ROCR_VISIBLE_DEVICES (the ROCm
    runtime filter, honoured by llama.cpp's HIP build and Ollama) or HIP_VISIBLE_DEVICES for vLLM (its ROCm
    docs). Only one AMD variable is set: setting both filters twice and renumbers. Mixed vendors in one
    llama.cpp process go through Vulkan: GGML_VK_VISIBLE_DEVICES."""
    if not indices:
        return {}
    value = ",".join(str(i) for i in indices)
    if vendor == "amd":
        return {"HIP_VISIBLE_DEVICES": value} if engine == "vllm" else {"ROCR_VISIBLE_DEVICES": value}
    if vendor == "mixed":
        return {"GGML_VK_VISIBLE_DEVICES": value}
    return {"CUDA_VISIBLE_DEVICES": value}


def model_file(p: Placement, models_dir: str) -> str:
    """Where the GGUF of a placement lives: its own path, or `models_dir/<file>` for catalog ids."""
    ref = p.model
    if ref.startswith("hf:") or ref.endswith(".gguf") or "/" in ref:
        return ref
    from planner.catalog import load_catalog

    cat = load_catalog()
    entry = cat.models.get(ref)
    fname = f"{ref}-{p.quant}.gguf"
    if entry is not None:
        size = entry.gguf_sizes.get(p.quant)
        if size is not None and size.file:
            fname = size.file
    return f"{models_dir.rstrip('/')}/{fname}"


def hf_repo(p: Placement) -> str:
    """The Hugging Face repository of a placement (vLLM): hf:owner/name, or the catalog's hf_repo."""
    if p.model.startswith("hf:"):
        return p.model[3:]
    from planner.catalog import load_catalog

    cat = load_catalog()
    entry = cat.models.get(p.model)
    return entry.hf_repo if entry is not None else p.model


def build_deployment(
    plan: Plan,
    server: str,
    option: int | None = None,
    *,
    compose: bool = False,
    models_dir: str = DEFAULT_MODELS_DIR,
    addresses: Mapping[str, str] | None = None,
) -> Deployment:
    """All files to start the roles of `server` in option `option` (default: the recommended one).

    `addresses` maps server names to host names / IPs for URLs (default: the server's name)."""
    from planner.deploy import compose as compose_mod
    from planner.deploy import llama_cpp, ollama, router, vllm

    idx, opt = pick_option(plan, option)
    srv = find_server(opt, server)
    addr = dict(addresses or {})
    processes: list[Process] = []
    notes: list[str] = []
    endpoints: list[Endpoint] = []
    for s in opt.servers:
        host = addr.get(s.name, s.name)
        procs, eps, n = _server_processes(opt, s, host, addr, models_dir)
        endpoints += eps
        if s.name == srv.name:
            processes += procs
            notes += n
    # Workers on this server for models split across servers whose head is elsewhere.
    for s in opt.servers:
        if s.name == srv.name:
            continue
        for p in s.placements:
            if srv.name in p.split_hosts:
                head_host = addr.get(s.name, s.name)
                if p.engine == "vllm":
                    processes.append(vllm.ray_worker(srv, p, head_host))
                else:
                    processes.append(llama_cpp.rpc_worker(srv, p))
    dep = Deployment(idx, opt.kind, srv.name, processes, endpoints, notes=notes)
    for proc in processes:
        dep.files[f"{proc.name}.sh"] = process_script(dep, proc)
        dep.executable.add(f"{proc.name}.sh")
    ollama.add_files(dep, srv, plan_header(plan, dep), models_dir)
    dep.files["start.sh"] = start_script(dep, plan_header(plan, dep))
    dep.executable.add("start.sh")
    dep.files["router/litellm-config.yaml"] = router.litellm_config(endpoints)
    if compose:
        dep.files["compose.yaml"] = compose_mod.compose_yaml(dep, models_dir)
    return dep


def _server_processes(
    opt: PlanOption, s: PlanServer, host: str, addresses: Mapping[str, str], models_dir: str
) -> tuple[list[Process], list[Endpoint], list[str]]:
    from planner.deploy import llama_cpp, ollama, vllm

    procs: list[Process] = []
    eps: list[Endpoint] = []
    notes: list[str] = []
    by_role: dict[str, Endpoint] = {}
    next_port = {"llama.cpp": 8080, "vllm": 8000}
    util = vllm.memory_utilizations(s)
    for p in s.placements:
        if p.shares_base_with:
            continue  # served by the base role's process
        if p.engine == "ollama":
            continue
        port = next_port[p.engine]
        next_port[p.engine] += 1
        if p.engine == "llama.cpp":
            proc = llama_cpp.server_process(s, p, port, models_dir, addresses)
            procs.append(proc)
        else:
            procs += vllm.serve_process(s, p, port, util)
        by_role[p.role] = Endpoint(p.role, s.name, p.engine, host, port, p.role, serves_embeddings(p))
    o_procs, o_eps, o_notes = ollama.instances(s, host, models_dir)
    procs += o_procs
    notes += o_notes
    for e in o_eps:
        by_role[e.role] = e
    notes += vllm.utilization_notes(s, util)
    for p in s.placements:
        if p.shares_base_with:
            base = by_role.get(p.shares_base_with)
            if base is None:
                raise PlannerError(
                    f"plan: role {p.role} shares the base of {p.shares_base_with!r}, which is not served on "
                    f"server {s.name}."
                )
            name = p.role if (p.adapters and p.engine == "vllm") else base.model_name
            by_role[p.role] = Endpoint(p.role, s.name, base.engine, base.host, base.port, name, base.embedding)
    eps = [by_role[p.role] for p in s.placements]
    return procs, eps, notes


def plan_header(plan: Plan, dep: Deployment) -> str:
    return (
        f"generated by agiplan {plan.agiplan_version} ({DEPLOY_KIND} schema {DEPLOY_SCHEMA_VERSION}) from plan "
        f"'{plan.stack_name}' ({plan.created_at}), option {dep.option_index} ({dep.option_kind}), server {dep.server}"
    )


def process_script(dep: Deployment, proc: Process) -> str:
    """A bash script that execs one process with its environment."""
    lines = ["#!/usr/bin/env bash", f"# {proc.name}: {proc.engine} {proc.kind}"]
    if proc.roles:
        lines.append(f"# roles: {', '.join(proc.roles)}")
    lines += [f"# {c}" for c in proc.comment.splitlines() if c]
    lines.append("set -euo pipefail")
    lines += [f"export {k}={shlex.quote(v)}" for k, v in proc.env]
    lines.append("exec " + " \\\n    ".join(_argv_chunks(proc.argv)))
    return "\n".join(lines) + "\n"


def _argv_chunks(argv: tuple[str, ...]) -> list[str]:
    """The program and its sub-command / positional arguments first, then one `-flag value` per line."""
    i = 1
    while i < len(argv) and not argv[i].startswith("-"):
        i += 1
    chunks = [" ".join(shlex.quote(a) for a in argv[:i])]
    while i < len(argv):
        tok = shlex.quote(argv[i])
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if nxt is not None and not nxt.startswith("-"):
            chunks.append(f"{tok} {shlex.quote(nxt)}")
            i += 2
        else:
            chunks.append(tok)
            i += 1
    return chunks


def start_script(dep: Deployment, header: str) -> str:
    """Start every process of the server in the background, run one-time setup, wait."""
    lines = [
        "#!/usr/bin/env bash",
        f"# {header}",
        "# Starts every process of this server; logs go to logs/<name>.log. Stop with Ctrl-C.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "mkdir -p logs",
        "trap 'kill $(jobs -p) 2>/dev/null' EXIT",
    ]
    for proc in dep.processes:
        lines.append(f"./{proc.name}.sh > logs/{proc.name}.log 2>&1 &")
    for proc in dep.processes:
        if proc.setup:
            host = f"127.0.0.1:{proc.port}"
            lines.append(f"until OLLAMA_HOST={host} ollama list > /dev/null 2>&1; do sleep 1; done")
            lines.append(f"./{proc.name}-create.sh")
    lines.append("wait")
    return "\n".join(lines) + "\n"
