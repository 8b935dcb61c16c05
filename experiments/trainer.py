"""The training loop: ``train(spec, run_dir)`` runs (or resumes) one validated run into its folder.

The run folder (``runs/<experiment>/<model>/<size>-seed<seed>``, in a ``-m`` sweep followed by
``,key=value`` for each swept key: `experiments.sweep`) receives (from rank 0 only): ``config.yaml``
(resolved), ``env.json`` (device, torch, git commit, MFU peak), ``metrics.jsonl`` (see experiments.metrics),
``checkpoint.pt`` (atomic; see experiments.checkpoint) and ``summary.json``.

The loop: AdamW, linear warm-up + cosine decay (`experiments.schedule`), gradient accumulation and clipping
(`experiments.step`), bf16 autocast (and optionally torch.compile) on CUDA, fp32 on the CPU; an MoE model's
loss-free bias step runs as an optimizer pre-hook (``moe.register_bias_update``). A NaN/inf loss, gradient
norm, weight or validation loss stops the run with `TrainingDiverged` (exit status 3) before anything
non-finite is applied or saved, leaving the last good checkpoint. ``train`` reads as its parts: ``_setup``
(data, model, optimiser), `experiments.run_folder.claim_folder` (lock, decide), ``_start`` (resume or
clean), ``_loop`` over `experiments.step.train_step`, ``_log`` and ``_save_checkpoint``.
"""
from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

import moe
from accounting.params import count_parameters

from . import checkpoint as ckpt
from . import distributed
from .atomic import write_text_atomic
from .config import RunSpec, upgrade_saved_config
from .data import DataError, WindowSampler, prepare
from .environment import environment, hardware_peak, memory_bytes
from .exits import Interrupted, RunError, Signals, TrainingDiverged, agree
from .loggers import make_logger, remove_event_files
from .metrics import MetricsWriter, aggregate_router_stats, load_balance, routed_assignments, train_flops_per_token
from .paths import portable_path
from .preflight import preflight
from .progress import Progress, fmt_loss
from .run_folder import RUN_FILES, Decision, RunLock, changed_settings, claim_folder, read_summary, \
    remove_if_empty, saved_config
from .run_state import RunState
from .schedule import effective_max_steps, make_scheduler, schedule_steps
from .step import StepResult, autocast, resolve_dtype, train_step


def build_model(spec: RunSpec) -> torch.nn.Module:
    """The model of a validated run config (``model.shape``, ``model.router``, ``model.backend``,
    ``model.mtp_loss_weight``)."""
    m = spec.cfg["model"]
    return moe.build_model(spec.shape, router=m["router"], backend=m["backend"],
                           mtp_loss_weight=m["mtp_loss_weight"])


