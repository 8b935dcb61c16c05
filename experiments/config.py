"""The run configuration: OmegaConf resolvers used by conf/, and one explicit check of every key.

`validate(cfg)` runs before any work starts. It rejects unknown keys, wrong types, negative sizes and
impossible combinations (``top_k > n_experts``, ``d_model % n_heads``, ...) by raising `ConfigError` whose
message is ONE line naming the key, e.g. ``model.shape.top_k=9 exceeds ... n_experts=8``. The entry points
print that line and exit with status 2 (no traceback).

The schema is derived, not written here: `schema()` walks the dataclasses of `experiments.settings`
(`RunSettings` and its groups, with `moe.RouterConfig` under ``model.router``), taking each key's type from
its annotation and its bounds and choices from its field metadata. A model file's ``shape:`` is exactly
`accounting.shapes.ModelShape`, whose own validation names the bad field. Why not Hydra structured configs:
they would reject a bad value at compose time with Hydra's multi-line message; this keeps the one line.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose as _compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from accounting.config_files import CONF_RESOLVERS, NotANumber as _NotANumber
from accounting.shapes import ModelShape, ShapeError, split_optional
from moe.router import MOVED_TO_SHAPE

from .settings import RunSettings, field_types

CONF_DIR = next((d / "conf" for d in Path(__file__).resolve().parents[:2] if (d / "conf" / "config.yaml").is_file()),
                Path(__file__).resolve().parents[1] / "conf")
"""Absolute path of conf/ (for Hydra): the package data experiments/conf/ of an installed wheel, else the
checkout's top-level conf/ (editable install)."""


class ConfigError(ValueError):
    """An invalid configuration; ``str(err)`` is one line naming the offending key."""


# ----- resolvers used by conf/*.yaml (defined in accounting.config_files) --------------------------------
def register_resolvers() -> None:
    """Register ``${mul:a,b}``, ``${div:a,b}`` and ``${vocab:tokenizer,size}`` (idempotent)."""
    for name, fn in CONF_RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


# ----- schema (derived from experiments.settings) ----------------------------------------------------
@dataclass(frozen=True)
class F:
    """One leaf: its type(s), whether null is allowed, a lower bound, allowed choices."""

    types: tuple
    nullable: bool = False
    min: float | None = None
    choices: tuple | None = None
    positive: bool = False


INT, FLOAT, STR, BOOL = (int,), (int, float), (str,), (bool,)
_LEAF_TYPES = {int: INT, float: FLOAT, str: STR, bool: BOOL, list: (list,), tuple: (list,)}
SHAPE = "ModelShape"
"""The schema's marker for ``model.shape``: checked by `build_shape` (ModelShape's own validation)."""


def schema_of(cls: type) -> dict[str, Any]:
    """The validation schema of a settings dataclass: ``{key: F | nested dict | SHAPE}``, in field order,
    the types from the annotations and ``min``/``positive``/``choices`` from the field metadata."""
    hints, out = field_types(cls), {}
    for f in dataclasses.fields(cls):
        tp, nullable = split_optional(hints[f.name])
        if tp is ModelShape:
            out[f.name] = SHAPE
        elif dataclasses.is_dataclass(tp):
            out[f.name] = schema_of(tp)
        else:
            base = typing.get_origin(tp) or tp
            if base not in _LEAF_TYPES:
                raise TypeError(f"{cls.__name__}.{f.name}: no config type for annotation {tp!r}")
            m = f.metadata
            out[f.name] = F(_LEAF_TYPES[base], nullable=nullable, min=m.get("min"),
                            choices=tuple(m["choices"]) if "choices" in m else None,
                            positive=bool(m.get("positive")))
    return out


@functools.lru_cache(maxsize=None)
def schema() -> dict[str, Any]:
    """The schema of the whole run config, from `experiments.settings.RunSettings`."""
    return schema_of(RunSettings)


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
            moved = MOVED_TO_SHAPE.get(key) if prefix == "model.router" else None
            hint = f"; the routing function is the shape's: model.shape.{moved}" if moved else ""
            raise ConfigError(f"unknown config key '{full}' (known under {prefix or 'the root'}: "
                              f"{', '.join(sorted(schema))}){hint}")
    for key, spec in schema.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in node:
            raise ConfigError(f"missing config key '{full}'")
        if isinstance(spec, dict):
            _walk(full, node[key], spec)
        elif isinstance(spec, F):
            _check_leaf(full, node[key], spec)


