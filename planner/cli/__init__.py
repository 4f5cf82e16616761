"""The `agiplan` command line: argument parsing and presentation only; all logic lives in the library.

Each command group is a module here with `register(app)` that adds its commands. The root group loads a
command's module only when that command runs (or its own --help is asked for): `agiplan --help` lists the
commands from the static table below without building every command's options, so it starts about as fast as
the CLI framework itself. Heavy modules (gguf, numpy, huggingface_hub) are imported inside the
commands, never at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

from planner import __version__
from planner.cli import _errors

# name -> (module, one-line help shown by `agiplan --help`); tests/test_cli_help.py checks each line against
# the command's own docstring, so the two cannot drift apart.
COMMANDS: dict[str, tuple[str, str]] = {
    "estimate": (
        "planner.cli.estimate_cmd",
        "Memory (weights, KV cache, compute, overhead) per device, fit, and decode / prefill speed.",
    ),
    "recommend": (
        "planner.cli.recommend_cmd",
        "Place the stack's models on your server(s): serial, concurrent, a second server, or a split — side by side.",
    ),
    "bench": (
        "planner.cli.bench_cmd",
        "Measure memory and speed on this machine, compare with the estimate, and calibrate it.",
    ),
    "report": (
        "planner.cli.report_cmd",
        "Write the Markdown report of a plan (and bench results): options, servers, what to buy, sources.",
    ),
    "deploy": (
        "planner.cli.deploy_cmd",
        "Write ready-to-run llama.cpp / Ollama / vLLM files for one server of a plan.",
    ),
    "catalog": (
        "planner.cli.catalog_cmd",
        "List the built-in models, hardware, quantizations and engines (every figure with its source).",
    ),
    "detect": (
        "planner.cli.detect_cmd",
        "Show this host's GPUs, CPU, cores, AVX-512 and RAM; works without any GPU.",
    ),
}


class LazyGroup(TyperGroup):
    """The root group: commands are imported and built on first use (click's lazy-subcommand pattern)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[cmd_name][0])
        sub = typer.Typer(rich_markup_mode=None, add_completion=False)

        @sub.callback()
        def _group() -> None:  # a callback makes typer build a group, so every module's commands come out named
            pass

        module.register(sub)
        built = typer.main.get_command(sub)
        cmd = built.get_command(ctx, cmd_name) if isinstance(built, TyperGroup) else built
        if cmd is not None:
            self.commands[cmd_name] = cmd
        return cmd

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, short) for name, (_module, short) in COMMANDS.items()]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="agiplan",
    help="Capacity planner for running several local LLMs (agents) on your own servers.",
    cls=LazyGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    # plain click help: rich-rendered help costs ~0.2 s of imports on every `agiplan --help`
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"agiplan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Plan memory, speed and hardware for local LLMs: estimate, recommend, bench, report, deploy."""


def main() -> None:
    """Console-script entry point: known errors become one line on stderr and a non-zero exit."""
    _errors.run(app)
