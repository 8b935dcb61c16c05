"""Process-group set-up for ``torchrun``: NCCL on CUDA, gloo on the CPU; a no-op single process.

Two data-parallel wrappers (``train.parallel``): ``ddp`` replicates the model and all-reduces gradients;
``fsdp`` shards parameters, gradients and optimizer state over the ranks with FSDP2 (``fully_shard`` on
each transformer block, then on the root). Both see the same batches, so their losses agree up to the
order of floating-point reductions.

Every rank composes the same Hydra config, and the run folder is a function of it
(``runs/<experiment>/<model>/<size>-seed<seed>``), so all ranks agree on it without communicating; only
rank 0 writes to it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def setup(requested_device: str = "auto") -> DistInfo:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE > 1``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
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


def wrap(model: torch.nn.Module, info: DistInfo, parallel: str) -> torch.nn.Module:
    """Wrap ``model`` for data parallelism (a no-op in a single process).

    ``ddp``: returns a ``DistributedDataParallel`` wrapper. Buffers are not re-broadcast each forward: the
    routers all-reduce their loads before the loss-free bias step, so biases stay identical on every rank.
    ``fsdp``: shards ``model`` in place (each block of ``model.blocks``, then the root) and returns it; build
    the optimizer AFTER this call, since the parameters become sharded ``DTensor``s.
    """
    if not info.enabled:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    if parallel != "ddp":
        raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {parallel!r}")
    import warnings

    from torch.nn.parallel import DistributedDataParallel as DDP
    with warnings.catch_warnings():
        # torch >= 2.13 deprecates broadcast_buffers for forward_sync_buffers, whose False still syncs buffers
        # at init; we keep broadcast_buffers=False (rank-identical buffers by construction) and silence it.
        warnings.filterwarnings("ignore", message=r".*`broadcast_buffers` is deprecated", category=FutureWarning)
        return DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                   broadcast_buffers=False)


def gradient_sync(model: torch.nn.Module, enabled: bool):
    """Context for one micro-batch's backward: with ``enabled=False`` gradients accumulate locally
    (DDP's ``no_sync``; FSDP2's ``set_requires_gradient_sync(False)``); a null context otherwise."""
    import contextlib
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
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    flat = torch.cat([_full(t.detach()).float().reshape(-1) for t in tensors])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
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
        import gc
        gc.collect()
        if barrier:
            try:
                dist.barrier()
            except Exception:  # a peer already gone (it failed): destroy anyway
                pass
        dist.destroy_process_group()
        gc.collect()
