"""Process-group set-up for ``torchrun``: NCCL on CUDA, gloo on the CPU; a no-op single process.

Two data-parallel wrappers (``train.parallel``): ``ddp`` replicates the model and all-reduces gradients;
``fsdp`` shards parameters, gradients and optimizer state over the ranks with FSDP2 (``fully_shard`` on
each transformer block, then on the root). Both see the same batches, so their losses agree up to the
order of floating-point reductions.

Expert parallelism (``train.expert_parallel`` = E_p, default 1; ``moe.expert_parallel``): the W ranks form a
2-D ``DeviceMesh`` (``edp`` = W / E_p, ``ep`` = E_p), ranks ``e E_p ... (e + 1) E_p - 1`` one expert-parallel
group (the routed experts of every MoE layer divided among them, tokens moved by all-to-all), ranks with the
same index in their group one expert-data-parallel group (the same experts). Everything but the routed
experts is wrapped as without it (``ddp`` or ``fsdp`` over all W ranks); the routed experts are left out
of DDP/FSDP (``ignored``) and `finish_gradients` all-reduces their gradients over the expert-data-parallel
group and divides by W, which is DDP's/FSDP's mean over all ranks of the same gradient. The gradient norm
for clipping is the global one (experts' squares summed over the expert-parallel group).

Every rank composes the same Hydra config, and the run folder is a function of it
(``runs/<experiment>/<model>/<size>-seed<seed>``), so all ranks agree on it without communicating; only
rank 0 writes to it.
"""
from __future__ import annotations

import contextlib
import gc
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP

from moe.expert_parallel import expert_parallel_layers, shard_experts
from moe.moe_ffn import MoEFFN

from .config import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


TIMEOUT_ENV = "MOE_DIST_TIMEOUT_S"
"""Environment variable: seconds a collective waits for the other ranks before the run stops (default 600)."""
EXIT_PEER = 5
"""Exit status of a rank whose peer died or stayed silent past the timeout (experiments.train)."""


def timeout_s() -> float:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, "600"))
    except ValueError:
        value = 600.0
    return value if value > 0 else 600.0


_PEER_SIGNS = ("Connection reset by peer", "Connection closed by peer", "Timed out", "timed out", "Broken pipe",
               "Connection refused", "NCCL communicator was aborted", "ProcessGroupNCCL")


def peer_failure(e: BaseException) -> str | None:
    """One line when ``e`` (or an exception it was raised from, e.g. inside a DCP save) is a collective
    that failed because another rank died or went silent (gloo's "Connection reset/closed by peer", a
    timeout; NCCL's watchdog), else None. Only in a distributed run (``WORLD_SIZE > 1``; the group may
    already be destroyed)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    seen, cause = 0, None
    while e is not None and seen < 8 and cause is None:
        text = str(e)
        cause = next((s for s in _PEER_SIGNS if s in text), None)
        if cause is None and isinstance(e, getattr(dist, "DistError", ())):
            cause = type(e).__name__
        e, seen = e.__cause__ or e.__context__, seen + 1
    if cause is None:
        return None
    return (f"distributed error: rank {os.environ.get('RANK', '0')} lost its peers in a collective "
            f"({cause.lower()}; timeout {timeout_s():.0f} s, {TIMEOUT_ENV}); the job stops; resume=true "
            f"continues from the last checkpoint")


def setup(requested_device: str = "auto") -> DistInfo:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE > 1``); a collective
    waits at most `timeout_s` for the other ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s()))
    return DistInfo(rank, world, local, device)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_(tensor: torch.Tensor, info: DistInfo, src: int = 0) -> torch.Tensor:
    """In-place broadcast from ``src`` (a no-op in a single process)."""
    if info.enabled:
        dist.broadcast(tensor, src=src)
    return tensor


def all_reduce_(tensor: torch.Tensor, info: DistInfo, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """In-place all-reduce (a no-op in a single process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=op)
    return tensor


@dataclass
class ExpertParallel:
    """The expert-parallel layout of a run: the 2-D mesh (``edp``, ``ep``) and its two groups."""

    size: int
    mesh: object
    ep_group: object
    edp_group: object
    world_size: int


