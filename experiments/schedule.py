"""The learning-rate schedule and the length of a run.

Linear warm-up to ``optim.lr`` over ``optim.warmup_steps``, cosine decay to ``optim.min_lr_ratio x
optim.lr`` at the schedule's last step (`lr_lambda`). A run trains ``train.max_steps`` optimizer steps, or
fewer when ``train.flops_budget`` runs out first (`effective_max_steps`); a resumed run keeps the schedule
length it started with even when ``train.max_steps`` is raised to extend it (`schedule_steps`).
"""
from __future__ import annotations

import math

import torch


def lr_lambda(warmup_steps: int, max_steps: int, min_lr_ratio: float):
    """LR multiplier after ``s`` optimizer steps: linear warm-up to 1 over ``warmup_steps``, then cosine
    decay to ``min_lr_ratio`` at ``max_steps``, and ``min_lr_ratio`` after it (the steps an extended run
    adds: see `schedule_steps`)."""
    def f(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        progress = min(1.0, (s - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def make_scheduler(optimizer: torch.optim.Optimizer, o: dict, schedule_steps: int):
    """`lr_lambda` over ``schedule_steps`` (warm-up capped at it) as a ``LambdaLR``."""
    warmup = min(o["warmup_steps"], schedule_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, schedule_steps, o["min_lr_ratio"]))


def effective_max_steps(t: dict, flops_per_token: float, tokens_per_step: int) -> int:
    """``train.max_steps``, or fewer when ``train.flops_budget`` (FLOP, 2 per multiply-add) runs out first."""
    steps = t["max_steps"]
    if t["flops_budget"]:
        steps = min(steps, max(1, math.ceil(t["flops_budget"] / (flops_per_token * tokens_per_step))))
    return steps


def schedule_steps(state: dict, t: dict, flops_per_token: float, tokens_per_step: int, max_steps: int) -> int:
    """The LR schedule's length for a run resumed from checkpoint ``state`` (``t``: the run's ``train``
    settings now; ``max_steps``: its effective max steps now): the length the run STARTED with, kept when
    ``train.max_steps`` is raised to extend it (the checkpoint's ``extra.schedule_steps``; for a checkpoint
    from before it was recorded, the effective ``train.max_steps`` of its saved config). So an extension
    never changes the learning rate of a step the run already trained or would have trained: the warm-up
    and the cosine decay end where they ended, and the added steps train at the final LR
    (``optim.min_lr_ratio`` x ``optim.lr``)."""
    extra = state.get("extra") or {}
    if isinstance(extra.get("schedule_steps"), int):
        return extra["schedule_steps"]
    saved = ((state.get("meta") or {}).get("config") or {}).get("train")
    if isinstance(saved, dict) and isinstance(saved.get("max_steps"), int):
        return effective_max_steps({**t, **saved}, flops_per_token, tokens_per_step)
    return max_steps
