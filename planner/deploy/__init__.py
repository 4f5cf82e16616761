"""Turn one server of a saved plan into ready-to-run engine commands, config files and a router config.

Entry points: `build_deployment(plan, server, option=None, ...) -> Deployment` (pure: returns file
contents) and `planner.deploy.write.write_deployment(dep, out_dir)` (atomic writes). Engine modules
(llama_cpp, ollama, vllm) turn placements into `Process`es; compose and router render them.

Flags emitted are only those the engines document (see tests/test_deploy_flags.py for the lists and
their sources). agiplan's semantics: a placement's `ctx` is per conversation, so llama-server gets
`-c ctx*parallel -np parallel`, Ollama `num_ctx ctx` with OLLAMA_NUM_PARALLEL=parallel (Ollama
multiplies them itself), vLLM `--max-model-len ctx --max-num-seqs parallel`.

Closed by default (issue #14): the router (LiteLLM) runs on the option's first server, so that server's
engines listen on 127.0.0.1 only; engines on other servers listen on all interfaces and require the key kept
in `api-key` (mode 0600, the same file on every host; llama-server reads it through LLAMA_ARG_API_KEY_FILE,
vLLM through VLLM_API_KEY, the router through AGIPLAN_API_KEY). llama-server's CORS is limited to localhost
pages. On-demand roles are not started at boot: llama.cpp ones are served by a llama-server in router mode
(`--models-preset`, one loaded at a time per GPU set), Ollama loads on request, vLLM ones have a script to
run when needed. Every text written is built by shlex.quote, yaml.safe_dump, json.dumps or a checked
serializer from validated plan values; `comment()` makes any text one safe comment line.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from planner.errors import PlannerError, UnknownIdError
from planner.plan.schema import Placement, Plan, PlanOption, PlanServer

DEPLOY_SCHEMA_VERSION = 1
DEPLOY_KIND = "agiplan-deploy"
DEFAULT_MODELS_DIR = "/models"
API_KEY_FILE = "api-key"  # the key of servers other hosts reach; written by planner.deploy.write (0600)
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
# start.sh stops its engines with SIGTERM when it exits (Ctrl-C, SIGTERM, an engine failing) and SIGKILLs those still
# running after this grace. The pinned llama-server (b11434) exits 0.11 s after SIGTERM when alone (15 of 15 runs),
# but in tests/test_deploy_loopback.py's deployment about 1 server in 10 hung in "cleaning up before exit..." for
# over 20 s, through a second signal too ("terminating immediately" then no exit): without the SIGKILL it outlived
# start.sh, holding its port and memory.
STOP_GRACE_S = 10

ProcessKind = Literal["server", "router", "rpc-worker", "ray-head", "ray-worker"]


@dataclass(frozen=True)
class KeyEnv:
    """How a process gets the API key: an environment variable holding the key file's path (llama-server's
    LLAMA_ARG_API_KEY_FILE) or the key itself (vLLM's VLLM_API_KEY, LiteLLM's os.environ/ references)."""

    name: str
    as_path: bool


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
    key_env: tuple[KeyEnv, ...] = ()  # the API key, read from API_KEY_FILE when the script starts
    boot: bool = True  # started by start.sh / compose; False: on-demand vLLM, started by hand when needed

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
    keyed: bool = False  # on a server other hosts reach: requests carry the deployment's key (Ollama ignores it)

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

    def add_file(self, rel: str, text: str, *, executable: bool = False) -> None:
        """Add one file; a second file of the same name is an error, never a silent overwrite."""
        if rel in self.files:
            raise PlannerError(f"deploy: two files would be named {rel!r}; rename a role or server of the plan.")
        self.files[rel] = text
        if executable:
            self.executable.add(rel)

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
                    "api_key_env": [k.name for k in p.key_env],
                    "boot": p.boot,
                }
                for p in self.processes
            ],
            "endpoints": [
                {
                    "role": e.role,
                    "server": e.server,
                    "engine": e.engine,
                    "base_url": e.base_url,
                    "model": e.model_name,
                    "embedding": e.embedding,
                    "api_key": e.keyed,  # True: send the key in API_KEY_FILE (never the key itself here)
                }
                for e in self.endpoints
            ],
            "files": sorted(self.files),
            "notes": self.notes,
        }


def comment(text: str) -> list[str]:
    """`text` as shell / YAML / INI comment lines: one `# ...` per line, any other control character shown
    escaped, so no value can end a comment and start a command."""
    out = []
    for line in text.split("\n"):
        safe = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in line)
        out.append(f"# {safe}".rstrip())
    return out


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


def local_gpu_indices(server: PlanServer, p: Placement) -> tuple[int, ...]:
    """The GPUs of `server` that hold part of `p`. A placement split across servers lists every host's GPUs in
    gpu_indices (each by its index on its own server: main's 0, 1 and the helper's 0 read 0,1,0) and names
    them by server in memory_by_device ("main/gpu0"); a plan without server names there gives the local
    "gpuN" keys that exist on this server. Other placements: gpu_indices as they are."""
    if not p.split_hosts:
        return tuple(p.gpu_indices)
    prefix = f"{server.name}/gpu"
    if any("/" in k for k in p.memory_by_device):
        found = {int(k[len(prefix) :]) for k in p.memory_by_device if k.startswith(prefix)}
    else:
        found = {int(k[3:]) for k in p.memory_by_device if k.startswith("gpu")}
    return tuple(sorted(i for i in found if i < len(server.gpus)))


def placement_vendor(server: PlanServer, p: Placement) -> str:
    return vendor_of(server.gpus[i] for i in local_gpu_indices(server, p))


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
    """Where the GGUF of a placement lives: its own path (made absolute: the scripts run in the deployment
    folder), or `models_dir/<file>` for catalog ids."""
    ref = p.model
    if ref.startswith("hf:"):
        return ref
    if ref.endswith(".gguf") or "/" in ref:
        return os.path.abspath(ref)
    return f"{models_dir.rstrip('/')}/{gguf_download(p)[1]}"


def draft_placement(p: Placement) -> Placement | None:
    """The draft model of `p` as a placement of its own (its model, quant and memory), so that the rules that find,
    fetch and name a placement's model file apply to it unchanged; None without a draft."""
    d = p.draft
    if d is None:
        return None
    return p.model_copy(
        update={
            "role": f"{p.role}-draft",
            "model": d.model,
            "model_name": d.model_name,
            "quant": d.quant,
            "memory_bytes": d.memory_bytes,
            "memory": p.memory.model_copy(
                update={"weights_bytes": 0, "kv_cache_bytes": 0, "compute_bytes": 0, "overhead_bytes": 0}
            ),
            "draft": None,
        }
    )


