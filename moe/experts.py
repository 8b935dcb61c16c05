"""Routed experts behind one interface, several ways to compute them.

Every backend maps ``(x [N, d], indices [N, k], weights [N, k], keep [N, k] | None) -> y [N, d]`` with
``y[t] = sum_j keep[t, j] * weights[t, j] * expert_{indices[t, j]}(x[t])``. An expert is the model's FFN
kind at width f = ``d_expert``: GELU ``down(gelu(up x))`` or SwiGLU ``down(silu(gate x) * up x)``.

* ``loop``: the readable reference; per expert gather its tokens, matmul, scatter-add.
* ``grouped``: sort assignments by expert, one grouped GEMM per matrix (``torch._grouped_mm``, int32
  cumulative end offsets; on a CPU the products whose outputs are temporaries run per group into reused
  scratch rows), forward and backward written out in ``moe.sorted_experts``: the expert-order permutation is
  used both ways (gather, and a fused gather-and-sum back to token order, ``F.embedding_bag``, in place of
  ``index_add_``), the routing weight is folded into the down projection's input or output, whichever is
  smaller. Its strides must be multiples of 16 bytes, so d and f must be multiples of 8 (bf16) or 4 (fp32).
* ``megablocks``: ``megablocks.layers.dmoe.dMoE``'s dropless experts (grouped GEMM), CUDA only, optional.

``loop`` and ``grouped`` share parameters and names (``w_up``, ``w_gate``, ``w_down``; [E, d, f],
[E, d, f], [E, f, d]), so their state dicts are interchangeable. Parameters: ``E * ffn_matrices * d * f``;
flops: ``2 * ffn_matrices * d * f`` per kept assignment (2 per multiply-add).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from accounting.shapes import ModelShape
from dense.model import INIT_STD, residual_init_std

# absolute imports: scripts/moe_layer_against_commit.py execs this file standalone
from moe import compiled_ops
from moe.sorted_experts import SortedExperts, bounds_of

BACKENDS = ("loop", "grouped", "megablocks")
MEGABLOCKS_INSTALL = ("pip install --no-build-isolation --no-deps megablocks stanford-stk grouped_gemm "
                      "(on a CUDA machine; they compile against the installed torch)")


def flatten_assignments(indices: torch.Tensor, weights: torch.Tensor, keep: torch.Tensor | None):
    """(token [A], expert [A], weight [A]) for the A kept (token, expert) pairs, token-major order."""
    N, k = indices.shape
    token = torch.arange(N, device=indices.device).repeat_interleave(k)
    expert, weight = indices.reshape(-1), weights.reshape(-1)
    if keep is not None:
        kept = keep.reshape(-1)
        token, expert, weight = token[kept], expert[kept], weight[kept]
    return token, expert, weight


class ExpertWeights(nn.Module):
    """Stacked weights of E experts: w_up [E, d, f], w_gate [E, d, f] (SwiGLU only), w_down [E, f, d]."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        E, d, f = shape.n_experts, shape.d_model, shape.d_expert
        self.n_experts, self.kind = E, shape.ffn_kind
        self.w_up = nn.Parameter(torch.empty(E, d, f))
        self.w_gate = nn.Parameter(torch.empty(E, d, f)) if self.kind == "swiglu" else None
        self.w_down = nn.Parameter(torch.empty(E, f, d))
        for w in (self.w_up, self.w_gate):
            if w is not None:
                nn.init.normal_(w, mean=0.0, std=INIT_STD)
        nn.init.normal_(self.w_down, mean=0.0, std=residual_init_std(shape))


class LoopExperts(ExpertWeights):
    """Reference backend: a Python loop over experts (gather, three or two mm, scatter-add).

    The stacked weights are split ONCE per forward (``unbind``): indexing ``self.w_up[e]`` per expert
    would give each expert's slice its own backward, each zero-filling a full [E, d, f] gradient (O(E^2)
    work in backward); ``unbind``'s backward stacks the E slice gradients once (O(E))."""

    def forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        token, expert, weight = flatten_assignments(indices, weights, keep)
        y = torch.zeros_like(x)
        w_up, w_down = self.w_up.unbind(0), self.w_down.unbind(0)
        w_gate = self.w_gate.unbind(0) if self.kind == "swiglu" else None
        for e in range(self.n_experts):
            sel = torch.where(expert == e)[0]
            if sel.numel() == 0:
                continue
            h = x[token[sel]]                                            # [n_e, d]
            if self.kind == "swiglu":
                h = F.silu(h @ w_gate[e]) * (h @ w_up[e])                 # [n_e, f]
            else:
                h = F.gelu(h @ w_up[e])
            y.index_add_(0, token[sel], (h @ w_down[e]) * weight[sel, None])
        return y


