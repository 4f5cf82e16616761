"""`fetch.sh`: download every model a server loads, from the Hub repositories the catalog names.

`hf download REPO FILE --local-dir DIR` (huggingface_hub's CLI) puts a GGUF at DIR/FILE, the path the engine
scripts use; vLLM checkpoints go to the Hub cache (`hf download REPO`), where `vllm serve REPO` finds them.
Both resume a partial download when run again. A model the catalog has no repository for, or a local GGUF
given to recommend, gets a check that the file is there instead. Workers of a split model need no file (the
head sends the tensors over RPC)."""

from __future__ import annotations

import shlex

from planner.deploy import comment, draft_placement, gguf_download, hf_repo, model_file
from planner.plan.schema import Placement, PlanServer

# The Hub stores files of at most 50 GB; GGUF publishers split larger quants into parts in a folder
# (bartowski: STEM/STEM-00001-of-0000N.gguf). Above this size the file name may not exist as one file.
SPLIT_FILES_ABOVE_BYTES = 45 * 10**9


def fetch_lines(p: Placement, models_dir: str) -> list[str]:
    """The fetch.sh lines for one placement: a comment naming the role, then the command."""
    head = comment(f"{p.role}: {p.model_name} {p.quant} ({p.engine})")
    if p.engine == "vllm":
        return [*head, f"hf download {shlex.quote(hf_repo(p))}"]
    if p.model.startswith("hf:"):
        return [*head, "# llama-server -hf / Ollama hf.co/ download it themselves when they start"]
    path = model_file(p, models_dir)
    if p.model.endswith(".gguf") or "/" in p.model:
        return [*head, _check_line(p, path, "a local file given to recommend")]
    gguf_repo, fname = gguf_download(p)
    if gguf_repo is None:
        return [*head, _check_line(p, path, "no Hub repository for it in the catalog")]
    local_dir = path.rsplit("/", 1)[0] or "/"
    if p.memory.weights_bytes > SPLIT_FILES_ABOVE_BYTES:
        stem = fname.removesuffix(".gguf")
        head += comment(
            f"{p.memory.weights_bytes / 1e9:.0f} GB: the publisher may have split it into {stem}/{stem}-0000k-of-"
            f"0000N.gguf; if {fname} is not found, run hf download {gguf_repo} --include '{stem}/*' --local-dir "
            f"{local_dir} and point -m at the first part."
        )
    return [*head, f"hf download {shlex.quote(gguf_repo)} {shlex.quote(fname)} --local-dir {shlex.quote(local_dir)}"]


def _check_line(p: Placement, path: str, why: str) -> str:
    msg = shlex.quote(f"{p.role}: {path} is missing ({why}); put the GGUF there")
    return f"test -f {shlex.quote(path)} || {{ echo {msg} >&2; missing=1; }}"


def fetch_script(server: PlanServer, header: str, models_dir: str) -> str:
    lines = [
        "#!/usr/bin/env bash",
        *comment(header),
        "# Downloads the models of this server (resumable: run it again after an interruption).",
        "set -euo pipefail",
        "command -v hf > /dev/null || { echo 'fetch.sh needs the hf CLI: pip install huggingface_hub' >&2; exit 1; }",
        "missing=0",
    ]
    for p in server.placements:
        if not p.shares_base_with:
            lines += fetch_lines(p, models_dir)
            if (draft := draft_placement(p)) is not None and p.engine != "ollama":
                lines += fetch_lines(draft, models_dir)  # the draft model's file, found the same way
    lines.append('exit "$missing"')
    return "\n".join(lines) + "\n"
