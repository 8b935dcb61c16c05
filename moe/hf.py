"""Import transformers checkpoints into our models: ``from_hf(folder or config) -> model``.

    model = moe.from_hf("path/to/folder")            # config.json + *.safetensors (sharded with an index too)
    model = moe.from_hf(config_dict)                 # a config mapping: same architecture, random weights

The folder is what ``save_pretrained`` writes (nothing is fetched from a hub). The config goes through
``accounting.hf_config.shape_from_hf_config``, so the model is built from the same ``ModelShape`` the
accounting prices, and its weights are copied in by the ONE name mapping, ``moe.hf_layout.weight_map`` (one
function per family in ``moe.hf_layout.FAMILIES``). Families:
Llama (with Llama-3.1's ``llama3`` RoPE and ``attention_bias``), Mistral, Qwen2, Qwen3 (dense), Mixtral,
Qwen2-MoE, Qwen3-MoE (any MoE placement), OLMoE, DBRX, DeepSeek-V2, DeepSeek-V3, gpt-oss. Llama 4 is priced by
``accounting`` but refused here in one line naming what the model lacks (``hf_layout.Family.missing``).

Mistral's sliding window: the model is built with ``seq_len = min(max_position_embeddings,
sliding_window)``, where full causal attention and the window agree, so longer inputs are refused.

Errors are one-line ``ValueError``s: unsupported ``model_type`` or RoPE type, missing or unexpected
tensors, shape mismatches, no weights in the folder.

``to_hf(model, folder)`` writes a model loaded with ``from_hf`` from a folder back in that checkpoint's layout
(``config.json`` + ``model.safetensors``, loadable by ``transformers.AutoModelForCausalLM.from_pretrained``),
e.g. after fine-tuning it here. It inverts ``weight_map`` itself: every mapping is a gather, so pushing
element ids through it tells where each of our elements goes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from accounting.hf_config import model_type_of, rope_type_of, shape_from_hf_config
from accounting.shapes import ModelShape

from .hf_layout import FAMILIES, weight_map
from .model import build_model
from .router import RouterConfig


# ----- reading a folder ------------------------------------------------------------------------------
def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no config.json (expected a folder written by save_pretrained)")
    return json.loads(path.read_text())


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.safetensors`` or of the shards an index names (loaded on the CPU)."""
    try:
        from safetensors.torch import load_file
    except ImportError as e:
        raise ValueError("reading safetensors needs the safetensors package (pip install safetensors)") from e
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder}: no *.safetensors weights (only safetensors checkpoints are read)")
    out: dict[str, torch.Tensor] = {}
    for name in files:
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: shard {name} named by the index is missing")
        out.update(load_file(str(folder / name)))
    return out


# ----- building ----------------------------------------------------------------------------------------
def _config_dict(path_or_config: Any) -> tuple[dict[str, Any], Path | None]:
    if isinstance(path_or_config, (str, Path)):
        folder = Path(path_or_config)
        if folder.is_file() and folder.name == "config.json":
            folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"{folder}: not a folder (expected config.json + *.safetensors)")
        return read_config(folder), folder
    if hasattr(path_or_config, "to_dict") and not isinstance(path_or_config, Mapping):
        return dict(path_or_config.to_dict()), None           # a transformers config object
    if isinstance(path_or_config, Mapping):
        return dict(path_or_config), None
    raise ValueError(f"from_hf takes a folder or a config mapping, got {type(path_or_config).__name__}")


def shape_for_import(cfg: Mapping[str, Any], seq_len: int | None = None, name: str = "") -> ModelShape:
    """The ``ModelShape`` ``from_hf`` builds: the accounting's shape, checked for what the torch model runs
    (family, RoPE type) and with Mistral's sliding window as the context limit."""
    family = model_type_of(cfg)
    if FAMILIES[family].missing:
        raise ValueError(f"{family}: moe.from_hf does not build it; missing: {FAMILIES[family].missing}")
    kind = rope_type_of(cfg)
    if kind not in ("default", "yarn", "llama3"):
        raise ValueError(f"RoPE type {kind!r} is not supported by moe.from_hf (default, yarn and llama3 are)")
    shape = shape_from_hf_config(cfg, seq_len=seq_len, name=name)
    window = cfg.get("sliding_window")
    use_window = cfg.get("use_sliding_window", family in ("mistral", "mixtral"))
    if window and use_window and window < shape.seq_len:
        shape = shape.replace(seq_len=int(window))
    return shape