def expert_parallel_mesh(info: DistInfo, expert_parallel: int) -> ExpertParallel:
    """The (``edp``, ``ep``) = (W / E_p, E_p) ``DeviceMesh`` and its groups; ``ValueError`` (one line) when
    E_p does not divide the world size."""
    if expert_parallel < 1 or info.world_size % expert_parallel:
        raise ConfigError(f"train.expert_parallel={expert_parallel} must divide the number of ranks "
                         f"({info.world_size})")
    mesh = init_device_mesh(info.device.type, (info.world_size // expert_parallel, expert_parallel),
                            mesh_dim_names=("edp", "ep"))
    return ExpertParallel(expert_parallel, mesh, mesh.get_group("ep"), mesh.get_group("edp"), info.world_size)


def _expert_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for layer in expert_parallel_layers(model) for p in layer.expert_parameters()]


def wrap(model: torch.nn.Module, info: DistInfo, parallel: str, expert_parallel: int = 1) -> torch.nn.Module:
    """Wrap ``model`` for data parallelism (a no-op in a single process).

    With ``expert_parallel`` E_p > 1 (an MoE model under torchrun), first split the routed experts over the
    expert-parallel groups (`expert_parallel_mesh`, ``moe.expert_parallel.shard_experts``) and leave them
    out of DDP/FSDP (see the module docstring). In every distributed run an MoE model's auxiliary loss uses
    the counts of all ranks (``MoEFFN.global_counts``).

    ``ddp``: returns a ``DistributedDataParallel`` wrapper. Buffers are not re-broadcast each forward: the
    routers all-reduce their loads before the loss-free bias step, so biases stay identical on every rank.
    ``fsdp``: shards ``model`` in place (each block of ``model.blocks``, then the root) and returns it; build
    the optimizer AFTER this call, since the parameters become sharded ``DTensor``s.
    """
    if not info.enabled:
        if expert_parallel != 1:
            raise ConfigError(f"train.expert_parallel={expert_parallel} needs torchrun with a multiple of "
                             f"{expert_parallel} ranks (this is a single process)")
        return model
    ffns = [m for m in model.modules() if isinstance(m, MoEFFN)]
    for ffn in ffns:
        ffn.global_counts = True
    ignored: set = set()
    if expert_parallel != 1:
        if not ffns:
            raise ConfigError(f"train.expert_parallel={expert_parallel} needs an MoE model (this one has no "
                             "routed experts)")
        layout = expert_parallel_mesh(info, expert_parallel)
        try:
            shard_experts(model, layout.ep_group)
            for layer in expert_parallel_layers(model):
                layer.mesh = layout.mesh  # for checkpoints (experiments.checkpoint)
        except ValueError as e:  # E_p does not divide the experts; a backend that cannot split
            raise ConfigError(f"train.expert_parallel={expert_parallel}: {e}") from None
        model.expert_parallel = layout
        ignored = set(_expert_params(model))
    if parallel == "fsdp":
        for block in model.blocks:
            fully_shard(block, ignored_params=ignored or None)
        fully_shard(model, ignored_params=ignored or None)
        return model
    if parallel != "ddp":
        raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {parallel!r}")

    with warnings.catch_warnings():
        # torch >= 2.13 deprecates broadcast_buffers for forward_sync_buffers, whose False still syncs buffers
        # at init; we keep broadcast_buffers=False (rank-identical buffers by construction) and silence it.
        warnings.filterwarnings("ignore", message=r".*`broadcast_buffers` is deprecated", category=FutureWarning)
        if ignored:
            names = [n for n, p in model.named_parameters() if p in ignored]
            DDP._set_params_and_buffers_to_ignore_for_model(model, names)
        return DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                   broadcast_buffers=False)


