"""Train a dense or MoE language model: ``python -m experiments.train model=moe`` (Hydra 1.3, conf/).

  python -m experiments.train model=dense size=tiny train.max_steps=100
  python -m experiments.train -m model=dense,moe experiment=demo        # jobs one after another
  python -m experiments.train model=moe resume=true                      # continue the same run folder
  torchrun --nproc_per_node=2 -m experiments.train model=moe             # DDP (gloo on CPU, NCCL on GPU)
  torchrun --nproc_per_node=2 -m experiments.train model=moe train.parallel=fsdp   # FSDP2 sharding

The run folder ``runs/<experiment>/<model>/<size>-seed<seed>`` receives (from rank 0 only):
``config.yaml`` (resolved), ``env.json`` (device, torch, git commit, MFU peak), ``metrics.jsonl`` (see
experiments.metrics), ``checkpoint.pt`` (atomic; see experiments.checkpoint) and ``summary.json``.

The loop: AdamW, linear warm-up + cosine decay, gradient accumulation and clipping, bf16 autocast (and
optionally torch.compile) on CUDA, fp32 on the CPU; ``model.update_router_biases()`` after every optimizer
step. A NaN/inf loss stops the run with a message (exit status 3), leaving the last good checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from accounting.params import count_parameters

from . import checkpoint as ckpt
from . import distributed as D
from .config import ConfigError, RunSpec, one_line, validate
from .data import DataError, WindowSampler, prepare
from .environment import environment, hardware_peak, memory_bytes
from .metrics import MetricsWriter, aggregate_router_stats, load_balance, routed_assignments, \
    train_flops_per_token


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def model_from(shape, router: dict | None = None, backend: str = "loop") -> torch.nn.Module:
    """``moe.build_model(shape, RouterConfig(**router), backend)``: a dense.Transformer for E = 0."""
    import moe

    if not hasattr(moe, "build_model") and not shape.is_moe:  # the dense package alone
        import dense
        return dense.Transformer(shape)
    return moe.build_model(shape, router=moe.RouterConfig(**(router or {})), backend=backend)


def build_model(spec: RunSpec) -> torch.nn.Module:
    """The model of a validated run config (``model.shape``, ``model.router``, ``model.backend``)."""
    m = spec.cfg["model"]
    return model_from(spec.shape, m["router"], m["backend"])


def lr_lambda(warmup_steps: int, max_steps: int, min_lr_ratio: float):
    """LR multiplier after ``s`` optimizer steps: linear warm-up to 1 over ``warmup_steps``, then cosine
    decay to ``min_lr_ratio`` at ``max_steps``."""
    def f(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        progress = min(1.0, (s - warmup_steps) / max(1, max_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def make_optimizer(model: torch.nn.Module, o: dict, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices (ndim >= 2) only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": o["weight_decay"]},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], **fused)


def resolve_dtype(t: dict, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 on the CPU."""
    return ("bf16" if device.type == "cuda" else "fp32") if t["dtype"] == "auto" else t["dtype"]


