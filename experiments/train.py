"""Train a dense or MoE language model: ``python -m experiments.train model=moe`` (Hydra 1.3, conf/).

  python -m experiments.train model=dense size=tiny train.max_steps=100
  python -m experiments.train -m model=dense,moe experiment=demo        # jobs one after another
  python -m experiments.train model=moe resume=true                      # continue the same run folder
  python -m experiments.train model=moe overwrite=true                   # replace the run in that folder
  python -m experiments.train model=moe train.max_steps=400 resume=true  # extend a finished 200-step run
  python -m experiments.train -m name=sweep model.shape.top_k=1,2,4      # one folder per job (experiments.sweep)
  python -m experiments.train model=moe logger=tensorboard               # + event files (experiments.loggers)
  torchrun --nproc_per_node=2 -m experiments.train model=moe             # DDP (gloo on CPU, NCCL on GPU)
  torchrun --nproc_per_node=2 -m experiments.train model=moe train.parallel=fsdp   # FSDP2 sharding

The run folder ``runs/<experiment>/<model>/<size>-seed<seed>`` (in a ``-m`` sweep followed by ``,key=value`` for
each swept key: `experiments.sweep`) receives (from rank 0 only):
``config.yaml`` (resolved), ``env.json`` (device, torch, git commit, MFU peak), ``metrics.jsonl`` (see
experiments.metrics), ``checkpoint.pt`` (atomic; see experiments.checkpoint) and ``summary.json``.

The loop: AdamW, linear warm-up + cosine decay, gradient accumulation and clipping, bf16 autocast (and
optionally torch.compile) on CUDA, fp32 on the CPU; an MoE model's loss-free bias step runs as an optimizer
pre-hook (``moe.register_bias_update``). A NaN/inf loss, gradient norm, weight or validation loss stops the
run with a message (exit status 3) before anything non-finite is applied or saved, leaving the last good
checkpoint. ``train`` reads as its parts: ``_setup`` (data, model, optimiser), ``_claim_folder`` (lock,
decide), ``_start`` (resume or clean), ``_loop`` over ``_train_step``, ``_log`` and ``_save_checkpoint``.

Reliability (docs/experiments.md, "Reliability"): one training per folder (an exclusive lock holding the pid);
nothing of an old run touched before the new one can proceed; a used folder needs ``resume=true`` or
``overwrite=true``; resume refuses changed optimiser/schedule/model settings (a raised ``train.max_steps``
extends the run on the schedule it started with: `schedule_steps`); SIGINT/SIGTERM checkpoint at the
step boundary and exit 130/143. Exit statuses: 0 done, 2 refused, 3 diverged, 4 I/O error, 128 + signal.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

import moe

from accounting.params import count_parameters

from . import checkpoint as ckpt
from .atomic import write_text_atomic
from . import distributed
from . import sweep as _sweep  # noqa: F401  (registers ${sweep_tag:}, which names a -m sweep's job folders)
from .config import ConfigError, RunSpec, one_line, upgrade_saved_config, validate
from .data import DataError, WindowSampler, prepare
from .environment import environment, hardware_peak, memory_bytes
from .loggers import make_logger, remove_event_files
from .metrics import MetricsError, MetricsWriter, aggregate_router_stats, load_balance, routed_assignments, \
    train_flops_per_token
from .paths import portable_path


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def build_model(spec: RunSpec) -> torch.nn.Module:
    """The model of a validated run config (``model.shape``, ``model.router``, ``model.backend``,
    ``model.mtp_loss_weight``)."""
    m = spec.cfg["model"]
    return moe.build_model(spec.shape, router=m["router"], backend=m["backend"],
                           mtp_loss_weight=m["mtp_loss_weight"])


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


def schedule_steps(state: dict, r: "_Run") -> int:
    """The LR schedule's length for a run resumed from checkpoint ``state``: the length the run STARTED with,
    kept when ``train.max_steps`` is raised to extend it (the checkpoint's ``extra.schedule_steps``; for a
    checkpoint from before it was recorded, the effective ``train.max_steps`` of its saved config). So an
    extension never changes the learning rate of a step the run already trained or would have trained: the
    warm-up and the cosine decay end where they ended, and the added steps train at the final LR
    (``optim.min_lr_ratio`` x ``optim.lr``)."""
    extra = state.get("extra") or {}
    if isinstance(extra.get("schedule_steps"), int):
        return extra["schedule_steps"]
    saved = ((state.get("meta") or {}).get("config") or {}).get("train")
    if isinstance(saved, dict) and isinstance(saved.get("max_steps"), int):
        return effective_max_steps({**r.cfg["train"], **saved}, r.flops_per_token, r.tokens_per_step)
    return r.max_steps


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


# ----- run folder: lock, refusal, clean-up ------------------------------------------------------------
RUN_FILES = ("metrics.jsonl", ckpt.CHECKPOINT, "summary.json", "config.yaml", "env.json")
"""The files a run writes into its folder (besides the lock)."""
LOCK = ".lock"

EXIT_REFUSED, EXIT_DIVERGED, EXIT_IO = 2, 3, 4
"""Exit statuses: 2 refused before training (config, data, paths, memory, lock, used folder, checkpoint,
metrics file), 3 diverged (non-finite loss, gradient, weights or validation loss), 4 an I/O error while
running (disk full, read-only); 128 + signal (130 SIGINT, 143 SIGTERM) interrupted and checkpointed."""


class RunError(RuntimeError):
    """The run cannot proceed (lock held, used folder, changed settings, paths, memory); one line."""


class Interrupted(Exception):
    """SIGINT/SIGTERM: the run stopped at a step boundary with a checkpoint (exit 128 + signal)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` holding the holder's pid. The kernel drops the lock when
    its process dies, so a lock file left by a dead process is simply taken over."""

    def __init__(self, run_dir: Path):
        self.path, self.fd, self.previous = run_dir / LOCK, None, ""

    def acquire(self) -> None:
        import fcntl
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(f"run folder {self.path.parent} is in use by another training (pid {holder}, "
                           f"lock {self.path}); wait for it to finish or stop it") from None
        self.previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        import fcntl
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # a pid left in the file means its holder died holding it
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _io_cause(e: OSError) -> str:
    import errno
    return {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
            errno.EFBIG: "file too large for the file-size limit (ulimit -f)",
            errno.EACCES: "permission denied (read-only?)", errno.EPERM: "permission denied",
            errno.ENOTDIR: "a path component is a file, not a folder",
            errno.EEXIST: "exists and is a file, not a folder"}.get(e.errno, e.strerror or type(e).__name__)


def io_error_line(e: OSError) -> str:
    """One line for an OSError: the path and the cause ("disk full" for ENOSPC)."""
    where = e.filename if e.filename is not None else "?"
    return f"I/O error: {where}: {_io_cause(e)}"


def check_paths(cfg: dict) -> None:
    """``paths.runs``, ``paths.cache`` and the run folder must be (or be creatable as) writable folders:
    `RunError` with one line naming the path and the cause otherwise."""
    for key, value in (("paths.runs", cfg["paths"]["runs"]), ("paths.cache", cfg["paths"]["cache"]),
                       ("run_dir", cfg["run_dir"])):
        p = Path(value).expanduser()
        probe = p
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise RunError(f"{key}={value}: {probe} is a file, not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise RunError(f"{key}={value}: {probe} is not writable (read-only or no permission)")


def training_memory_bytes(spec: RunSpec, world_size: int = 1) -> int:
    """A lower bound of the memory one rank needs (accounting): fp32 weights, gradients and two AdamW
    moments (16 bytes per parameter; sharded over the ranks under FSDP) plus the activations kept for the
    backward pass (``n_layers x`` the note's per-layer activations of one micro-batch, 4 bytes each)."""
    from accounting.memory import activation_elements
    t = spec.cfg["train"]
    params = count_parameters(spec.shape).total
    state = 16 * params / (world_size if t["parallel"] == "fsdp" else 1)
    acts = spec.shape.n_layers * activation_elements(spec.shape, batch=t["batch_size"]) * 4
    return int(state + acts)


def available_memory(device: torch.device) -> tuple[int | None, str]:
    """(bytes, what): the device's total memory on CUDA, the machine's available memory on a CPU."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[1]), f"{device} total memory"
        except Exception:  # no driver: leave it to CUDA
            return None, ""
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemAvailable:"):
                return int(ln.split()[1]) * 1024, "available memory"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "physical memory"
    except (ValueError, OSError, AttributeError):
        return None, ""


def check_memory(spec: RunSpec, device: torch.device | None = None) -> None:
    """Refuse (one line) a run whose `training_memory_bytes` exceed what the device or machine has."""
    device = device or distributed.pick_device(spec.cfg["train"]["device"], int(os.environ.get("LOCAL_RANK", "0")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    need = training_memory_bytes(spec, world)
    if device.type == "cpu":
        need *= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # the ranks of one machine share its memory
    have, what = available_memory(device)
    if have is not None and need > have:
        s = spec.shape
        raise RunError(f"this run needs at least {need / 2**30:,.1f} GiB (accounting: 16 bytes x "
                       f"{count_parameters(s).total:,} parameters + activations; d_model={s.d_model}, "
                       f"n_layers={s.n_layers}) but {what} is {have / 2**30:,.1f} GiB")


def preflight(spec: RunSpec, device: torch.device | None = None) -> None:
    """Checks that need no work: paths (`check_paths`) and memory (`check_memory`)."""
    check_paths(spec.cfg)
    check_memory(spec, device)


def _remove_if_empty(run_dir: Path, runs_root: str, lock: RunLock | None) -> None:
    """Remove ``run_dir`` (and its empty parents below the runs root) if it holds nothing but our lock."""
    try:
        entries = {p.name for p in run_dir.iterdir()}
    except OSError:
        return
    if entries - {LOCK} or (LOCK in entries and (lock is None or lock.fd is None)):
        return
    if lock is not None:
        lock.path.unlink(missing_ok=True)
        lock.release()
    root = Path(runs_root).expanduser().resolve()
    d = run_dir.resolve()
    while d != root and root in d.parents:
        try:
            d.rmdir()
        except OSError:
            break
        d = d.parent


def _clean_temporaries(run_dir: Path, cache: str) -> list[Path]:
    """Delete the temporary files a killed save left: in the run folder (we hold its lock, so every one is
    stale) and in the cache (only those whose writer pid is no longer running)."""
    removed = ckpt.stale_temporaries(run_dir)
    for p in removed:
        p.unlink(missing_ok=True)
    for p in list(Path(cache).expanduser().glob("*/*.tmp*")):
        m = re.search(r"\.(\d+)\.tmp", p.name)
        if m and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


RESUME_MAY_RAISE = ("train.max_steps",)
"""Keys a resumed run may raise but not lower: a larger ``train.max_steps`` extends the run (a finished one
included) with the LR schedule it started with (`schedule_steps`)."""

RESUME_MAY_CHANGE = ("train.stop_at_step", "train.log_every", "train.eval_every", "train.ckpt_every",
                     "train.device", "train.compile", "train.threads", "train.progress", "train.parallel",
                     "train.recompute", "resume", "overwrite", "paths.", "run_dir", "hardware.", "logger.")
"""Keys a resumed run may change: they decide how and where it runs, not what it computes. Any other
change (optimiser, schedule, model, data, seed, batch, world size, a lower max_steps) is refused."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


ADDED_KEYS = {"model.shape.mtp_modules": 0, "model.mtp_loss_weight": 0.3, "train.expert_parallel": 1}
"""Keys added to conf/ after runs were saved without them, with the value those runs had in effect: a run
saved before a key existed resumes when the key now holds that value."""


def changed_settings(saved: dict, now: dict) -> list[str]:
    """``key old -> new`` for every setting that differs and may not change on resume (`RESUME_MAY_CHANGE`;
    `RESUME_MAY_RAISE` keys only upwards)."""
    a, b = _flat(saved), _flat(now)
    a = {**{k: v for k, v in ADDED_KEYS.items() if k in b}, **a}

    def raised(k: str) -> bool:
        return k in RESUME_MAY_RAISE and all(type(x) is int for x in (a.get(k), b.get(k))) and b[k] >= a[k]
    return [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not raised(k) and not any(k == m or (m.endswith(".") and k.startswith(m))
                                                                   for m in RESUME_MAY_CHANGE)]


def _saved_config(run_dir: Path) -> dict | None:
    """The resolved config.yaml an earlier segment wrote (None when absent or unreadable)."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=False)
    except Exception:  # absent or damaged: nothing to compare with
        return None
    return cfg if isinstance(cfg, dict) else None


def _read_summary(run_dir: Path) -> dict | None:
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


class _Signals:
    """SIGINT/SIGTERM set a flag read at the next step boundary; a second one raises at once."""

    def __init__(self):
        self.signum, self.previous, self.in_loop = 0, {}, False

    def install(self) -> None:
        import threading
        if threading.current_thread() is not threading.main_thread():
            return
        for s in (signal.SIGINT, signal.SIGTERM):
            self.previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum, _frame) -> None:
        if self.signum or not self.in_loop:  # outside the loop there is no step boundary to wait for
            what = "second " if self.signum else ""
            raise Interrupted(signum, f"{what}{signal.Signals(signum).name}: stopped at once (any checkpoint "
                                      f"is intact)")
        self.signum = signum

    def restore(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)
        self.previous = {}


def _kept(ckpt_path: Path) -> str:
    if ckpt_path.exists():
        return f"the last good checkpoint is kept at {ckpt_path}"
    return "no checkpoint was written"


@dataclass
class _Run:
    """What one training segment holds: its settings, data, model and optimiser, and where it stands."""

    spec: RunSpec
    run_dir: Path
    info: distributed.DistInfo
    dtype: str
    label: str
    t_start: float
    sampler: WindowSampler | None = None
    data: Any = None
    raw: torch.nn.Module | None = None        # the model as built
    model: torch.nn.Module | None = None      # raw, wrapped for DDP/FSDP and compiled
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any = None
    writer: MetricsWriter | None = None
    meta: dict = field(default_factory=dict)
    tokens_per_step: int = 0
    flops_per_token: float = 0.0
    max_steps: int = 0
    schedule_steps: int = 0                   # the LR schedule's length (`schedule_steps`)
    step: int = 0
    saved_step: int | None = None
    wall_before: float = 0.0
    last_train: float | None = None
    last_val: float | None = None
    peak: dict = field(default_factory=dict)
    lock: RunLock | None = None

    @property
    def cfg(self) -> dict:
        return self.spec.cfg

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / ckpt.CHECKPOINT

    @property
    def stop(self) -> int:
        return self.cfg["train"]["stop_at_step"] or self.max_steps


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
    r = _Run(spec, Path(run_dir), info, resolve_dtype(t, info.device), f"{cfg['model']['name']}-{cfg['model']['size']}",
             time.perf_counter())
    signals = _Signals()
    signals.install()
    started = finished = False
    try:
        preflight(spec, info.device)
        _setup(r)
        decision, state = _claim_folder(r)
        if decision == 2:
            finished = True
            return _read_summary(r.run_dir) if info.is_main else {}
        _start(r, decision, state)
        started = True
        _write_run_files(r)
        summary = _loop(r, signals)
        finished = True
        return summary
    except BaseException:
        if info.is_main and not started:
            _remove_if_empty(r.run_dir, cfg["paths"]["runs"], r.lock)
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


def _setup(r: _Run) -> None:
    """Data (rank 0 first), model, optimiser and schedule; nothing of the run folder is touched."""
    cfg, shape, info = r.cfg, r.spec.shape, r.info
    t, o = cfg["train"], cfg["optim"]
    # Rank 0 trains/caches the tokenizer and token arrays first, the others then read the cache (a failure on
    # rank 0 is broadcast, so the other ranks stop with it instead of waiting).
    err = None
    if info.is_main:
        try:
            r.data = prepare(cfg["data"], cfg["paths"]["cache"])
        except Exception as e:
            err = e
    _agree(0, err, info)
    if not info.is_main:
        r.data = prepare(cfg["data"], cfg["paths"]["cache"])
    if r.data.vocab_size > shape.vocab_size:
        raise DataError(f"the tokenizer has {r.data.vocab_size} tokens but model.shape.vocab_size="
                        f"{shape.vocab_size}")
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


def _claim_folder(r: _Run) -> tuple[int, dict | None]:
    """Rank 0 locks the folder (``r.lock``) and decides; every rank follows. Returns (decision, checkpoint
    state): decision 0 fresh, 1 resume, 2 already completed; nothing of an earlier run is touched here."""
    cfg, run_dir, ckpt_path = r.cfg, r.run_dir, r.ckpt_path
    decision, err, state = 0, None, None
    if r.info.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            r.lock = lock = RunLock(run_dir)
            lock.acquire()
            if lock.previous:
                print(f"[{r.label}] taking over the stale lock of pid {lock.previous} (no longer running)",
                      flush=True)
            for p in _clean_temporaries(run_dir, cfg["paths"]["cache"]):
                print(f"[{r.label}] removed stale temporary file {p}", flush=True)
            used = [f for f in RUN_FILES if (run_dir / f).exists()]
            if cfg["resume"] and ckpt_path.exists():
                state = ckpt.read(ckpt_path, map_location=r.info.device)
                _check_resumable(r, state)
                old = _read_summary(run_dir)
                decision = 1
                if old and old.get("status") == "completed" and state["step"] >= r.max_steps:
                    decision = 2
                    print(f"[{r.label}] already completed at step {state['step']}: nothing to do (summary.json "
                          f"kept)", flush=True)
            elif used and not cfg["overwrite"] and not cfg["resume"]:
                raise RunError(f"run folder {run_dir} already holds a run ({', '.join(used)}): pass "
                               f"resume=true to continue it or overwrite=true to replace it")
        except BaseException as e:
            err = e
    return _agree(decision, err, r.info), state


def _check_resumable(r: _Run, state: dict) -> None:
    """Refuse a checkpoint of another model, changed settings, or a metrics file that cannot be truncated."""
    cfg = r.cfg
    ckpt.check_compatible(state, r.ckpt_path, r.raw, shape=cfg["model"]["shape"], family=cfg["model"]["name"])
    saved_meta = state.get("meta") or {}
    saved = saved_meta.get("config")
    if saved is not None:
        saved = {**saved, "world_size": saved_meta.get("world_size")}
        now = {**r.meta["config"], "world_size": r.info.world_size}
    else:  # a checkpoint from before settings were recorded: the folder's config.yaml
        saved, now = _saved_config(r.run_dir), r.meta["config"]
    if saved is not None:
        changed = changed_settings(upgrade_saved_config(saved), now)
        if changed:
            raise RunError(f"resume=true with settings that differ from the checkpoint's run "
                           f"({'; '.join(changed)}): resume with the original values, or "
                           f"start a new run (another name, or overwrite=true)")
    r.writer.check(state["step"])  # a bad metrics line refuses before anything changes


def _start(r: _Run, decision: int, state: dict | None) -> None:
    """Load the checkpoint (resume) or remove an old run's files (fresh)."""
    cfg, main = r.cfg, r.info.is_main
    if decision == 1:
        if state is None:  # ranks > 0: rank 0 read and checked it in _claim_folder
            state = ckpt.read(r.ckpt_path, map_location=r.info.device)
            ckpt.check_compatible(state, r.ckpt_path, r.raw)
        r.schedule_steps = schedule_steps(state, r)
        if r.schedule_steps != r.max_steps:  # an extended run keeps the schedule it started with
            r.scheduler = make_scheduler(r.optimizer, cfg["optim"], r.schedule_steps)
        state = ckpt.load(r.ckpt_path, model=r.raw, optimizer=r.optimizer, scheduler=r.scheduler,
                          map_location=r.info.device, state=state)
        r.step = r.saved_step = state["step"]
        r.wall_before = float((state.get("extra") or {}).get("wall_time_s") or 0.0)
        kept = r.writer.truncate_after(r.step)
        if kept:  # the losses of the run so far, in case no step or evaluation follows
            r.last_train = kept[-1].get("train_loss")
            r.last_val = next((x["val_loss"] for x in reversed(kept) if x.get("val_loss") is not None), None)
        if main:
            ext = (f"; extended to step {r.max_steps}, the LR schedule keeps its {r.schedule_steps} steps (the "
                   f"steps after them train at the final LR)" if r.max_steps > r.schedule_steps else "")
            print(f"[{r.label}] resumed from {r.ckpt_path} at step {r.step}{ext}", flush=True)
    elif main:
        if cfg["resume"]:
            print(f"[{r.label}] resume=true but {r.ckpt_path} does not exist: starting from scratch", flush=True)
        for f in RUN_FILES:
            (r.run_dir / f).unlink(missing_ok=True)
        remove_event_files(r.run_dir)  # an old run's TensorBoard events (logger=tensorboard)


def _write_run_files(r: _Run) -> None:
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


def _loop(r: _Run, signals: _Signals) -> dict:
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
            result = _train_step(r, log_now, signals)
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
    summary = _summary(r, status, replica_max_abs_diff=distributed.replica_max_abs_diff(r.raw, r.info))
    if r.info.is_main:
        write_text_atomic(r.run_dir / "summary.json", json.dumps(_jsonable_summary(summary), indent=1))
        print(f"[{r.label}] {status} at step {r.step}: train loss {_fmt(r.last_train)}, val loss "
              f"{_fmt(r.last_val)}, {summary['wall_time_s']:.1f} s -> {r.run_dir}", flush=True)
    return summary


@dataclass
class _StepResult:
    lm_loss: float
    total_loss: float
    grad_norm: float
    lr: float
    signum: int                     # a SIGINT/SIGTERM pending on any rank (0: none)
    router_micro: list              # per micro-batch, the RouterStats dicts (when logging an MoE model)
    aux_losses: dict                # the last micro-batch's weighted auxiliary losses
    mtp_loss: float | None = None   # the weighted MTP loss (mean over micro-batches); None without MTP


def _train_step(r: _Run, log_now: bool, signals: _Signals) -> _StepResult:
    """One optimizer step over ``grad_accum`` micro-batches; `TrainingDiverged` before a non-finite loss or
    gradient is applied."""
    t, o, info, device = r.cfg["train"], r.cfg["optim"], r.info, r.info.device
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
    losses = torch.stack([lm_sum, total_sum, mtp_sum]) / t["grad_accum"]
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
                               f"norm {float(grad_norm)}); the update was not applied; {_kept(r.ckpt_path)}")
    lr = r.scheduler.get_last_lr()[0]
    r.optimizer.step()  # an MoE model's loss-free bias step runs first (moe.register_bias_update)
    r.scheduler.step()
    r.optimizer.zero_grad(set_to_none=True)
    r.step += 1
    lm_loss, total_loss, mtp = losses.tolist()
    r.last_train = lm_loss
    aux = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in out.aux_losses.items()} \
        if log_now else {}
    return _StepResult(lm_loss, total_loss, float(grad_norm), lr, int(-minus_signum), router_micro, aux,
                       mtp if has_mtp else None)


def _log(r: _Run, s: _StepResult, step_time: float) -> dict:
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
        raise TrainingDiverged(f"non-finite validation loss {r.last_val} at step {r.step}; {_kept(r.ckpt_path)}")
    return rec


def _save_checkpoint(r: _Run) -> None:
    """The checkpoint at ``r.step`` (atomic; rank 0 writes); never of non-finite weights."""
    if not _all_ranks(ckpt.all_finite(list(r.raw.parameters()) + list(r.raw.buffers())), r.info):
        raise TrainingDiverged(f"non-finite weights after step {r.step}; not saved; {_kept(r.ckpt_path)}")
    t = r.cfg["train"]
    ckpt.save(r.ckpt_path, model=r.raw, optimizer=r.optimizer, scheduler=r.scheduler, step=r.step,
              tokens=r.step * r.tokens_per_step, meta=r.meta,
              extra={"parallel": t["parallel"], "world_size": r.info.world_size, "schedule_steps": r.schedule_steps,
                     "wall_time_s": r.wall_before + time.perf_counter() - r.t_start},
              write=r.info.is_main)
    r.saved_step = r.step


def _summary(r: _Run, status: str, **more) -> dict:
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


def _stopped(r: _Run, e: TrainingDiverged | Interrupted) -> None:
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


def _agree(value: int, err: BaseException | None, info: distributed.DistInfo) -> int:
    """Every rank takes rank 0's ``value`` (>= 0), or stops with rank 0's error: rank 0 raises ``err``, the
    others raise `_Follower` with its exit status (printing nothing)."""
    flag = torch.tensor([value if err is None else -_exit_status(err)], dtype=torch.int64, device=info.device)
    distributed.broadcast_(flag, info)
    if err is not None and info.is_main:
        raise err
    if flag.item() < 0:
        raise _Follower(int(-flag.item()))
    return int(flag.item())


def _all_ranks(ok: bool, info: distributed.DistInfo) -> bool:
    flag = torch.tensor([1.0 if ok else 0.0], device=info.device)
    distributed.all_reduce_(flag, info, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() >= 1)


class _Follower(RuntimeError):
    """A rank > 0 whose rank 0 refused the run: exits with rank 0's status, silently."""

    def __init__(self, status: int):
        super().__init__(f"rank 0 refused the run (exit {status})")
        self.status = status


def _exit_status(e: BaseException) -> int:
    if isinstance(e, (ConfigError, RunError, DataError, ckpt.CheckpointError, MetricsError)):
        return EXIT_REFUSED
    if isinstance(e, TrainingDiverged):
        return EXIT_DIVERGED
    if isinstance(e, Interrupted):
        return 128 + e.signum
    if isinstance(e, _Follower):
        return e.status
    if isinstance(e, OSError):
        return EXIT_IO
    if distributed.peer_failure(e):  # a rank died or went silent
        return distributed.EXIT_PEER
    return 1


def precheck(argv: list[str], check_used: bool = False) -> int:
    """Compose and validate EVERY job of the command line before any work starts (a ``-m`` sweep,
    including ``hydra.sweeper.params`` of an experiment file, is expanded as Hydra's basic sweeper
    would); raises `ConfigError` with one line. In a sweep, two jobs that would train into one folder
    (`experiments.sweep`: the swept keys name the folders) are refused, and with ``check_used`` (the CLI)
    so is a job whose folder already holds a run unless ``resume=true`` or ``overwrite=true``. Other
    Hydra flags (``--help``, ``--cfg``) skip the check. Returns the number of jobs checked."""
    return len(sweep_plan(argv, check_used))


def sweep_folders(argv: list[str]) -> list[str]:
    """The run folder of every job of a command line (`sweep_plan`), in the order Hydra runs them."""
    return [spec.cfg["run_dir"] for _, spec in sweep_plan(argv)]


def sweep_plan(argv: list[str], check_used: bool = False) -> list[tuple[list[str], RunSpec]]:
    """(overrides, validated spec with its ``run_dir`` as the job will use it) for every job of a command
    line; `precheck` is its check. Empty when Hydra flags other than ``-m`` make it skip."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from .config import CONF_DIR, compose
    from .sweep import MAX_NAME_CHARS, params_overrides, sweep_tag, swept_keys

    flags = [a for a in argv if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        return []
    args = [a for a in argv if not a.startswith("-")]
    multirun = bool(flags)
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(args)
        swept: list[str] = []
        if not multirun:
            jobs = [args]
        else:
            first = [o.input_line if not o.is_sweep_override() else
                     f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" for o in overrides]
            params = compose(first, return_hydra=True).hydra.sweeper.get("params") or {}
            extra = params_overrides(params, [o.get_key_element() for o in overrides])
            jobs = sweep_jobs(parser.parse_overrides(extra) + overrides)
            swept = swept_keys(args, params)
        folders: dict[str, int] = {}
        plan = []
        for i, job in enumerate(jobs, start=1):
            where = f" [job: {' '.join(job)}]" if multirun else ""
            try:
                spec = validate(compose(list(job)))
            except ConfigError as e:
                raise ConfigError(f"{e}{where}") from None
            if multirun:
                spec.cfg["run_dir"] = folder = spec.cfg["run_dir"] + sweep_tag(job, swept)
                _check_sweep_folder(spec, folder, i, where, folders, check_used, MAX_NAME_CHARS)
            try:
                preflight(spec)  # before Hydra creates the run folder
            except RunError as e:
                raise RunError(f"{e}{where}") from None
            plan.append((list(job), spec))
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
    return plan


def _check_sweep_folder(spec: RunSpec, folder: str, i: int, where: str, folders: dict[str, int],
                        check_used: bool, max_chars: int) -> None:
    """One sweep job's folder: not another job's (`ConfigError` naming both jobs), a name a file system
    takes, and (``check_used``) not an earlier run's unless resume/overwrite (`RunError`)."""
    key = os.path.normpath(os.path.abspath(os.path.expanduser(folder)))
    if key in folders:
        raise ConfigError(f"sweep jobs {folders[key]} and {i} would both train into {folder} (a folder is named "
                          f"by name, model.name, model.size, seed and the swept keys): sweep distinct values{where}")
    folders[key] = i
    if len(Path(folder).name) > max_chars:
        raise ConfigError(f"run folder name {Path(folder).name[:60]}... has {len(Path(folder).name)} characters "
                          f"(at most {max_chars}): sweep fewer keys at once{where}")
    if check_used and not spec.cfg["resume"] and not spec.cfg["overwrite"]:
        used = [f for f in RUN_FILES if (Path(folder).expanduser() / f).exists()]
        if used:
            raise RunError(f"run folder {folder} already holds a run ({', '.join(used)}): pass resume=true to "
                           f"continue the sweep or overwrite=true to replace it{where}")


def sweep_jobs(overrides: list) -> list[list[str]]:
    """The jobs of a ``-m`` sweep, as Hydra's basic sweeper runs them: one list of ``key=value`` per point
    of the product of the (discrete) sweeps, a later override of a key replacing an earlier one."""
    from hydra.errors import HydraException

    choices: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise HydraException(f"BasicSweeper does not support sweep type : {o.value_type.name}")
    return [list(job) for job in itertools.product(*choices.values())]


def _run_dir_from_hydra(cfg) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig
        return HydraConfig.get().runtime.output_dir
    except Exception:  # not under @hydra.main (compose API)
        return str(cfg.run_dir)


def error_line(e: BaseException) -> str | None:
    """The one line printed for an expected failure (None: print nothing)."""
    if isinstance(e, ConfigError):
        return one_line(e)
    if isinstance(e, DataError):
        return f"data error: {e}"
    if isinstance(e, TrainingDiverged):
        return f"training stopped: {e}"
    if isinstance(e, Interrupted):
        return f"interrupted: {e}"
    if isinstance(e, _Follower):
        return None
    if isinstance(e, OSError):
        return io_error_line(e)
    if distributed.peer_failure(e):
        return distributed.peer_failure(e)
    return f"error: {e}"


def run(cfg) -> float | None:
    """Validate, then train; every expected failure exits with one line on stderr and its status
    (`EXIT_REFUSED`, `EXIT_DIVERGED`, `EXIT_IO`, 128 + signal); see docs/experiments.md."""
    try:
        spec = validate(cfg)
        run_dir = _run_dir_from_hydra(cfg)
        if os.path.abspath(run_dir) != os.path.abspath(spec.cfg["run_dir"]):  # a -m sweep job's folder
            spec.cfg["run_dir"] = portable_path(run_dir)                      # (experiments.sweep)
        summary = train(spec, run_dir)
    except (Exception, Interrupted) as e:
        status = _exit_status(e)
        if status == 1:
            raise
        line = error_line(e)
        if line and (int(os.environ.get("RANK", "0")) == 0 or isinstance(e, OSError)
                     or status == distributed.EXIT_PEER):  # one line per run (a lost peer: per rank)
            print(line.splitlines()[0] if line.strip() else line, file=sys.stderr, flush=True)
        sys.exit(status)
    return (summary or {}).get("final_val_loss")


def _hydra_main():
    import hydra

    from .config import CONF_DIR
    try:
        precheck(sys.argv[1:], check_used=True)
    except (ConfigError, RunError) as e:
        print(error_line(e), file=sys.stderr, flush=True)
        sys.exit(EXIT_REFUSED)
    return hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(run)()


if __name__ == "__main__":
    _hydra_main()
