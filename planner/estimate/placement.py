"""Where llama.cpp puts each layer: which GPU, or the CPU, and what each device then holds.

llama.cpp (src/llama-model.cpp load_tensors): the last `n_gpu_layers` of the n_layer + 1 "layers"
(the output head counts as layer n_layer) go to the GPUs, the rest stay on the CPU; offloaded
layer il goes to device upper_bound(splits, (il - i_gpu_start) / n_offloaded) where `splits` is
the cumulative tensor split, by default proportional to each device's free memory. Token
embeddings always stay on the CPU (the input layer); a tied output matrix is duplicated onto the
output device. The KV cache of a layer lives with the layer (offload_kqv). MoE models can keep
their routed experts on the CPU (--cpu-moe / --fit's first move) while attention stays on GPU.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from planner.estimate.compute import (
    llama_cpp_compute_bytes,
    llama_cpp_host_compute_bytes,
    output_buffer_bytes,
    pipeline_parallel_extra_bytes,
)
from planner.estimate.engines import EngineRules
from planner.estimate.kv import KvLayout, layer_kv_bytes
from planner.estimate.speed import weight_family
from planner.estimate.types import Device, DeviceUsage, MemoryParts, RunConfig
from planner.model.arch import ModelArch, ModelWeights, TensorInfo


@dataclass(frozen=True)
class LayerTable:
    """Bytes of the model grouped the way placement needs them."""

    layer_bytes: dict[int, int]  # all tensors of repeating layer i
    layer_expert_bytes: dict[int, int]  # routed-expert tensors of layer i (subset of layer_bytes)
    layer_family_bytes: dict[int, dict[str, int]]  # by kernel family, for speed
    layer_expert_family_bytes: dict[int, dict[str, int]]
    layer_params: dict[int, int]
    layer_expert_params: dict[int, int]
    token_embedding_bytes: int
    output_bytes: int  # output.weight + output_norm (+ tied copy of token_embd)
    output_family_bytes: dict[str, int]
    output_params: int
    other_bytes: int  # position / token-type tables and the like: stay with the input on the CPU
    tied_copy_bytes: int  # part of output_bytes that is token_embd again (not duplicated on the CPU)
    layer_repack_bytes: dict[int, int]  # extra CPU copies of repackable weights (see cpu_repack_bytes)
    output_repack_bytes: int
    ordered: tuple[FileTensor, ...] = ()  # tensors in file order, for llama.cpp's mapped span on the CPU
    # memo of host_weight_bytes by (layers on the host, experts on CPU, output on host); not part of equality
    host_memo: dict[tuple[int, int, bool], tuple[int, int]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )


@dataclass(frozen=True)
class FileTensor:
    """One tensor in file order: what placement needs to know about it."""

    kind: str  # "layer", "token_embd", "output", "other"
    layer: int | None
    n_bytes: int
    repack_bytes: int
    is_expert: bool


# ggml-cpu repacks these types into interleaved layouts for faster CPU matmuls, in a CPU_REPACK buffer
# next to the mapped file (ggml/src/ggml-cpu/repack.cpp ggml_repack_get_optimal_repack_type, x86 AVX2:
# Q4_0, Q4_K, IQ4_NL, MXFP4 when ne[1] % 8 == 0). Token embeddings (read by GET_ROWS) are not repacked.
CPU_REPACK_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"})


def cpu_repack_bytes(t: TensorInfo) -> int:
    """Bytes llama.cpp's CPU backend adds as a repacked copy of `t` when `t` runs on the CPU."""
    if t.ggml_type.upper() in CPU_REPACK_TYPES and len(t.shape) >= 2 and t.shape[1] % 8 == 0:
        return t.n_bytes
    return 0


