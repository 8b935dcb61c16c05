"""Model shapes that accounting ships (``accounting/configs/*.json``, loaded by ``accounting.hf_config``).

Returns an empty dict while accounting does not ship them yet; the report then says which module
produces them.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from accounting.shapes import ModelShape

CONFIG_DIR = Path(__import__("accounting").__file__).resolve().parent / "configs"


@lru_cache(maxsize=None)
def shipped_shapes() -> dict[str, ModelShape]:
    """``{name: ModelShape}`` for every shipped config (file stem as name)."""
    try:
        from accounting import hf_config
    except ImportError:
        return {}
    loader = next((getattr(hf_config, n) for n in ("load_shape", "shape_from_file", "load_config", "from_file",
                                                   "load", "shape_from_hf_config", "from_hf_config")
                   if hasattr(hf_config, n)), None)
    if loader is None:
        return {}
    out = {}
    for path in sorted(CONFIG_DIR.glob("*.json")):
        try:
            shape = loader(path)
        except Exception:  # noqa: BLE001  (a config accounting cannot load is left out, not fatal)
            continue
        if isinstance(shape, ModelShape):
            out[path.stem] = shape
    return out
