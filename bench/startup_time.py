"""Start-up time of the CLI against the CLI framework's own import time, hyperfine-style, in one run.

Runs each command `--runs` times (after `--warmup` untimed runs) in fresh processes, interleaved so a
busy machine slows all of them alike, and prints min / median / mean ± sd and the ratios of the
medians to `python -c "import typer"`. Target (issue 6): `agiplan --help` at most 1.5× typer's import.

    python bench/startup_time.py                   # --help, estimate <catalog id>, typer import
    python bench/startup_time.py --runs 30 --model qwen2.5-7b
    python bench/startup_time.py --json            # machine-readable

The catalog cache (planner.catalog.cache) is warmed by the untimed runs, as on a user's machine after
the first call; `--cold` points AGIPLAN_CACHE_DIR at an empty directory for every run instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _agiplan() -> list[str]:
    exe = shutil.which("agiplan")
    if exe is not None and Path(exe).parent == Path(sys.executable).parent:
        return [exe]
    return [sys.executable, "-m", "planner"]  # same interpreter, no console-script wrapper


_TYPER_APP = """
import typer
app = typer.Typer()
@app.command()
def hello(name: str = "x", count: int = 1, ratio: float = 0.5, flag: bool = False) -> None:
    print(name * count)
@app.command()
def other() -> None:
    pass
app(["hello", "--count", "2"])
"""


def _time_once(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--model", default="llama-3-8b", help="catalog id for the estimate command")
    ap.add_argument("--cold", action="store_true", help="empty catalog cache for every run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    agiplan = _agiplan()
    commands = {
        "import typer": [sys.executable, "-c", "import typer"],
        # what typer itself costs to run one command with options (it builds pydantic adapters per option)
        "typer one-command app": [sys.executable, "-c", _TYPER_APP],
        "agiplan --help": [*agiplan, "--help"],
        f"agiplan estimate {args.model}": [*agiplan, "estimate", args.model, "--format", "json"],
    }
    env = dict(os.environ)
    env.pop("AGIPLAN_DEBUG", None)
    times: dict[str, list[float]] = {k: [] for k in commands}
    with tempfile.TemporaryDirectory(prefix="agiplan-startup-") as tmp:
        for i in range(args.warmup + args.runs):
            for name, cmd in commands.items():
                if args.cold:
                    env["AGIPLAN_CACHE_DIR"] = tempfile.mkdtemp(dir=tmp)
                t = _time_once(cmd, env)
                if i >= args.warmup:
                    times[name].append(t)

    base = statistics.median(times["import typer"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "command": name,
                "runs": len(ts),
                "min_s": min(ts),
                "median_s": med,
                "mean_s": statistics.fmean(ts),
                "sd_s": statistics.stdev(ts) if len(ts) > 1 else 0.0,
                "ratio_to_typer": med / base,
            }
        )
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "cold_cache": args.cold, "rows": rows}, indent=2))
        return
    print(f"{'command':<34} {'min':>7} {'median':>7} {'mean ± sd':>16} {'× typer':>8}")
    for r in rows:
        print(
            f"{r['command']:<34} {r['min_s']:7.3f} {r['median_s']:7.3f} "
            f"{r['mean_s']:8.3f} ± {r['sd_s']:5.3f} {r['ratio_to_typer']:8.2f}"
        )
    by_name = {r["command"]: r for r in rows}
    help_ratio = by_name["agiplan --help"]["ratio_to_typer"]
    est = rows[-1]
    print(f"\n--help / import typer = {help_ratio:.2f} (target ≤ 1.5): {'ok' if help_ratio <= 1.5 else 'OVER'}")
    app_s = by_name["typer one-command app"]["median_s"]
    print(f"{est['command']} / typer one-command app = {est['median_s'] / app_s:.2f} (typer's cost to run a command)")


if __name__ == "__main__":
    main()
