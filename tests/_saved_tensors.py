"""Measure the activations autograd keeps for backward (a helper of the training-memory tests, not a test).

``saved_activation_bytes(model, idx, targets)`` runs one forward and backward under
``torch.autograd.graph.saved_tensors_hooks`` and counts each STORAGE that a saved tensor lives in once, at
the storage's size in bytes (read when it is saved, while all of them are alive), if the backward unpacks
it: a side graph that does not reach the loss (a z-loss with weight 0, the group scores of the top-k
selection) is freed in a normal run, and is left out here (a pack hook that returns the tensor it saved
would keep such a graph alive through a reference cycle, which is why ``used`` decides, not liveness).
Left out: storages of parameters and buffers (a saved weight, or a view of one,
costs nothing extra), of the input and target ids, and casts of parameters (autocast's bf16 copies of the
fp32 weights, or ``w.to(dtype)``): those are the compute-precision weights, which the training-memory model
counts as ``weights``, not activations; they are reported apart as ``weight_casts``.

Every counted storage is attributed to the innermost named module running when it was saved, mapped to a
component name (``attn``, ``ffn``, ``experts``, ``norm``...) so that a mismatch with the planner can be read
component by component.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

_CAST_OPS = ("ToCopyBackward", "UnbindBackward", "SelectBackward", "TBackward", "TransposeBackward",
             "ViewBackward", "ExpandBackward", "PermuteBackward", "AliasBackward", "UnsafeViewBackward",
             "ReshapeAliasBackward", "SliceBackward")


def is_weight_cast(t: torch.Tensor) -> bool:
    """Whether ``t`` is a parameter reached only through casts, views and slices (autocast's weight copy)."""
    fn = t.grad_fn
    while fn is not None:
        name = type(fn).__name__
        if name == "AccumulateGrad":
            return True
        if not name.startswith(_CAST_OPS):
            return False
        nexts = [f for f, _ in fn.next_functions if f is not None]
        if len(nexts) != 1:
            return False
        fn = nexts[0]
    return False


class _Holder:
    """What the pack hook stores in the graph; ``used`` once backward unpacks it."""

    __slots__ = ("tensor", "component", "ptr", "nbytes", "cast", "used")

    def __init__(self, tensor: torch.Tensor, component: str, ptr: int, nbytes: int, cast: bool):
        self.tensor, self.component, self.ptr, self.nbytes, self.cast = tensor, component, ptr, nbytes, cast
        self.used = False


def _component(module_name: str, module: nn.Module) -> str:
    """A coarse component for the innermost module (the names of dense/ and moe/)."""
    parts = module_name.split(".")
    leaf = parts[-1] if parts else ""
    if "experts" in parts and "shared_experts" not in parts:
        return "experts"
    if "shared_experts" in parts:
        return "shared_experts"
    if "router" in parts:
        return "router"
    if "attn" in parts:
        return "attn_norm" if leaf.endswith("norm") else "attn"
    if leaf in ("norm1", "norm2"):
        return "norm"
    if "ffn" in parts:
        return "ffn"
    if parts[0] == "embedding":
        return "embedding"
    if leaf == "norm":
        return "final_norm"
    return module_name or "model"


def saved_activation_bytes(model: nn.Module, idx: torch.Tensor, targets: torch.Tensor | None = None,
                           autocast: bool = False, log: list | None = None) -> dict:
    """One forward of ``model(idx, targets)``; returns ``{"total": bytes, "by_component": {...},
    "weight_casts": bytes, "n_storages": int}`` (see the module docstring). ``log``: a list that receives
    ``(component, shape, dtype, storage bytes, grad_fn name)`` of every counted storage."""
    excluded = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), idx]}
    if targets is not None:
        excluded.add(targets.untyped_storage().data_ptr())
    stack: list[str] = ["model"]
    names = {m: n for n, m in model.named_modules()}
    handles = []
    for m, n in names.items():
        comp = _component(n, m)
        handles.append(m.register_forward_pre_hook(lambda mod, args, c=comp: stack.append(c) and None))
        handles.append(m.register_forward_hook(lambda mod, args, out: stack.pop() and None))
    holders: list[_Holder] = []

    def pack(t: torch.Tensor) -> _Holder:
        storage = t.untyped_storage()        # read now, while every saved storage is alive: no reuse
        holder = _Holder(t, stack[-1], storage.data_ptr(), storage.nbytes(), is_weight_cast(t))
        holders.append(holder)
        return holder

    def unpack(holder: _Holder) -> torch.Tensor:
        holder.used = True
        return holder.tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
            with ctx:
                out = model(idx, targets)
            loss = out.loss if out.loss is not None else out.logits.float().sum()
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    model.zero_grad(set_to_none=True)
    seen: dict[int, tuple[str, int]] = {}
    casts: dict[int, int] = {}
    for holder in holders:
        if not holder.used or holder.ptr in excluded or holder.ptr in seen or holder.ptr in casts:
            continue
        if holder.cast:
            casts[holder.ptr] = holder.nbytes
            continue
        seen[holder.ptr] = (holder.component, holder.nbytes)
        if log is not None:
            t = holder.tensor
            log.append((holder.component, tuple(t.shape), str(t.dtype).replace("torch.", ""), holder.nbytes,
                        type(t.grad_fn).__name__ if t.grad_fn is not None else "-"))
    holders.clear()
    by_component: dict[str, int] = defaultdict(int)
    for comp, nbytes in seen.values():
        by_component[comp] += nbytes
    return {"total": sum(by_component.values()), "by_component": dict(by_component),
            "weight_casts": sum(casts.values()), "n_storages": len(seen)}
