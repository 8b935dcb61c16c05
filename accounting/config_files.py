"""Where a `ModelShape` comes from: ``--config`` of ``python -m accounting`` and ``accounting.load_shape``.

A *config spec* is one of (tried in this order):

* a file:
    - an HF ``config.json`` (it has ``model_type`` or ``architectures``; `accounting.hf_config`);
    - a Hydra model file of this package's ``conf/`` (``conf/model/moe.yaml``: a ``model/`` folder whose
      parent holds ``config.yaml``), composed with that ``config.yaml``'s defaults (size ``tiny``) through
      Hydra's compose API, exactly as ``python -m experiments.train model=moe`` would; needs hydra-core;
    - a training run's resolved ``config.yaml`` (fields under ``model.shape``);
    - any other JSON/YAML of `ModelShape` fields (top level or under ``shape:``; plain numbers only);
* a folder: a checkpoint folder holding ``config.json`` (``save_pretrained``'s layout, as ``moe.from_hf``
  takes), else a run folder holding ``config.yaml``;
* a shipped name: ``accounting/configs/<name>.json`` (``deepseek-v3``, ``mixtral-8x7b``, ...).

``seq_len`` replaces the context length the spec gives. Errors are `ConfigSpecError` (a ``ValueError``)
with a one-line message naming the spec.

Published parameter counts (`published_counts`) are matched on content: a shape gets a shipped config's
published total/active counts only when it describes the same model, never because of its file name.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from .hf_config import (CONFIG_DIR, PUBLISHED_COUNTS, load_shipped, read_json, shape_from_hf_config,
                        shipped_configs)
from .shapes import ModelShape, field_rules


class ConfigSpecError(ValueError):
    """A config spec that names nothing loadable; the message is one line."""


@dataclass(frozen=True)
class LoadedConfig:
    """A shape and where it came from: ``shipped:NAME`` or the path of the file read."""

    shape: ModelShape
    source: str


def _read_mapping(path: Path) -> dict[str, Any]:
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # lazily: only YAML files need it
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigSpecError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    else:
        data = read_json(path)
    if not isinstance(data, dict):
        raise ConfigSpecError(f"{path} must hold a mapping (JSON object / YAML mapping)")
    return data


def _is_hydra_model_file(path: Path) -> bool:
    """``<conf>/model/<name>.yaml`` next to ``<conf>/config.yaml``: one option of a Hydra ``model`` group."""
    return (path.suffix.lower() in (".yaml", ".yml") and path.parent.name == "model"
            and (path.parent.parent / "config.yaml").is_file())


# ----- Hydra model files (conf/model/*.yaml) -----------------------------------------------------------
# The interpolation resolvers that conf/*.yaml uses, defined here once (accounting never imports experiments nor
# torch; experiments.config registers these for training). A compose here registers the missing ones only for
# its duration and removes them again. tests/test_accounting_config_files.py checks that a
# conf/model file priced here has exactly the shape experiments.config composes.
class NotANumber(ValueError):
    """A resolver got a non-number (``value``); experiments.config reports the key that holds it."""

    def __init__(self, value: Any):
        super().__init__(f"{value!r} is not a number")
        self.value = value


def _conf_number(x: Any) -> int | float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise NotANumber(x)
    return x


def conf_mul(*xs: Any) -> int | float:
    """``${mul:a,b,...}``: the product (an int when whole)."""
    out: int | float = 1
    for x in map(_conf_number, xs):
        out *= x
    return int(out) if float(out).is_integer() else out


def conf_div(a: int, b: int) -> int:
    """``${div:a,b}``: integer division ``a // b`` (at least 1), for sizes derived from others (a head's width)."""
    return max(1, int(_conf_number(a)) // int(_conf_number(b)))


def conf_vocab(tokenizer: str, vocab_size: int) -> int:
    """``${vocab:tokenizer,size}``: the model vocabulary, 256 for the byte tokenizer, else the configured size."""
    return 256 if tokenizer == "bytes" else vocab_size


CONF_RESOLVERS = {"mul": conf_mul, "div": conf_div, "vocab": conf_vocab}
"""The resolvers of conf/*.yaml, defined once: experiments.config registers them for training."""


def compose_model_file(path: Path, seq_len: int | None = None) -> tuple[dict[str, Any], str, str | None]:
    """The resolved ``model.shape`` fields of a Hydra model file, ``model.name`` and ``model.size``, composed with the
    primary ``config.yaml`` next to its ``model/`` folder (overrides ``model=<stem>`` and, given ``seq_len``,
    ``model.shape.seq_len=<seq_len>``). Hydra's global state is left as it was found."""
    try:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra
        from omegaconf import OmegaConf
    except ImportError:
        raise ConfigSpecError(f"{path} is a Hydra model file; composing it needs hydra-core "
                              "(pip install 'hydra-core>=1.3.2,<1.4')") from None
    conf_dir = path.resolve().parent.parent
    overrides = [f"model={path.stem}"] + ([f"model.shape.seq_len={seq_len}"] if seq_len is not None else [])
    added = [name for name in CONF_RESOLVERS if not OmegaConf.has_resolver(name)]
    for resolver in added:
        OmegaConf.register_new_resolver(resolver, CONF_RESOLVERS[resolver])
    gh = GlobalHydra.instance()
    outer = gh.hydra if gh.is_initialized() else None  # e.g. inside a running @hydra.main
    gh.clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        model = cfg.model
        fields = OmegaConf.to_container(model.shape, resolve=True)
        name, size = str(model.get("name") or path.stem), model.get("size")
    except ConfigSpecError:
        raise
    except Exception as e:  # noqa: BLE001  (Hydra/OmegaConf errors: one line naming the file)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigSpecError(f"{path}: Hydra compose of {conf_dir / 'config.yaml'} with model={path.stem} "
                              f"failed: {first}") from None
    finally:
        gh = GlobalHydra.instance()  # initialize_config_dir restores a copy: fetch the singleton again
        gh.clear()
        if outer is not None:
            gh.initialize(outer)
        for resolver in added:
            OmegaConf.clear_resolver(resolver)
    if not isinstance(fields, dict):
        raise ConfigSpecError(f"{path}: model.shape must be a mapping of ModelShape fields")
    return fields, name, None if size is None else str(size)


