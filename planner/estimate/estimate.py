"""The estimator: memory per device and speed for one model, quantization, run configuration and devices.

`estimate()` is the one entry point the CLI, the solver and the bench call. It is pure: no I/O
beyond what the caller passed in (a resolved ModelSpec and Device objects).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from planner.errors import EstimateError
from planner.estimate.compute import LLAMA_CPP_BUILD, vllm_activation_bytes
from planner.estimate.engines import EngineRules, rules_for, vllm_profile
from planner.estimate.kv import (
    VLLM_BLOCK_SIZE,
    KvLayout,
    kv_bytes_per_token,
    layer_kv_bytes,
    llama_cpp_layout,
    vllm_page_bytes,
)
from planner.estimate.placement import (
    LayerTable,
    Placement,
    SlotParts,
    gpu_parts,
    host_part,
    layer_table,
    place_layers,
    usages_on,
)
from planner.estimate.speculative import (
    SPECULATIVE_SOURCE,
    SpeculativeSpeed,
    speculative_speed,
    verification_output_bytes,
)
from planner.estimate.speed import (
    DeviceLoad,
    attention_flops_per_position,
    estimate_speed,
    nvlink_device,
    vllm_cpu_s_per_seq,
    weight_family,
)
from planner.estimate.types import (
    Device,
    DeviceCalibration,
    DeviceUsage,
    DraftEstimate,
    Estimate,
    MemoryParts,
    RunConfig,
    Speed,
    Suggestion,
)
from planner.model.arch import ModelArch, ModelSpec, ModelWeights, Source
from planner.model.layout import is_encoder

# Quants tried, best first, when suggesting one that fits (llama.cpp file types).
QUANT_LADDER: tuple[str, ...] = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "IQ3_M", "Q2_K")


def resolve_weights(spec: ModelSpec, quant: str | None, engine: str = "llama.cpp") -> ModelWeights:
    """The weights to plan with: the file's own (exact) or derived from the architecture at `quant`
    (default Q4_K_M for llama.cpp / Ollama, BF16 for vLLM)."""
    if spec.weights is not None:
        ft = spec.weights.file_type
        if quant and ft and quant.upper() != ft.upper() and spec.weights.exact:
            raise EstimateError(
                f"{spec.ref} is a {ft} file; --quant {quant} does not apply to it (drop --quant, or pick "
                f"a catalog id to plan other quantizations)."
            )
        if quant is None or (ft is not None and quant.upper() == ft.upper()):
            return spec.weights
    if engine == "vllm":
        q = (quant or "BF16").upper()
        return _weights_for_cached(spec.arch, q, q in ("BF16", "F16", "F32"))
    return _weights_for_cached(spec.arch, (quant or "Q4_K_M").upper(), False)


def estimate(
    spec: ModelSpec,
    cfg: RunConfig,
    gpus: Sequence[Device],
    host: Device,
    *,
    quant: str | None = None,
    calibration: Mapping[str, DeviceCalibration] | None = None,
    suggest: bool = True,
) -> Estimate:
    """Estimate memory on each device and speed for `spec` run as `cfg` on `gpus` + `host`."""
    if cfg.draft is not None:
        return _estimate_with_draft(spec, cfg, gpus, host, quant=quant, calibration=calibration, suggest=suggest)
    asked = cfg
    cfg = embedding_batch(spec.arch, cfg)
    weights = resolve_weights(spec, quant, cfg.engine)
    rules = rules_for(cfg.engine)
    if cfg.engine == "vllm":
        est = _estimate_vllm(spec, weights, cfg, gpus, host, rules, calibration)
    else:
        est = _estimate_llama_cpp(spec, weights, cfg, gpus, host, rules, calibration)
    if suggest and not est.fits:
        # from the config as asked: a shorter context gets its own batch (embedding_batch), not this one's
        est = replace(est, suggestions=tuple(_suggestions(spec, weights, asked, gpus, host, quant, est)))
    return est


def embedding_batch(arch: ModelArch, cfg: RunConfig) -> RunConfig:
    """The batch llama.cpp needs for an encoder (BERT-style embedding model): its attention is not causal, so
    llama-server runs each input as one micro-batch and rejects a longer one ("input (N tokens) is too large to
    process. increase the physical batch size"). agiplan deploys it with -b = -ub = ctx per conversation (the
    plan's n_ubatch, planner.deploy.llama_cpp), and its compute buffer grows with that micro-batch. Only a
    config that leaves both sizes unset gets that batch; set sizes (a bench run replayed) are kept. Ollama and
    vLLM choose their own."""
    if not is_encoder(arch) or cfg.engine != "llama.cpp" or cfg.n_ubatch is not None or cfg.n_batch is not None:
        return cfg
    return replace(cfg, n_ubatch=cfg.ctx, n_batch=cfg.ctx)


# ------------------------------------------------------------------------------------------ draft model


def _estimate_with_draft(
    spec: ModelSpec,
    cfg: RunConfig,
    gpus: Sequence[Device],
    host: Device,
    *,
    quant: str | None,
    calibration: Mapping[str, DeviceCalibration] | None,
    suggest: bool,
) -> Estimate:
    """The target with a draft model (llama.cpp -md, planner.estimate.speculative). Memory: the draft's own
    context (weights, KV at the target's ctx × slots with its own KV types, compute, output buffer) on the same
    devices, placed first, all of its layers on the GPUs unless `gpu_layers` says otherwise; the target is then
    placed in what it leaves. Speed: the speculative step of k draft decodes and one target pass over k + 1
    tokens per slot, both from the batched-decode model; prefill also runs the prompt through the draft."""
    draft = cfg.draft
    assert draft is not None
    if cfg.engine != "llama.cpp":
        raise EstimateError(
            f"{cfg.engine}: agiplan plans draft models on llama.cpp only"
            + (" (Ollama has no speculative decoding)" if cfg.engine == "ollama" else "")
            + "; use --engine llama.cpp or drop the draft."
        )
    if spec.arch.is_embedding or draft.spec.arch.is_embedding:
        raise EstimateError("a draft model speeds up decoding; embedding models do not decode (drop the draft).")
    plain = replace(cfg, draft=None)
    rules = rules_for(cfg.engine)
    n_draft_layers = draft.spec.arch.n_layers + 1
    dcfg = replace(
        plain,
        kv_type_k=draft.kv_type_k,
        kv_type_v=draft.kv_type_v,
        gpu_layers=draft.gpu_layers if draft.gpu_layers is not None else (n_draft_layers if gpus else 0),
        cpu_moe_layers=0,
    )
    dest = estimate(draft.spec, dcfg, gpus, host, quant=draft.quant, calibration=calibration, suggest=False)
    # the draft shares the target's process: its backend contexts and process baseline are counted once
    draft_mem = tuple(
        replace(
            u.memory,
            overhead_bytes=max(
                0,
                u.memory.overhead_bytes - (rules.gpu_runtime_bytes if u.device.is_gpu else rules.host_runtime_bytes),
            ),
        )
        for u in dest.devices
    )
    # verifying k drafted tokens per slot grows the target's host output buffer (speculative.verification_output_bytes)
    verify_bytes = verification_output_bytes(spec.arch.vocab_size, cfg.parallel, draft.n_max, plain.batch_sizes()[0])
    draft_mem = (*draft_mem[:-1], draft_mem[-1] + MemoryParts(overhead_bytes=verify_bytes))
    taken = [
        replace(u.device, reserved_bytes=u.device.reserved_bytes + m.total_bytes)
        for u, m in zip(dest.devices, draft_mem, strict=True)
    ]
    est = estimate(spec, plain, taken[:-1], taken[-1], quant=quant, calibration=calibration, suggest=False)
    devices = tuple(
        replace(u, device=d.device, memory=u.memory + m, reclaimable_bytes=u.reclaimable_bytes + d.reclaimable_bytes)
        for u, d, m in zip(est.devices, dest.devices, draft_mem, strict=True)
    )

    def verify_step_s(slots: int) -> float:
        # one target pass over slots × (k + 1) tokens: the batched decode step at that many sequences, same placement
        c = replace(
            plain, parallel=slots * (draft.n_max + 1), gpu_layers=est.gpu_layers, cpu_moe_layers=est.cpu_moe_layers
        )
        return (
            1.0
            / estimate(
                spec, c, taken[:-1], taken[-1], quant=quant, calibration=calibration, suggest=False
            ).speed.decode_tok_s_per_slot
        )

    a = draft.acceptance_rate
    single = speculative_speed(
        acceptance=a, n_draft=draft.n_max, slots=1, draft_step_s=1.0 / dest.speed.decode_tok_s,
        verify_step_s=verify_step_s(1), plain_step_s=1.0 / est.speed.decode_tok_s,
    )  # fmt: skip
    busy = single
    if cfg.parallel > 1:
        busy = speculative_speed(
            acceptance=a, n_draft=draft.n_max, slots=cfg.parallel,
            draft_step_s=1.0 / dest.speed.decode_tok_s_per_slot, verify_step_s=verify_step_s(cfg.parallel),
            plain_step_s=1.0 / est.speed.decode_tok_s_per_slot,
        )  # fmt: skip
    result = Estimate(
        model_ref=est.model_ref,
        arch=est.arch,
        weights=est.weights,
        config=cfg,
        ctx_effective=est.ctx_effective,
        devices=devices,
        kv_capacity_tokens=est.kv_capacity_tokens,
        speed=_sped_up(est.speed, dest.speed, single, busy),
        sources={
            **est.sources,
            "speculative": Source("formula", SPECULATIVE_SOURCE),
            "acceptance": draft.acceptance_source,
        },
        notes=(
            *est.notes,
            f"draft {dest.arch.name} ({dest.weights.file_type}): {draft.n_max} tokens drafted a step, acceptance "
            f"{a:.2f}, {single.tokens_per_step:.2f} tokens a step, decode ×{single.speedup:.2f} at one slot"
            + (f", ×{busy.speedup:.2f} at {cfg.parallel} slots" if cfg.parallel > 1 else ""),
        ),
        cpu_moe_layers=est.cpu_moe_layers,
        draft=DraftEstimate(
            model_ref=dest.model_ref,
            model_name=dest.arch.name,
            quant=dest.weights.file_type,
            n_layers=dest.arch.n_layers,
            gpu_layers=dest.gpu_layers,
            memory=draft_mem,
            speed=busy,
            single=single,
            plain_speed=est.speed,
            acceptance_source=draft.acceptance_source,
            verify_output_bytes=verify_bytes,
        ),
    )
    if suggest and not result.fits:
        result = replace(result, suggestions=tuple(_suggestions(spec, result.weights, cfg, gpus, host, quant, result)))
    return result


def _sped_up(target: Speed, draft: Speed, single: SpeculativeSpeed, busy: SpeculativeSpeed) -> Speed:
    """The target's speed with the draft: decode from the speculative step (its range scaled alike), prefill
    slowed by running the prompt through the draft too (the times per token add)."""
    r = single.speedup

    def both(t: float, d: float) -> float:
        return 1.0 / (1.0 / t + 1.0 / d) if t > 0 and d > 0 else 0.0

    return replace(
        target,
        decode_tok_s=single.decode_tok_s_per_slot,
        decode_low_tok_s=target.decode_low_tok_s * r,
        decode_high_tok_s=target.decode_high_tok_s * r,
        prefill_tok_s=both(target.prefill_tok_s, draft.prefill_tok_s),
        prefill_low_tok_s=both(target.prefill_low_tok_s, draft.prefill_low_tok_s),
        prefill_high_tok_s=both(target.prefill_high_tok_s, draft.prefill_high_tok_s),
        decode_tok_s_per_slot=busy.decode_tok_s_per_slot,
        aggregate_tok_s=busy.aggregate_tok_s,
        bytes_per_token=target.bytes_per_token + draft.bytes_per_token,
    )


# ------------------------------------------------------------------------------------------ llama.cpp


# one table per (model, quant): a recommendation over the whole catalog touches a few hundred
@functools.lru_cache(maxsize=1024)
def _layer_table_cached(arch: ModelArch, weights: ModelWeights) -> LayerTable:
    return layer_table(arch, weights)


@functools.lru_cache(maxsize=256)
def _weights_for_cached(arch: ModelArch, quant: str, safetensors: bool) -> ModelWeights:
    from planner.model.quant_scheme import weights_for

    return weights_for(arch, quant, format="safetensors") if safetensors else weights_for(arch, quant)


def _split_weights(gpus: Sequence[Device], rules: EngineRules) -> list[float]:
    return [max(0.0, float(g.available_bytes - rules.gpu_margin_bytes - rules.gpu_runtime_bytes)) for g in gpus]


# A placement as llama.cpp's layer assignment: each layer's device, the output's, the first N layers' experts on
# the CPU, and -ngl. Two placements with the same signature put the same bytes on their i-th device.
PlacementSig = tuple[tuple[int, ...], int, int, int]
# Per model and config, placements remembered at most (the 12-role bench tries a few hundred of one model).
PLACEMENT_MEMO_SIZE = 4096


@dataclass(frozen=True)
class _LlamaCppModel:
    """What a llama.cpp estimate of one (model, weights, run config) owes nothing to the devices: the KV layout,
    the layer table, each layer's KV bytes, and memos of the placements tried. The solver estimates one model on
    hundreds of GPU sets, most of them with the same layer assignment (same split weights, or the same count of
    layers that fit), so each placement's parts and loads are computed once (`gpu_parts`, `host_part`, `loads`)."""

    arch: ModelArch
    cfg: RunConfig
    layout: KvLayout
    table: LayerTable
    kv_by_layer: tuple[int, ...]
    rules: EngineRules
    # by (-ngl, split weights, layers with experts on the CPU): the signature only, a tuple of ints (a Placement
    # is made again from it where a part is worked out: `_placement_of`)
    _sigs: dict[tuple[int, tuple[float, ...], int], PlacementSig] = field(
        default_factory=dict, compare=False, repr=False
    )
    _gpu_parts: dict[tuple[PlacementSig, int], tuple[SlotParts, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    _host_parts: dict[PlacementSig, SlotParts] = field(default_factory=dict, compare=False, repr=False)
    _host_repack: dict[PlacementSig, int] = field(default_factory=dict, compare=False, repr=False)
    _loads: dict[tuple[PlacementSig, int], list[_SlotLoad]] = field(default_factory=dict, compare=False, repr=False)

    def signature(self, ngl: int, split: Sequence[float], cpu_moe: int) -> PlacementSig:
        """The signature of llama.cpp's placement of -ngl `ngl` over GPUs with these split weights."""
        key = (ngl, tuple(split), cpu_moe)
        sig = self._sigs.get(key)
        if sig is None:
            if len(self._sigs) >= PLACEMENT_MEMO_SIZE:
                self._sigs.clear()
            p = place_layers(self.arch.n_layers, ngl, split, cpu_moe_layers=cpu_moe)
            sig = (tuple(p.layer_device.values()), p.output_device, p.cpu_moe_layers, p.n_gpu_layers)
            self._sigs[key] = sig
        return sig

    def gpu_parts(self, sig: PlacementSig, n_gpus: int) -> tuple[SlotParts, ...]:
        """What the placement puts on each GPU (placement.gpu_parts), memoized."""
        key = (sig, n_gpus)
        parts = self._gpu_parts.get(key)
        if parts is None:
            if len(self._gpu_parts) >= PLACEMENT_MEMO_SIZE:
                self._gpu_parts.clear()
            p = _placement_of(sig)
            parts = gpu_parts(self.arch, self.cfg, self.layout, self.table, p, n_gpus, self.rules, self.kv_by_layer)
            self._gpu_parts[key] = parts
        return parts

    def host_part(self, sig: PlacementSig) -> SlotParts:
        """What the placement puts on the host (placement.host_part), memoized."""
        part = self._host_parts.get(sig)
        if part is None:
            if len(self._host_parts) >= PLACEMENT_MEMO_SIZE:
                self._host_parts.clear()
            p = _placement_of(sig)
            part = host_part(self.arch, self.cfg, self.layout, self.table, p, self.rules, self.kv_by_layer)
            self._host_parts[sig] = part
        return part

    def host_repack_bytes(self, sig: PlacementSig) -> int:
        """Repacked copies the CPU backend keeps of the layers left on the host, memoized."""
        got = self._host_repack.get(sig)
        if got is None:
            if len(self._host_repack) >= PLACEMENT_MEMO_SIZE:
                self._host_repack.clear()
            layer_device = _placement_of(sig).layer_device
            got = sum(
                self.table.layer_repack_bytes.get(i, 0)
                for i in range(self.arch.n_layers)
                if layer_device.get(i, -1) < 0
            )
            self._host_repack[sig] = got
        return got

    def loads(self, sig: PlacementSig, gpus: Sequence[Device], host: Device) -> list[DeviceLoad]:
        """What each GPU and the host read and compute per token for this placement (`_slot_loads`)."""
        key = (sig, len(gpus))
        slots = self._loads.get(key)
        if slots is None:
            if len(self._loads) >= PLACEMENT_MEMO_SIZE:
                self._loads.clear()
            slots = _slot_loads(self.arch, self.cfg, self.layout, self.table, _placement_of(sig), len(gpus))
            self._loads[key] = slots
        devices = [*gpus, host]
        return [
            DeviceLoad(
                devices[i],
                dict(s.fam),
                dict(s.exp),
                s.kv_tok,
                s.params,
                s.active,
                s.attn,
                swa_kv_bytes_per_depth_token=s.swa_kv_tok,
                swa_attn_flops_per_depth_token=s.swa_attn,
                swa_cells=s.swa_cells,
                repacked_bytes=s.repacked,
            )
            for i, s in enumerate(slots)
        ]


def _placement_of(sig: PlacementSig) -> Placement:
    """The Placement `place_layers` returned for this signature (layers 0 … n − 1 in order, the output's device,
    the layers with experts on the CPU, -ngl)."""
    layer_devices, output_device, cpu_moe_layers, n_gpu_layers = sig
    return Placement(dict(enumerate(layer_devices)), output_device, cpu_moe_layers, n_gpu_layers)


# one per (model, quant, config): a recommendation over the whole catalog touches a few hundred
@functools.lru_cache(maxsize=1024)
def _llama_cpp_model(arch: ModelArch, weights: ModelWeights, cfg: RunConfig) -> _LlamaCppModel:
    layout = llama_cpp_layout(arch, cfg)
    table = _layer_table_cached(arch, weights)
    kv_by_layer = tuple(layer_kv_bytes(arch, cfg, layout, i) for i in range(arch.n_layers))
    return _LlamaCppModel(arch, cfg, layout, table, kv_by_layer, rules_for(cfg.engine))


@dataclass(frozen=True)
class _Placed:
    """llama.cpp's placement of a model on some devices: the layer assignment, its signature, each device's
    memory and what the choice of it noted."""

    placement: Placement
    sig: PlacementSig
    usages: tuple[DeviceUsage, ...]
    notes: list[str]


def _llama_cpp_place(model: _LlamaCppModel, gpus: Sequence[Device], host: Device) -> _Placed:
    """Choose n_gpu_layers (and expert offload for MoE) the way `--fit` would: the most on the GPUs
    that fits within every GPU's margin. An explicit cfg.gpu_layers (with cfg.cpu_moe_layers: a plan's
    placement replayed) is used as given."""
    arch, cfg, rules = model.arch, model.cfg, model.rules
    split = _split_weights(gpus, rules)
    notes: list[str] = []
    n_total = arch.n_layers + 1

    def usage(ngl: int, cpu_moe: int = 0) -> _Placed:
        sig = model.signature(ngl, split, cpu_moe)
        parts = (*model.gpu_parts(sig, len(gpus)), model.host_part(sig))
        return _Placed(_placement_of(sig), sig, usages_on(parts, gpus, host, rules), notes)

    def gpus_fit_at(ngl: int, cpu_moe: int = 0) -> bool:
        """Whether every GPU keeps its margin with this placement (the host is not looked at: no need to
        work out its part)."""
        parts = model.gpu_parts(model.signature(ngl, split, cpu_moe), len(gpus))
        return all(
            DeviceUsage(g, sp.memory, rules.gpu_margin_bytes, sp.layers, sp.holds_output, False).fits
            for g, sp in zip(gpus, parts, strict=True)
        )

    if not gpus:
        return usage(0)
    if cfg.gpu_layers is not None:
        cpu_moe = min(cfg.cpu_moe_layers, arch.n_layers) if arch.is_moe else 0
        return usage(min(cfg.gpu_layers, n_total), cpu_moe)

    if gpus_fit_at(n_total):
        return usage(n_total)
    if arch.is_moe:
        # llama.cpp --fit's first move: routed experts of the first N layers to the CPU (--n-cpu-moe N), the
        # fewest N that lets every layer's attention and shared weights stay on the GPUs (monotone in N)
        if gpus_fit_at(n_total, arch.n_layers):
            lo, hi = 1, arch.n_layers
            while lo < hi:
                mid = (lo + hi) // 2
                if gpus_fit_at(n_total, mid):
                    hi = mid
                else:
                    lo = mid + 1
            notes.append(
                f"MoE: routed experts of {lo} of {arch.n_layers} layers on the CPU (llama.cpp --n-cpu-moe {lo}), "
                "attention, shared weights and the other experts on the GPUs"
            )
            return usage(n_total, lo)
        for ngl in range(n_total, -1, -1):
            if gpus_fit_at(ngl, arch.n_layers):
                placed = usage(ngl, arch.n_layers)
                notes.append(
                    f"MoE: all routed experts on the CPU (--cpu-moe), {placed.placement.n_gpu_layers} of {n_total} "
                    "layers' attention and shared weights on the GPUs"
                )
                return placed
    # partial offload: the largest n_gpu_layers that fits (monotone: fewer layers never use more VRAM)
    lo, hi = 0, n_total - 1
    best = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if gpus_fit_at(mid):
            best = mid
            lo = mid + 1
        else:
            hi = mid - 1
    notes.append(f"partial offload: {best} of {n_total} layers (incl. output) on the GPUs, the rest on the CPU")
    return usage(best)


def _estimate_llama_cpp(
    spec: ModelSpec,
    weights: ModelWeights,
    cfg: RunConfig,
    gpus: Sequence[Device],
    host: Device,
    rules: EngineRules,
    calibration: Mapping[str, DeviceCalibration] | None,
) -> Estimate:
    arch = spec.arch
    if weights.file_type and weights.file_type.upper().startswith(("AWQ", "GPTQ", "EXL2", "FP8")):
        raise EstimateError(
            f"{cfg.engine} runs GGUF files; {weights.file_type} checkpoints need vLLM (--engine vllm) "
            "or pick a GGUF quant such as Q4_K_M."
        )
    _check_split_mode(cfg, gpus)
    model = _llama_cpp_model(arch, weights, cfg)
    layout = model.layout
    placed = _llama_cpp_place(model, gpus, host)
    placement, usages, notes = placed.placement, placed.usages, placed.notes
    if cfg.split_mode == "tensor":
        notes.append(
            "-sm tensor (EXPERIMENTAL in llama.cpp): speed as the cards share every layer; memory per card is shown "
            "as for -sm layer (tensor mode spreads weights and KV evenly and runs with -fit off: size it yourself)"
        )

    kv_tokens = layout.n_ctx
    speed = estimate_speed(
        model.loads(placed.sig, gpus, host),
        depth_tokens=cfg.depth_tokens,
        parallel=cfg.parallel,
        expert_fraction_one=(arch.experts.active / arch.experts.count) if arch.experts else 1.0,
        calibration=calibration,
        engine=cfg.engine,
        prompt_tokens=cfg.prompt_tokens,
        flash_attn=cfg.flash_attn,
        n_batch=cfg.batch_sizes()[0],
        n_ubatch=cfg.batch_sizes()[1],
        split_mode=cfg.split_mode,
        n_layers=arch.n_layers,
        hidden_size=arch.hidden_size,
    )
    if arch.sliding_window and not layout.swa_applies and any(arch.is_swa(i) for i in range(arch.n_layers)):
        notes.append(
            f"{arch.architecture}: llama.cpp ignores the model's {arch.sliding_window}-token window and caches "
            "the full context"
        )
    elif arch.sliding_window and not cfg.swa_full:
        notes.append(
            f"sliding-window layers keep {layout.cells_swa} cells per slot (window {arch.sliding_window}); "
            "llama.cpp's swa_full would keep the full context"
        )
    host_repack = model.host_repack_bytes(placed.sig)
    if host_repack:
        notes.append(
            f"the CPU backend keeps repacked copies of Q4_0/Q4_K/IQ4_NL weights (+{host_repack / 2**30:.2f} GiB, "
            "llama.cpp's CPU_REPACK buffer); the mapped originals become reclaimable page cache"
        )
    if cfg.kv_type_v.lower() not in ("f16", "f32", "bf16") and not cfg.flash_attn:
        notes.append("llama.cpp needs flash attention for a quantized V cache (-fa on)")
    sources = _sources(
        spec,
        weights,
        cfg,
        f"llama-server of llama.cpp {LLAMA_CPP_BUILD}: graph reserved for n_ubatch tokens with one output per slot "
        "(KQ without flash attention, FFN, masks, the input branch)",
    )
    return Estimate(
        model_ref=spec.ref,
        arch=arch,
        weights=weights,
        config=cfg,
        ctx_effective=layout.n_ctx_seq,
        devices=usages,
        kv_capacity_tokens=kv_tokens,
        speed=speed,
        sources=sources,
        notes=tuple(notes),
        cpu_moe_layers=placement.cpu_moe_layers,
    )


@dataclass(frozen=True)
class _SlotLoad:
    """A DeviceLoad without its device: what one placement has a GPU (or the host) read and compute per token."""

    fam: dict[str, int]
    exp: dict[str, int]
    kv_tok: int  # full-attention layers
    params: int
    active: int
    attn: int  # full-attention layers
    swa_kv_tok: int = 0  # sliding-window layers, read up to swa_cells of depth
    swa_attn: int = 0
    swa_cells: int = 0
    repacked: int = 0  # the host only: weights the CPU backend repacks (Q4_0 / Q4_K / IQ4_NL)


def _slot_loads(
    arch: ModelArch, cfg: RunConfig, layout: KvLayout, table: LayerTable, placement: Placement, n: int
) -> list[_SlotLoad]:
    """Per GPU of `n`, then the host: weight bytes by family (routed experts apart), KV bytes per token of depth,
    parameters multiplied and attention FLOPs per position, for this placement. Sliding-window layers with a
    cache of their own (the window applies and swa_full is off) are counted apart: a slot's step reads at most
    that cache's cells (layout.cells_swa per stream, shared by the slots of a unified cache)."""
    fam: list[dict[str, int]] = [defaultdict(int) for _ in range(n + 1)]
    exp: list[dict[str, int]] = [defaultdict(int) for _ in range(n + 1)]
    params = [0] * (n + 1)
    active = [0] * (n + 1)
    kv_tok = [0] * (n + 1)
    attn = [0] * (n + 1)
    repacked = [0] * (n + 1)
    frac = (arch.experts.active / arch.experts.count) if arch.experts else 1.0
    per_layer_kv = kv_bytes_per_token(arch, cfg.kv_type_k, cfg.kv_type_v) // max(1, arch.n_layers)
    attn_per_layer = attention_flops_per_position(arch)
    windowed = layout.swa_applies and not cfg.swa_full
    swa_kv_tok = [0] * (n + 1)
    swa_attn = [0] * (n + 1)
    swa_cells = layout.cells_swa * layout.n_stream // max(1, cfg.parallel) if windowed else 0
    for i in range(arch.n_layers):
        d = placement.layer_device.get(i, -1)
        slot = n if d < 0 else d
        lf = table.layer_family_bytes.get(i, {})
        ef = table.layer_expert_family_bytes.get(i, {})
        exp_slot = n if i < placement.cpu_moe_layers else slot
        for f, b in lf.items():
            e = ef.get(f, 0)
            fam[slot][f] += b - e
            fam[exp_slot][f] += e
            exp[exp_slot][f] += e
        lp = table.layer_params.get(i, 0)
        ep = table.layer_expert_params.get(i, 0)
        params[slot] += lp - ep
        params[exp_slot] += ep
        active[slot] += lp - ep
        active[exp_slot] += int(ep * frac)
        if windowed and arch.is_swa(i):
            swa_kv_tok[slot] += per_layer_kv
            swa_attn[slot] += attn_per_layer
        else:
            kv_tok[slot] += per_layer_kv
            attn[slot] += attn_per_layer
        if slot == n:
            repacked[n] += table.layer_repack_bytes.get(i, 0)
    out_slot = n if placement.output_device < 0 else placement.output_device
    for f, b in table.output_family_bytes.items():
        fam[out_slot][f] += b
    params[out_slot] += table.output_params
    active[out_slot] += table.output_params
    return [
        _SlotLoad(
            dict(fam[i]),
            dict(exp[i]),
            kv_tok[i],
            params[i],
            active[i],
            attn[i],
            swa_kv_tok[i],
            swa_attn[i],
            swa_cells,
            repacked[i],
        )
        for i in range(n + 1)
    ]


def _check_split_mode(cfg: RunConfig, gpus: Sequence[Device]) -> None:
    """llama.cpp's -sm tensor refuses to start without flash attention or with a quantized KV cache, and is
    llama.cpp's alone (docs/multi-gpu.md, pinned b11434)."""
    if cfg.split_mode == "layer":
        return
    if cfg.engine != "llama.cpp":
        raise EstimateError(f"split mode {cfg.split_mode} is llama.cpp's (-sm); {cfg.engine} splits its own way.")
    if len(gpus) < 2:
        raise EstimateError(f"split mode {cfg.split_mode} needs at least two GPUs.")
    if not cfg.flash_attn:
        raise EstimateError("llama.cpp -sm tensor requires flash attention (-fa on).")
    if {cfg.kv_type_k.lower(), cfg.kv_type_v.lower()} - {"f16", "bf16", "f32"}:
        raise EstimateError("llama.cpp -sm tensor does not support a quantized KV cache; use f16.")


# ------------------------------------------------------------------------------------------ vLLM


def _estimate_vllm(
    spec: ModelSpec,
    weights: ModelWeights,
    cfg: RunConfig,
    gpus: Sequence[Device],
    host: Device,
    rules: EngineRules,
    calibration: Mapping[str, DeviceCalibration] | None,
) -> Estimate:
    """vLLM: tensor parallel over all given GPUs; each instance reserves utilization × TOTAL memory,
    loads its weight shard, profiles the activation peak, and gives every remaining byte to KV pages
    (vllm/v1/worker/gpu_worker.py determine_available_memory; vllm/v1/core/kv_cache_utils.py)."""
    arch = spec.arch
    if not gpus:
        raise EstimateError("vLLM needs at least one GPU (--gpu ID); use --engine llama.cpp for CPU inference.")
    ft = (weights.file_type or "").upper()
    if spec.format == "gguf" and weights.exact:
        raise EstimateError(
            f"{spec.ref} is a GGUF file; plan vLLM with a safetensors checkpoint (hf:owner/name or a catalog "
            "id with --quant BF16 / AWQ-INT4 / GPTQ-INT4 / FP8)."
        )
    if not weights.exact and ft and not ft.startswith(("AWQ", "GPTQ", "FP8", "BF16", "F16", "F32")):
        raise EstimateError(
            f"vLLM does not serve llama.cpp quant {weights.file_type}; use --quant BF16, AWQ-INT4, GPTQ-INT4 or FP8."
        )
    tp = len(gpus)
    if arch.n_heads % tp:
        raise EstimateError(
            f"vLLM tensor parallel size {tp} must divide the {arch.n_heads} attention heads of {arch.name}."
        )
    util = cfg.gpu_memory_utilization
    if not 0.0 < util <= 1.0:
        raise EstimateError(f"--gpu-memory-utilization must be in (0, 1], got {util}.")
    weights_per_gpu = -(-weights.total_bytes // tp)
    profile = vllm_profile(cfg.vllm_version, cfg.ctx, gpus[0].capacity_bytes, gpus[0].name)
    activation = vllm_activation_bytes(arch, tp, profile.max_num_batched_tokens, max(1, cfg.parallel))
    overhead = rules.cuda_graph_bytes + rules.non_torch_bytes
    # the part of the overhead the KV cache is sized around; V0 captured the graphs afterwards, out of the rest
    in_budget = overhead if profile.cuda_graphs_in_budget else rules.non_torch_bytes
    page = vllm_page_bytes(arch, _vllm_kv_dtype(cfg), tp)
    usages: list[DeviceUsage] = []
    kv_blocks = None
    for g in gpus:
        reserved = int(g.capacity_bytes * util)
        kv_avail = reserved - weights_per_gpu - activation - in_budget
        blocks = max(0, kv_avail // page) if page else 0
        kv_blocks = blocks if kv_blocks is None else min(kv_blocks, blocks)
        mem = MemoryParts(weights_per_gpu, max(0, kv_avail), activation, overhead)
        margin = max(0, g.capacity_bytes - reserved - (overhead - in_budget))
        usages.append(DeviceUsage(g, mem, margin, tuple(range(arch.n_layers)), True, False))
    host_mem = MemoryParts(0, 0, 0, rules.host_runtime_bytes)
    usages.append(DeviceUsage(host, host_mem, rules.host_margin_bytes, (), False, True))
    kv_tokens = (kv_blocks or 0) * VLLM_BLOCK_SIZE
    notes = [
        f"vLLM reserves {util:.2f} × total memory on each of {tp} GPU(s) and gives what weights and "
        f"activations leave to the KV cache: {kv_tokens} tokens",
        f"memory profile of {profile.detail}",
    ]
    need = cfg.ctx * max(1, cfg.parallel)
    if kv_tokens < need:
        notes.append(
            f"KV holds {kv_tokens} tokens < ctx × parallel = {need}: vLLM "
            + ("starts, but fewer slots run at full length" if kv_tokens >= cfg.ctx else "refuses to start")
        )
        # every GPU of the TP group would need this much more KV memory for all slots at full length
        short = -(-(need - kv_tokens) // VLLM_BLOCK_SIZE) * page
        usages = [replace(u, shortfall_bytes=short) if u.device.is_gpu else u for u in usages]
    loads = []
    frac = (arch.experts.active / arch.experts.count) if arch.experts else 1.0
    fam: dict[str, int] = defaultdict(int)
    exp_fam: dict[str, int] = defaultdict(int)
    for t in weights.tensors:
        fam[weight_family(t.ggml_type)] += t.n_bytes // tp
        if t.is_expert:
            exp_fam[weight_family(t.ggml_type)] += t.n_bytes // tp
    active = int(weights.n_params - (weights.n_params - _dense_params(weights)) * (1 - frac)) // tp
    kv_tok = kv_bytes_per_token(arch) // tp
    for g in gpus:
        loads.append(DeviceLoad(g, dict(fam), dict(exp_fam), kv_tok, weights.n_params // tp, active))
    # TP ranks work in parallel: model them as one device with the summed bandwidth
    merged = DeviceLoad(
        replace(
            gpus[0],
            bandwidth_gbs=sum(g.bandwidth_gbs for g in gpus),
            compute_tflops=sum(g.compute_tflops for g in gpus),
        ),
        {k: v * tp for k, v in fam.items()},
        {k: v * tp for k, v in exp_fam.items()},
        kv_tok * tp,
        weights.n_params,
        active * tp,
        attention_flops_per_position(arch) * arch.n_layers,
    )
    speed = estimate_speed(
        [merged],
        depth_tokens=cfg.depth_tokens,
        parallel=cfg.parallel,
        expert_fraction_one=frac,
        calibration=calibration,
        engine="vllm",
        prompt_tokens=cfg.prompt_tokens,
        flash_attn=True,
        n_layers=arch.n_layers,
        hidden_size=arch.hidden_size,
        tensor_parallel=tp,
        nvlink=all(nvlink_device(g) for g in gpus),
        cpu_s_per_seq=vllm_cpu_s_per_seq(cfg.vllm_version),
    )
    return Estimate(
        model_ref=spec.ref,
        arch=arch,
        weights=weights,
        config=cfg,
        ctx_effective=cfg.ctx,
        devices=tuple(usages),
        kv_capacity_tokens=kv_tokens,
        speed=speed,
        sources=_sources(
            spec,
            weights,
            cfg,
            f"{profile.detail} profile run: max_num_batched_tokens activations + sampler logits",
        ),
        notes=tuple(notes),
    )


def _dense_params(weights: ModelWeights) -> int:
    return sum(t.n_elements for t in weights.tensors if not t.is_expert)


def _vllm_kv_dtype(cfg: RunConfig) -> str:
    k = cfg.kv_type_k.lower()
    return "fp8" if k in ("fp8", "q8_0") else "auto"


# ------------------------------------------------------------------------------------------ provenance


def _sources(spec: ModelSpec, weights: ModelWeights, cfg: RunConfig, compute_detail: str) -> dict[str, Source]:
    kv_detail = (
        f"layers × cells × kv_heads × (head_dim_k + head_dim_v) × bytes/element, llama.cpp {LLAMA_CPP_BUILD} "
        "padding and SWA rules (src/llama-kv-cache*.cpp)"
        if cfg.engine != "vllm"
        else "vLLM paging: (utilization × total − weights − activations − graphs) // page × block_size"
    )
    return {
        "architecture": spec.arch.source,
        "weights": weights.source,
        "kv_cache": Source("formula", kv_detail),
        "compute": Source("formula", compute_detail),
        "overhead": Source("catalog", rules_for(cfg.engine).source),
    }


# ------------------------------------------------------------------------------------------ suggestions


def _suggestions(
    spec: ModelSpec,
    weights: ModelWeights,
    cfg: RunConfig,
    gpus: Sequence[Device],
    host: Device,
    quant: str | None,
    est: Estimate,
) -> list[Suggestion]:
    """What would fit instead: the largest context, a smaller quant, a quantized KV cache, GPU layers."""
    out: list[Suggestion] = []

    def fits(c: RunConfig, q: str | None) -> bool:
        try:
            return estimate(spec, c, gpus, host, quant=q, suggest=False).fits
        except EstimateError:
            return False

    # largest context (multiple of 256) that fits
    if fits(replace(cfg, ctx=256), quant):
        lo, hi = 1, max(1, cfg.ctx // 256)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(replace(cfg, ctx=mid * 256), quant):
                lo = mid
            else:
                hi = mid - 1
        out.append(Suggestion("ctx", str(lo * 256), f"largest context that fits: {lo * 256} tokens"))
    # quantized KV cache
    if cfg.engine != "vllm" and cfg.kv_type_k == "f16" and est.memory.kv_cache_bytes > 0:  # encoders keep none
        c8 = replace(cfg, kv_type_k="q8_0", kv_type_v="q8_0", flash_attn=True)
        if fits(c8, quant):
            out.append(Suggestion("kv_type", "q8_0", "q8_0 KV cache (-ctk q8_0 -ctv q8_0 -fa on) fits"))
    # a smaller quant (only when the weights are not fixed by a file)
    if not weights.exact and cfg.engine != "vllm":
        current = (weights.file_type or "").upper()
        ladder = list(QUANT_LADDER)
        start = ladder.index(current) + 1 if current in ladder else 0
        for q in ladder[start:]:
            if fits(cfg, q):  # derived weights at q (resolve_weights, memoized)
                out.append(Suggestion("quant", q, f"best quant that fits at ctx {cfg.ctx}: {q}"))
                break
    # partial offload is already what llama.cpp does; say how many layers fit on the GPUs
    if gpus and cfg.engine != "vllm" and est.devices[-1].fits is False:
        out.append(
            Suggestion(
                "ram",
                f"{(est.devices[-1].used_bytes + est.devices[-1].margin_bytes) / 2**30:.0f}",
                "more host RAM (GiB) would hold the offloaded layers",
            )
        )
    return out
