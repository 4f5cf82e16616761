"""The `agiplan` command line: argument parsing and presentation only; all logic lives in the library.

Each command group is a module here that registers its commands on `app`. Heavy modules (gguf,
numpy, huggingface_hub, llama_cpp) are imported inside the commands, never at start-up.
"""

from __future__ import annotations

import typer

from planner import __version__
from planner.cli import _errors

app = typer.Typer(
    name="agiplan",
    help="Capacity planner for running several local LLMs (agents) on your own servers.",
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
    """Plan memory, speed and hardware for local LLMs: estimate, catalog, detect."""


def _register() -> None:
    # Imported here so that `planner.cli` stays importable in any order; each module only defines commands.
    from planner.cli import bench_cmd, catalog_cmd, deploy_cmd, detect_cmd, estimate_cmd, report_cmd

    for mod in (estimate_cmd, catalog_cmd, detect_cmd, report_cmd, deploy_cmd, bench_cmd):
        mod.register(app)
    from planner.cli import recommend_cmd

    recommend_cmd.register(app)


_register()


def main() -> None:
    """Console-script entry point: known errors become one line on stderr and a non-zero exit."""
    _errors.run(app)