class GroupedExperts(ExpertWeights):
    """Sort the kept assignments by expert and run each matrix as one grouped GEMM (see ``moe.sorted_experts``).

    ``fold``: where the routing weight is multiplied in, ``"auto"`` (the down projection's input when
    d_expert <= d_model, else its output), ``"h"`` or ``"out"``."""

    fold = "auto"
    per_group_on_cpu = True   # False: torch._grouped_mm for every product, as on other devices

    def __init__(self, shape: ModelShape):
        super().__init__(shape)
        if not hasattr(torch, "_grouped_mm"):
            raise ValueError(f"backend='grouped' needs torch._grouped_mm (torch >= 2.9; this is "
                             f"{torch.__version__}); use backend='loop'")
        for name, width in (("d_model", shape.d_model), ("d_expert", shape.d_expert)):
            if width % 8:
                raise ValueError(f"backend='grouped' needs {name} to be a multiple of 8 (torch._grouped_mm "
                                 f"needs 16-byte strides in bf16), got {width}; use backend='loop'")
        self.d_model, self.d_expert = shape.d_model, shape.d_expert

    def forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self.traceable_forward(x, indices, weights, keep)
        N, k = indices.shape
        expert = indices.reshape(-1)                                      # token-major [N k]
        if keep is not None:
            kept = keep.reshape(-1).nonzero().squeeze(1)
            expert = expert.index_select(0, kept)
        order = torch.argsort(expert, stable=True)                        # sorted row -> assignment
        offs = torch.bincount(expert, minlength=self.n_experts).cumsum(0).to(torch.int32)  # [E] end offsets
        A = order.numel()
        inv = torch.empty_like(order).scatter_(0, order, torch.arange(A, device=order.device))  # -> sorted row
        if keep is None:
            tok, ws = order.div(k, rounding_mode="floor"), weights.reshape(-1)[order]
            inv, starts = inv.view(N, k), None
        else:
            if A == 0:
                return torch.zeros_like(x)
            flat = kept.index_select(0, order)                            # sorted row -> token-major id
            tok, ws = flat.div(k, rounding_mode="floor"), weights.reshape(-1)[flat]
            per_token = torch.bincount(kept.div(k, rounding_mode="floor"), minlength=N)
            starts = per_token.cumsum(0) - per_token                      # [N] first kept position per token
        wd = x.dtype
        fold = self.fold if self.fold != "auto" else ("h" if self.d_expert <= self.d_model else "out")
        w_gate = self.w_gate.to(wd) if self.w_gate is not None else None
        bounds = bounds_of(offs) if self.per_group_on_cpu else None
        return SortedExperts.apply(x, ws.to(wd), w_gate, self.w_up.to(wd), self.w_down.to(wd), tok, inv,
                                   starts, offs, fold, bounds)

    def traceable_forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                          keep: torch.Tensor | None = None) -> torch.Tensor:
        """The same function in ops ``torch.compile`` traces without graph breaks (used while compiling):
        every shape is static (A = N k assignments; a dropped assignment keeps its row with routing weight
        0, so it adds nothing to the output or to any gradient, at the cost of its flops), the offsets are
        computed without ``bincount`` (``searchsorted`` on the sorted experts, [E] whatever the routing),
        and the experts' forward and backward are the two custom ops of ``moe.compiled_ops``: the eager
        kernels (``moe.sorted_experts``) behind fake implementations, so fp32 traces too."""
        N, k = indices.shape
        if keep is not None:
            weights = weights * keep.to(weights.dtype)
        expert = indices.reshape(-1)                                      # token-major [N k]
        order = torch.argsort(expert, stable=True)                        # sorted row -> assignment
        grid = torch.arange(self.n_experts, device=expert.device, dtype=expert.dtype)
        offs = torch.searchsorted(expert.index_select(0, order), grid, right=True, out_int32=True)  # [E] ends
        inv = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=order.device))
        inv = inv.view(N, k)                                              # token-major -> sorted row
        tok = order.div(k, rounding_mode="floor")
        wd = x.dtype
        ws = weights.reshape(-1).index_select(0, order).to(wd)            # [A]
        w_gate = self.w_gate.to(wd) if self.w_gate is not None else None
        fold = self.fold if self.fold != "auto" else ("h" if self.d_expert <= self.d_model else "out")
        y, *_saved = compiled_ops.sorted_experts(x, ws, w_gate, self.w_up.to(wd), self.w_down.to(wd), tok, inv,
                                                 offs, fold)
        return y


