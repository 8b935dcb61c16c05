"""Dense decoder-only transformer built from an ``accounting.ModelShape`` (nanoGPT-style, torch only).

``Transformer(shape)`` -> ``forward(idx, targets=None) -> ModelOutput``; ``generate`` with a KV cache;
``experiments.bench.decode_vs_recompute.time_decode`` times cached decode against full recompute.
"""
from .block import Block
from .ffn import FFN
from .kv_cache import KVCache
from .model import ModelOutput, Transformer, check_buildable, sample

__all__ = ["Block", "FFN", "KVCache", "ModelOutput", "Transformer", "check_buildable", "sample"]
