"""Analytic accounting of transformer parameters, flops, memory, Chinchilla sizes and cost.

Pure Python (no torch). Every flop figure states its convention: ``flops_per_mac=2`` (``FLOP``: hardware
peaks, MFU, ``python -m accounting``; the default everywhere) or ``1`` (``MAC``: the note's, a multiply-add is
one flop, used where the note is reproduced, `accounting.reproduce`).

One function per ``python -m accounting`` command (`accounting.api`), each returning a frozen dataclass whose
``to_dict()`` is the command's JSON: `table3`, `deepseek`, `parameters` (the ``params`` command), `price` (the
``cost`` command), `serve`, `serving_check`, `train_memory`, `scaling_laws` (the ``scaling`` command). `load_shape` takes a shipped name, a file or a folder (`accounting.config_files`).
"""
from .shapes import ModelShape, ShapeError
from .params import ParameterCount, count_parameters, total_parameters, active_parameters
from .flops import MAC, FLOP, forward_flops, training_flops, decode_flops_per_token
from .memory import kv_cache_elements, kv_cache_bytes, activation_elements, note_kv_cache_elements
from .chinchilla import (TOKENS_PER_PARAMETER, chinchilla_tokens, chinchilla_tokens_for_shape, note_optimal_tokens,
                         LossFit, HOFFMANN_2022, BESIROGLU_2024)
from .cost import GpuRate, NOTE_GPU, gpu_rate, gpu_hours, gpu_years, cost_usd, usd_per_flop, cost_at_year
from .hf_config import shape_from_hf_config, load_shipped, shipped_configs
from .config_files import ConfigSpecError, load_shape, published_counts
from .api import (Result, Table3Result, DeepSeekResult, ParamsResult, CostResult, ServeResult, ServingCheckResult,
                  TrainMemoryReport, ScalingResult, table3, deepseek, parameters, price, serve, serving_check,
                  train_memory, scaling_laws)

__all__ = ["ModelShape", "ShapeError", "ParameterCount", "count_parameters", "total_parameters",
           "active_parameters", "MAC", "FLOP", "forward_flops", "training_flops", "decode_flops_per_token",
           "kv_cache_elements", "kv_cache_bytes", "activation_elements", "note_kv_cache_elements",
           "TOKENS_PER_PARAMETER", "chinchilla_tokens", "chinchilla_tokens_for_shape", "note_optimal_tokens",
           "LossFit", "HOFFMANN_2022", "BESIROGLU_2024", "GpuRate", "NOTE_GPU", "gpu_rate", "gpu_hours",
           "gpu_years", "cost_usd", "usd_per_flop", "cost_at_year", "shape_from_hf_config", "load_shape",
           "load_shipped", "shipped_configs", "ConfigSpecError", "published_counts",
           "Result", "Table3Result", "DeepSeekResult", "ParamsResult", "CostResult", "ServeResult",
           "ServingCheckResult", "TrainMemoryReport", "table3", "deepseek", "parameters", "price", "serve",
           "serving_check", "train_memory", "ScalingResult", "scaling_laws"]
