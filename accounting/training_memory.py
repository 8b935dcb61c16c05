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

Activations: the tensors autograd saves for backward in one forward of one micro-batch, tensor by tensor,
as our torch models (``dense``, ``moe``) save them on the CPU. ``precision``: ``fp32``; ``bf16`` = bf16
autocast as ``experiments.train`` runs it (fp32 parameters and residual stream, norms in fp32, every
linear's input cast to bf16 by autocast: one saved copy per linear that reads it); ``bf16-pure`` = the
model's parameters in bf16, no autocast (the convention of Megatron-LM and DeepSeek; our decomposed RMSNorm
still upcasts its input to fp32). The routed
experts are priced for the expert ``backend`` (``loop`` or ``grouped``; they save differently). MHA/GQA
attention runs the fused (flash) kernel, which saves q, k, v, the output and the log-sum-exp; MLA with
unequal query and value head widths runs the materialising ``math`` kernel on the CPU (scores kept),
``attention_kernel`` overrides. Recompute: ``none``; ``full`` (each block's input only, as
``torch.utils.checkpoint`` per block does; one block's activations are live again during its backward,
``recompute_working_bytes``); ``selective`` (priced, not built in torch: the attention core and the norms
are recomputed, so their outputs, statistics and the scores are not kept, as Korthikanti et al. 2022 and
DeepSeek-V3's RMSNorm recompute do).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

from .hardware import Hardware
from .params import block_params, norm_params
from .shapes import ModelShape

PRECISIONS = ("fp32", "bf16", "bf16-pure")
WEIGHT_DTYPES = {"bf16": 2, "fp8": 1, "fp32": 4}
OPTIMIZERS = ("adamw", "adamw-bf16", "sgd", "adafactor")
RECOMPUTES = ("none", "selective", "full")
BACKENDS = ("loop", "grouped")
KERNELS = ("auto", "flash", "math")
INT64, FP32 = 8, 4


class LayoutError(ValueError):
    """A layout, size or setting the model cannot take; the message is one line."""


# ----- settings and results --------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class Saved:
    """One tensor autograd keeps: ``elements`` x ``bytes_per_element``; ``sharded``: divided by tp."""

    component: str
    name: str
    elements: int
    bytes_per_element: float
    sharded: bool = True

    @property
    def bytes(self) -> float:
        return self.elements * self.bytes_per_element


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


# ----- activations -------------------------------------------------------------------------------------------
def _resolve_kernel(shape: ModelShape, s: Settings) -> str:
    if s.attention_kernel != "auto":
        return s.attention_kernel
    if shape.attention == "mla" and shape.qk_nope_head_dim + shape.qk_rope_head_dim != shape.v_head_dim:
        return "math"      # the CPU's fused kernel needs equal query and value head widths
    return "flash"


def _res(s: Settings) -> int:
    """Bytes of the residual stream, the norms' inputs and outputs: fp32 unless the parameters are bf16."""
    return 2 if s.precision == "bf16-pure" else FP32


def _linear_inputs(component: str, name: str, elements: int, readers: int, s: Settings,
                   sharded: bool = False) -> list[Saved]:
    """The tensor ``readers`` linears read: kept once (fp32, or bf16 when pure); under autocast one bf16 copy
    per reader."""
    if s.precision != "bf16":
        return [Saved(component, name, elements, _res(s), sharded)]
    return [Saved(component, f"{name} (bf16 copy {i + 1})", elements, 2, sharded) for i in range(readers)]


def norm_saved(shape: ModelShape, component: str, tokens: int, width: int, s: Settings,
               fresh_input: bool = True) -> list[Saved]:
    """A norm over ``width``: its input (when not already kept) and its statistics, in fp32.

    LayerNorm keeps the input, mean and rstd; RMSNorm (decomposed on the CPU) the input, rsqrt and the
    normalised input. Under selective recompute only the input is kept."""
    rms = shape.norm_kind == "rmsnorm"
    if not fresh_input:
        out = []
    elif rms and s.precision == "bf16-pure" and s.recompute != "selective":
        # the decomposed RMSNorm upcasts a bf16 input to fp32 first
        out = [Saved(component, "norm input (fp32 copy)", tokens * width, FP32, False)]
    else:
        out = [Saved(component, "norm input", tokens * width, _res(s), False)]
    if s.recompute == "selective":
        return out
    if rms:
        return out + [Saved(component, "rsqrt", tokens, FP32, False),
                      Saved(component, "normalised", tokens * width, FP32, False)]
    stat = 2 if s.precision == "bf16-pure" else FP32    # LayerNorm's statistics in its input's dtype
    return out + [Saved(component, "mean", tokens, stat, False), Saved(component, "rstd", tokens, stat, False)]


def _act_bytes(s: Settings) -> int:
    return 4 if s.precision == "fp32" else 2   # matmul outputs


def attention_saved(shape: ModelShape, s: Settings) -> list[Saved]:
    """Attention of one block (without its pre-norm), MHA/GQA or MLA."""
    sh, b, n = shape, s.micro_batch, s.seq_len
    N, e, kernel = b * n, _act_bytes(s), _resolve_kernel(shape, s)
    rope = sh.position == "rope" and s.precision == "bf16"   # autocast: the fp32 tables cast per call
    c = "attention"
    out: list[Saved] = []
    if sh.attention == "mla":
        H, nope, p, v, r = sh.n_heads, sh.qk_nope_head_dim, sh.qk_rope_head_dim, sh.v_head_dim, sh.kv_lora_rank
        if s.recompute == "selective":   # DeepSeek-V3: norms and up-projections recomputed from the latents
            return [Saved(c, "q latent", N * sh.q_lora_rank, e, False),
                    Saved(c, "kv latent and rope key", N * (r + p), e, False),
                    Saved(c, "log-sum-exp", b * H * n, FP32), Saved(c, "output (o input)", N * H * v, e)]
        if s.recompute != "selective":
            out += _linear_inputs(c, "x (q and kv down-projections)", N * sh.d_model, 2, s, sharded=False)
        if sh.q_lora_rank:
            rq = sh.q_lora_rank
            if s.precision == "fp32" or (s.precision == "bf16-pure" and sh.norm_kind != "rmsnorm"):
                out += [Saved(c, "q latent", N * rq, _res(s), False)]
            else:
                out += [Saved(c, "q latent (fp32 copy for its norm)", N * rq, FP32, False)]
            out += norm_saved(sh, c, N, rq, s, fresh_input=False)
            if s.recompute != "selective":
                out += _linear_inputs(c, "normed q latent", N * rq, 1, s)
        if s.precision == "fp32" or (s.precision == "bf16-pure" and sh.norm_kind != "rmsnorm"):
            out += [Saved(c, "kv latent and rope key", N * (r + p), _res(s), False)]
        else:
            out += [Saved(c, "kv latent (fp32 copy for its norm)", N * r, FP32, False)]
        out += norm_saved(sh, c, N, r, s, fresh_input=False)
        if s.recompute != "selective":
            out += _linear_inputs(c, "normed kv latent", N * r, 1, s)
        if rope:
            out += [Saved(c, "rope cos/sin (bf16 copies)", 4 * n * p, 2, False)]
        if kernel == "math" and s.recompute != "selective":
            out += [Saved(c, "scaled q (math kernel, fp32)", N * H * (nope + p), FP32),
                    Saved(c, "scaled k (math kernel, fp32)", N * H * (nope + p), FP32),
                    Saved("attention_scores", "softmax (math kernel, fp32)", b * H * n * n, FP32),
                    Saved(c, "v (math kernel, fp32)", N * H * v, FP32)]
        else:
            out += [Saved(c, "q", N * H * (nope + p), e), Saved(c, "k", N * H * (nope + p), e),
                    Saved(c, "kv up-projection (v)", N * H * (nope + v), e),
                    Saved(c, "log-sum-exp", b * H * n, FP32), Saved(c, "output", N * H * v, e)]
        if kernel == "math" and s.recompute != "selective":   # the math kernel's output is fp32: cast again
            out += _linear_inputs(c, "attention output (o input)", N * H * v, 1, s)
        return out
    H, KV, hd = sh.n_heads, sh.n_kv_heads, sh.head_dim
    if s.recompute != "selective":
        out += _linear_inputs(c, "x (q, k, v input)", N * sh.d_model, 3, s, sharded=False)
    if rope:
        out += [Saved(c, "rope cos/sin (bf16 copies)", 4 * n * hd, 2, False)]
    if kernel == "math" and s.recompute != "selective":
        out += [Saved(c, "scaled q (math kernel, fp32)", N * H * hd, FP32),
                Saved(c, "scaled k (math kernel, fp32)", N * H * hd, FP32),
                Saved("attention_scores", "softmax (math kernel, fp32)", b * H * n * n, FP32),
                Saved(c, "v (math kernel, fp32)", N * H * hd, FP32)]
        out += _linear_inputs(c, "attention output (o input)", N * H * hd, 1, s)
    else:
        out += [Saved(c, "q", N * H * hd, e), Saved(c, "k", N * KV * hd, e), Saved(c, "v", N * KV * hd, e),
                Saved(c, "log-sum-exp", b * H * n, FP32), Saved(c, "output (o input)", N * H * hd, e)]
    return out


def ffn_hidden_saved(shape: ModelShape, component: str, rows: int, width: int, s: Settings,
                     e: int | None = None) -> list[Saved]:
    """An FFN's hidden tensors: GELU the up output and the activation; SwiGLU gate, up, silu and product."""
    e = _act_bytes(s) if e is None else e
    names = ("up output", "gelu output") if shape.ffn_kind == "gelu" else \
        (("gate output", "up output") if s.fused_swiglu else ("gate output", "up output", "silu output", "product"))
    return [Saved(component, nm, rows * width, e) for nm in names]


def dense_ffn_saved(shape: ModelShape, width: int, s: Settings, component: str = "ffn",
                    input_counted: bool = False) -> list[Saved]:
    """A dense FFN (or the shared experts) on the normed input [N, d]."""
    N = s.micro_batch * s.seq_len
    out: list[Saved] = []
    if not (input_counted and s.precision != "bf16") and s.recompute != "selective":
        out += _linear_inputs(component, "x (FFN input)", N * shape.d_model, shape.ffn_matrices - 1, s,
                              sharded=False)
    return out + ffn_hidden_saved(shape, component, N, width, s)


def routed_assignments(shape: ModelShape, s: Settings) -> int:
    """Kept (token, expert) pairs in one MoE layer: k N, at most E ceil(C N k / E) with a capacity factor."""
    if s.routed_assignments is not None:
        return s.routed_assignments
    N = s.micro_batch * s.seq_len
    A = shape.top_k * N
    if s.capacity_factor is not None:
        A = min(A, shape.n_experts * math.ceil(s.capacity_factor * N * shape.top_k / shape.n_experts))
    return A


def router_saved(shape: ModelShape, s: Settings) -> list[Saved]:
    """The router of one MoE layer (fp32 scores; the group-limited selection keeps nothing)."""
    N, E, k, c = s.micro_batch * s.seq_len, shape.n_experts, shape.top_k, "router"
    out: list[Saved] = [Saved(c, "x (router input)", N * shape.d_model, 2 if s.precision == "bf16" else _res(s),
                              False)]
    out.append(Saved(c, "softmax probabilities" if shape.router_scoring == "softmax" else "sigmoid scores",
                     N * E, FP32, False))
    out.append(Saved(c, "top-k indices (int64)", N * k, INT64, False))
    if shape.router_norm_topk:
        out += [Saved(c, "weight sum", N, FP32, False), Saved(c, "clamped weight sum", N, FP32, False),
                Saved(c, "gathered weights", N * k, FP32, False)]
    if s.router_aux_loss:
        if shape.router_scoring == "sigmoid":
            out.append(Saved(c, "score sum (probabilities)", N, FP32, False))
        out.append(Saved(c, "load fractions", E, FP32, False))
    if s.router_z_loss:
        out += [Saved(c, "logits (fp32)", N * E, FP32, False), Saved(c, "logsumexp", N, FP32, False)]
    return out


def experts_saved(shape: ModelShape, s: Settings, ep: int = 1) -> list[Saved]:
    """The routed experts of one MoE layer for the expert backend (A kept assignments, f = d_expert)."""
    N, d, f, A = s.micro_batch * s.seq_len, shape.d_model, shape.d_expert, routed_assignments(shape, s)
    dropless = s.capacity_factor is None and s.routed_assignments is None
    c, e, swiglu = "routed_experts", _act_bytes(s), shape.ffn_kind == "swiglu"
    out: list[Saved] = []
    if ep > 1:   # the received tokens are the local experts' input (in place of the x the router keeps)
        out.append(Saved("moe_dispatch", "tokens received by the local experts", A * d, 1 if s.fp8_cache else e,
                         False))
    if s.backend == "grouped":
        ex = _res(s)  # the experts run in x's dtype: the norm output, fp32 under autocast too
        out += [Saved("moe_dispatch", "sorted order / kept ids (int64)", A, INT64, False),
                Saved("moe_dispatch", "sorted routing weights", A, ex, False),
                Saved("moe_dispatch", "token of each sorted row (int64)", A, INT64, False),
                Saved("moe_dispatch", "combine permutation (int64)", A, INT64, False),
                Saved("moe_dispatch", "group end offsets (int32)", shape.n_experts, 4, False)]
        if not dropless:
            out.append(Saved("moe_dispatch", "first kept row per token (int64)", N, INT64, False))
        if s.precision == "bf16" and ep == 1:
            out.append(Saved(c, "x (fp32, regathered in backward)", N * d, FP32, False))
        fold_h = f <= d
        n_hidden = 3 if (swiglu or fold_h) else 2
        if s.fp8_cache:   # the SwiGLU/GELU inputs in FP8, its output recomputed
            out.append(Saved(c, "expert hidden inputs (fp8)", (n_hidden - 1) * A * f, 1))
        else:
            out.append(Saved(c, f"{n_hidden} hidden tensors [A, f]", n_hidden * A * f, ex))
        return out
    # loop: per expert gather, matmuls, weight, scatter-add
    out += [Saved("moe_dispatch", "gather / weight / scatter indices (3 x int64)", 3 * A, INT64, False)]
    if not dropless:
        out.append(Saved("moe_dispatch", "keep mask (bool)", N * shape.top_k, 1, False))
    readers = 2 if swiglu else 1
    if s.precision != "bf16":
        out.append(Saved(c, "gathered tokens", A * d, _res(s)))
    else:
        out += [Saved(c, f"gathered tokens (bf16 copy {i + 1})", A * d, 2) for i in range(readers)]
    out += ffn_hidden_saved(shape, c, A, f, s)
    out += [Saved(c, "routing weight per row", A, _res(s)), Saved(c, "down-projection output", A * d, e),
            Saved(c, "weighted output", A * d, _res(s))]
    return out


def block_saved(shape: ModelShape, layer: int, s: Settings, ep: int = 1) -> list[Saved]:
    """Everything one block keeps for backward (its two pre-norms included)."""
    N, d = s.micro_batch * s.seq_len, shape.d_model
    if s.recompute == "full":
        return [Saved("block_inputs", "block input (checkpoint)", N * d, _res(s), False)]
    out = norm_saved(shape, "norms", N, d, s) + attention_saved(shape, s) + norm_saved(shape, "norms", N, d, s)
    if not shape.is_moe_layer(layer):
        return out + dense_ffn_saved(shape, shape.d_ff, s)
    out += router_saved(shape, s) + experts_saved(shape, s, ep)
    if shape.n_shared_experts:
        out += dense_ffn_saved(shape, shape.n_shared_experts * shape.d_shared_expert, s, "shared_experts",
                               input_counted=True)
    return out


def head_saved(shape: ModelShape, s: Settings) -> list[Saved]:
    """Final norm, output head and the loss (log-softmax in fp32, plus nll's 4-byte total weight)."""
    N, d = s.micro_batch * s.seq_len, shape.d_model
    out = norm_saved(shape, "final_norm", N, d, s.__class__(**{**dataclasses.asdict(s), "recompute": "none"}))
    out.append(Saved("head", "head input", N * d, 2 if s.precision == "bf16" else _res(s), False))
    out += [Saved("loss", "log-softmax (fp32)", N * shape.vocab_size, FP32), Saved("loss", "total weight", 1, FP32,
                                                                                   False)]
    return out


def sum_saved(items: list[Saved], tp: int = 1, sp: bool = False) -> dict:
    """Bytes by component; tensors inside the tensor-parallel region divided by tp, the rest by tp under sp."""
    out: dict[str, float] = {}
    for t in items:
        div = tp if (t.sharded or sp) else 1
        out[t.component] = out.get(t.component, 0) + t.bytes / div
    return out


@lru_cache(maxsize=4096)
def _layer_bytes(shape: ModelShape, layer: int, s: Settings, tp: int, sp: bool, ep: int) -> tuple:
    """(component, bytes) of one block, cached: a block's tensors depend only on whether it is an MoE layer."""
    return tuple(sum_saved(block_saved(shape, layer, s, ep), tp, sp).items())


def activation_bytes(shape: ModelShape, s: Settings, layers: range | None = None, head: bool = True,
                     tp: int = 1, sp: bool = False, ep: int = 1) -> dict:
    """Activation bytes by component of one micro-batch over ``layers`` (default all), with the head."""
    check_settings(shape, s)
    out: dict[str, float] = {}
    first_moe = shape.first_dense_layers if shape.is_moe else shape.n_layers
    for i in (range(shape.n_layers) if layers is None else layers):
        kind = 0 if i < first_moe else first_moe     # the first block of its kind stands for all of them
        for k, v in _layer_bytes(shape, kind, s, tp, sp, ep):
            out[k] = out.get(k, 0) + v
    if head:
        for k, v in sum_saved(head_saved(shape, s), tp, sp).items():
            out[k] = out.get(k, 0) + v
    return out


def total_activation_bytes(shape: ModelShape, s: Settings, **kw) -> float:
    """Sum of :func:`activation_bytes` (what the byte-for-byte test compares with torch)."""
    return sum(activation_bytes(shape, s, **kw).values())


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


def candidate_layouts(shape: ModelShape, gpus: int, gpus_per_node: int = 8):
    """Every layout of ``gpus`` GPUs: tp up to a node dividing the heads, pp up to the layers, ep dividing
    the experts and dp, ZeRO 0-3; the least model parallelism (tp x pp) first, then the lowest ZeRO stage."""
    out = []
    for tp in _divisors(gpus):
        if tp > gpus_per_node:
            continue
        for pp in _divisors(gpus // tp):
            lay0 = Layout(gpus, tp, pp)
            try:
                check_layout(shape, lay0)
            except LayoutError:
                continue
            eps = [e for e in _divisors(lay0.dp) if shape.is_moe and shape.n_experts % e == 0] or [1]
            for ep in eps:
                for zero in range(4):
                    out.append(Layout(gpus, tp, pp, ep, zero, sp=tp > 1))
    out.sort(key=lambda l: (l.tp * l.pp, l.zero, -l.ep, l.tp))
    return out


def _divisors(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if n % i == 0]


def gpu_counts(gpus_per_node: int, limit: int = 1 << 16):
    """GPU counts tried by ``--gpus auto``: 1, 2, 4, ... up to a node, then whole nodes."""
    g = 1
    while g < gpus_per_node:
        yield g
        g *= 2
    k = 1
    while k * gpus_per_node <= limit:
        yield k * gpus_per_node
        k += 1 if k < 8 else k // 8


def auto_layout(shape: ModelShape, settings: Settings, gpu: Hardware, limit: int = 1 << 16) -> tuple:
    """(TrainingMemory, reason): the smallest GPU count with a layout that fits ``gpu``'s memory."""
    if gpu.memory_bytes is None:
        raise LayoutError(f"--gpus auto needs the memory of the GPU; {gpu.name} has none recorded")
    for g in gpu_counts(gpu.gpus_per_node, limit):
        for lay in candidate_layouts(shape, g, gpu.gpus_per_node):
            r = plan(shape, settings, lay, gpu)
            if r.fits:
                why = (f"{g} GPUs is the smallest count tried (1, 2, 4, ... a node, then whole nodes) with a layout "
                       f"that fits {gpu.memory_bytes / 1e9:g} GB; among its layouts this one has the least model "
                       f"parallelism (tp x pp = {lay.tp * lay.pp}), then the lowest ZeRO stage ({lay.zero}), then "
                       f"the widest expert parallelism (ep = {lay.ep})")
                return r, why
    raise LayoutError(f"no layout of up to {limit} {gpu.name} GPUs fits this model at this micro-batch")


# ----- the command ``python -m accounting train-memory`` ---------------------------------------------------
def train_memory_arguments(p) -> None:
    """The options of ``train-memory`` after ``--config`` (accounting.cli registers the command)."""
    p.add_argument("--seq-len", type=int, required=True, help="tokens per sequence n")
    p.add_argument("--micro-batch", type=int, required=True, help="sequences per micro-batch b")
    p.add_argument("--gpus", default="1", help="GPU count, or 'auto': the smallest count and layout that fit")
    for name in ("tp", "pp", "ep"):
        p.add_argument(f"--{name}", type=int, default=1, help=f"{name} degree (default 1)")
    p.add_argument("--sp", action="store_true", help="sequence parallel with tp (activations of the norms /tp)")
    p.add_argument("--zero", type=int, default=1, choices=(0, 1, 2, 3), help="ZeRO stage (default 1)")
    p.add_argument("--micro-batches", type=int, default=None, help="micro-batches per step (default pp)")
    p.add_argument("--recompute", choices=RECOMPUTES, default="none")
    p.add_argument("--weights", choices=tuple(WEIGHT_DTYPES), default="bf16", help="compute weights (default bf16)")
    p.add_argument("--fp32-grads", action="store_true", help="fp32 gradient accumulation (Megatron's 18 B/param)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--activations", choices=PRECISIONS, default="bf16",
                   help="activation precision: bf16 autocast as our models run it (default) or fp32")
    p.add_argument("--backend", choices=BACKENDS, default="grouped", help="expert backend priced (default grouped)")
    p.add_argument("--attention", choices=KERNELS, default="auto", help="attention kernel (auto: as the CPU runs it)")
    p.add_argument("--capacity-factor", type=float, default=None,
                   help="routed experts' capacity factor (default dropless)")
    p.add_argument("--fp8-cache", action="store_true",
                   help="DeepSeek-V3's FP8 caching of the MoE inputs (SwiGLU output recomputed)")
    p.add_argument("--fused-swiglu", action="store_true",
                   help="SwiGLU keeps only its inputs, its output recomputed (Megatron's fused kernel)")
    p.add_argument("--gpu", default="h100-sxm", help="preset name or a GPU spec YAML (default h100-sxm)")


def settings_from_args(args) -> Settings:
    return Settings(seq_len=args.seq_len, micro_batch=args.micro_batch, precision=args.activations,
                    weights=args.weights, fp32_grads=args.fp32_grads, optimizer=args.optimizer,
                    recompute=args.recompute, backend=args.backend, attention_kernel=args.attention,
                    micro_batches=args.micro_batches, capacity_factor=args.capacity_factor,
                    fp8_cache=args.fp8_cache, fused_swiglu=args.fused_swiglu)


@dataclass(frozen=True)
class TrainMemoryReport:
    """The result of ``train-memory``: the plan of model ``model`` (loaded from ``source``) and, for
    ``--gpus auto``, why that layout was chosen. ``to_dict()`` is the command's JSON."""

    model: str
    source: str
    plan: TrainingMemory
    layout_reason: str = ""

    def to_dict(self) -> dict:
        return {"model": self.model, "source": self.source, **self.plan.to_dict(), "layout_reason": self.layout_reason}


def train_memory(shape: ModelShape, settings: Settings, gpus: int | str = 1, *, tp: int = 1, pp: int = 1,
                 ep: int = 1, zero: int = 1, sp: bool = False, gpu: str = "h100-sxm",
                 source: str = "ModelShape") -> TrainMemoryReport:
    """``python -m accounting train-memory`` from Python: the per-GPU bytes of training ``shape`` with
    ``settings`` on ``gpus`` GPUs in the layout (tp, pp, ep, ZeRO stage), or ``gpus='auto'``: the smallest
    count and layout that fit ``gpu`` (a preset name or a GPU spec YAML)."""
    from .hardware import resolve_gpu
    hardware = resolve_gpu(gpu)
    check_settings(shape, settings)
    if settings.micro_batches is not None and settings.micro_batches < 1:
        raise LayoutError(f"--micro-batches must be >= 1, got {settings.micro_batches}")
    if str(gpus).lower() == "auto":
        r, why = auto_layout(shape, settings, hardware)
        return TrainMemoryReport(shape.name, source, r, why)
    try:
        g = int(gpus)
    except ValueError:
        raise LayoutError(f"--gpus must be a positive integer or 'auto', got {gpus!r}") from None
    return TrainMemoryReport(shape.name, source, plan(shape, settings, Layout(g, tp, pp, ep, zero, sp), hardware))


def _gb(x: float) -> str:
    return f"{x / 1e9:,.2f} GB"


def text(d: dict) -> str:
    """A readable report of one plan, from `TrainMemoryReport.to_dict()`."""
    lay, s, st = d["layout"], d["settings"], d["worst_stage"]
    lines = [f"train-memory: {d['model']}, {s['micro_batch']} x {s['seq_len']} tokens per micro-batch, "
             f"{s['precision']} activations ({s['backend']} experts), {s['weights']} weights, {s['optimizer']}, "
             f"recompute {s['recompute']}",
             f"layout: {lay['gpus']} GPUs = dp {lay['dp']} x tp {lay['tp']}{' (sp)' if lay['sp'] else ''} x pp "
             f"{lay['pp']}, ep {lay['ep']}, ZeRO-{lay['zero']}; worst stage {st['stage']} (layers {st['layers'][0]}-"
             f"{st['layers'][1] - 1}, {st['micro_batches_in_flight']} micro-batch(es) in flight)"]
    if d["layout_reason"]:
        lines.append(f"why: {d['layout_reason']}")
    for k, v in d["per_gpu_bytes"].items():
        lines.append(f"  {k:<12s}{_gb(v):>14s}")
    if d["capacity_bytes"] is not None:
        lines.append(f"  {'capacity':<12s}{_gb(d['capacity_bytes']):>14s}  -> "
                     f"{'fits' if d['fits'] else 'does NOT fit'}")
    lines.append("activations by component (per GPU):")
    for k, v in sorted(d["activation_bytes_by_component"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {k:<18s}{_gb(v):>14s}")
    if d["recompute_working_bytes"]:
        lines.append(f"  (+ {_gb(d['recompute_working_bytes'])} live while one block is recomputed)")
    return "\n".join(lines)


def wall_clock(gpu_hours: float, gpus: int) -> dict:
    """``cost --gpus G``: the run's wall-clock time on G GPUs, ``gpu_hours / G`` (at the MFU priced)."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise LayoutError(f"--gpus must be a positive integer, got {gpus!r}")
    return {"gpus": gpus, "wall_clock_hours": gpu_hours / gpus, "wall_clock_days": gpu_hours / gpus / 24}


def wall_clock_line(d: dict) -> str:
    """The line ``cost --gpus G`` adds to its table (empty without ``--gpus``)."""
    if "wall_clock_days" not in d:
        return ""
    return f"\nwall clock: {d['wall_clock_days']:,.1f} days on {d['gpus']:,} GPUs (GPU-hours / GPUs, at the MFU above)"
