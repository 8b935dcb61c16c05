"""Routed experts behind one interface, several ways to compute them.

Every backend maps ``(x [N, d], indices [N, k], weights [N, k], keep [N, k] | None) -> y [N, d]`` with
``y[t] = sum_j keep[t, j] * weights[t, j] * expert_{indices[t, j]}(x[t])``. An expert is the model's FFN
kind at width f = ``d_expert``: GELU ``down(gelu(up x))`` or SwiGLU ``down(silu(gate x) * up x)``.

* ``loop``: the readable reference; per expert gather its tokens, matmul, scatter-add.
* ``grouped``: sort assignments by expert, one grouped GEMM per matrix (``torch._grouped_mm``, int32
  cumulative end offsets; on a CPU the products whose outputs are temporaries run per group into reused
  scratch rows), forward and backward written out in ``_SortedExperts``: the expert-order permutation is
  used both ways (gather, and a fused gather-and-sum back to token order, ``F.embedding_bag``, in place of
  ``index_add_``), the routing weight is folded into the down projection's input or output, whichever is
  smaller. Its strides must be multiples of 16 bytes, so d and f must be multiples of 8 (bf16) or 4 (fp32).
* ``megablocks``: ``megablocks.layers.dmoe.dMoE``'s dropless experts (grouped GEMM), CUDA only, optional.

``loop`` and ``grouped`` share parameters and names (``w_up``, ``w_gate``, ``w_down``; [E, d, f],
[E, d, f], [E, f, d]), so their state dicts are interchangeable. Parameters: ``E * ffn_matrices * d * f``;
flops: ``2 * ffn_matrices * d * f`` per kept assignment (2 per multiply-add).
"""
from __future__ import annotations

import atexit
import math
import threading
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from accounting.shapes import ModelShape
from dense.model import INIT_STD, residual_init_std

from moe import compiled_ops  # absolute: scripts/moe_layer_against_commit.py execs this file standalone

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


_SCRATCH: dict[int, dict] = {}   # thread id -> {(tag, dtype): flat buffer}