# ----- one spec -> one shape ------------------------------------------------------------------------------
def _shape_from_fields(data: Mapping[str, Any], source: str, default_name: str,
                       seq_len: int | None) -> ModelShape:
    if isinstance(data.get("model"), dict) and "shape" in data["model"]:  # a run folder's resolved config.yaml
        data = data["model"]
    fields = data.get("shape", data)
    if not isinstance(fields, dict):
        raise ConfigSpecError(f"{source}: 'shape' must be a mapping of ModelShape fields")
    fields = dict(fields)
    unresolved = sorted(k for k, v in fields.items() if isinstance(v, str) and "${" in v)
    if unresolved:
        raise ConfigSpecError(f"{source}: Hydra interpolations are not resolved here ({', '.join(unresolved)}); "
                              "give plain numbers, a conf/model/<name>.yaml next to its conf/config.yaml, or "
                              "a run folder (runs/<experiment>/<model>/<size>-seed<seed>/)")
    if seq_len is not None:
        fields["seq_len"] = seq_len
    fields.setdefault("name", str(data.get("name") or default_name))
    return ModelShape.from_dict(fields)


def _from_file(path: Path, source: str, seq_len: int | None) -> LoadedConfig:
    # an HF config.json is named after its folder (a checkpoint), any other file after itself
    stem = path.resolve().parent.name if path.stem == "config" and path.resolve().parent.name else path.stem
    if _is_hydra_model_file(path):
        fields, name, size = compose_model_file(path, seq_len)
        fields.setdefault("name", name)
        composed = f"model={path.stem}" + (f", size={size}" if size else "")
        return LoadedConfig(ModelShape.from_dict(fields), f"{source} (Hydra compose: {composed})")
    data = _read_mapping(path)
    if "model_type" in data or "architectures" in data:
        return LoadedConfig(shape_from_hf_config(data, seq_len=seq_len, name=stem), source)
    return LoadedConfig(_shape_from_fields(data, source, stem, seq_len), source)