class MegaBlocksExperts(nn.Module):
    """MegaBlocks' dropless grouped experts (``dMoE(args).experts``, ``mlp_impl='grouped'``), routed by OUR
    router: dMoE's own router is discarded so that gating, loss-free bias and statistics stay the same
    across backends, and its parameters are not counted twice. Weights (MegaBlocks' layout):
    ``mlp.w1`` (gate for GLU, up for MLP), ``mlp.v1`` (GLU up), ``mlp.w2`` (down), each [E * f, d].
    CUDA only; dropless only.
    """

    def __init__(self, shape: ModelShape, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        try:
            from megablocks.layers.arguments import Arguments
            from megablocks.layers.dmoe import dMoE
        except ImportError as e:  # also raised when its compiled CUDA ops are missing
            raise ImportError(f"backend='megablocks' needs MegaBlocks: {MEGABLOCKS_INSTALL}; "
                              f"import failed: {e}") from e
        if not torch.cuda.is_available():
            raise RuntimeError("backend='megablocks' runs on CUDA only; use backend='loop' or 'grouped'")
        device = torch.device(device if device is not None else f"cuda:{torch.cuda.current_device()}")
        self.kind, self.n_experts, self.d_expert = shape.ffn_kind, shape.n_experts, shape.d_expert
        args = Arguments(
            hidden_size=shape.d_model, ffn_hidden_size=shape.d_expert, num_layers=1,
            moe_num_experts=shape.n_experts, moe_top_k=shape.top_k,
            mlp_type="glu" if shape.ffn_kind == "swiglu" else "mlp", mlp_impl="grouped",
            activation_fn=F.silu if shape.ffn_kind == "swiglu" else F.gelu,
            bias=False, return_bias=False, moe_loss_weight=0.0,   # our router computes the balance losses
            bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, device=device,
            init_method=partial(nn.init.normal_, mean=0.0, std=INIT_STD),
            output_layer_init_method=partial(nn.init.normal_, mean=0.0, std=residual_init_std(shape)))
        self.experts = dMoE(args).experts  # ParallelDroplessMLP

    def forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        if keep is not None:
            raise ValueError("backend='megablocks' is dropless: set capacity_factor=None")
        return self.experts(x, None, weights.to(x.dtype), indices)

    @torch.no_grad()
    def copy_from(self, src: ExpertWeights) -> None:
        """Load weights from a ``loop``/``grouped`` module: ours [E, d, f] -> MegaBlocks' [E * f, d]."""
        mlp = self.experts.mlp
        stack = lambda w: w.transpose(1, 2).reshape(-1, w.size(1))  # noqa: E731  [E, d, f] -> [E f, d]
        if self.kind == "swiglu":
            mlp.w1.copy_(stack(src.w_gate))
            mlp.v1.copy_(stack(src.w_up))
        else:
            mlp.w1.copy_(stack(src.w_up))
        mlp.w2.copy_(src.w_down.reshape(-1, src.w_down.size(-1)))


def make_experts(shape: ModelShape, backend: str = "loop", **kwargs) -> nn.Module:
    """The routed experts of one MoE layer with the given backend (see ``BACKENDS``)."""
    if backend == "loop":
        return LoopExperts(shape)
    if backend == "grouped":
        return GroupedExperts(shape)
    if backend == "megablocks":
        return MegaBlocksExperts(shape, **kwargs)
    raise ValueError(f"unknown expert backend {backend!r}; choose one of {BACKENDS}")
