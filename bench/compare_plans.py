"""Write the JSON plan of `agiplan recommend` for the presets and the README stack into a folder, to compare
two versions of the solver: a speed change must leave every option of every plan identical.

    python bench/compare_plans.py OUT_DIR            # write OUT_DIR/<case>.json, print the time of each
    diff -r BEFORE_DIR AFTER_DIR                     # nothing may differ

Cases: --preset deep, agents, ensemble, agents --budget 1500, and the README's example stack (seed server).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

from planner.cli import app

ROOT = Path(__file__).resolve().parents[1]


def readme_stack(folder: Path) -> Path:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    path = folder / "readme-stack.yaml"
    path.write_text(text.split("```yaml\n", 1)[1].split("```", 1)[0], encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir", type=Path)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "deep": ["--preset", "deep"],
            "agents": ["--preset", "agents"],
            "ensemble": ["--preset", "ensemble"],
            "agents-1500": ["--preset", "agents", "--budget", "1500"],
            "readme": [str(readme_stack(Path(tmp)))],
        }
        for name, case in cases.items():
            out = args.out_dir / f"{name}.json"
            t0 = time.perf_counter()
            res = runner.invoke(app, ["recommend", *case, "--format", "json", "--out", str(out)])
            dt = time.perf_counter() - t0
            plan = json.loads(out.read_text(encoding="utf-8"))
            plan.pop("created_at", None)  # a timestamp, not part of the answer
            out.write_text(json.dumps(plan, indent=1, sort_keys=True), encoding="utf-8")
            print(f"{name}: exit {res.exit_code}, {dt:.2f} s")


if __name__ == "__main__":
    main()