def gguf_download(p: Placement) -> tuple[str | None, str]:
    """(Hub repository or None, file name) of a catalog model's GGUF at the placement's quant: the quant's own
    `gguf_sizes[quant].file`, else the catalog's `downloads.gguf` file pattern, else `<id>-<quant>.gguf`."""
    from planner.catalog import load_catalog

    entry = load_catalog().models.get(p.model)
    if entry is None:
        return None, f"{p.model}-{p.quant}.gguf"
    dl = entry.downloads.gguf if entry.downloads is not None else None
    size = entry.gguf_sizes.get(p.quant)
    if size is not None and size.file:
        return (dl.repo if dl is not None else None), size.file
    if dl is not None:
        return dl.repo, dl.file_for(p.quant)
    return None, f"{p.model}-{p.quant}.gguf"


def hf_repo(p: Placement) -> str:
    """The Hugging Face repository of a placement (vLLM): hf:owner/name, the catalog's checkpoint of the
    placement's quant (AWQ / GPTQ / FP8), or the catalog's hf_repo."""
    if p.model.startswith("hf:"):
        return p.model[3:]
    from planner.catalog import load_catalog

    entry = load_catalog().models.get(p.model)
    if entry is None:
        return p.model
    if entry.downloads is not None and p.quant in entry.downloads.checkpoints:
        return entry.downloads.checkpoints[p.quant].repo
    return entry.hf_repo


@dataclass(frozen=True)
class RopeScaling:
    """A documented context extension as the engines take it: RoPE scaling method, factor and the context the
    model was trained at (llama-server --rope-scaling / --rope-scale / --yarn-orig-ctx; vLLM's rope_scaling)."""

    method: Literal["yarn", "linear"]
    factor: float
    original_ctx: int


_EXTENSION_TEXT = re.compile(r"factor\s+([0-9]+(?:\.[0-9]+)?)\s+over\s+([0-9]+)", re.IGNORECASE)