def make_optimizer(model: torch.nn.Module, o: dict, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices (ndim >= 2) only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": o["weight_decay"]},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], **fused)


@torch.no_grad()
def evaluate(model: torch.nn.Module, sampler: WindowSampler, device: torch.device, dtype: str) -> float:
    """Mean LM loss over the fixed validation batches (nats per token)."""
    was_training = model.training
    model.eval()
    losses = []
    for x, y in sampler.val_batches():
        with autocast(device, dtype):
            out = model(x.to(device), y.to(device))
        losses.append(float(out.lm_loss.float()))
    model.train(was_training)
    return sum(losses) / len(losses)


def _reduce_router(router: list[dict], info: distributed.DistInfo) -> list[dict]:
    """Sum per-expert token counts over ranks and recompute the loads (all ranks call it)."""
    if not info.enabled or not router or "tokens_per_expert" not in router[0]:
        return router
    counts = torch.tensor([r["tokens_per_expert"] for r in router], dtype=torch.float64)
    distributed.all_reduce_(counts, info)
    for r, c in zip(router, counts.tolist()):
        r["tokens_per_expert"] = c
        r.update(load_balance(c))
    return router


def train(spec: RunSpec, run_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) one training job into ``run_dir``; returns the summary dict.

    Order: checks that need no work (paths, memory); data and model (nothing of the folder touched); lock the
    folder; decide fresh / resume / already completed / refuse (rank 0, then every rank follows); only then
    replace an old run's files (``overwrite=true``) or truncate its metrics to the checkpoint (resume)."""
    cfg, t = spec.cfg, spec.cfg["train"]
    info = distributed.setup(t["device"])
    threads_before = torch.get_num_threads()
    if t["threads"]:
        torch.set_num_threads(t["threads"])
    r = RunState(spec, Path(run_dir), info, resolve_dtype(t, info.device),
                 f"{cfg['model']['name']}-{cfg['model']['size']}", time.perf_counter())
    signals = Signals()
    signals.install()
    started = finished = False
    try:
        preflight(spec, info.device)
        _setup(r)
        if info.is_main:
            r.lock = RunLock(r.run_dir)
        decision, state = claim_folder(r.lock, cfg, r.label, info, r.max_steps,
                                       lambda saved: _check_resumable(r, saved))
        if decision == Decision.COMPLETED:
            finished = True
            return read_summary(r.run_dir) if info.is_main else {}
        _start(r, decision, state)
        started = True
        _write_run_files(r)
        summary = _loop(r, signals)
        finished = True
        return summary
    except BaseException:
        if info.is_main and not started:
            remove_if_empty(r.run_dir, cfg["paths"]["runs"], r.lock)
        raise
    finally:
        signals.restore()
        if r.writer is not None:
            r.writer.close()  # the logger's files (logger=tensorboard|wandb), before the lock goes
        if r.lock is not None:
            r.lock.release()
        torch.set_num_threads(threads_before)
        # Drop the wrapped model, optimizer and state before the process group goes (see distributed.cleanup).
        r = None  # noqa: F841
        distributed.cleanup(info, barrier=finished)


def _prepare_data(r: RunState) -> None:
    """Rank 0 trains/caches the tokenizer and token arrays first, the others then read the cache (a failure
    on rank 0 is broadcast, so the other ranks stop with it instead of waiting)."""
    cfg, info = r.cfg, r.info
    err = None
    if info.is_main:
        try:
            r.data = prepare(cfg["data"], cfg["paths"]["cache"])
        except Exception as e:
            err = e
    agree(0, err, info)
    if not info.is_main:
        r.data = prepare(cfg["data"], cfg["paths"]["cache"])
    if r.data.vocab_size > r.spec.shape.vocab_size:
        raise DataError(f"the tokenizer has {r.data.vocab_size} tokens but model.shape.vocab_size="
                        f"{r.spec.shape.vocab_size}")


def _setup(r: RunState) -> None:
    """Data (rank 0 first), model, optimiser and schedule; nothing of the run folder is touched."""
    cfg, shape, info = r.cfg, r.spec.shape, r.info
    t, o = cfg["train"], cfg["optim"]
    _prepare_data(r)
    r.sampler = WindowSampler(r.data, shape.seq_len, t["batch_size"], cfg["seed"], info.rank, t["eval_batches"])
    torch.manual_seed(cfg["seed"])
    r.raw = build_model(r.spec).to(info.device)
    r.raw.recompute = t["recompute"]
    # FSDP shards the parameters in place, so the optimizer is built on the wrapped model's parameters.
    r.model = distributed.wrap(r.raw, info, t["parallel"], t.get("expert_parallel", 1))
    if t["compile"]:   # CPU and CUDA (moe.compiled_ops: the grouped experts trace in fp32 too)
        r.model = torch.compile(r.model)
    r.optimizer = make_optimizer(r.raw, o, info.device)
    moe.register_bias_update(r.raw, r.optimizer)
    r.tokens_per_step = t["batch_size"] * shape.seq_len * t["grad_accum"] * info.world_size
    r.flops_per_token = train_flops_per_token(shape)
    r.max_steps = r.schedule_steps = effective_max_steps(t, r.flops_per_token, r.tokens_per_step)
    r.scheduler = make_scheduler(r.optimizer, o, r.schedule_steps)
    r.writer = MetricsWriter(r.run_dir, enabled=info.is_main, logger=make_logger(cfg, r.run_dir, info.is_main))
    r.meta = {"family": cfg["model"]["name"], "shape": cfg["model"]["shape"],
              "config": {k: v for k, v in cfg.items() if k != "hydra"}, "world_size": info.world_size}


def _check_resumable(r: RunState, state: dict) -> None:
    """Refuse a checkpoint of another model, changed settings, or a metrics file that cannot be truncated."""
    cfg = r.cfg
    ckpt.check_compatible(state, r.ckpt_path, r.raw, shape=cfg["model"]["shape"], family=cfg["model"]["name"])
    saved_meta = state.get("meta") or {}
    saved = saved_meta.get("config")
    if saved is not None:
        saved = {**saved, "world_size": saved_meta.get("world_size")}
        now = {**r.meta["config"], "world_size": r.info.world_size}
    else:  # a checkpoint from before settings were recorded: the folder's config.yaml
        saved, now = saved_config(r.run_dir), r.meta["config"]
    if saved is not None:
        changed = changed_settings(upgrade_saved_config(saved), now)
        if changed:
            raise RunError(f"resume=true with settings that differ from the checkpoint's run "
                           f"({'; '.join(changed)}): resume with the original values, or "
                           f"start a new run (another name, or overwrite=true)")
    r.writer.check(state["step"])  # a bad metrics line refuses before anything changes


def _start(r: RunState, decision: Decision, state: dict | None) -> None:
    """Load the checkpoint (resume) or remove an old run's files (fresh)."""
    if decision == Decision.RESUME:
        _resume(r, state)
    elif r.info.is_main:
        if r.cfg["resume"]:
            print(f"[{r.label}] resume=true but {r.ckpt_path} does not exist: starting from scratch", flush=True)
        for f in RUN_FILES:
            (r.run_dir / f).unlink(missing_ok=True)
        remove_event_files(r.run_dir)  # an old run's TensorBoard events (logger=tensorboard)


def _resume(r: RunState, state: dict | None) -> None:
    """Load the checkpoint (``state`` as rank 0 read it; None on the other ranks), keep the LR schedule the
    run started with, and truncate metrics.jsonl to the checkpoint's step."""
    if state is None:  # ranks > 0: rank 0 read and checked it in claim_folder
        state = ckpt.read(r.ckpt_path, map_location=r.info.device)
        ckpt.check_compatible(state, r.ckpt_path, r.raw)
    r.schedule_steps = schedule_steps(state, r.cfg["train"], r.flops_per_token, r.tokens_per_step, r.max_steps)
    if r.schedule_steps != r.max_steps:  # an extended run keeps the schedule it started with
        r.scheduler = make_scheduler(r.optimizer, r.cfg["optim"], r.schedule_steps)
    state = ckpt.load(r.ckpt_path, model=r.raw, optimizer=r.optimizer, scheduler=r.scheduler,
                      map_location=r.info.device, state=state)
    r.step = r.saved_step = state["step"]
    r.wall_before = float((state.get("extra") or {}).get("wall_time_s") or 0.0)
    kept = r.writer.truncate_after(r.step)
    if kept:  # the losses of the run so far, in case no step or evaluation follows
        r.last_train = kept[-1].get("train_loss")
        r.last_val = next((x["val_loss"] for x in reversed(kept) if x.get("val_loss") is not None), None)
    if r.info.is_main:
        ext = (f"; extended to step {r.max_steps}, the LR schedule keeps its {r.schedule_steps} steps (the "
               f"steps after them train at the final LR)" if r.max_steps > r.schedule_steps else "")
        print(f"[{r.label}] resumed from {r.ckpt_path} at step {r.step}{ext}", flush=True)


def _write_run_files(r: RunState) -> None:
    """config.yaml (resolved) and env.json (device, versions, MFU peak, sizes), from rank 0."""
    cfg = r.cfg
    r.peak = hardware_peak(cfg["hardware"], r.info.device, r.dtype)
    if r.info.is_main:
        params = count_parameters(r.spec.shape)
        write_text_atomic(r.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(cfg)))
        env = environment(r.info.device, r.dtype, r.info.world_size)
        env.update(r.peak)
        env.update({"data": r.data.describe(), "parameters_total": params.total, "parameters_active": params.active,
                    "parameters_counted": sum(p.numel() for p in r.model.parameters()),
                    "tokens_per_step": r.tokens_per_step, "max_steps": r.max_steps,
                    "train_flops_fma2_per_token": r.flops_per_token, "flop_convention": "2 per multiply-add"})
        write_text_atomic(r.run_dir / "env.json", json.dumps(env, indent=1))