def layer_table(arch: ModelArch, weights: ModelWeights) -> LayerTable:
    layer_bytes: dict[int, int] = defaultdict(int)
    layer_expert: dict[int, int] = defaultdict(int)
    fam: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    fam_exp: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    params: dict[int, int] = defaultdict(int)
    params_exp: dict[int, int] = defaultdict(int)
    tok = out = other = out_params = tied = out_repack = 0
    repack: dict[int, int] = defaultdict(int)
    out_fam: dict[str, int] = defaultdict(int)
    has_output = False
    tok_tensor = None
    ordered: list[FileTensor] = []
    # each tensor's properties read once (a derived 70B has 723 tensors, and the solver builds a table for every
    # model and quant of a recommendation)
    for t in weights.tensors:
        i = t.layer
        n_bytes = t.n_bytes
        is_expert = t.is_expert
        kind = (
            "layer"
            if i is not None
            else "token_embd"
            if t.is_token_embedding
            else "output"
            if t.name.startswith("output")
            else "other"
        )
        rp = 0 if kind == "token_embd" else cpu_repack_bytes(t)
        ordered.append(FileTensor(kind, i, n_bytes, rp, is_expert))
        if i is not None:
            family = weight_family(t.ggml_type)
            n_elements = t.n_elements
            layer_bytes[i] += n_bytes
            fam[i][family] += n_bytes
            params[i] += n_elements
            repack[i] += rp
            if is_expert:
                layer_expert[i] += n_bytes
                fam_exp[i][family] += n_bytes
                params_exp[i] += n_elements
        elif kind == "token_embd":
            tok += n_bytes
            tok_tensor = t
        elif kind == "output":
            out += n_bytes
            out_fam[weight_family(t.ggml_type)] += n_bytes
            out_params += t.n_elements
            out_repack += rp
            has_output = has_output or t.name == "output.weight"
        else:
            other += n_bytes
    if not has_output and tok_tensor is not None and not arch.is_embedding:
        # tied embeddings: llama.cpp creates `output` as a duplicate of token_embd on the output device
        out += tok_tensor.n_bytes
        tied = tok_tensor.n_bytes
        out_repack += cpu_repack_bytes(tok_tensor)
        out_fam[weight_family(tok_tensor.ggml_type)] += tok_tensor.n_bytes
        out_params += tok_tensor.n_elements
    return LayerTable(
        dict(layer_bytes),
        dict(layer_expert),
        {k: dict(v) for k, v in fam.items()},
        {k: dict(v) for k, v in fam_exp.items()},
        dict(params),
        dict(params_exp),
        tok,
        out,
        dict(out_fam),
        out_params,
        other,
        tied,
        dict(repack),
        out_repack,
        tuple(ordered),
    )


@dataclass(frozen=True)
class Placement:
    """Layer → device assignment (device index into the GPU list, or -1 for the CPU)."""

    layer_device: dict[int, int]
    output_device: int
    cpu_moe_layers: int  # the first N layers keep their routed experts on the CPU (llama.cpp --n-cpu-moe N)
    n_gpu_layers: int  # llama.cpp -ngl value this corresponds to (layers + output head)


def place_layers(
    n_layers: int, n_gpu_layers: int, split_weights: Sequence[float], *, cpu_moe_layers: int = 0
) -> Placement:
    """llama.cpp's assignment of layers [0, n_layers] (n_layers = output head) to GPUs by `split_weights`."""
    n_gpus = len(split_weights)
    layer_device: dict[int, int] = {}
    if n_gpus == 0 or n_gpu_layers <= 0:
        return Placement({i: -1 for i in range(n_layers)}, -1, cpu_moe_layers, 0)
    total = sum(split_weights)
    if total <= 0:
        split_weights = [1.0] * n_gpus
        total = float(n_gpus)
    splits: list[float] = []
    acc = 0.0
    for w in split_weights:
        acc += w / total
        splits.append(acc)
    act = min(n_gpu_layers, n_layers + 1)
    i_gpu_start = max(n_layers + 1 - n_gpu_layers, 0)
    output_device = -1
    for il in range(n_layers + 1):
        if il < i_gpu_start:
            dev = -1
        else:
            dev = min(bisect.bisect_right(splits, (il - i_gpu_start) / act), n_gpus - 1)
        if il == n_layers:
            output_device = dev
        else:
            layer_device[il] = dev
    return Placement(layer_device, output_device, cpu_moe_layers, act)