def router_config_for(cfg: Mapping[str, Any]) -> RouterConfig:
    """Training-time router settings a config carries (router jitter); the routing function itself is in
    the shape."""
    jitter = cfg.get("router_jitter_noise") or (cfg.get("ffn_config") or {}).get("moe_jitter_eps") or 0.0
    return RouterConfig(jitter_eps=float(jitter))


def from_hf(path_or_config: Any, dtype: torch.dtype | None = None, *, router: RouterConfig | dict | None = None,
            backend: str = "loop", seq_len: int | None = None, mtp_loss_weight: float = 0.3) -> nn.Module:
    """Our model (``dense.Transformer`` or ``moe.MoETransformer``) for a transformers checkpoint.

    Args:
        path_or_config: a folder holding ``config.json`` and ``*.safetensors`` (a single file, or shards
            with ``model.safetensors.index.json``); or a config mapping / transformers config object, for a
            randomly initialised model of that architecture.
        dtype: parameter dtype; None keeps the checkpoint's (float32 for a config).
        router: training settings of the router (balancing, z-loss, capacity); by default those the
            config implies (jitter). The routing function comes from the config either way.
        backend: expert backend (``moe.BACKENDS``).
        seq_len: context the model is built for (default: ``max_position_embeddings``, capped at a
            sliding window).
        mtp_loss_weight: weight of the multi-token-prediction loss (models with MTP modules).
    Returns the model in eval mode, on the CPU.
    """
    cfg, folder = _config_dict(path_or_config)
    shape = shape_for_import(cfg, seq_len=seq_len, name=folder.name if folder else "")
    tensors = read_tensors(folder) if folder is not None else None
    if tensors is not None and shape.mtp_modules:
        present = any(k.startswith(f"model.layers.{shape.n_layers + j}.") for j in range(shape.mtp_modules)
                      for k in tensors)
        if not present:
            shape = shape.replace(mtp_modules=0)
    config = RouterConfig.from_any(router) if router is not None else router_config_for(cfg)
    kwargs = {"mtp_loss_weight": mtp_loss_weight} if shape.is_moe else {}
    model = build_model(shape, router=config, backend=backend, **kwargs)
    if tensors is not None:
        load_weights(model, shape, cfg, tensors)
        model.hf_layout = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}  # for to_hf
        if dtype is None:
            dtype = next(iter(tensors.values())).dtype if tensors else torch.float32
    model.hf_config = dict(cfg)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def load_weights(model: nn.Module, shape: ModelShape, cfg: Mapping[str, Any],
                 tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy checkpoint ``tensors`` into ``model`` through ``weight_map``; every tensor must be used once.

    Raises one ValueError naming the first missing/unexpected tensors or the first shape mismatch.
    """
    used: set[str] = set()
    missing: list[str] = []

    def get(name: str) -> torch.Tensor:
        if name not in tensors:
            missing.append(name)
            raise KeyError(name)
        used.add(name)
        return tensors[name]
    get.available = tensors  # type: ignore[attr-defined]

    ours = dict(model.state_dict())
    mapping = weight_map(shape, cfg, mtp_layers=shape.mtp_modules)
    new: dict[str, torch.Tensor] = {}
    for key, fn in mapping.items():
        try:
            value = fn(get)
        except KeyError:
            continue
        if key not in ours:
            raise ValueError(f"internal mapping names {key!r}, which the model does not have")
        if tuple(value.shape) != tuple(ours[key].shape):
            raise ValueError(f"shape mismatch for {key}: checkpoint gives {tuple(value.shape)}, the model built "
                             f"from config.json has {tuple(ours[key].shape)}")
        new[key] = value
    if missing:
        raise ValueError(f"missing tensor(s) in the checkpoint: {', '.join(sorted(set(missing))[:5])}"
                         + (f" (+{len(set(missing)) - 5} more)" if len(set(missing)) > 5 else ""))
    ignorable = {f"model.layers.{shape.n_layers + j}.{n}" for j in range(shape.mtp_modules)
                 for n in ("embed_tokens.weight", "shared_head.head.weight")}
    if shape.tied_embeddings:
        ignorable.add("lm_head.weight")
    unexpected = sorted(set(tensors) - used - ignorable)
    if unexpected:
        raise ValueError(f"unexpected tensor(s) in the checkpoint: {', '.join(unexpected[:5])}"
                         + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
    params = set(k for k, _ in model.named_parameters())
    unfilled = sorted(params - set(new))
    if unfilled:
        raise ValueError(f"the checkpoint leaves parameter(s) unset: {', '.join(unfilled[:5])}")
    with torch.no_grad():
        for key, value in new.items():
            ours[key].copy_(value.to(ours[key].dtype))


def to_hf(model: nn.Module, folder: str | Path) -> Path:
    """Write ``model`` (loaded with ``from_hf`` from a folder) as ``config.json`` + ``model.safetensors`` in
    the layout of the checkpoint it came from. Returns the folder.

    The inverse of ``weight_map`` is derived from it: each checkpoint tensor is replaced by the ids of its
    elements (float64, exact below 2**53), the mapping gathers those ids into our layout, and our values are
    scattered back to the positions the ids name. The MTP layer's embedding/head copies and a tied
    ``lm_head`` are written from the shared tensors.
    """
    from safetensors.torch import save_file
    layout, cfg = getattr(model, "hf_layout", None), getattr(model, "hf_config", None)
    if layout is None or cfg is None:
        raise ValueError("to_hf writes models loaded with moe.from_hf from a folder (it reuses that "
                         "checkpoint's tensor names and layout)")
    names = list(layout)
    sizes = [int(torch.Size(layout[n][0]).numel()) for n in names]
    starts = torch.tensor([0] + sizes).cumsum(0)
    ids = {n: torch.arange(int(starts[i]), int(starts[i + 1]), dtype=torch.float64).view(layout[n][0])
           for i, n in enumerate(names)}
    get: Any = lambda name: ids[name]  # noqa: E731
    get.available = ids
    shape, state = model.shape, model.state_dict()
    out = {n: torch.empty(layout[n][0], dtype=layout[n][1]) for n in names}
    filled = {n: torch.zeros(layout[n][0], dtype=torch.bool) for n in names}
    for key, fn in weight_map(shape, cfg, mtp_layers=shape.mtp_modules).items():
        pos = fn(get).reshape(-1).long()
        value = state[key].detach().reshape(-1).cpu()
        which = torch.searchsorted(starts, pos, right=True) - 1
        for i in which.unique().tolist():
            sel = which == i
            n = names[i]
            out[n].view(-1)[pos[sel] - starts[i]] = value[sel].to(out[n].dtype)
            filled[n].view(-1)[pos[sel] - starts[i]] = True
    shared = {"lm_head.weight": "embedding.wte.weight"}
    for j in range(shape.mtp_modules):
        shared[f"model.layers.{shape.n_layers + j}.embed_tokens.weight"] = "embedding.wte.weight"
        shared[f"model.layers.{shape.n_layers + j}.shared_head.head.weight"] = (
            "embedding.wte.weight" if shape.tied_embeddings else "embedding.head.weight")
    for n in names:
        if not bool(filled[n].all()):
            if n not in shared:
                raise ValueError(f"to_hf: checkpoint tensor {n} is not produced by the mapping")
            out[n] = state[shared[n]].detach().cpu().to(layout[n][1]).clone()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({n: t.contiguous() for n, t in out.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    return folder