def _scratch(tag: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A scratch tensor of ``shape`` for values that die inside one forward or one backward call, reused
    across calls on a CPU (per thread, per tag and dtype, grown to the largest size asked): a fresh
    tensor of tens of MB costs more in page faults than one pass over it. On other devices (caching
    allocators) a fresh ``empty``. Callers never return or save these."""
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    bufs = _SCRATCH.setdefault(threading.get_ident(), {})
    n, key = math.prod(shape), (tag, like.dtype)
    buf = bufs.get(key)
    if buf is None or buf.numel() < n:
        buf = bufs[key] = torch.empty(n, dtype=like.dtype)
    return buf[:n].view(shape)


def release_scratch(all_threads: bool = False) -> int:
    """Free the CPU scratch tensors (``_scratch``) of this thread, or of every thread; returns the bytes
    released. They are held between steps on purpose (shared by all layers of a thread): about
    (4 d + 3 f) x T k elements at the largest layer shape seen."""
    owners = list(_SCRATCH) if all_threads else [threading.get_ident()]
    freed = 0
    for owner in owners:
        bufs = _SCRATCH.pop(owner, {})
        freed += sum(b.numel() * b.element_size() for b in bufs.values())
    return freed


# Free every thread's scratch before the interpreter tears down (a precaution: the abort at exit once seen
# under gloo came from the process-group teardown, fixed in experiments.distributed).
atexit.register(release_scratch, all_threads=True)


def per_expert_mm(a: torch.Tensor, b: torch.Tensor, bounds: list[int], out: torch.Tensor,
                  accumulate: bool = False) -> torch.Tensor:
    """``torch._grouped_mm(a, b, offs)`` written into ``out`` (``+=`` when ``accumulate``) with one ``torch.mm``
    per expert; expert e owns rows (columns, for the weight gradients' ``a`` [K, A]) ``bounds[e]:bounds[e+1]``.
    Either a [A, K] @ b [E, K, N] -> out [A, N], or a [K, A] @ b [A, N] -> out [E, K, N]."""
    per_row = b.dim() == 3
    for e in range(len(bounds) - 1):
        lo, hi = bounds[e], bounds[e + 1]
        if hi == lo:
            if not per_row and not accumulate:
                out[e].zero_()
            continue
        ae, be, oe = (a[lo:hi], b[e], out[lo:hi]) if per_row else (a[:, lo:hi], b[lo:hi], out[e])
        if accumulate:
            oe.addmm_(ae, be)
        else:
            torch.mm(ae, be, out=oe)
    return out


def grouped_mm_into(a: torch.Tensor, b: torch.Tensor, offs: torch.Tensor, bounds: list[int] | None,
              out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
    """``out (+)= torch._grouped_mm(a, b, offs=offs)``: on a CPU (``bounds``: the host copy of ``[0] + offs``)
    ``per_expert_mm`` into ``out`` (``addmm_`` when accumulating: the sum rides in the GEMM), as
    ``torch._grouped_mm``'s CPU path does but without a fresh output; elsewhere ``torch._grouped_mm``,
    returned as is (``out`` only receives the accumulated sum)."""
    if bounds is None:                     # not a CPU: the fresh output of the fused kernel, no copy
        r = torch._grouped_mm(a, b, offs=offs)
        return out.add_(r) if accumulate else r
    return per_expert_mm(a, b, bounds, out, accumulate)


def _rowdot(a: torch.Tensor, b: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product of two [A, n] tensors -> [A] (the sum accumulated in float32 for bf16), the
    product written into ``buf`` (a dead [A, n] tensor: a fresh one costs page faults on a CPU)."""
    return torch.mul(a, b, out=buf).sum(-1)


class _SortedExperts(torch.autograd.Function):
    """Routed experts on assignments sorted by expert, forward and backward written out.

    Inputs: x [T, d]; ws [A] the routing weights in expert-sorted order; the stacked weights (w_gate is
    None for GELU); tok [A] (int64) the token of each sorted assignment; inv and starts: for each kept
    assignment in token-major order its sorted row, [T, k] when dropless (starts None), else flat [A] with
    starts [T] (see ``_combine``); offs [E] int32 end offsets; fold: ``"h"`` multiplies the routing weight
    into the down projection's input [A, f], ``"out"`` into its output [A, d] (equal by linearity; the
    smaller of f and d is cheaper).

    Memory: the gathered input, the down projection's output, the gathered output gradient, the input
    gradient's two products (summed inside the GEMM, ``addmm_``) and SwiGLU's backward temporaries live in
    reused scratch tensors (``_scratch``, ``grouped_mm_into``; on a CPU, where a fresh tensor of tens of MB costs
    page faults comparable to a pass over it). x [T, d] is saved instead of its gathered copy [A, d] and
    regathered in backward into the buffer of the output gradient's gathered copy once that is dead.
    SwiGLU saves g and u and recomputes silu(g) in backward; with fold ``"h"`` the routing weight is
    multiplied into h in place and its gradient taken as ``sum_f gh silu(g) u`` there.

    Gather and combine use the permutation both ways: the forward's gather ``x[tok]`` has as backward the
    combine (``_combine``: one fused gather-and-sum over each token's sorted rows, ``F.embedding_bag``), and
    the combine has as backward the gather ``gy[tok]``; no ``index_add_`` (serial on a CPU), with or
    without drops. Flops: the 3 (SwiGLU) or 2 grouped matmuls forward and twice that backward, as autograd
    would; nothing is recomputed.
    """

    @staticmethod
    def forward(ctx, x, ws, w_gate, w_up, w_down, tok, inv, starts, offs, fold, per_group):
        T, d = x.shape
        xs = torch.index_select(x, 0, tok, out=_scratch("xs", (tok.numel(), d), x))   # [A, d]
        if w_gate is not None:
            g, u = torch._grouped_mm(xs, w_gate, offs=offs), torch._grouped_mm(xs, w_up, offs=offs)
            h = F.silu(g).mul_(u)                                            # [A, f]; silu(g) recomputed in backward
        else:
            g = torch._grouped_mm(xs, w_up, offs=offs)
            u = None
            h = F.gelu(g)
        if fold == "h" and w_gate is not None:
            hw, h = h.mul_(ws[:, None]), None    # in place: backward gets d(loss)/d(ws) from silu(g) and u
        else:
            hw = h * ws[:, None] if fold == "h" else h
        bounds = [0] + offs.tolist() if per_group else None
        out = grouped_mm_into(hw, w_down, offs, bounds, _scratch("out", (hw.size(0), d), hw))   # [A, d]
        if fold == "out":
            out.mul_(ws[:, None])
        y = _combine(out, inv, starts)               # xs is not saved (regathered in backward)
        ctx.save_for_backward(x, ws, w_gate, w_up, w_down, tok, inv, starts, offs, g, u, h, hw)
        ctx.fold, ctx.bounds = fold, bounds
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, ws, w_gate, w_up, w_down, tok, inv, starts, offs, g, u, h, hw = ctx.saved_tensors
        gy = gy.contiguous()
        w = ws[:, None]
        gout = torch.index_select(gy, 0, tok, out=_scratch("gout", (tok.numel(), gy.size(-1)), gy))
        A, bounds = tok.numel(), ctx.bounds
        gh = grouped_mm_into(gout, w_down.transpose(-2, -1), offs, bounds,        # [A, f] d(loss)/d(hw)
                       _scratch("gh", (A, w_down.size(1)), gout))
        if h is not None:
            gws = _rowdot(gh, h, _scratch("gg", gh.shape, gh))               # d(loss)/d(ws)
        if ctx.fold == "out":
            gout.mul_(w)                                                    # gradient of h @ w_down
        gw_down = torch._grouped_mm(hw.t(), gout, offs=offs)                # [E, f, d]
        xs = torch.index_select(x, 0, tok, out=gout)                        # gout is dead: regather x there
        if w_gate is not None:
            gu = torch.ops.aten.silu.out(g, out=_scratch("gu", g.shape, g)).mul_(gh)  # unweighted d(loss)/d(u)
            if h is None:                                                   # fold "h" in place
                gws = _rowdot(gu, u, _scratch("gg", gu.shape, gu))           # sum_f gh silu(g) u
            gu.mul_(w)
            gh.mul_(w)                                                      # d(loss)/d(h)
            gg = torch.ops.aten.silu_backward.grad_input(gh.mul_(u), g,    # gh * u * silu'(g)
                                                         grad_input=_scratch("gg", g.shape, g))
            gw_gate = torch._grouped_mm(xs.t(), gg, offs=offs)
            gw_up = torch._grouped_mm(xs.t(), gu, offs=offs)
            gxs = grouped_mm_into(gg, w_gate.transpose(-2, -1), offs, bounds, _scratch("gxs", xs.shape, xs))
            grouped_mm_into(gu, w_up.transpose(-2, -1), offs, bounds, gxs, accumulate=True)
        else:
            gg = torch.ops.aten.gelu_backward(gh.mul_(w), g)
            gw_gate, gw_up = None, torch._grouped_mm(xs.t(), gg, offs=offs)
            gxs = grouped_mm_into(gg, w_up.transpose(-2, -1), offs, bounds, _scratch("gxs", xs.shape, xs))
        gx = _combine(gxs, inv, starts)
        return gx, gws, gw_gate, gw_up, gw_down, None, None, None, None, None, None


def _combine(rows: torch.Tensor, inv: torch.Tensor, starts: torch.Tensor | None) -> torch.Tensor:
    """Sum the sorted rows [A, d] of each token into [T, d] in one fused gather-and-sum
    (``F.embedding_bag``, mode ``'sum'``; 3-4x faster on a CPU than a gather into token order followed by
    a sum, and no [A, d] temporary). ``inv``: for each kept assignment in token-major order its sorted row,
    shaped [T, k] when dropless (``starts`` None) or flat [A] with ``starts`` [T] the first position of each
    token's kept assignments (a token whose assignments were all dropped gets zeros)."""
    return F.embedding_bag(inv, rows, starts, mode="sum")


class GroupedExperts(ExpertWeights):
    """Sort the kept assignments by expert and run each matrix as one grouped GEMM (see ``_SortedExperts``).

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
        return _SortedExperts.apply(x, ws.to(wd), w_gate, self.w_up.to(wd), self.w_down.to(wd), tok, inv,
                                    starts, offs, fold, self.per_group_on_cpu and x.device.type == "cpu")


    def traceable_forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                          keep: torch.Tensor | None = None) -> torch.Tensor:
        """The same function in ops ``torch.compile`` traces without graph breaks (used while compiling):
        every shape is static (A = N k assignments; a dropped assignment keeps its row with routing weight
        0, so it adds nothing to the output or to any gradient, at the cost of its flops), the offsets are
        computed without ``bincount`` (``searchsorted`` on the sorted experts, [E] whatever the routing),
        the grouped products are the custom ops of ``moe.compiled_ops`` (with fake implementations, so fp32
        traces too) and autograd derives the backward."""
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
        ws = weights.reshape(-1).index_select(0, order).to(wd)[:, None]   # [A, 1]
        fold = self.fold if self.fold != "auto" else ("h" if self.d_expert <= self.d_model else "out")
        xs = compiled_ops.gather_rows(x, tok, inv)                        # [A, d]
        if self.w_gate is not None:
            h = F.silu(compiled_ops.grouped_mm(xs, self.w_gate.to(wd), offs)) * \
                compiled_ops.grouped_mm(xs, self.w_up.to(wd), offs)
        else:
            h = F.gelu(compiled_ops.grouped_mm(xs, self.w_up.to(wd), offs))
        if fold == "h":
            out = compiled_ops.grouped_mm(h * ws, self.w_down.to(wd), offs)
        else:
            out = compiled_ops.grouped_mm(h, self.w_down.to(wd), offs) * ws
        return compiled_ops.combine_rows(out, inv, tok)


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