def _loop(r: RunState, signals: Signals) -> dict:
    """Train from ``r.step`` to the stop step: step, log, checkpoint, honour a signal; the summary."""
    t = r.cfg["train"]
    r.model.train()
    progress = Progress(t["progress"], r.max_steps, r.step, r.info.is_main, r.label)
    interval_time, interval_steps, status = 0.0, 0, "completed"
    try:
        signals.in_loop = True
        while r.step < r.max_steps:
            log_now = (r.step + 1) % t["log_every"] == 0 or r.step + 1 in (r.max_steps, r.stop)
            t0 = time.perf_counter()
            result = train_step(r, log_now, signals)
            interval_time += time.perf_counter() - t0
            interval_steps += 1
            rec = None
            if log_now:
                rec = _log(r, result, interval_time / interval_steps)
                interval_time, interval_steps = 0.0, 0
            progress.update(r.step, rec)
            if r.step in (r.stop, r.max_steps) or (t["ckpt_every"] and r.step % t["ckpt_every"] == 0):
                _save_checkpoint(r)
            if result.signum:
                if r.saved_step != r.step:
                    _save_checkpoint(r)
                raise Interrupted(result.signum, f"{signal.Signals(result.signum).name} at step {r.step}")
            if r.step == r.stop < r.max_steps:
                status = "stopped"
                break
    except (TrainingDiverged, Interrupted) as e:
        signals.in_loop = False
        progress.close()
        _stopped(r, e)
    signals.in_loop = False
    progress.close()
    return _finish(r, status)


