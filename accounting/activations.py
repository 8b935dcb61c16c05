"""Activation bytes: the tensors autograd saves for backward in one forward of one micro-batch, tensor by
tensor, as our torch models (``dense``, ``moe``) save them on the CPU (pure Python, no torch).

One micro-batch is ``b`` sequences of ``n`` tokens (N = b n). All figures are BYTES (1 GB = 1e9): element
counts times the bytes of the dtype each tensor is held in.

``precision``: ``fp32``; ``bf16`` = bf16 autocast as ``experiments.train`` runs it (fp32 parameters and
residual stream, norms in fp32, every linear's input cast to bf16 by autocast: one saved copy per linear that
reads it); ``bf16-pure`` = the model's parameters in bf16, no autocast (the convention of Megatron-LM and
DeepSeek; our decomposed RMSNorm still upcasts its input to fp32). The routed experts are priced for the
expert ``backend`` (``loop`` or ``grouped``; they save differently). MHA/GQA attention runs the fused (flash)
kernel, which saves q, k, v, the output and the log-sum-exp; MLA with unequal query and value head widths
runs the materialising ``math`` kernel on the CPU (scores kept), ``attention_kernel`` overrides. Recompute:
``none``; ``full`` (each block's input only, as ``torch.utils.checkpoint`` per block does; one block's
activations are live again during its backward, ``recompute_working_bytes`` of
`accounting.training_memory`); ``selective`` (priced, not built in torch: the attention core and the norms
are recomputed, so their outputs, statistics and the scores are not kept, as Korthikanti et al. 2022 and
DeepSeek-V3's RMSNorm recompute do).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

from .shapes import ModelShape
from .training_settings import Settings, check_settings

INT64, FP32 = 8, 4


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
    """Attention of one block (without its pre-norm), MHA/GQA or MLA (`mla_saved`)."""
    if shape.attention == "mla":
        return mla_saved(shape, s)
    sh, b, n = shape, s.micro_batch, s.seq_len
    N, e, kernel = b * n, _act_bytes(s), _resolve_kernel(shape, s)
    rope = sh.position == "rope" and s.precision == "bf16"   # autocast: the fp32 tables cast per call
    c = "attention"
    out: list[Saved] = []
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


def mla_saved(shape: ModelShape, s: Settings) -> list[Saved]:
    """Multi-head latent attention of one block (without its pre-norm): the latents, their norms, the
    up-projected q, k, v and the kernel's tensors."""
    sh, b, n = shape, s.micro_batch, s.seq_len
    N, e, kernel = b * n, _act_bytes(s), _resolve_kernel(shape, s)
    rope = sh.position == "rope" and s.precision == "bf16"   # autocast: the fp32 tables cast per call
    c = "attention"
    out: list[Saved] = []
    H, nope, p, v, r = sh.n_heads, sh.qk_nope_head_dim, sh.qk_rope_head_dim, sh.v_head_dim, sh.kv_lora_rank
    if s.recompute == "selective":   # DeepSeek-V3: norms and up-projections recomputed from the latents
        return [Saved(c, "q latent", N * sh.q_lora_rank, e, False),
                Saved(c, "kv latent and rope key", N * (r + p), e, False),
                Saved(c, "log-sum-exp", b * H * n, FP32), Saved(c, "output (o input)", N * H * v, e)]
    out += _linear_inputs(c, "x (q and kv down-projections)", N * sh.d_model, 2, s, sharded=False)
    if sh.q_lora_rank:
        rq = sh.q_lora_rank
        if s.precision == "fp32" or (s.precision == "bf16-pure" and sh.norm_kind != "rmsnorm"):
            out += [Saved(c, "q latent", N * rq, _res(s), False)]
        else:
            out += [Saved(c, "q latent (fp32 copy for its norm)", N * rq, FP32, False)]
        out += norm_saved(sh, c, N, rq, s, fresh_input=False)
        out += _linear_inputs(c, "normed q latent", N * rq, 1, s)
    if s.precision == "fp32" or (s.precision == "bf16-pure" and sh.norm_kind != "rmsnorm"):
        out += [Saved(c, "kv latent and rope key", N * (r + p), _res(s), False)]
    else:
        out += [Saved(c, "kv latent (fp32 copy for its norm)", N * r, FP32, False)]
    out += norm_saved(sh, c, N, r, s, fresh_input=False)
    out += _linear_inputs(c, "normed kv latent", N * r, 1, s)
    if rope:
        out += [Saved(c, "rope cos/sin (bf16 copies)", 4 * n * p, 2, False)]
    if kernel == "math":
        out += [Saved(c, "scaled q (math kernel, fp32)", N * H * (nope + p), FP32),
                Saved(c, "scaled k (math kernel, fp32)", N * H * (nope + p), FP32),
                Saved("attention_scores", "softmax (math kernel, fp32)", b * H * n * n, FP32),
                Saved(c, "v (math kernel, fp32)", N * H * v, FP32)]
    else:
        out += [Saved(c, "q", N * H * (nope + p), e), Saved(c, "k", N * H * (nope + p), e),
                Saved(c, "kv up-projection (v)", N * H * (nope + v), e),
                Saved(c, "log-sum-exp", b * H * n, FP32), Saved(c, "output", N * H * v, e)]
    if kernel == "math":   # the math kernel's output is fp32: cast again
        out += _linear_inputs(c, "attention output (o input)", N * H * v, 1, s)
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
