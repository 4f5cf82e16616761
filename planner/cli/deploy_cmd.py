"""`agiplan deploy PLAN --server NAME --out DIR`: engine commands, configs and a router config for one server.

Presentation only: planner.deploy builds the files, planner.deploy.write writes them atomically.
`--format json` prints the manifest (kind agiplan-deploy, schema_version) on stdout; messages go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from planner.cli._output import Format, print_json


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_command)


def deploy_command(
    plan_file: Annotated[Path, typer.Argument(help="Plan JSON written by `agiplan recommend --out`.")],
    server: Annotated[str, typer.Option("--server", "-s", help="Server name in the plan (main, second ...).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Directory to write the files into.")] = None,
    option: Annotated[
        int | None, typer.Option("--option", help="Option index in the plan (default: the recommended one).")
    ] = None,
    compose: Annotated[bool, typer.Option("--compose", help="Also write compose.yaml.")] = False,
    models_dir: Annotated[
        str, typer.Option("--models-dir", help="Where the GGUF files of catalog models live on the server.")
    ] = "/models",
    address: Annotated[
        list[str] | None,
        typer.Option("--address", help="NAME=HOST: how other machines reach a server (default: its name)."),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help="Key file of another host of the plan (default: kept or new)."),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table (file list), json or markdown.")] = Format.table,
) -> None:
    """Write ready-to-run llama.cpp / Ollama / vLLM files for one server of a plan.

    llama-server / ggml-rpc-server, Ollama (Modelfiles + env), vLLM (vllm serve, Ray) scripts, fetch.sh,
    compose.yaml and router/litellm-config.yaml for one server of a plan. The folder is written whole;
    servers other hosts reach require the key in its api-key file (the same on every host)."""
    from planner.deploy import build_deployment
    from planner.deploy.write import read_api_key, write_deployment
    from planner.errors import PlannerError
    from planner.plan.schema import load_plan

    addresses: dict[str, str] = {}
    for a in address or []:
        name, sep, host = a.partition("=")
        if not sep or not name or not host:
            raise PlannerError(f"--address {a!r}: expected NAME=HOST, e.g. second=192.168.1.20.")
        addresses[name] = host
    key = read_api_key(api_key_file) if api_key_file is not None else None
    plan = load_plan(plan_file)
    dep = build_deployment(plan, server, option, compose=compose, models_dir=models_dir, addresses=addresses)
    if out is not None:
        written = write_deployment(dep, out, api_key=key)
        typer.echo(f"wrote {len(written)} files into {out}", err=True)
    for note in dep.notes:
        typer.echo(f"note: {note}", err=True)
    if fmt is Format.json:
        print_json(dep.manifest())
    elif fmt is Format.markdown:
        lines = [f"# agiplan deploy: server `{dep.server}`, option {dep.option_index} (`{dep.option_kind}`)", ""]
        for rel in sorted(dep.files):
            lang = "yaml" if rel.endswith(".yaml") else ("bash" if rel.endswith(".sh") else "text")
            lines += [f"## `{rel}`", "", f"```{lang}", dep.files[rel].rstrip("\n"), "```", ""]
        typer.echo("\n".join(lines).rstrip("\n"))
    else:
        for p in dep.processes:
            typer.echo(p.shell())
        if out is None:
            typer.echo("(commands only; add --out DIR to write the scripts and configs)", err=True)