def _finish(r: RunState, status: str) -> dict:
    """The summary of a run that completed or reached its stop step; rank 0 writes summary.json."""
    summary = _summary(r, status, replica_max_abs_diff=distributed.replica_max_abs_diff(r.raw, r.info))
    if r.info.is_main:
        write_text_atomic(r.run_dir / "summary.json", json.dumps(_jsonable_summary(summary), indent=1))
        print(f"[{r.label}] {status} at step {r.step}: train loss {fmt_loss(r.last_train)}, val loss "
              f"{fmt_loss(r.last_val)}, {summary['wall_time_s']:.1f} s -> {r.run_dir}", flush=True)
    return summary


def _log(r: RunState, s: StepResult, step_time: float) -> dict:
    """Evaluate when due, write one metrics.jsonl record and return it; `TrainingDiverged` on a non-finite
    validation loss (after the record is written)."""
    t, info = r.cfg["train"], r.info
    evaluated = r.step % t["eval_every"] == 0 or r.step in (r.max_steps, r.stop)
    if evaluated:
        r.last_val = evaluate(r.raw, r.sampler, info.device, r.dtype)
    router = _reduce_router(aggregate_router_stats(s.router_micro), info)
    assignments = routed_assignments(router)
    windows = t["batch_size"] * t["grad_accum"] * info.world_size
    fpt_routed = (train_flops_per_token(r.spec.shape, assignments / windows)
                  if assignments is not None else r.flops_per_token)
    tok_s = r.tokens_per_step / step_time
    achieved = fpt_routed * tok_s
    rec = {"step": r.step, "max_steps": r.max_steps, "tokens": r.step * r.tokens_per_step,
           "train_loss": s.lm_loss, "train_total_loss": s.total_loss, "val_loss": r.last_val if evaluated else None,
           "lr": s.lr, "grad_norm": s.grad_norm, "step_time_s": step_time,
           "tokens_per_s": tok_s, "train_flops_fma2_per_token": r.flops_per_token,
           "train_flops_fma2_per_token_routed": fpt_routed, "achieved_flops_fma2_per_s": achieved,
           "peak_flops_per_s": r.peak["peak_flops_per_s"],
           "mfu": achieved / (r.peak["peak_flops_per_s"] * info.world_size), **memory_bytes(info.device),
           "mtp_loss": s.mtp_loss, "aux_losses": s.aux_losses, "router": router}
    rec.update(distributed.expert_parallel_bytes(r.raw, info))  # ep_dispatch_bytes, ep_combine_bytes
    r.writer.write(rec)
    if evaluated and not math.isfinite(r.last_val):
        raise TrainingDiverged(f"non-finite validation loss {r.last_val} at step {r.step}; {r.kept()}")
    return rec


