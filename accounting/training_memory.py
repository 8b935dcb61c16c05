"""Training memory per GPU: weights, gradients, optimizer state and activations, in bytes.

Pure Python (no torch). One micro-batch is ``b`` sequences of ``n`` tokens (N = b n). All figures are BYTES
(1 GB = 1e9); element counts are multiplied by the bytes of the dtype each tensor is held in.

Weights, gradients, optimizer (ZeRO's mixed-precision convention, arXiv 1910.02054): per parameter
``weights`` bytes (bf16 2, fp8 1, fp32 4), gradients (2, or 4 with ``fp32_grads``: Megatron's
accumulation in fp32, 18 bytes per parameter in all) and optimizer state: AdamW keeps an fp32 master copy
(unless the weights are fp32) and two fp32 moments (12 bytes: 2 + 2 + 12 = 16 bytes per parameter),
SGD-momentum a master copy and one moment, Adafactor a master copy and its factored second moment
(``4 (rows + cols)`` bytes per ``rows x cols`` matrix, counted here as ``8 / d_model`` bytes per parameter,
every matrix taken as d_model on its short side); ``adamw-bf16`` keeps both moments in bf16 (DeepSeek-V3,
section 3.3.3: 4 + 2 + 2 bytes). ZeRO stage 1 shards the optimizer state over the
data-parallel group, stage 2 also the gradients, stage 3 (FSDP) also the weights.

Parallel layout: ``tp`` tensor parallel (with ``sp`` sequence parallel), ``pp`` pipeline stages (1F1B:
stage s holds ``min(pp - s, micro_batches)`` micro-batches of activations), ``ep`` expert parallel (the
routed experts of a layer divided over ``ep`` GPUs; their gradients and optimizer state sharded over the
expert-data-parallel group ``dp / ep``), ``dp = gpus / (tp pp)``. The per-GPU figure is the worst stage.

Activations are `accounting.activations`; the settings and the layout `accounting.training_settings`; the
smallest GPU count that fits `accounting.gpu_count`; the ``train-memory`` command `accounting.train_memory_cli`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache

from .activations import activation_bytes, block_saved, head_saved, sum_saved
from .hardware import Hardware
from .params import block_params, norm_params
from .shapes import ModelShape
from .training_settings import WEIGHT_DTYPES, Layout, Settings, check_layout, check_settings


@dataclass(frozen=True)
class StageMemory:
    """Bytes on one GPU of pipeline stage ``stage`` (layers ``first_layer`` .. ``last_layer - 1``)."""

    stage: int
    first_layer: int
    last_layer: int
    in_flight: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    activation_bytes_by_component: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass(frozen=True)
class TrainingMemory:
    """The planner's answer: the worst stage's bytes per GPU and whether they fit ``capacity_bytes``."""

    layout: Layout
    settings: Settings
    stage: StageMemory
    stages: tuple
    capacity_bytes: float | None
    recompute_working_bytes: float

    @property
    def per_gpu_bytes(self) -> dict:
        s = self.stage
        return {"weights": s.weights, "gradients": s.gradients, "optimizer": s.optimizer,
                "activations": s.activations, "total": s.total}

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_bytes is None else self.stage.total <= self.capacity_bytes

    def to_dict(self) -> dict:
        """The stable JSON of ``train-memory`` (field by field in docs/accounting.md)."""
        lay = self.layout
        return {"per_gpu_bytes": self.per_gpu_bytes, "capacity_bytes": self.capacity_bytes, "fits": self.fits,
                "layout": {"gpus": lay.gpus, "tp": lay.tp, "pp": lay.pp, "ep": lay.ep, "dp": lay.dp,
                           "zero": lay.zero, "sp": lay.sp},
                "activation_bytes_by_component": dict(self.stage.activation_bytes_by_component),
                "worst_stage": {"stage": self.stage.stage, "layers": [self.stage.first_layer,
                                                                       self.stage.last_layer],
                                "micro_batches_in_flight": self.stage.in_flight},
                "recompute_working_bytes": self.recompute_working_bytes,
                "settings": dataclasses.asdict(self.settings)}


# ----- weights, gradients, optimizer -------------------------------------------------------------------------
def state_bytes_per_parameter(s: Settings, d_model: int) -> dict:
    """Bytes per parameter before sharding: ``weights``, ``gradients``, ``optimizer`` (see the docstring)."""
    w = WEIGHT_DTYPES[s.weights]
    g = 4 if (s.fp32_grads or s.weights == "fp32") else 2
    master = 0 if s.weights == "fp32" else 4
    opt = {"adamw": master + 8, "adamw-bf16": master + 4, "sgd": master + 4,
           "adafactor": master + 8 / d_model}[s.optimizer]
    return {"weights": w, "gradients": g, "optimizer": opt}


def sharded_state_bytes(params: float, per_param: dict, zero: int, group: int) -> dict:
    """``params`` parameters' state on one GPU under ZeRO ``zero`` over a group of ``group`` GPUs."""
    div = {k: (group if zero >= stage else 1) for k, stage in (("optimizer", 1), ("gradients", 2), ("weights", 3))}
    return {k: params * per_param[k] / div[k] for k in ("weights", "gradients", "optimizer")}


