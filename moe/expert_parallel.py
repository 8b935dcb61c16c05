"""Expert parallelism: the routed experts of one MoE layer divided over the E_p ranks of a process group,
tokens moved to them and back with two all-to-alls (torch.distributed; gloo on a CPU, NCCL on GPUs).

Rank ``p`` of the expert-parallel group holds experts ``p E/E_p ... (p + 1) E/E_p - 1`` (E_p divides E),
as the same backend (``loop`` or ``grouped``) with ``E/E_p`` experts. Per forward of the layer, on every rank:

1. the router (run locally on this rank's tokens) gives the kept (token, expert) assignments; they are
   sorted by expert, so the rows bound for rank q are contiguous;
2. per-expert counts are exchanged (``all_to_all_single`` of E integers): each rank learns how many rows
   it receives for each of its experts from each source;
3. dispatch: the rows ``x[token]`` go with ``all_to_all_single`` and those split sizes;
4. the local backend computes the received rows (each a one-expert assignment of weight 1; the backend
   permutes them into expert order itself: ``loop`` gathers per expert, ``grouped`` sorts);
5. combine: the results go back with the reverse all-to-all, are multiplied by their routing weights on
   the source rank and summed per token (``index_add_``, in expert order as ``loop`` does).

Both all-to-alls are differentiable (``torch.distributed._functional_collectives.all_to_all_single_autograd``):
the backward of dispatch is a combine-shaped all-to-all and vice versa, so an expert's weight gradient on
its rank is the sum over all source ranks. Training code reduces it over the expert-data-parallel group
(``experiments.distributed``). A rank whose experts receive no row still gives them a (zero) gradient,
as the single-process layer does, so AdamW treats them alike.

Bytes (``last_dispatch_bytes``, ``last_combine_bytes``, the last forward; ``dispatch_bytes``,
``combine_bytes``, accumulated over training-mode forwards until ``take_bytes``): the rows this rank
sends to OTHER ranks times d times the element size; dispatch counts the rows sent out, combine the rows
sent back. The count exchange (E x 8 bytes) is not counted. A token sent to two experts on one rank is sent twice (as
torchtitan's all-to-all does); with ``profile`` set, ``dedup_dispatch_bytes`` adds what a dispatch that
sends each token once per remote rank (DeepEP, and ``accounting.serving``'s model) would send. ``profile``
(a dict, or None) also accumulates the wall time of dispatch (counts exchange, gather, all-to-all),
expert compute and combine (all-to-all back, weighting, sum), for ``experiments.bench.expert_parallel``. The backward sends the same amounts the other
way (the gradient of combine travels as dispatch did, and vice versa), so a training step moves twice
these bytes per rank.

Token dropping with a capacity factor stays the router's, per rank (capacity ceil(C N k / E) with N the
rank's tokens), exactly as without expert parallelism.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._functional_collectives import all_to_all_single_autograd, wait_tensor

from .experts import ExpertWeights, flatten_assignments
from .moe_ffn import MoEFFN

EXPERT_WEIGHTS = ("w_up", "w_gate", "w_down")


def all_to_all(x: torch.Tensor, output_splits: list[int], input_splits: list[int], group) -> torch.Tensor:
    """Differentiable ``all_to_all_single`` of the rows of x [A, d]: ``input_splits[q]`` rows go to rank q
    of ``group``, ``output_splits[q]`` rows come from it (the backward sends the gradients back)."""
    group = group if group is not None else dist.group.WORLD
    out = all_to_all_single_autograd(x.contiguous(), output_splits, input_splits, group)
    return wait_tensor(out)


class ExpertParallelExperts(nn.Module):
    """Routed experts held ``E/E_p`` per rank of ``group`` (see module docstring); same call as a backend:
    ``(x [N, d], indices [N, k], weights [N, k], keep [N, k] | None) -> y [N, d]``. Parameters: this rank's
    slice of ``w_up``, ``w_gate`` (SwiGLU), ``w_down``, under the unsplit layer's names.

    Built from the full experts module every rank has (same seed, same weights): this rank keeps its slice,
    so a layer split this way computes what the unsplit one did. ``n_experts`` is the global count;
    ``local.n_experts`` this rank's; ``first_expert`` its first global index.
    """

    def __init__(self, experts: ExpertWeights, group=None):
        super().__init__()
        if not isinstance(experts, ExpertWeights):
            raise ValueError(f"expert parallelism needs the 'loop' or 'grouped' backend, got "
                             f"{type(experts).__name__}")
        self.group = group
        self.ep_size = dist.get_world_size(group)
        self.ep_rank = dist.get_rank(group)
        E = experts.n_experts
        if E % self.ep_size:
            raise ValueError(f"expert_parallel={self.ep_size} must divide the number of experts ({E})")
        self.n_experts, self.n_local = E, E // self.ep_size
        self.first_expert = self.ep_rank * self.n_local
        lo, hi = self.first_expert, self.first_expert + self.n_local
        # The local backend is not a submodule: its sliced weights are registered HERE under their own names,
        # so state-dict keys stay ``...experts.w_up`` (shape [E/E_p, d, f]) as without expert parallelism.
        object.__setattr__(self, "local", experts)
        for name in EXPERT_WEIGHTS:
            w = getattr(experts, name, None)
            if w is not None:
                part = nn.Parameter(w.detach()[lo:hi].clone(), requires_grad=w.requires_grad)
                setattr(experts, name, part)
                self.register_parameter(name, part)
        experts.n_experts = self.n_local
        self.last_dispatch_bytes = self.last_combine_bytes = self.last_received_rows = 0
        self.dispatch_bytes = self.combine_bytes = 0
        self.profile: dict | None = None   # a dict: forward adds dispatch_s, compute_s, combine_s (experiments.bench.expert_parallel)
        self.step_bytes = (0, 0)   # (dispatch, combine) of the last closed training step (set by the trainer)

    def _tick(self) -> float:
        """Wall clock for ``profile`` (after the device finishes queued work); 0 when not profiling."""
        if self.profile is None:
            return 0.0
        if torch.cuda.is_available() and self.local.w_up.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def expert_parameters(self) -> list[nn.Parameter]:
        """This rank's expert weights (reduced over the expert-data-parallel group, not over all ranks)."""
        return [w for w in (getattr(self, n, None) for n in EXPERT_WEIGHTS) if w is not None]

    def take_bytes(self) -> tuple[int, int]:
        """(dispatch, combine) bytes accumulated over training-mode forwards since the last call; resets."""
        out = (self.dispatch_bytes, self.combine_bytes)
        self.dispatch_bytes = self.combine_bytes = 0
        return out

    def forward(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        P, El, d = self.ep_size, self.n_local, x.size(-1)
        tick = self._tick
        t0 = tick()
        token, expert, weight = flatten_assignments(indices, weights, keep)
        order = torch.argsort(expert, stable=True)                       # expert-major, then token order
        token, expert, weight = token[order], expert[order], weight[order]
        counts = torch.bincount(expert, minlength=self.n_experts)       # [E] rows this rank sends per expert
        received = torch.empty_like(counts)                             # [P * El]: from source q, per local expert
        dist.all_to_all_single(received, counts, group=self.group)
        send = counts.view(P, El).sum(1).tolist()
        recv = received.view(P, El).sum(1).tolist()
        rows = all_to_all(x.index_select(0, token), recv, send, self.group)   # [sum recv, d]
        local_expert = torch.arange(El, device=x.device).repeat(P).repeat_interleave(received)
        self.last_received_rows = rows.size(0)
        t1 = tick()
        out = self._compute(rows, local_expert)
        t2 = tick()
        back = all_to_all(out, send, recv, self.group)                  # [A, d] in the sorted order
        y = torch.zeros_like(x).index_add_(0, token, back * weight[:, None].to(back.dtype))
        if self.profile is not None:
            t3 = tick()
            for name, dt in (("dispatch_s", t1 - t0), ("compute_s", t2 - t1), ("combine_s", t3 - t2)):
                self.profile[name] = self.profile.get(name, 0.0) + dt
        element = x.element_size()
        self.last_dispatch_bytes = (sum(send) - send[self.ep_rank]) * d * element
        if self.profile is not None:  # what a dispatch that sends a token once per remote rank would send
            dest = expert.div(El, rounding_mode="floor")
            remote = dest != self.ep_rank
            pairs = torch.unique(token[remote] * P + dest[remote]).numel()
            self.profile["dedup_dispatch_bytes"] = self.profile.get("dedup_dispatch_bytes", 0) + pairs * d * element
        self.last_combine_bytes = (sum(recv) - recv[self.ep_rank]) * d * element
        if self.training:
            self.dispatch_bytes += self.last_dispatch_bytes
            self.combine_bytes += self.last_combine_bytes
        return y

    def _compute(self, rows: torch.Tensor, local_expert: torch.Tensor) -> torch.Tensor:
        """The local backend on the received rows (one assignment each, weight 1). With no rows, an empty
        output that still depends on the weights (so they get a zero gradient, as in the unsplit layer) and
        on the rows (so the backward runs the dispatch's all-to-all, which every rank must join)."""
        if rows.size(0) == 0:
            anchor = sum(p.reshape(-1)[:1].sum() for p in self.expert_parameters()) * 0
            return rows * 0 + anchor.to(rows.dtype)
        ones = torch.ones(rows.size(0), 1, dtype=rows.dtype, device=rows.device)
        return self.local(rows, local_expert[:, None], ones)


def expert_parallel_layers(model: nn.Module) -> list[ExpertParallelExperts]:
    """The ``ExpertParallelExperts`` modules of ``model`` (empty without expert parallelism)."""
    return [m for m in model.modules() if isinstance(m, ExpertParallelExperts)]


def shard_experts(model: nn.Module, group=None) -> int:
    """Replace the routed experts of every MoE layer of ``model`` by their expert-parallel split over
    ``group`` (in place; call on every rank of the group, before wrapping for data parallelism and before
    building the optimizer). Returns the number of layers split."""
    n = 0
    for ffn in [m for m in model.modules() if isinstance(m, MoEFFN)]:
        ffn.experts = ExpertParallelExperts(ffn.experts, group)
        n += 1
    return n
