"""One optimizer step of the trainer (`train_step`): ``grad_accum`` micro-batches, gradient clipping, and
the checks that stop a run before a non-finite loss or gradient is applied.

Precision: ``train.dtype=auto`` is bf16 autocast on CUDA and fp32 on the CPU (`resolve_dtype`, `autocast`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

import moe

from . import distributed
from .exits import Signals, TrainingDiverged
from .run_state import RunState


def resolve_dtype(t: dict, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 on the CPU."""
    return ("bf16" if device.type == "cuda" else "fp32") if t["dtype"] == "auto" else t["dtype"]


def autocast(device: torch.device, dtype: str):
    """bf16 autocast on ``device`` for ``dtype="bf16"``, else nothing."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class StepResult:
    lm_loss: float
    total_loss: float
    grad_norm: float
    lr: float
    signum: int                     # a SIGINT/SIGTERM pending on any rank (0: none)
    router_micro: list              # per micro-batch, the RouterStats dicts (when logging an MoE model)
    aux_losses: dict                # the last micro-batch's weighted auxiliary losses
    mtp_loss: float | None = None   # the weighted MTP loss (mean over micro-batches); None without MTP


def _micro_batches(r: RunState, log_now: bool):
    """Forward and backward over ``grad_accum`` micro-batches: (mean [lm, total, mtp] losses, whether an MTP
    loss was present, per-micro-batch router stats, the last output)."""
    t, info, device = r.cfg["train"], r.info, r.info.device
    lm_sum = torch.zeros((), device=device)
    total_sum = torch.zeros((), device=device)
    mtp_sum = torch.zeros((), device=device)
    has_mtp = False
    router_micro = []
    for micro in range(t["grad_accum"]):
        x, y = r.sampler.train_batch(r.step, micro)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync = distributed.gradient_sync(r.model, enabled=micro == t["grad_accum"] - 1) if info.enabled \
            else contextlib.nullcontext()
        with sync:
            with autocast(device, r.dtype):
                out = r.model(x, y)
            (out.loss / t["grad_accum"]).backward()
        lm_sum += out.lm_loss.detach().float()
        total_sum += out.loss.detach().float()
        if "mtp" in out.aux_losses:
            mtp_sum += out.aux_losses["mtp"].detach().float()
            has_mtp = True
        if log_now and isinstance(out, moe.MoEOutput):
            router_micro.append([s.to_dict() for s in out.router_stats])
    return torch.stack([lm_sum, total_sum, mtp_sum]) / t["grad_accum"], has_mtp, router_micro, out


def train_step(r: RunState, log_now: bool, signals: Signals) -> StepResult:
    """One optimizer step over ``grad_accum`` micro-batches; `TrainingDiverged` before a non-finite loss or
    gradient is applied."""
    o, info, device = r.cfg["optim"], r.info, r.info.device
    losses, has_mtp, router_micro, out = _micro_batches(r, log_now)
    # clip_grad_norm_ (experts split: their gradients reduced over their group first; the global norm)
    grad_norm = distributed.finish_gradients(r.model, o["grad_clip"] if o["grad_clip"] > 0 else float("inf"), info)
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
    # One all-reduce (MIN) per step: finite loss, finite gradient norm, and -signal (a pending SIGINT/SIGTERM
    # on any rank stops every rank after this step).
    flags = torch.tensor([float(torch.isfinite(losses).all()), float(torch.isfinite(grad_norm)),
                          -float(signals.signum)], dtype=torch.float64, device=device)
    distributed.all_reduce_(flags, info, op=torch.distributed.ReduceOp.MIN)
    finite_loss, finite_grad, minus_signum = flags.tolist()
    if finite_loss < 1 or finite_grad < 1:
        r.optimizer.zero_grad(set_to_none=True)
        what = "loss" if finite_loss < 1 else "gradient norm"
        raise TrainingDiverged(f"non-finite {what} at step {r.step + 1} (train loss {losses[0].item()}, gradient "
                               f"norm {float(grad_norm)}); the update was not applied; {r.kept()}")
    lr = r.scheduler.get_last_lr()[0]
    r.optimizer.step()  # an MoE model's loss-free bias step runs first (moe.register_bias_update)
    r.scheduler.step()
    r.optimizer.zero_grad(set_to_none=True)
    r.step += 1
    lm_loss, total_loss, mtp = losses.tolist()
    r.last_train = lm_loss
    aux = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.aux_losses.items()} \
        if log_now else {}
    return StepResult(lm_loss, total_loss, float(grad_norm), lr, int(-minus_signum), router_micro, aux,
                      mtp if has_mtp else None)
