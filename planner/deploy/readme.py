"""The deployment's README.md: what runs on this server, what loads when (and how long a swap takes, from the
plan's swap-in estimate), who can reach what (loopback, the API key), and for a split, the link speed the plan
assumed."""

from __future__ import annotations

from planner.deploy import API_KEY_FILE, LOOPBACK, Deployment, rope_scaling
from planner.plan.schema import Plan, PlanOption, PlanServer


def _listen(argv: tuple[str, ...], env: dict[str, str], port: int | None) -> str:
    a = list(argv)
    for flag in ("--host", "-H"):
        if flag in a:
            return f"{a[a.index(flag) + 1]}:{port}"
    if "OLLAMA_HOST" in env:
        return env["OLLAMA_HOST"]
    return f"port {port}" if port else "-"


def deployment_readme(plan: Plan, opt: PlanOption, srv: PlanServer, dep: Deployment, router_host: str) -> str:
    lines = [
        f"# agiplan deployment: server `{srv.name}`",
        "",
        f"Plan `{plan.stack_name}` ({plan.created_at}), option {dep.option_index} (`{dep.option_kind}`). "
        "Start everything that runs at boot with `./start.sh`"
        + (" and the router with `./start-router.sh`." if srv.name == router_host else "."),
        "",
        "## Processes",
        "",
        "| script | roles | listens on | starts |",
        "|---|---|---|---|",
    ]
    for proc in dep.processes:
        when = "at boot" if proc.boot else "by hand, when needed"
        if proc.kind == "router":
            when = "at boot, empty; loads a role on its first request"
        lines.append(
            f"| `{proc.name}.sh` | {', '.join(proc.roles)} | {_listen(proc.argv, dict(proc.env), proc.port)} | {when} |"
        )
    resident = [p for p in srv.placements if p.residency == "always"]
    on_demand = [p for p in srv.placements if p.residency == "on-demand"]
    if resident or on_demand:
        lines += ["", "## What loads when"]
    if resident:
        lines += ["", f"Loaded at start and kept loaded: {', '.join(p.role for p in resident)}."]
    if on_demand:
        lines += [
            "",
            "On demand (one at a time per GPU set; the first request naming the role loads it, the next role's "
            "request unloads it; after 10 minutes without requests a role sleeps: weights and KV cache freed, "
            "reloaded by the next request):",
            "",
        ]
        for p in on_demand:
            swap = f"{p.swap_in_s:.1f} s" if p.swap_in_s is not None else "not estimated"
            lines.append(f"- `{p.role}` ({p.model_name} {p.quant}, {p.memory_bytes / 2**30:.1f} GiB): swap-in {swap}")
        lines += ["", "Swap-in times are the plan's estimate (loading the weights from disk or page cache)."]
    lines += [
        "",
        "## Access",
        "",
        f"The router (LiteLLM) runs on `{router_host}`; engines there listen on {LOOPBACK} only. Engines on other "
        f"servers listen on all interfaces and require the key in `{API_KEY_FILE}` (mode 0600). Every host of "
        f"this option must hold the same `{API_KEY_FILE}`: copy it, or deploy with `--api-key-file`. Agents call "
        "the router with that key. llama-server answers CORS requests from localhost pages only.",
    ]
    split = [p for s in opt.servers for p in s.placements if p.split_hosts and srv.name in p.split_hosts]
    if split:
        link = [a for a in plan.assumptions if a.startswith("split:")]
        lines += [
            "",
            "## Split across servers",
            "",
            *(f"- `{p.role}` over {', '.join(p.split_hosts)}: start the workers first." for p in split),
            "",
            "Link speed the plan assumed: " + (link[0] if link else "not recorded in the plan") + ".",
            "The RPC / Ray ports have no authentication: allow only the other server's address.",
        ]
    extended = [(p, rope) for p in srv.placements if (rope := rope_scaling(p)) is not None]
    if extended:
        lines += ["", "## Long context", ""]
        lines += [
            f"- `{p.role}`: {p.ctx} tokens per conversation, past the {rope.original_ctx} it was trained on: "
            f"{rope.method} RoPE scaling, factor {rope.factor:g} (the catalog's documented extension)."
            for p, rope in extended
        ]
    if srv.name == router_host:
        lines += [
            "",
            "## Check it against the plan",
            "",
            "Once everything answers, measure each role through the servers above (the key is read from "
            f"`{API_KEY_FILE}`) and put the figures next to the plan's:",
            "",
            "```bash",
            "agiplan bench --plan plan.json --deployment . --out bench.json && agiplan report plan.json bench.json",
            "```",
        ]
    if dep.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in dep.notes)]
    return "\n".join(lines) + "\n"