def stage_layers(shape: ModelShape, pp: int) -> list[tuple[int, int]]:
    """Contiguous layer ranges of the ``pp`` stages (the first ``L mod pp`` stages get one layer more)."""
    base, extra = divmod(shape.n_layers, pp)
    out, start = [], 0
    for s in range(pp):
        n = base + (1 if s < extra else 0)
        out.append((start, start + n))
        start += n
    return out


@lru_cache(maxsize=4096)
def stage_parameters(shape: ModelShape, first: int, last: int, is_first: bool, is_last: bool) -> dict:
    """Parameters of a stage split into ``dense`` (replicated over dp, sharded by tp) and ``experts``."""
    dense = experts = 0
    for i in range(first, last):
        b = block_params(shape, shape.is_moe_layer(i))
        experts += b["routed_experts"]
        dense += sum(b.values()) - b["routed_experts"]
    V, d = shape.vocab_size, shape.d_model
    if is_first:
        dense += V * d
    if is_last:
        dense += norm_params(shape) + (0 if shape.tied_embeddings else V * d)
        if shape.tied_embeddings and not is_first:
            dense += V * d
    return {"dense": dense, "experts": experts}


# ----- the plan ----------------------------------------------------------------------------------------------
def plan(shape: ModelShape, settings: Settings, layout: Layout = Layout(),
         gpu: Hardware | None = None) -> TrainingMemory:
    """Bytes per GPU of every pipeline stage; the answer is the stage with the largest total."""
    check_settings(shape, settings)
    check_layout(shape, layout)
    lay, s = layout, settings
    per_param = state_bytes_per_parameter(s, shape.d_model)
    m = s.micro_batches if s.micro_batches is not None else lay.pp
    stages = []
    for idx, (first, last) in enumerate(stage_layers(shape, lay.pp)):
        is_first, is_last = idx == 0, idx == lay.pp - 1
        p = stage_parameters(shape, first, last, is_first, is_last)
        dense = sharded_state_bytes(p["dense"] / lay.tp, per_param, lay.zero, lay.dp)
        experts = sharded_state_bytes(p["experts"] / (lay.tp * lay.ep), per_param, lay.zero, lay.dp // lay.ep)
        acts = activation_bytes(shape, s, range(first, last), head=is_last, tp=lay.tp, sp=lay.sp, ep=lay.ep)
        in_flight = min(lay.pp - idx, m)
        if is_last:   # the head's tensors live for one micro-batch only (its backward follows at once)
            head = sum_saved(head_saved(shape, s), lay.tp, lay.sp)
            body = {k: v - head.get(k, 0) for k, v in acts.items()}
            acts = {k: body.get(k, 0) * in_flight + head.get(k, 0) for k in set(body) | set(head)}
        else:
            acts = {k: v * in_flight for k, v in acts.items()}
        acts = {k: v for k, v in sorted(acts.items()) if v}
        stages.append(StageMemory(idx, first, last, in_flight, dense["weights"] + experts["weights"],
                                  dense["gradients"] + experts["gradients"],
                                  dense["optimizer"] + experts["optimizer"], sum(acts.values()), acts))
    worst = max(stages, key=lambda st: st.total)
    working = 0.0
    if s.recompute == "full":
        plain = dataclasses.replace(s, recompute="none")
        working = max(sum(sum_saved(block_saved(shape, i, plain, lay.ep), lay.tp, lay.sp).values())
                      for i in range(worst.first_layer, worst.last_layer))
    capacity = gpu.memory_bytes if gpu is not None else None
    return TrainingMemory(lay, s, worst, tuple(stages), capacity, working)
