"""The built-in catalog of models, quants, hardware and engines (data in catalog/*.yaml); all figures sourced.

from planner.catalog import load_catalog
cat = load_catalog()
cat.arch("llama-3-70b"); cat.gpu("rtx-4090").memory_mib; cat.quant_bpw("Q4_K_M", "llama-3.1-8b")
"""

from __future__ import annotations

from planner.catalog.load import Catalog, catalog_dir, load_catalog, load_catalog_dir, tensor_type_bpw
from planner.catalog.schema import (
    CpuEntry,
    DiskEntry,
    EngineEntry,
    EngineRule,
    GpuEntry,
    ModelEntry,
    QuantEntry,
    RamPrice,
)

__all__ = [
    "Catalog",
    "CpuEntry",
    "DiskEntry",
    "EngineEntry",
    "EngineRule",
    "GpuEntry",
    "ModelEntry",
    "QuantEntry",
    "RamPrice",
    "catalog_dir",
    "load_catalog",
    "load_catalog_dir",
    "tensor_type_bpw",
]
