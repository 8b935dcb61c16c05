"""What a training-memory question fixes besides the model: `Settings` (sequence length, micro-batch,
activation precision, weight dtype, optimizer, recompute, expert backend, attention kernel, ...) and the GPU
`Layout` (tp, pp, ep, ZeRO stage, sequence parallel), with the checks that refuse, in one line
(`LayoutError`), what the planner cannot price.

What each setting means: `accounting.training_memory` (weights, gradients, optimizer state, the parallel
layout) and `accounting.activations` (precision, recompute, expert backend, attention kernel).
"""
from __future__ import annotations

from dataclasses import dataclass

from .shapes import ModelShape

PRECISIONS = ("fp32", "bf16", "bf16-pure")
WEIGHT_DTYPES = {"bf16": 2, "fp8": 1, "fp32": 4}
OPTIMIZERS = ("adamw", "adamw-bf16", "sgd", "adafactor")
RECOMPUTES = ("none", "selective", "full")
BACKENDS = ("loop", "grouped")
KERNELS = ("auto", "flash", "math")


class LayoutError(ValueError):
    """A layout, size or setting the model cannot take; the message is one line."""


# ----- the layout and the settings --------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """How the GPUs are divided: ``gpus = dp x tp x pp``; ``ep`` divides dp (experts only)."""

    gpus: int = 1
    tp: int = 1
    pp: int = 1
    ep: int = 1
    zero: int = 0
    sp: bool = False

    @property
    def dp(self) -> int:
        return self.gpus // (self.tp * self.pp)


@dataclass(frozen=True)
class Settings:
    """What is priced besides the model and the layout (see the module docstring)."""

    seq_len: int
    micro_batch: int = 1
    precision: str = "bf16"
    weights: str = "bf16"
    fp32_grads: bool = False
    optimizer: str = "adamw"
    recompute: str = "none"
    backend: str = "grouped"
    attention_kernel: str = "auto"
    micro_batches: int | None = None      # per step on each pipeline; None: pp (enough to fill 1F1B)
    capacity_factor: float | None = None  # routed experts keep at most ceil(C N k / E) each
    routed_assignments: int | None = None # kept (token, expert) pairs per MoE layer and micro-batch
    router_aux_loss: bool = True          # the Switch balance loss is in the loss (its graph is kept)
    router_z_loss: bool = True            # the router z-loss is in the loss
    fp8_cache: bool = False               # DeepSeek-V3: MoE inputs kept in FP8, SwiGLU output recomputed
    fused_swiglu: bool = False            # SwiGLU keeps only its inputs (gate, up): Megatron's fused kernel


# ----- checks ----------------------------------------------------------------------------------------------
def check_settings(shape: ModelShape, s: Settings) -> None:
    """One LayoutError for a setting the planner cannot price."""
    if isinstance(s.micro_batch, bool) or not isinstance(s.micro_batch, int) or s.micro_batch < 1:
        raise LayoutError(f"--micro-batch must be an integer >= 1, got {s.micro_batch!r}")
    if isinstance(s.seq_len, bool) or not isinstance(s.seq_len, int) or s.seq_len < 1:
        raise LayoutError(f"--seq-len must be an integer >= 1, got {s.seq_len!r}")
    for name, value, choices in (("precision", s.precision, PRECISIONS), ("weights", s.weights, WEIGHT_DTYPES),
                                 ("optimizer", s.optimizer, OPTIMIZERS), ("recompute", s.recompute, RECOMPUTES),
                                 ("backend", s.backend, BACKENDS), ("attention_kernel", s.attention_kernel, KERNELS)):
        if value not in choices:
            raise LayoutError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    if s.capacity_factor is not None and not s.capacity_factor > 0:
        raise LayoutError(f"capacity factor must be > 0, got {s.capacity_factor}")


def check_layout(shape: ModelShape, lay: Layout) -> None:
    """One LayoutError for a layout the model cannot take (the CLI prints it and exits 2)."""
    for name in ("gpus", "tp", "pp", "ep"):
        v = getattr(lay, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LayoutError(f"--{name} must be an integer >= 1, got {v!r}")
    if lay.zero not in (0, 1, 2, 3):
        raise LayoutError(f"--zero must be 0, 1, 2 or 3, got {lay.zero!r}")
    heads = [("heads", shape.n_heads)] + ([("KV heads", shape.n_kv_heads)] if shape.attention != "mla" else [])
    for what, n in heads:
        if n % lay.tp:
            raise LayoutError(f"--tp {lay.tp} does not divide the {n} {what}")
    if lay.pp > shape.n_layers:
        raise LayoutError(f"--pp {lay.pp} exceeds the {shape.n_layers} layers")
    if lay.gpus % (lay.tp * lay.pp):
        raise LayoutError(f"--gpus {lay.gpus} is not a multiple of tp x pp = {lay.tp * lay.pp}: the layout "
                          "cannot fill it")
    if lay.ep > 1:
        if not shape.is_moe:
            raise LayoutError(f"--ep {lay.ep} needs an MoE model (this one is dense)")
        if shape.n_experts % lay.ep:
            raise LayoutError(f"--ep {lay.ep} does not divide the {shape.n_experts} experts")
        if lay.dp % lay.ep:
            raise LayoutError(f"--ep {lay.ep} does not divide the data-parallel size {lay.dp} "
                              f"(gpus / (tp x pp))")