def rope_scaling(p: Placement) -> RopeScaling | None:
    """The extension placement `p` must run with: None when the plan left it within its trained context
    (`context_extension` empty). A catalog model's figures come from the catalog (factor = context_extended ÷
    context_trained, over context_trained); another model's from the plan's text ("YaRN, factor 4 over 32768").
    The method is the one the text names (YaRN or linear); anything else is refused, never guessed."""
    text = p.context_extension
    if not text:
        return None
    from planner.catalog import load_catalog

    cat = load_catalog()
    factor: float | None = None
    original: int | None = None
    if p.model in cat.models:
        base = cat.base_model(p.model)
        if base.context_extended and base.context_trained:
            factor, original = base.context_extended / base.context_trained, base.context_trained
    if factor is None and (m := _EXTENSION_TEXT.search(text)):
        factor, original = float(m.group(1)), int(m.group(2))
    lowered = text.lower()
    method: Literal["yarn", "linear"] | None = (
        "yarn" if "yarn" in lowered else "linear" if "linear" in lowered else None
    )
    if method is None or factor is None or original is None or not (1.0 < factor < 1e3) or original <= 0:
        raise PlannerError(
            f"plan: role {p.role} runs past its trained context with {text!r}, which deploy cannot turn into "
            "engine flags (expected YaRN or linear RoPE scaling, 'factor F over N')."
        )
    return RopeScaling(method, factor, original)


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

    `addresses` maps server names to host names / IPs for URLs (default: the server's name). The router runs
    on the option's first server: its engines listen on loopback, the others' on all interfaces with the key."""
    from planner.deploy import compose as compose_mod
    from planner.deploy import fetch, llama_cpp, ollama, readme, router, vllm

    idx, opt = pick_option(plan, option)
    srv = find_server(opt, server)
    addr = dict(addresses or {})
    router_host = opt.servers[0].name
    processes: list[Process] = []
    notes: list[str] = []
    endpoints: list[Endpoint] = []
    for s in opt.servers:
        local = s.name == router_host
        host = LOOPBACK if local else addr.get(s.name, s.name)
        procs, eps, n = _server_processes(opt, s, host, addr, models_dir, local=local)
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
                    processes.append(llama_cpp.rpc_worker(srv, p, addr.get(srv.name)))
    dep = Deployment(idx, opt.kind, srv.name, processes, endpoints, notes=notes)
    header = plan_header(plan, dep)
    for proc in processes:
        dep.add_file(f"{proc.name}.sh", process_script(dep, proc), executable=True)
    llama_cpp.add_files(dep, srv, header, models_dir)
    ollama.add_files(dep, srv, header, models_dir)
    dep.add_file("start.sh", start_script(dep, header), executable=True)
    dep.add_file("fetch.sh", fetch.fetch_script(srv, header, models_dir), executable=True)
    dep.add_file("router/litellm-config.yaml", router.litellm_config(endpoints))
    if srv.name == router_host:
        dep.add_file("start-router.sh", router.start_script(header), executable=True)
    if compose:
        dep.add_file("compose.yaml", compose_mod.compose_yaml(dep, models_dir))
    dep.add_file("README.md", readme.deployment_readme(plan, opt, srv, dep, router_host))
    return dep


def _server_processes(
    opt: PlanOption, s: PlanServer, host: str, addresses: Mapping[str, str], models_dir: str, *, local: bool
) -> tuple[list[Process], list[Endpoint], list[str]]:
    from planner.deploy import llama_cpp, ollama, vllm

    procs: list[Process] = []
    eps: list[Endpoint] = []
    notes: list[str] = []
    by_role: dict[str, Endpoint] = {}
    next_port = {"llama.cpp": 8080, "vllm": 8000}
    util = vllm.memory_utilizations(s)
    bind = LOOPBACK if local else ALL_INTERFACES
    on_demand: list[Placement] = []
    for p in s.placements:
        if p.shares_base_with:
            continue  # served by the base role's process
        if p.engine == "ollama":
            continue
        if p.engine == "llama.cpp" and p.residency == "on-demand" and not p.split_hosts:
            on_demand.append(p)  # served by a llama-server router below
            continue
        port = next_port[p.engine]
        next_port[p.engine] += 1
        if p.engine == "llama.cpp":
            proc = llama_cpp.server_process(s, p, port, models_dir, addresses, bind=bind, keyed=not local)
            procs.append(proc)
        else:
            procs += vllm.serve_process(s, p, port, util, bind=bind, keyed=not local)
        by_role[p.role] = Endpoint(p.role, s.name, p.engine, host, port, p.role, serves_embeddings(p), not local)
    for n, group in enumerate(llama_cpp.router_groups(s, on_demand)):
        port = next_port["llama.cpp"]
        next_port["llama.cpp"] += 1
        procs.append(llama_cpp.router_process(s, n, group, port, bind=bind, keyed=not local))
        for p in group:
            by_role[p.role] = Endpoint(p.role, s.name, "llama.cpp", host, port, p.role, serves_embeddings(p), not local)
    o_procs, o_eps, o_notes = ollama.instances(s, host, models_dir, bind=bind)
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
            by_role[p.role] = dataclasses.replace(base, role=p.role, model_name=name)
    eps = [by_role[p.role] for p in s.placements]
    return procs, eps, notes


def plan_header(plan: Plan, dep: Deployment) -> str:
    return (
        f"generated by agiplan {plan.agiplan_version} ({DEPLOY_KIND} schema {DEPLOY_SCHEMA_VERSION}) from plan "
        f"'{plan.stack_name}' ({plan.created_at}), option {dep.option_index} ({dep.option_kind}), server {dep.server}"
    )


def _key_exports(proc: Process) -> list[str]:
    """Shell lines that put the API key in the process's environment, read from API_KEY_FILE beside the script
    when it starts (never written into a script or an argument list, where `ps` would show it)."""
    lines = []
    for k in proc.key_env:
        if k.as_path:
            lines.append(f'export {k.name}="$PWD/{API_KEY_FILE}"')
        else:
            lines.append(f'export {k.name}="$(head -n 1 {API_KEY_FILE})"')
    return lines


def process_script(dep: Deployment, proc: Process) -> str:
    """A bash script that execs one process with its environment."""
    lines = ["#!/usr/bin/env bash", *comment(f"{proc.name}: {proc.engine} {proc.kind}")]
    if proc.roles:
        lines += comment(f"roles: {', '.join(proc.roles)}")
    lines += comment(proc.comment) if proc.comment else []
    lines.append("set -euo pipefail")
    lines.append('cd "$(dirname "$0")"  # as start.sh runs it: relative paths are the deployment folder\'s')
    lines += _key_exports(proc)
    lines += [f"export {_env_name(k)}={shlex.quote(v)}" for k, v in proc.env]
    lines.append("exec " + " \\\n    ".join(_argv_chunks(proc.argv)))
    return "\n".join(lines) + "\n"


def _env_name(name: str) -> str:
    if not name.replace("_", "a").isalnum() or not name.isascii() or name[0].isdigit():
        raise PlannerError(f"deploy: {name!r} is not an environment variable name.")
    return name


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
    """Start every process of the server that runs at boot in the background, run one-time setup, wait.
    On-demand vLLM instances are left to their own scripts."""
    lines = [
        "#!/usr/bin/env bash",
        *comment(header),
        "# Starts every process of this server that runs at boot; logs go to logs/<name>.log. Stop with Ctrl-C:",
        f"# the engines get SIGTERM, and SIGKILL after {STOP_GRACE_S} s if they have not exited.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "mkdir -p logs",
        "stop_engines() {  # SIGTERM, then SIGKILL what still runs after the grace",
        "    local pids",
        "    pids=$(jobs -p)",
        '    [ -n "$pids" ] || return 0',
        "    kill $pids 2>/dev/null || true",
        f"    for _ in $(seq {STOP_GRACE_S * 5}); do",
        "        kill -0 $pids 2>/dev/null || return 0",
        "        sleep 0.2",
        "    done",
        "    kill -KILL $pids 2>/dev/null || true",
        "}",
        "trap stop_engines EXIT",
    ]
    for proc in dep.processes:
        if proc.boot:
            script, log = shlex.quote(f"./{proc.name}.sh"), shlex.quote(f"logs/{proc.name}.log")
            lines.append(f"{script} > {log} 2>&1 &")
        else:
            lines += comment(f"on demand, not started here: ./{proc.name}.sh")
    for proc in dep.processes:
        if proc.setup and proc.boot:
            host = shlex.quote(f"{LOOPBACK}:{proc.port}")
            lines.append(f"until OLLAMA_HOST={host} ollama list > /dev/null 2>&1; do sleep 1; done")
            lines.append(shlex.quote(f"./{proc.name}-create.sh"))
    lines.append("wait")
    return "\n".join(lines) + "\n"