def host_weight_bytes(table: LayerTable, placement: Placement, output_on_host: bool) -> tuple[int, int]:
    """Weights llama.cpp keeps in host memory, as its log counts them (mmap on, the default):

    CPU_Mapped = the file span from the first to the last CPU tensor that is used in place (repacked
    originals in between are mapped and were read, so they count), CPU_REPACK = repacked copies of the
    CPU tensors the backend interleaves. Tensors inside the span that live on a GPU are left out: llama.cpp's
    log counts them in the mapping, but their pages are only read once for the upload (page cache).
    Returns (bytes as llama.cpp's log counts them, the part of it that is reclaimable page cache: the
    mapped originals of repacked tensors, read once during the repack and never again).
    Checked against llama.cpp's log in bench/llama_alloc_accuracy.py (synthetic Llama 3 / Qwen2.5 /
    Mixtral files whose last tensors are repacked, so the mapped span ends before them)."""

    layer_device = placement.layer_device
    cpu_moe = placement.cpu_moe_layers
    # llama.cpp keeps a prefix of the layers on the CPU (place_layers), so the count identifies the set
    key = (sum(1 for d in layer_device.values() if d < 0), cpu_moe, output_on_host)
    hit = table.host_memo.get(key)
    if hit is not None:
        return hit
    first = last = -1
    repacked = 0
    flags: list[bool] = []
    for k, ft in enumerate(table.ordered):
        if ft.kind == "layer":
            host = (ft.is_expert and ft.layer is not None and ft.layer < cpu_moe) or layer_device.get(
                ft.layer if ft.layer is not None else -1, -1
            ) < 0
        elif ft.kind == "output":
            host = output_on_host
        else:  # token embeddings and position / token-type tables stay with the input on the CPU
            host = True
        flags.append(host)
        if host:
            repacked += ft.repack_bytes
            if ft.repack_bytes == 0:
                if first < 0:
                    first = k
                last = k
    span = reclaimable = 0
    if first >= 0:
        for k in range(first, last + 1):
            if flags[k]:
                ft = table.ordered[k]
                span += ft.n_bytes
                if ft.repack_bytes:
                    reclaimable += ft.n_bytes
    table.host_memo[key] = (span + repacked, reclaimable)
    return span + repacked, reclaimable


@dataclass(frozen=True)
class SlotParts:
    """What one placement puts on one device of its list (the GPUs in order, then the host), whichever card or
    CPU that is: a DeviceUsage without its device and margin."""

    memory: MemoryParts
    layers: tuple[int, ...]  # repeating layers held here
    holds_output: bool
    reclaimable_bytes: int = 0


def device_usages(
    arch: ModelArch,
    cfg: RunConfig,
    layout: KvLayout,
    table: LayerTable,
    placement: Placement,
    gpus: Sequence[Device],
    host: Device,
    rules: EngineRules,
    kv_by_layer: Sequence[int] | None = None,
) -> tuple[DeviceUsage, ...]:
    """Memory on every GPU and on the host for one placement (llama.cpp / Ollama).

    `kv_by_layer` (KV bytes of each layer) may be passed in when many placements of one model are tried."""
    parts = placement_parts(arch, cfg, layout, table, placement, len(gpus), rules, kv_by_layer)
    return usages_on(parts, gpus, host, rules)


def usages_on(
    parts: Sequence[SlotParts], gpus: Sequence[Device], host: Device, rules: EngineRules
) -> tuple[DeviceUsage, ...]:
    """The DeviceUsage of each GPU and of the host for the parts of one placement (`placement_parts`)."""
    usages = [
        DeviceUsage(dev, sp.memory, rules.gpu_margin_bytes, sp.layers, sp.holds_output, False)
        for dev, sp in zip(gpus, parts, strict=False)
    ]
    h = parts[-1]
    usages.append(
        DeviceUsage(host, h.memory, rules.host_margin_bytes, h.layers, h.holds_output, True, h.reclaimable_bytes)
    )
    return tuple(usages)


