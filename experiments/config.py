"""The run configuration: OmegaConf resolvers used by conf/, and one explicit check of every key.

`validate(cfg)` runs before any work starts. It rejects unknown keys, wrong types, negative sizes and
impossible combinations (``top_k > n_experts``, ``d_model % n_heads``, ...) by raising `ConfigError` whose
message is ONE line naming the key, e.g. ``model.shape.top_k=9 exceeds ... n_experts=8``. The entry points
print that line and exit with status 2 (no traceback).

Why an explicit check rather than Hydra structured configs: a model file's ``shape:`` is exactly
`accounting.shapes.ModelShape`, whose own validation already names the bad field; the remaining groups are
small flat tables, which `SCHEMA` below states in one screen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from accounting.shapes import ModelShape, ShapeError

CONF_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent / "conf"
"""Absolute path of the repository's conf/ (for the compose API)."""


class ConfigError(ValueError):
    """An invalid configuration; ``str(err)`` is one line naming the offending key."""


# ----- resolvers used by conf/*.yaml ----------------------------------------------------------------
class _NotANumber(ValueError):
    """A resolver got a non-number; `to_plain` reports the key that holds it, not the derived key."""

    def __init__(self, value: Any):
        super().__init__(f"{value!r} is not a number")
        self.value = value


def _number(x: Any) -> int | float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise _NotANumber(x)
    return x


def _mul(*xs: Any) -> int | float:
    out: int | float = 1
    for x in map(_number, xs):
        out *= x
    return int(out) if float(out).is_integer() else out


