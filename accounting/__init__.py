"""Analytic accounting of transformer parameters, flops, memory, Chinchilla sizes and cost.

Pure Python (no torch). Every flop figure states its convention: ``flops_per_mac=1`` (the note's,
a multiply-add is one flop) or ``2`` (hardware peaks and MFU).
"""
from .shapes import ModelShape, ShapeError
from .params import ParameterCount, count_parameters, total_parameters, active_parameters
from .flops import MAC, FLOP, forward_flops, training_flops, decode_flops_per_token

__all__ = ["ModelShape", "ShapeError", "ParameterCount", "count_parameters", "total_parameters",
           "active_parameters", "MAC", "FLOP", "forward_flops", "training_flops", "decode_flops_per_token"]