def finish_gradients(model: torch.nn.Module, max_norm: float, info: DistInfo) -> torch.Tensor:
    """After the last micro-batch's backward: reduce the routed experts' gradients over the
    expert-data-parallel group (sum / W, the mean DDP/FSDP take of the other parameters) when experts are
    split, then clip every gradient by the global norm (``max_norm``; inf: measure only). Returns the norm.
    Without expert parallelism exactly ``torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)``.
    Also closes the step's byte count of every expert-parallel layer (`expert_parallel_bytes` reports it)."""
    layout = getattr(_unwrap(model), "expert_parallel", None)
    if layout is None:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    for layer in expert_parallel_layers(_unwrap(model)):
        layer.step_bytes = layer.take_bytes()
    experts = _expert_params(_unwrap(model))
    ids = {id(p) for p in experts}
    for p in experts:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        if layout.world_size // layout.size > 1:
            dist.all_reduce(p.grad, group=layout.edp_group)
        p.grad.div_(layout.world_size)
    others = [p for p in model.parameters() if id(p) not in ids and p.grad is not None]
    norm_others = torch.nn.utils.get_total_norm([p.grad for p in others]) if others else torch.zeros(())
    norm_others = norm_others.full_tensor() if hasattr(norm_others, "full_tensor") else norm_others
    expert_sq = torch.stack([p.grad.detach().float().pow(2).sum() for p in experts]).sum()
    dist.all_reduce(expert_sq, group=layout.ep_group)
    total = (norm_others.float().pow(2) + expert_sq).sqrt()
    if max_norm != float("inf"):
        if others:
            torch.nn.utils.clip_grads_with_norm_(others, max_norm, total)
        torch.nn.utils.clip_grads_with_norm_(experts, max_norm, total)
    return total


def expert_parallel_bytes(model: torch.nn.Module, info: DistInfo) -> dict:
    """``{"ep_dispatch_bytes": [per rank], "ep_combine_bytes": [per rank]}``: the bytes each rank sent to
    other ranks in the forwards of the last optimizer step (all its micro-batches; closed by
    `finish_gradients`), summed over MoE layers; empty without expert parallelism. The backward sends as
    much again. A collective (all ranks call it)."""
    layers = expert_parallel_layers(_unwrap(model))
    if not layers:
        return {}
    sent = torch.tensor([sum(v) for v in zip(*(layer.step_bytes for layer in layers))], dtype=torch.int64,
                        device=info.device)
    gathered = [torch.zeros_like(sent) for _ in range(info.world_size)]
    dist.all_gather(gathered, sent)
    return {"ep_dispatch_bytes": [int(g[0]) for g in gathered], "ep_combine_bytes": [int(g[1]) for g in gathered]}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def gradient_sync(model: torch.nn.Module, enabled: bool):
    """Context for one micro-batch's backward: with ``enabled=False`` gradients accumulate locally
    (DDP's ``no_sync``; FSDP2's ``set_requires_gradient_sync(False)``); a null context otherwise."""
    if enabled:
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
    return contextlib.nullcontext()


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a sharded ``DTensor`` (a collective: every rank must call it)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def replica_max_abs_diff(model: torch.nn.Module, info: DistInfo) -> float:
    """Largest |difference| of parameters AND buffers (e.g. routing biases) between any rank and rank 0
    (0.0 in a single process). Sharded FSDP parameters are gathered whole first. Every rank must call it."""
    if not info.enabled:
        return 0.0
    layout = getattr(_unwrap(model), "expert_parallel", None)
    experts = {id(p) for p in _expert_params(_unwrap(model))}
    if layout is not None:  # split experts: compared with the same experts on edp rank 0 of their group
        flat = torch.cat([p.detach().float().reshape(-1) for p in _expert_params(_unwrap(model))])
        ref = flat.clone()
        dist.broadcast(ref, group=layout.edp_group, group_src=0)
        local = (flat - ref).abs().max().reshape(1)
    tensors = [p for p in model.parameters() if id(p) not in experts] + \
        [b for b in model.buffers() if b.is_floating_point()]
    flat = torch.cat([_full(t.detach()).float().reshape(-1) for t in tensors])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
    if layout is not None:
        diff = torch.maximum(diff, local)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


def cleanup(info: DistInfo, barrier: bool = True) -> None:
    """Tear the process group down cleanly: the caller first drops its DDP/FSDP model (whose reducer holds
    the group) and garbage-collects, then every rank meets at a barrier (no collective in flight), then the
    group is destroyed while the interpreter is fully alive. Destroying a gloo group that a live reducer
    still references leaves its worker threads to be torn down at interpreter exit, which could abort a
    rank with "terminate called without an active exception" after a successful run. ``barrier=False`` after
    a failure on this rank alone (the others may be inside another collective: never wait for them)."""
    if info.enabled and dist.is_initialized():
        gc.collect()
        if barrier:
            try:
                dist.barrier()
            except Exception:  # a peer already gone (it failed): destroy anyway
                pass
        dist.destroy_process_group()
        gc.collect()
