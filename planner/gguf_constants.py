"""gguf-py's constants without importing the gguf package (whose __init__ pulls in numpy: ~0.2 s of start-up).

`gguf_constants()` returns the module with `GGML_QUANT_SIZES`, `GGMLQuantizationType`, `GGUFValueType`,
`LlamaFileType`, `GGUF_MAGIC` ... `gguf/constants.py` imports only `enum` and `typing`, so the installed
package's own file is executed on its own (same file, same values: still one source of truth). When
`gguf` is already imported, its `gguf.constants` is returned instead.

Use it where only the tables are needed (bits per weight, type names, header parsing); writing or
reading tensor data still imports gguf itself. `ggml_block_sizes()` is the one place agiplan reads
`GGML_QUANT_SIZES` for sizing (bits per weight, tensor bytes, KV cache rows).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, ModuleType

_STANDALONE_NAME = "planner._gguf_constants_standalone"


@functools.cache
def gguf_constants() -> ModuleType:
    """The gguf-py constants module (see the module docstring)."""
    loaded = sys.modules.get("gguf.constants")
    if loaded is not None:
        return loaded
    try:
        spec = importlib.util.find_spec("gguf")  # locates the package without executing its __init__
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        path = Path(locations[0]) / "constants.py" if locations else None
        if path is None or not path.is_file():
            raise ImportError("gguf/constants.py not found as a file")
        file_spec = importlib.util.spec_from_file_location(_STANDALONE_NAME, path)
        if file_spec is None or file_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[_STANDALONE_NAME] = module  # dataclass/enum machinery looks the module up by name
        try:
            file_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(_STANDALONE_NAME, None)
            raise
        return module
    except (ImportError, OSError, SyntaxError):
        import gguf  # a zipped or unusual install: fall back to the whole package

        constants: ModuleType = gguf.constants
        return constants


@functools.cache
def ggml_block_sizes() -> Mapping[str, tuple[int, int]]:
    """GGML tensor type name (F32, Q8_0, Q4_K ...) → (elements per block, bytes per block), from
    `gguf.GGML_QUANT_SIZES` in gguf-py's order (Q4_K: (256, 144); ggml_row_size = n / block × bytes)."""
    gguf = gguf_constants()
    return MappingProxyType({t.name: (int(b), int(s)) for t, (b, s) in gguf.GGML_QUANT_SIZES.items()})
