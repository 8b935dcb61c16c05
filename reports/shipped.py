"""Model shapes that accounting ships (``accounting/configs/*.json``, loaded by ``accounting.hf_config``)."""
from __future__ import annotations

from functools import lru_cache

from accounting.hf_config import CONFIG_DIR, load_shipped, shipped_configs
from accounting.shapes import ModelShape

__all__ = ["CONFIG_DIR", "shipped_shapes"]


@lru_cache(maxsize=None)
def shipped_shapes() -> dict[str, ModelShape]:
    """``{name: ModelShape}`` for every shipped config (file stem as name, ``max_position_embeddings``
    as seq_len; callers pass their own window to the flop counts)."""
    return {name: load_shipped(name) for name in shipped_configs()}