def resolve_config(spec: str | Path, seq_len: int | None = None) -> LoadedConfig:
    """The `ModelShape` a config spec names (see the module docstring) and its source."""
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise ConfigSpecError(f"seq_len must be a positive integer, got {seq_len!r}")
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        for name in ("config.json", "config.yaml"):  # a checkpoint folder, else a run folder
            if (path / name).is_file():
                return _from_file(path / name, str(path / name), seq_len)
        raise ConfigSpecError(f"--config folder {text!r} holds neither config.json (a checkpoint) nor "
                              "config.yaml (a run folder)")
    if path.is_file():
        return _from_file(path, text, seq_len)
    if (CONFIG_DIR / f"{text}.json").is_file():
        path = CONFIG_DIR / f"{text}.json"
        return LoadedConfig(shape_from_hf_config(read_json(path), seq_len=seq_len, name=text), f"shipped:{text}")
    if path.exists():
        raise ConfigSpecError(f"--config {text!r} is not a file or folder")
    if "/" in text or path.suffix.lower() in (".json", ".yaml", ".yml"):
        raise ConfigSpecError(f"no such file: {text}")
    raise ConfigSpecError(f"no such file or shipped config: {text!r} (shipped: {', '.join(shipped_configs())})")


def load_shape(spec: str | Path | ModelShape, seq_len: int | None = None) -> ModelShape:
    """A `ModelShape` from a shipped name (``'qwen3-30b-a3b'``), a file (HF ``config.json``, JSON/YAML of
    shape fields, a run's ``config.yaml``, ``conf/model/<name>.yaml``) or a folder (a checkpoint's
    ``config.json``, a run's ``config.yaml``); a `ModelShape` is returned as is (with ``seq_len`` replaced
    when given). ``seq_len`` replaces the spec's context length."""
    if isinstance(spec, ModelShape):
        return spec if seq_len is None else spec.replace(seq_len=seq_len)
    return resolve_config(spec, seq_len).shape


# ----- published counts, matched on content ----------------------------------------------------------------
COUNT_NEUTRAL_FIELDS = ("name", "seq_len", "rope_scaling", "rope_original_max_len") + tuple(
    r.name for r in field_rules(ModelShape) if r.kind is float)
"""Fields left out when deciding whether two shapes are the same model: the label, the priced window, and
what changes numbers but no size (RoPE base and scaling, norm eps, clip_qkv, routed scaling factor)."""


def architecture_key(shape: ModelShape) -> tuple:
    """What identifies a model for its published parameter count: every shape field except
    `COUNT_NEUTRAL_FIELDS` (the architecture and all sizes)."""
    return tuple(sorted((k, v) for k, v in shape.to_dict().items() if k not in COUNT_NEUTRAL_FIELDS))


@lru_cache(maxsize=1)
def _shipped_keys() -> dict[tuple, str]:
    return {architecture_key(load_shipped(name)): name for name in shipped_configs() if name in PUBLISHED_COUNTS}


def published_counts(shape: ModelShape) -> dict[str, Any] | None:
    """The published total/active counts of the shipped model whose architecture and sizes equal
    ``shape``'s (`architecture_key`), as ``{"name", "total", "active", "source"}``; None when no shipped
    model matches. The name a file or shape carries plays no part."""
    name = _shipped_keys().get(architecture_key(shape))
    return None if name is None else {"name": name, **PUBLISHED_COUNTS[name]}
