"""``python -m accounting train-memory``: its options (after ``--config``, which `accounting.commands.model` adds), its
result `TrainMemoryReport` (``to_dict()`` is the command's JSON) and its text; `train_memory` is the command
from Python (`accounting.api.train_memory` takes a config spec)."""
from __future__ import annotations

from dataclasses import dataclass

from .gpu_count import auto_layout
from .hardware import resolve_gpu
from .shapes import ModelShape
from .training_memory import TrainingMemory, plan
from .training_settings import (BACKENDS, KERNELS, OPTIMIZERS, PRECISIONS, RECOMPUTES, WEIGHT_DTYPES, Layout,
                                LayoutError, Settings, check_settings)


def train_memory_arguments(p) -> None:
    """The options of ``train-memory`` after ``--config`` (accounting.cli registers the command)."""
    p.add_argument("--seq-len", type=int, required=True, help="tokens per sequence n")
    p.add_argument("--micro-batch", type=int, required=True, help="sequences per micro-batch b")
    p.add_argument("--gpus", default="1", help="GPU count, or 'auto': the smallest count and layout that fit")
    for name in ("tp", "pp", "ep"):
        p.add_argument(f"--{name}", type=int, default=1, help=f"{name} degree (default 1)")
    p.add_argument("--sp", action="store_true", help="sequence parallel with tp (activations of the norms /tp)")
    p.add_argument("--zero", type=int, default=1, choices=(0, 1, 2, 3), help="ZeRO stage (default 1)")
    p.add_argument("--micro-batches", type=int, default=None, help="micro-batches per step (default pp)")
    p.add_argument("--recompute", choices=RECOMPUTES, default="none")
    p.add_argument("--weights", choices=tuple(WEIGHT_DTYPES), default="bf16", help="compute weights (default bf16)")
    p.add_argument("--fp32-grads", action="store_true", help="fp32 gradient accumulation (Megatron's 18 B/param)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--activations", choices=PRECISIONS, default="bf16",
                   help="activation precision: bf16 autocast as our models run it (default) or fp32")
    p.add_argument("--backend", choices=BACKENDS, default="grouped", help="expert backend priced (default grouped)")
    p.add_argument("--attention", choices=KERNELS, default="auto", help="attention kernel (auto: as the CPU runs it)")
    p.add_argument("--capacity-factor", type=float, default=None,
                   help="routed experts' capacity factor (default dropless)")
    p.add_argument("--fp8-cache", action="store_true",
                   help="DeepSeek-V3's FP8 caching of the MoE inputs (SwiGLU output recomputed)")
    p.add_argument("--fused-swiglu", action="store_true",
                   help="SwiGLU keeps only its inputs, its output recomputed (Megatron's fused kernel)")
    p.add_argument("--gpu", default="h100-sxm", help="preset name or a GPU spec YAML (default h100-sxm)")


def settings_from_args(args) -> Settings:
    """The `Settings` of the parsed ``train-memory`` options."""
    return Settings(seq_len=args.seq_len, micro_batch=args.micro_batch, precision=args.activations,
                    weights=args.weights, fp32_grads=args.fp32_grads, optimizer=args.optimizer,
                    recompute=args.recompute, backend=args.backend, attention_kernel=args.attention,
                    micro_batches=args.micro_batches, capacity_factor=args.capacity_factor,
                    fp8_cache=args.fp8_cache, fused_swiglu=args.fused_swiglu)


@dataclass(frozen=True)
class TrainMemoryReport:
    """The result of ``train-memory``: the plan of model ``model`` (loaded from ``source``) and, for
    ``--gpus auto``, why that layout was chosen. ``to_dict()`` is the command's JSON."""

    model: str
    source: str
    plan: TrainingMemory
    layout_reason: str = ""

    def to_dict(self) -> dict:
        return {"model": self.model, "source": self.source, **self.plan.to_dict(), "layout_reason": self.layout_reason}


def train_memory(shape: ModelShape, settings: Settings, gpus: int | str = 1, *, tp: int = 1, pp: int = 1,
                 ep: int = 1, zero: int = 1, sp: bool = False, gpu: str = "h100-sxm",
                 source: str = "ModelShape") -> TrainMemoryReport:
    """``python -m accounting train-memory`` from Python: the per-GPU bytes of training ``shape`` with
    ``settings`` on ``gpus`` GPUs in the layout (tp, pp, ep, ZeRO stage), or ``gpus='auto'``: the smallest
    count and layout that fit ``gpu`` (a preset name or a GPU spec YAML)."""
    hardware = resolve_gpu(gpu)
    check_settings(shape, settings)
    if settings.micro_batches is not None and settings.micro_batches < 1:
        raise LayoutError(f"--micro-batches must be >= 1, got {settings.micro_batches}")
    if str(gpus).lower() == "auto":
        r, why = auto_layout(shape, settings, hardware)
        return TrainMemoryReport(shape.name, source, r, why)
    try:
        g = int(gpus)
    except ValueError:
        raise LayoutError(f"--gpus must be a positive integer or 'auto', got {gpus!r}") from None
    return TrainMemoryReport(shape.name, source, plan(shape, settings, Layout(g, tp, pp, ep, zero, sp), hardware))


def _gb(x: float) -> str:
    return f"{x / 1e9:,.2f} GB"


def text(d: dict) -> str:
    """A readable report of one plan, from `TrainMemoryReport.to_dict()`."""
    lay, s, st = d["layout"], d["settings"], d["worst_stage"]
    lines = [f"train-memory: {d['model']}, {s['micro_batch']} x {s['seq_len']} tokens per micro-batch, "
             f"{s['precision']} activations ({s['backend']} experts), {s['weights']} weights, {s['optimizer']}, "
             f"recompute {s['recompute']}",
             f"layout: {lay['gpus']} GPUs = dp {lay['dp']} x tp {lay['tp']}{' (sp)' if lay['sp'] else ''} x pp "
             f"{lay['pp']}, ep {lay['ep']}, ZeRO-{lay['zero']}; worst stage {st['stage']} (layers {st['layers'][0]}-"
             f"{st['layers'][1] - 1}, {st['micro_batches_in_flight']} micro-batch(es) in flight)"]
    if d["layout_reason"]:
        lines.append(f"why: {d['layout_reason']}")
    for k, v in d["per_gpu_bytes"].items():
        lines.append(f"  {k:<12s}{_gb(v):>14s}")
    if d["capacity_bytes"] is not None:
        lines.append(f"  {'capacity':<12s}{_gb(d['capacity_bytes']):>14s}  -> "
                     f"{'fits' if d['fits'] else 'does NOT fit'}")
    lines.append("activations by component (per GPU):")
    for k, v in sorted(d["activation_bytes_by_component"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {k:<18s}{_gb(v):>14s}")
    if d["recompute_working_bytes"]:
        lines.append(f"  (+ {_gb(d['recompute_working_bytes'])} live while one block is recomputed)")
    return "\n".join(lines)