def autocast(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Progress:
    """tqdm bar on a TTY, plain lines otherwise (CI), nothing on ranks > 0."""

    def __init__(self, mode: str, total: int, initial: int, enabled: bool, label: str):
        self.bar, self.label, self.enabled = None, label, enabled
        self.lines = enabled and (mode == "lines" or (mode == "auto" and not sys.stderr.isatty()))
        if enabled and (mode == "bar" or (mode == "auto" and sys.stderr.isatty())):
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=label, dynamic_ncols=True)

    def update(self, step: int, rec: dict | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if rec:
                self.bar.set_postfix(loss=f"{rec['train_loss']:.3f}", val=_fmt(rec.get("val_loss")),
                                     tok_s=f"{rec['tokens_per_s']:.0f}")
        elif self.lines and rec:
            mfu = rec.get("mfu")
            print(f"[{self.label}] step {step}/{rec['max_steps']} | loss {rec['train_loss']:.4f} | "
                  f"val {_fmt(rec.get('val_loss'))} | lr {rec['lr']:.2e} | {rec['tokens_per_s']:.0f} tok/s | "
                  f"mfu {'-' if mfu is None else f'{100 * mfu:.2f}%'}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _portable(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (so committed records carry no
    machine-specific prefix), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


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


def _reduce_router(router: list[dict], info: D.DistInfo) -> list[dict]:
    """Sum per-expert token counts over ranks and recompute the loads (all ranks call it)."""
    if not info.enabled or not router or "tokens_per_expert" not in router[0]:
        return router
    counts = torch.tensor([r["tokens_per_expert"] for r in router], dtype=torch.float64)
    D.all_reduce_(counts, info)
    for r, c in zip(router, counts.tolist()):
        r["tokens_per_expert"] = c
        r.update(load_balance(c))
    return router


def train(spec: RunSpec, run_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) one training job into ``run_dir``; returns the summary dict."""
    cfg, shape = spec.cfg, spec.shape
    t, o = cfg["train"], cfg["optim"]
    run_dir = Path(run_dir)
    info = D.setup(t["device"])
    device, main = info.device, info.is_main
    threads_before = torch.get_num_threads()
    if t["threads"]:
        torch.set_num_threads(t["threads"])
    dtype = resolve_dtype(t, device)
    label = f"{cfg['model']['name']}-{cfg['model']['size']}"
    t_start = time.perf_counter()
    try:
        # Data: rank 0 trains/caches the tokenizer and token arrays first, the others then read the cache.
        if main:
            data = prepare(cfg["data"], cfg["paths"]["cache"])
        D.barrier(info)
        if not main:
            data = prepare(cfg["data"], cfg["paths"]["cache"])
        if data.vocab_size > shape.vocab_size:
            raise DataError(f"the tokenizer has {data.vocab_size} tokens but model.shape.vocab_size="
                            f"{shape.vocab_size}")
        sampler = WindowSampler(data, shape.seq_len, t["batch_size"], cfg["seed"], info.rank,
                                t["eval_batches"])

        torch.manual_seed(cfg["seed"])
        raw = build_model(spec).to(device)
        # FSDP shards the parameters in place, so the optimizer is built on the wrapped model's parameters.
        model = D.wrap(raw, info, t["parallel"])
        if device.type == "cuda" and t["compile"]:
            model = torch.compile(model)
        optimizer = make_optimizer(raw, o, device)
        tokens_per_step = t["batch_size"] * shape.seq_len * t["grad_accum"] * info.world_size
        flops_per_token = train_flops_per_token(shape)
        max_steps = t["max_steps"]
        if t["flops_budget"]:
            max_steps = min(max_steps, max(1, math.ceil(t["flops_budget"] / (flops_per_token * tokens_per_step))))
        warmup = min(o["warmup_steps"], max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup, max_steps, o["min_lr_ratio"]))

        writer = MetricsWriter(run_dir, enabled=main)
        ckpt_path = run_dir / ckpt.CHECKPOINT
        step = 0
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
        if cfg["resume"] and ckpt_path.exists():
            state = ckpt.load(ckpt_path, model=raw, optimizer=optimizer, scheduler=scheduler,
                              map_location=device)
            step = state["step"]
            writer.truncate_after(step)
            if main:
                print(f"[{label}] resumed from {ckpt_path} at step {step}", flush=True)
        else:
            if cfg["resume"] and main:
                print(f"[{label}] resume=true but {ckpt_path} does not exist: starting from scratch", flush=True)
            D.barrier(info)  # every rank has decided before rank 0 clears the folder
            if main:
                writer.reset()
                for stale in (ckpt_path, run_dir / "summary.json"):
                    stale.unlink(missing_ok=True)

        peak = hardware_peak(cfg["hardware"], device, dtype)
        params = count_parameters(shape)
        if main:
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
            env = environment(device, dtype, info.world_size)
            env.update(peak)
            env.update({"data": data.describe(), "parameters_total": params.total,
                        "parameters_active": params.active,
                        "parameters_counted": sum(p.numel() for p in model.parameters()),
                        "tokens_per_step": tokens_per_step, "max_steps": max_steps,
                        "train_flops_per_token": flops_per_token, "flop_convention": "2 per multiply-add"})
            (run_dir / "env.json").write_text(json.dumps(env, indent=1))

        model.train()

        progress = Progress(t["progress"], max_steps, step, main, label)
        last_val, last_train = None, None
        interval_time, interval_steps = 0.0, 0
        stop = t["stop_at_step"] or max_steps
        status = "completed"
        while step < max_steps:
            log_now = (step + 1) % t["log_every"] == 0 or step + 1 == max_steps or step + 1 == stop
            t0 = time.perf_counter()
            lm_sum = torch.zeros((), device=device)
            total_sum = torch.zeros((), device=device)
            router_micro = []
            for micro in range(t["grad_accum"]):
                x, y = sampler.train_batch(step, micro)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                sync = contextlib.nullcontext()
                if info.enabled:
                    sync = D.gradient_sync(model, enabled=micro == t["grad_accum"] - 1)
                with sync:
                    with autocast(device, dtype):
                        out = model(x, y)
                    (out.loss / t["grad_accum"]).backward()
                lm_sum += out.lm_loss.detach().float()
                total_sum += out.loss.detach().float()
                if log_now and out.router_stats:
                    router_micro.append([s.to_dict() for s in out.router_stats])
            losses = torch.stack([lm_sum, total_sum]) / t["grad_accum"]
            finite = torch.isfinite(losses).all().float().reshape(1)
            D.all_reduce_(finite, info, op=torch.distributed.ReduceOp.MIN)
            if finite.item() < 1:
                optimizer.zero_grad(set_to_none=True)
                raise TrainingDiverged(f"non-finite loss at step {step + 1} (train loss "
                                       f"{losses[0].item()}); stopped, last good checkpoint kept at {ckpt_path}")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                       o["grad_clip"] if o["grad_clip"] > 0 else float("inf"))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            raw.update_router_biases() if hasattr(raw, "update_router_biases") else None
            step += 1
            train_loss, total_loss = losses.tolist()
            last_train = train_loss
            interval_time += time.perf_counter() - t0
            interval_steps += 1

            rec = None
            if log_now:
                if step % t["eval_every"] == 0 or step == max_steps or step == stop:
                    last_val = evaluate(raw, sampler, device, dtype)
                router = _reduce_router(aggregate_router_stats(router_micro), info)
                assignments = routed_assignments(router)
                windows = t["batch_size"] * t["grad_accum"] * info.world_size
                fpt_routed = (train_flops_per_token(shape, assignments / windows)
                              if assignments is not None else flops_per_token)
                step_time = interval_time / interval_steps
                tok_s = tokens_per_step / step_time
                achieved = fpt_routed * tok_s
                rec = {"step": step, "max_steps": max_steps, "tokens": step * tokens_per_step,
                       "train_loss": train_loss, "train_total_loss": total_loss,
                       "val_loss": last_val if step % t["eval_every"] == 0 or step in (max_steps, stop) else None,
                       "lr": lr, "grad_norm": float(grad_norm), "step_time_s": step_time,
                       "tokens_per_s": tok_s, "train_flops_per_token": flops_per_token,
                       "train_flops_per_token_routed": fpt_routed, "achieved_flops_per_s": achieved,
                       "peak_flops_per_s": peak["peak_flops_per_s"],
                       "mfu": achieved / (peak["peak_flops_per_s"] * info.world_size), **memory_bytes(device),
                       "aux_losses": {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.aux_losses.items()},
                       "router": router}
                writer.write(rec)
                interval_time, interval_steps = 0.0, 0
            progress.update(step, rec)
            if step == stop or step == max_steps or (t["ckpt_every"] and step % t["ckpt_every"] == 0):
                ckpt.save(ckpt_path, model=raw, optimizer=optimizer, scheduler=scheduler, step=step,
                          tokens=step * tokens_per_step, extra={"parallel": t["parallel"],
                                                               "world_size": info.world_size},
                          write=main)
            if step == stop and stop < max_steps:
                status = "stopped"
                break
        progress.close()
        replica_diff = D.replica_max_abs_diff(raw, info)
        summary = {"status": status, "step": step, "max_steps": max_steps, "tokens": step * tokens_per_step,
                   "final_train_loss": last_train, "final_val_loss": last_val,
                   "parameters_total": params.total, "parameters_active": params.active,
                   "train_flops_per_token": flops_per_token,
                   "train_flops": flops_per_token * step * tokens_per_step,
                   "wall_time_s": time.perf_counter() - t_start, "world_size": info.world_size,
                   "replica_max_abs_diff": replica_diff, "parallel": t["parallel"] if info.enabled else None,
                   "run_dir": _portable(run_dir)}
        if main:
            (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
            print(f"[{label}] {status} at step {step}: train loss {_fmt(last_train)}, val loss "
                  f"{_fmt(last_val)}, {summary['wall_time_s']:.1f} s -> {run_dir}", flush=True)
        return summary
    finally:
        torch.set_num_threads(threads_before)
        D.cleanup(info)


def precheck(argv: list[str]) -> int:
    """Compose and validate EVERY job of the command line before any work starts (a ``-m`` sweep,
    including ``hydra.sweeper.params`` of an experiment file, is expanded as Hydra's basic sweeper
    would); raises `ConfigError` with one line. Other Hydra flags (``--help``, ``--cfg``) skip the
    check. Returns the number of jobs checked."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .config import CONF_DIR, compose

    flags = [a for a in argv if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        return 0
    args = [a for a in argv if not a.startswith("-")]
    multirun = bool(flags)
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(args)
        if not multirun:
            jobs = [args]
        else:
            first = [o.input_line if not o.is_sweep_override() else
                     f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" for o in overrides]
            params = compose(first, return_hydra=True).hydra.sweeper.get("params") or {}
            given = {o.get_key_element() for o in overrides}
            extra = [f"{k}={v}" for k, v in params.items() if k not in given]
            jobs = BasicSweeper.split_arguments(parser.parse_overrides(extra) + overrides, None)[0]
        for job in jobs:
            try:
                validate(compose(list(job)))
            except ConfigError as e:
                raise ConfigError(f"{e} [job: {' '.join(job)}]" if multirun else str(e)) from None
    except (HydraException, OmegaConfBaseException) as e:
        msg = (str(e).splitlines() or [type(e).__name__])[0]
        m = re.match(r"Could not override '([^']+)'", msg)
        if m:
            raise ConfigError(f"unknown config key '{m.group(1)}' (prefix it with + to add a new key)") from None
        m = re.search(r"Could not find '([\w-]+)/([^']+)'", msg)
        if m and (CONF_DIR / m.group(1)).is_dir():
            options = ", ".join(sorted(f.stem for f in (CONF_DIR / m.group(1)).glob("*.yaml")))
            raise ConfigError(f"{m.group(1)}={m.group(2)}: no such option; choose one of {options}") from None
        raise ConfigError(msg) from None
    return len(jobs)


def _run_dir_from_hydra(cfg) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig
        return HydraConfig.get().runtime.output_dir
    except Exception:  # not under @hydra.main (compose API)
        return str(cfg.run_dir)


def run(cfg) -> float | None:
    """Validate, then train; config/data problems and divergence exit with one line."""
    try:
        spec = validate(cfg)
    except ConfigError as e:
        print(one_line(e), file=sys.stderr, flush=True)
        sys.exit(2)
    try:
        summary = train(spec, _run_dir_from_hydra(cfg))
    except DataError as e:
        print(f"data error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except TrainingDiverged as e:
        print(f"training stopped: {e}", file=sys.stderr, flush=True)
        sys.exit(3)
    return summary["final_val_loss"]


def _hydra_main():
    import hydra

    from .config import CONF_DIR
    try:
        precheck(sys.argv[1:])
    except ConfigError as e:
        print(one_line(e), file=sys.stderr, flush=True)
        sys.exit(2)
    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(run)()


if __name__ == "__main__":
    _hydra_main()
