"""Serving economics: a roofline of decode and prefill for one replica, memory fit, and $ per million tokens.

Pure Python (no torch). Three modules, each importable on its own; this package names their public API:

* `accounting.serving.layout`: `Layout` (GPUs, tp, redundant experts, precisions), what one GPU holds,
  `memory_fit` (a `MemoryFit`), `smallest_fitting_gpus`, `dense_equivalent`.
* `accounting.serving.traffic`: expert coverage under uniform routing (`expected_distinct_experts`, ...),
  expert- and tensor-parallel bytes per token, `LinkTimes`.
* `accounting.serving.roofline`: `decode_step` (a `DecodeStep`), `prefill` (a `PrefillStep`), $ per million
  tokens, and `serve` (a `ServeRow`: one row of ``python -m accounting serve``).

Flops count TWO per multiply-add (``_flops_fma2``); bytes are bytes (1 GB = 1e9), times seconds, money US
dollars. The reproductions of DeepSeek's disclosed serving and of the note's case D live in
`accounting.reproduce`.
"""
from .layout import (PRECISIONS, Layout, MemoryFit, dense_equivalent, expert_copies_per_gpu,
                     kv_cache_bytes_per_sequence_per_gpu, memory_fit, smallest_fitting_gpus, weight_params_per_gpu,
                     workspace_bytes)
from .roofline import (BOUNDS, DecodePart, DecodeStep, PrefillStep, ServeRow, StepTimes, decode_flops_by_part,
                       decode_step, note_method_usd_per_million_tokens, prefill, prefill_flops_per_token, serve,
                       usd_per_million_input_tokens, usd_per_million_tokens)
from .traffic import (LinkTimes, expected_bins_reached, expected_distinct_experts, expected_distinct_experts_per_gpu,
                      expert_parallel_bytes_per_token, tensor_parallel_bytes_per_token)

__all__ = ["PRECISIONS", "Layout", "MemoryFit", "dense_equivalent", "expert_copies_per_gpu",
           "kv_cache_bytes_per_sequence_per_gpu", "memory_fit", "smallest_fitting_gpus", "weight_params_per_gpu",
           "workspace_bytes", "BOUNDS", "DecodePart", "DecodeStep", "PrefillStep", "ServeRow", "StepTimes",
           "decode_flops_by_part", "decode_step", "note_method_usd_per_million_tokens", "prefill",
           "prefill_flops_per_token", "serve", "usd_per_million_input_tokens", "usd_per_million_tokens", "LinkTimes",
           "expected_bins_reached", "expected_distinct_experts", "expected_distinct_experts_per_gpu",
           "expert_parallel_bytes_per_token", "tensor_parallel_bytes_per_token"]