def upgrade_saved_config(saved: dict) -> dict:
    """A run config saved by an earlier version, in today's keys (for comparing settings on resume): the
    routing keys of ``model.router`` (`MOVED_TO_SHAPE`) move onto ``model.shape`` where they changed the
    shape's routing function and are dropped where they restated it; ``model.router.jitter_eps``, absent
    before it was configurable, gets the 0.0 those runs had. Returns a new dict; ``saved`` is unchanged."""
    model = saved.get("model") if isinstance(saved, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("router"), dict):
        return saved
    out = copy.deepcopy(saved)
    router, shape = out["model"]["router"], out["model"].get("shape")
    defaults = {f.name: f.default for f in dataclasses.fields(ModelShape)}
    for old, new in MOVED_TO_SHAPE.items():
        if old in router:
            value = router.pop(old)
            if isinstance(shape, dict) and value is not None and value != shape.get(new, defaults[new]):
                shape[new] = value
    router.setdefault("jitter_eps", 0.0)
    return out


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
    """What `validate` hands the trainer: the plain config dict, the built shape and the same config as
    typed `experiments.settings.RunSettings` (``settings.model.router`` is the `moe.RouterConfig`)."""

    cfg: dict
    shape: ModelShape
    settings: RunSettings | None = None


def build_settings(plain: dict, shape: ModelShape) -> RunSettings:
    """`RunSettings` from a config dict that passed the schema walk; a value the dataclass itself refuses
    (e.g. `RouterConfig`'s checks) -> `ConfigError` naming its group."""
    def build(cls: type, node: dict, prefix: str):
        hints, kw = field_types(cls), {}
        for f in dataclasses.fields(cls):
            tp, _ = split_optional(hints[f.name])
            value = node[f.name]
            if tp is ModelShape:
                value = shape
            elif dataclasses.is_dataclass(tp):
                value = build(tp, value, f"{prefix}{f.name}.")
            kw[f.name] = value
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None

    return build(RunSettings, plain, "")


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

_SAFE_PART = re.compile(r"^[A-Za-z0-9_.+=,@-]+$")


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
    root = os.path.normpath(os.path.abspath(os.path.expanduser(plain["paths"]["runs"])))
    run = os.path.normpath(os.path.abspath(os.path.expanduser(plain["run_dir"])))
    if os.path.commonpath([root, run]) != root or run == root:
        raise ConfigError(f"run_dir={plain['run_dir']} lies outside paths.runs={plain['paths']['runs']}")


def validate(cfg: DictConfig | dict, cuda_available: bool | None = None) -> RunSpec:
    """Check the whole run config (see module docstring); returns a `RunSpec` or raises `ConfigError`."""
    plain = to_plain(cfg)
    plain.pop("hydra", None)
    _walk("", plain, schema())
    shape = build_shape(plain["model"]["shape"])
    settings = build_settings(plain, shape)
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
            cuda_available = torch.cuda.is_available()
        if not cuda_available or t["device"] == "cpu":
            raise ConfigError("model.backend=megablocks needs a CUDA device (use loop or grouped on a CPU)")
    if t["device"] == "cuda":
        if cuda_available is None:
            cuda_available = torch.cuda.is_available()
        if not cuda_available:
            raise ConfigError("train.device=cuda but no CUDA device is available")
    return RunSpec(plain, shape, settings)


def first_line(err: BaseException) -> str:
    """An error's first line (its type's name when it has no message): what a CLI prints after ``error:``."""
    return (str(err).splitlines() or [type(err).__name__])[0]


def one_line(err: BaseException) -> str:
    """``config error: <first line>`` for printing."""
    return "config error: " + first_line(err)


def compose(overrides: list[str] | None = None, config_name: str = "config",
            return_hydra: bool = False) -> DictConfig:
    """Compose conf/ with the Hydra compose API (for tests and notebooks); clears Hydra's global state
    first and leaves it cleared. ``return_hydra`` keeps the ``hydra`` node (e.g. sweeper params)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return _compose(config_name=config_name, overrides=list(overrides or []),
                            return_hydra_config=return_hydra)
    finally:
        GlobalHydra.instance().clear()


def config_error(e: HydraException | OmegaConfBaseException) -> ConfigError:
    """Hydra's or OmegaConf's error as a one-line `ConfigError`: an unknown key (``Could not override``) and
    an unknown config-group option (``Could not find 'group/option'``, with the options conf/ has) in our
    words, anything else as the first line of Hydra's message."""
    msg = (str(e).splitlines() or [type(e).__name__])[0]
    m = re.match(r"Could not override '([^']+)'", msg)
    if m:
        return ConfigError(f"unknown config key '{m.group(1)}' (prefix it with + to add a new key)")
    m = re.search(r"Could not find '([\w-]+)/([^']+)'", msg)
    if m and (CONF_DIR / m.group(1)).is_dir():
        options = ", ".join(sorted(f.stem for f in (CONF_DIR / m.group(1)).glob("*.yaml")))
        return ConfigError(f"{m.group(1)}={m.group(2)}: no such option; choose one of {options}")
    return ConfigError(msg)