def placement_parts(
    arch: ModelArch,
    cfg: RunConfig,
    layout: KvLayout,
    table: LayerTable,
    placement: Placement,
    n_gpus: int,
    rules: EngineRules,
    kv_by_layer: Sequence[int] | None = None,
) -> tuple[SlotParts, ...]:
    """What one placement puts on each of `n_gpus` GPUs and on the host (the last entry): weights, KV, compute
    buffer and runtime overhead. It depends on the devices only through the placement, so the estimator
    memoizes it per placement of a model."""
    if kv_by_layer is None:
        kv_by_layer = [layer_kv_bytes(arch, cfg, layout, i) for i in range(arch.n_layers)]
    gpu = gpu_parts(arch, cfg, layout, table, placement, n_gpus, rules, kv_by_layer)
    return (*gpu, host_part(arch, cfg, layout, table, placement, rules, kv_by_layer))


def gpu_parts(
    arch: ModelArch,
    cfg: RunConfig,
    layout: KvLayout,
    table: LayerTable,
    placement: Placement,
    n_gpus: int,
    rules: EngineRules,
    kv_by_layer: Sequence[int],
) -> tuple[SlotParts, ...]:
    """`placement_parts` of the GPUs alone: all llama.cpp's fit looks at when it tries a placement."""
    n = n_gpus
    weights = [0] * n
    kv = [0] * n
    layers: list[list[int]] = [[] for _ in range(n)]
    for i in range(arch.n_layers):
        d = placement.layer_device.get(i, -1)
        if d < 0:
            continue
        eb = table.layer_expert_bytes.get(i, 0) if i < placement.cpu_moe_layers else 0
        weights[d] += table.layer_bytes.get(i, 0) - eb
        kv[d] += kv_by_layer[i]
        layers[d].append(i)
    out_slot = placement.output_device
    if out_slot >= 0:
        weights[out_slot] += table.output_bytes

    parts: list[SlotParts] = []
    # llama.cpp enables pipeline parallelism with several GPUs when every layer and the output are offloaded
    pipeline = n > 1 and placement.n_gpu_layers > arch.n_layers
    for d in range(n):
        holds_output = out_slot == d
        if not layers[d] and not holds_output:
            parts.append(SlotParts(MemoryParts(), (), False))
            continue
        compute = llama_cpp_compute_bytes(arch, cfg, layout, tuple(layers[d]), holds_output)
        if pipeline:
            compute += pipeline_parallel_extra_bytes(arch, layout)
        mem = MemoryParts(weights[d], kv[d], compute, rules.gpu_runtime_bytes)
        parts.append(SlotParts(mem, tuple(layers[d]), holds_output))
    return tuple(parts)


def host_part(
    arch: ModelArch,
    cfg: RunConfig,
    layout: KvLayout,
    table: LayerTable,
    placement: Placement,
    rules: EngineRules,
    kv_by_layer: Sequence[int],
) -> SlotParts:
    """`placement_parts` of the host: the layers left on the CPU (with the experts of the first
    `cpu_moe_layers`), the mapped and repacked weights (`host_weight_bytes`), the input branch and the output
    buffer."""
    kv = 0
    layers: list[int] = []
    for i in range(arch.n_layers):
        if placement.layer_device.get(i, -1) < 0:
            kv += kv_by_layer[i]
            layers.append(i)
    host_holds_output = placement.output_device < 0
    weights, reclaimable = host_weight_bytes(table, placement, host_holds_output)
    if layers or host_holds_output:
        host_compute = llama_cpp_compute_bytes(arch, cfg, layout, tuple(layers), host_holds_output, runs_inputs=True)
    else:
        host_compute = llama_cpp_host_compute_bytes(arch, cfg, layout)
    host_overhead = rules.host_runtime_bytes + output_buffer_bytes(arch, cfg)
    host_mem = MemoryParts(weights, kv, host_compute, host_overhead)
    return SlotParts(host_mem, tuple(layers), host_holds_output, reclaimable)