def _div(a: int, b: int) -> int:
    """Integer division ``a // b`` (at least 1), for sizes derived from others, e.g. a head's width."""
    return max(1, int(_number(a)) // int(_number(b)))


def _vocab(tokenizer: str, vocab_size: int) -> int:
    """Model vocabulary: 256 for the byte tokenizer, else the configured size."""
    return 256 if tokenizer == "bytes" else vocab_size


def register_resolvers() -> None:
    """Register ``${mul:a,b}``, ``${div:a,b}`` and ``${vocab:tokenizer,size}`` (idempotent)."""
    for name, fn in (("mul", _mul), ("div", _div), ("vocab", _vocab)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


# ----- schema ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class F:
    """One leaf: its type(s), whether null is allowed, a lower bound, allowed choices."""

    types: tuple
    nullable: bool = False
    min: float | None = None
    choices: tuple | None = None
    positive: bool = False


INT, FLOAT, STR, BOOL = (int,), (int, float), (str,), (bool,)
POS_INT = F(INT, positive=True)

SCHEMA: dict[str, Any] = {
    "name": F(STR), "seed": F(INT, min=0), "resume": F(BOOL), "overwrite": F(BOOL), "run_dir": F(STR),
    "paths": {"runs": F(STR), "cache": F(STR)},
    "model": {
        "name": F(STR), "size": F(STR), "shape": "ModelShape",
        "router": {
            "gating": F(STR, choices=("softmax", "sigmoid")),
            "normalize_topk": F(BOOL),
            "balancing": F(STR, choices=("none", "aux_loss", "loss_free")),
            "aux_loss_coef": F(FLOAT, min=0), "z_loss_coef": F(FLOAT, min=0),
            "bias_update_rate": F(FLOAT, min=0), "capacity_factor": F(FLOAT, nullable=True, positive=True),
            "route_scale": F(FLOAT, positive=True),
        },
        "backend": F(STR, choices=("loop", "grouped", "megablocks")),
        "mtp_loss_weight": F(FLOAT, min=0),
    },
    "data": {
        "source": F(STR, choices=("shakespeare", "text", "bin")), "path": F(STR, nullable=True),
        "tokenizer": F(STR, choices=("bpe", "bytes", "none")), "vocab_size": F(INT, min=2),
        "val_works": F((list,), nullable=True), "val_fraction": F(FLOAT, positive=True),
    },
    "optim": {
        "name": F(STR, choices=("adamw",)), "lr": F(FLOAT, positive=True), "betas": F((list,)),
        "eps": F(FLOAT, positive=True), "weight_decay": F(FLOAT, min=0), "grad_clip": F(FLOAT, min=0),
        "warmup_steps": F(INT, min=0), "min_lr_ratio": F(FLOAT, min=0),
    },
    "train": {
        "max_steps": POS_INT, "batch_size": POS_INT, "grad_accum": POS_INT,
        "flops_budget": F(FLOAT, nullable=True, positive=True), "log_every": POS_INT,
        "eval_every": POS_INT, "eval_batches": POS_INT, "ckpt_every": F(INT, min=0),
        "stop_at_step": F(INT, nullable=True, positive=True),
        "device": F(STR, choices=("auto", "cpu", "cuda")), "dtype": F(STR, choices=("auto", "fp32", "bf16")),
        "compile": F(BOOL), "threads": F(INT, nullable=True, positive=True),
        "progress": F(STR, choices=("auto", "bar", "lines", "none")),
        "parallel": F(STR, choices=("ddp", "fsdp")),
        "expert_parallel": POS_INT,
    },
    "hardware": {"name": F(STR), "peak_flops_per_s": F(FLOAT, nullable=True, positive=True),
                 "peak_dtype": F(STR, choices=("auto", "bf16", "fp32"))},
}


def _type_name(types: tuple) -> str:
    return {INT: "an integer", FLOAT: "a number", STR: "a string", BOOL: "true or false"}.get(
        types, " or ".join(t.__name__ for t in types))


def _check_leaf(key: str, value: Any, spec: F) -> None:
    if value is None:
        if not spec.nullable:
            raise ConfigError(f"{key} must not be null")
        return
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok:
        raise ConfigError(f"{key}={value!r} must be {_type_name(spec.types)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be finite")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{key}={value!r} must be one of {', '.join(spec.choices)}")
    if spec.positive and value <= 0:
        raise ConfigError(f"{key}={value!r} must be > 0")
    if spec.min is not None and value < spec.min:
        raise ConfigError(f"{key}={value!r} must be >= {spec.min:g}")


def _walk(prefix: str, node: dict, schema: dict) -> None:
    if not isinstance(node, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {node!r}")
    for key in node:
        if key not in schema:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown config key '{full}' (known under {prefix or 'the root'}: "
                              f"{', '.join(sorted(schema))})")
    for key, spec in schema.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in node:
            raise ConfigError(f"missing config key '{full}'")
        if isinstance(spec, dict):
            _walk(full, node[key], spec)
        elif isinstance(spec, F):
            _check_leaf(full, node[key], spec)


def build_shape(shape_cfg: Any) -> ModelShape:
    """`ModelShape` from the ``model.shape`` node; raises `ConfigError` naming ``model.shape.<field>``."""
    if not isinstance(shape_cfg, dict):
        raise ConfigError(f"model.shape must be a mapping, got {shape_cfg!r}")
    try:
        return ModelShape.from_dict(shape_cfg)
    except ShapeError as e:
        raise ConfigError(f"model.shape: {e}") from None


@dataclass(frozen=True)
class RunSpec:
    """What `validate` hands the trainer: the plain config dict and the built shape."""

    cfg: dict
    shape: ModelShape


def _leaves(node: Any, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif not isinstance(node, list):
        yield prefix, node


def to_plain(cfg: DictConfig | dict) -> dict:
    """Resolve interpolations into a plain dict; a missing (``???``) or broken value -> `ConfigError`.
    A non-number fed to ``${mul:..}``/``${div:..}`` is reported at the key the user set (e.g.
    ``model.shape.d_model``), not at the derived key whose interpolation failed (``d_ff``)."""
    if isinstance(cfg, dict):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        cause = e.__cause__ or e.__context__
        while cause is not None and not isinstance(cause, _NotANumber):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, _NotANumber):
            raw = OmegaConf.to_container(cfg, resolve=False)
            raw.pop("hydra", None)
            for k, v in _leaves(raw):
                if v == cause.value and not (isinstance(v, str) and "${" in v):
                    raise ConfigError(f"{k}={v!r} must be a number") from None
            raise ConfigError(f"{key}: {cause}") from None
        msg = str(e).splitlines()[0]
        raise ConfigError(f"{key}: {msg}" if key else msg) from None


SEED_MAX = 2**63 - 1
"""Largest seed every RNG in the run accepts (torch.manual_seed takes a signed 64-bit integer)."""

_SAFE_PART = __import__("re").compile(r"^[A-Za-z0-9_.+=,@-]+$")


def check_run_dir(plain: dict) -> None:
    """The run folder must lie strictly inside ``paths.runs``: ``name``, ``model.name`` and ``model.size``
    are plain folder names (``name`` may hold ``/``-separated parts), none of them ``.`` or ``..``."""
    for key, value in (("name", plain["name"]), ("model.name", plain["model"]["name"]),
                       ("model.size", plain["model"]["size"])):
        parts = str(value).split("/") if key == "name" else [str(value)]
        if not value or any(p in ("", ".", "..") or not _SAFE_PART.match(p) for p in parts):
            raise ConfigError(f"{key}={value!r} must be a plain folder name (letters, digits, . _ - + = , @; "
                              f"no '..', no leading '/'): the run folder must stay inside "
                              f"paths.runs={plain['paths']['runs']}")
    import os
    root = os.path.normpath(os.path.abspath(os.path.expanduser(plain["paths"]["runs"])))
    run = os.path.normpath(os.path.abspath(os.path.expanduser(plain["run_dir"])))
    if os.path.commonpath([root, run]) != root or run == root:
        raise ConfigError(f"run_dir={plain['run_dir']} lies outside paths.runs={plain['paths']['runs']}")


def validate(cfg: DictConfig | dict, cuda_available: bool | None = None) -> RunSpec:
    """Check the whole run config (see module docstring); returns a `RunSpec` or raises `ConfigError`."""
    plain = to_plain(cfg)
    plain.pop("hydra", None)
    _walk("", plain, SCHEMA)
    shape = build_shape(plain["model"]["shape"])
    d, t, o = plain["data"], plain["train"], plain["optim"]
    if plain["seed"] > SEED_MAX:
        raise ConfigError(f"seed={plain['seed']} must be in [0, 2^63 - 1]")
    check_run_dir(plain)
    if shape.mtp_modules and not shape.is_moe:
        raise ConfigError(f"model.shape.mtp_modules={shape.mtp_modules} needs an MoE model (model.shape.n_experts > 0): "
                          f"the dense torch model builds no multi-token-prediction modules")
    if plain["resume"] and plain["overwrite"]:
        raise ConfigError("resume=true and overwrite=true contradict each other: pick one")

    betas = o["betas"]
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"optim.betas={betas} must be two numbers in [0, 1)")
    if o["min_lr_ratio"] > 1:
        raise ConfigError(f"optim.min_lr_ratio={o['min_lr_ratio']} must be <= 1")
    if d["val_fraction"] >= 1:
        raise ConfigError(f"data.val_fraction={d['val_fraction']} must be < 1")
    if d["source"] in ("text", "bin") and not d["path"]:
        raise ConfigError(f"data.path is required with data.source={d['source']}")
    if d["source"] == "bin" and d["tokenizer"] != "none":
        raise ConfigError("data.source=bin is pre-tokenized: set data.tokenizer=none")
    if d["source"] != "bin" and d["tokenizer"] == "none":
        raise ConfigError(f"data.tokenizer=none only applies to data.source=bin, not {d['source']}")
    if d["tokenizer"] == "bpe" and not 257 <= d["vocab_size"] <= 65535:
        raise ConfigError(f"data.vocab_size={d['vocab_size']} must be in [257, 65535] for the BPE tokenizer")
    if d["tokenizer"] != "bytes" and shape.vocab_size != d["vocab_size"]:
        raise ConfigError(f"model.shape.vocab_size={shape.vocab_size} differs from "
                          f"data.vocab_size={d['vocab_size']}")
    if d["source"] == "bin" and d["vocab_size"] > 65536:
        raise ConfigError(f"data.vocab_size={d['vocab_size']} exceeds the uint16 range of a .bin file")
    if t["stop_at_step"] is not None and t["stop_at_step"] > t["max_steps"]:
        raise ConfigError(f"train.stop_at_step={t['stop_at_step']} exceeds train.max_steps={t['max_steps']}")
    if plain["model"]["backend"] == "megablocks":
        if cuda_available is None:
            import torch
            cuda_available = torch.cuda.is_available()
        if not cuda_available or t["device"] == "cpu":
            raise ConfigError("model.backend=megablocks needs a CUDA device (use loop or grouped on a CPU)")
    if t["device"] == "cuda":
        if cuda_available is None:
            import torch
            cuda_available = torch.cuda.is_available()
        if not cuda_available:
            raise ConfigError("train.device=cuda but no CUDA device is available")
    return RunSpec(plain, shape)


def one_line(err: BaseException) -> str:
    """``config error: <first line>`` for printing."""
    return "config error: " + (str(err).splitlines() or [type(err).__name__])[0]


def compose(overrides: list[str] | None = None, config_name: str = "config",
            return_hydra: bool = False) -> DictConfig:
    """Compose conf/ with the Hydra compose API (for tests and notebooks); clears Hydra's global state
    first and leaves it cleared. ``return_hydra`` keeps the ``hydra`` node (e.g. sweeper params)."""
    from hydra import compose as _compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return _compose(config_name=config_name, overrides=list(overrides or []),
                            return_hydra_config=return_hydra)
    finally:
        GlobalHydra.instance().clear()