def _all_ranks(ok: bool, info: distributed.DistInfo) -> bool:
    flag = torch.tensor([1.0 if ok else 0.0], device=info.device)
    distributed.all_reduce_(flag, info, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() >= 1)


def _save_checkpoint(r: RunState) -> None:
    """The checkpoint at ``r.step`` (atomic; rank 0 writes); never of non-finite weights."""
    if not _all_ranks(ckpt.all_finite(list(r.raw.parameters()) + list(r.raw.buffers())), r.info):
        raise TrainingDiverged(f"non-finite weights after step {r.step}; not saved; {r.kept()}")
    t = r.cfg["train"]
    ckpt.save(r.ckpt_path, model=r.raw, optimizer=r.optimizer, scheduler=r.scheduler, step=r.step,
              tokens=r.step * r.tokens_per_step, meta=r.meta,
              extra={"parallel": t["parallel"], "world_size": r.info.world_size, "schedule_steps": r.schedule_steps,
                     "wall_time_s": r.wall_before + time.perf_counter() - r.t_start},
              write=r.info.is_main)
    r.saved_step = r.step


def _summary(r: RunState, status: str, **more) -> dict:
    params = count_parameters(r.spec.shape)
    return {"status": status, "step": r.step, "max_steps": r.max_steps, "lr_schedule_steps": r.schedule_steps,
            "tokens": r.step * r.tokens_per_step,
            "final_train_loss": r.last_train, "final_val_loss": r.last_val,
            "parameters_total": params.total, "parameters_active": params.active,
            "train_flops_per_token": r.flops_per_token,
            "train_flops": r.flops_per_token * r.step * r.tokens_per_step,
            "wall_time_s": r.wall_before + time.perf_counter() - r.t_start,
            "wall_time_this_segment_s": time.perf_counter() - r.t_start, "world_size": r.info.world_size,
            "parallel": r.cfg["train"]["parallel"] if r.info.enabled else None, "run_dir": portable_path(r.run_dir),
            **more}


def _stopped(r: RunState, e: TrainingDiverged | Interrupted) -> None:
    """Write the summary of a diverged or interrupted run and re-raise (an interruption names its checkpoint)."""
    status = "diverged" if isinstance(e, TrainingDiverged) else "interrupted"
    if r.info.is_main:
        write_text_atomic(r.run_dir / "summary.json", json.dumps(_jsonable_summary(_summary(
            r, status, checkpoint_step=r.saved_step, reason=str(e))), indent=1))
    if isinstance(e, Interrupted):
        where = (f"checkpoint at step {r.saved_step} in {r.ckpt_path}" if r.saved_step is not None
                 else "no checkpoint")
        raise Interrupted(e.signum, f"{e} ({where}); continue with resume=true") from None
    raise e


def _jsonable_summary(s: dict) -> dict:
    """Non-finite floats as null (summary.json stays strict JSON)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in s.items()}
