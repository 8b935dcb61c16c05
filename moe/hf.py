"""Import transformers checkpoints into our models: ``from_hf(folder or config) -> model``.

    model = moe.from_hf("path/to/folder")            # config.json + *.safetensors (sharded with an index too)
    model = moe.from_hf(config_dict)                 # a config mapping: same architecture, random weights

The folder is what ``save_pretrained`` writes (nothing is fetched from a hub). The config goes through
``accounting.hf_config.shape_from_hf_config``, so the model is built from the same ``ModelShape`` the
accounting prices, and its weights are copied in by the ONE name mapping below (``weight_map``). Families:
Llama (with Llama-3.1's ``llama3`` RoPE and ``attention_bias``), Mistral, Qwen2, Qwen3 (dense), Mixtral,
Qwen2-MoE, Qwen3-MoE (any MoE placement), OLMoE, DBRX, DeepSeek-V2, DeepSeek-V3, gpt-oss. Llama 4 is priced by
``accounting`` but refused here in one line naming what the model lacks (``NOT_BUILT``).

Layout conventions handled here:
* transformers' linear weights are [out, in]; our stacked experts are ``w_up``/``w_gate`` [E, d, f] and
  ``w_down`` [E, f, d] (x @ w), so expert matrices are transposed; DBRX's fused ``w1``/``v1``/``w2``
  [E f, d] and the fused ``gate_up_proj`` [E, 2f, d] / ``down_proj`` [E, d, f] of newer checkpoints too.
* RoPE: we rotate the two halves of a head (``rotate_half``). DeepSeek's checkpoints pair adjacent
  dimensions instead (V2 always, V3 when ``rope_interleave``), so the rotary rows of the query projection
  and of ``kv_a_proj_with_mqa`` are permuted [0, 2, 4, ..., 1, 3, 5, ...]; every q.k product is unchanged.
* DBRX's fused ``Wqkv`` is split into q, k and v.
* gpt-oss's ``gate_up_proj`` [E, d, 2f] (already x @ w) holds gate and up in alternate columns (0::2, 1::2),
  and so does its bias [E, 2f]; ``down_proj`` [E, f, d] and the router's weight and bias copy as they are.
* DeepSeek-V3's multi-token-prediction layer (``model.layers.{L}``, which transformers does not build) is
  loaded into ``model.mtp[0]`` when the checkpoint carries it; a folder without it (transformers'
  ``save_pretrained`` drops it) gives a model without MTP modules. Its copies of the embedding and head
  (``embed_tokens``, ``shared_head.head``) are shared with the main model and not loaded twice.
* Mistral's sliding window: the model is built with ``seq_len = min(max_position_embeddings,
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
from typing import Any, Callable, Mapping

import torch
from torch import nn

from accounting.hf_config import model_type_of, rope_type_of, shape_from_hf_config
from accounting.shapes import ModelShape

from .router import RouterConfig

Getter = Callable[[str], torch.Tensor]


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


# ----- the name mapping ------------------------------------------------------------------------------
def _rope_rows(width: int, start: int, rope: int, heads: int, block: int) -> torch.Tensor:
    """Row order that turns interleaved rotary pairs into halves: for each of ``heads`` blocks of
    ``block`` rows, rows ``start .. start + rope`` become [even ones, odd ones]."""
    order = torch.arange(width)
    perm = torch.cat([torch.arange(0, rope, 2), torch.arange(1, rope, 2)])
    for h in range(heads):
        base = h * block + start
        order[base:base + rope] = base + perm
    return order


def interleaved_rope(cfg: Mapping[str, Any]) -> bool:
    """Whether the checkpoint's rotary dimensions are interleaved pairs (DeepSeek V2; V3 by default)."""
    mt = model_type_of(cfg)
    return mt == "deepseek_v2" or (mt == "deepseek_v3" and cfg.get("rope_interleave", True) is not False)


def weight_map(shape: ModelShape, cfg: Mapping[str, Any], mtp_layers: int = 0) -> dict[str, Callable[[Getter], torch.Tensor]]:
    """``{our state-dict key: fn(get) -> tensor}``, where ``get(hf_name)`` returns a checkpoint tensor.

    This is the one place that knows transformers' names and layouts (see the module docstring).
    """
    mt = model_type_of(cfg)
    s = shape
    out: dict[str, Callable[[Getter], torch.Tensor]] = {}

    def copy(ours: str, theirs: str) -> None:
        out[ours] = lambda get, t=theirs: get(t)

    dbrx = mt == "dbrx"
    pre = "transformer." if dbrx else "model."
    copy("embedding.wte.weight", pre + ("wte.weight" if dbrx else "embed_tokens.weight"))
    if not s.tied_embeddings:
        copy("embedding.head.weight", "lm_head.weight")
    copy("norm.weight", pre + ("norm_f.weight" if dbrx else "norm.weight"))
    interleaved = interleaved_rope(cfg)

    def block(ours: str, theirs: str, layer: int) -> None:
        if dbrx:
            a = f"{theirs}norm_attn_norm."
            copy(f"{ours}norm1.weight", a + "norm_1.weight")
            copy(f"{ours}norm2.weight", a + "norm_2.weight")
            q, kv = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
            for i, (name, lo, hi) in enumerate((("wq", 0, q), ("wk", q, q + kv), ("wv", q + kv, q + 2 * kv))):
                out[f"{ours}attn.{name}.weight"] = lambda get, lo=lo, hi=hi: get(a + "attn.Wqkv.weight")[lo:hi]
            copy(f"{ours}attn.wo.weight", a + "attn.out_proj.weight")
        else:
            copy(f"{ours}norm1.weight", theirs + "input_layernorm.weight")
            copy(f"{ours}norm2.weight", theirs + "post_attention_layernorm.weight")
            at = theirs + "self_attn."
            if s.attention == "mla":
                n, p, H, r = s.qk_nope_head_dim, s.qk_rope_head_dim, s.n_heads, s.kv_lora_rank
                q_rows = _rope_rows(H * (n + p), n, p, H, n + p) if interleaved else None
                kv_rows = _rope_rows(r + p, r, p, 1, r + p) if interleaved else None

                def rows(theirs_name, order):
                    return lambda get: get(theirs_name) if order is None else get(theirs_name)[order]
                if s.q_lora_rank:
                    copy(f"{ours}attn.wq_a.weight", at + "q_a_proj.weight")
                    copy(f"{ours}attn.q_norm.weight", at + "q_a_layernorm.weight")
                    out[f"{ours}attn.wq_b.weight"] = rows(at + "q_b_proj.weight", q_rows)
                else:
                    out[f"{ours}attn.wq.weight"] = rows(at + "q_proj.weight", q_rows)
                out[f"{ours}attn.wkv_a.weight"] = rows(at + "kv_a_proj_with_mqa.weight", kv_rows)
                copy(f"{ours}attn.kv_norm.weight", at + "kv_a_layernorm.weight")
                copy(f"{ours}attn.wkv_b.weight", at + "kv_b_proj.weight")
                copy(f"{ours}attn.wo.weight", at + "o_proj.weight")
            else:
                for o, t in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
                    copy(f"{ours}attn.{o}.weight", f"{at}{t}.weight")
                if s.qkv_bias or s.attention_bias:
                    for o, t in (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj")):
                        if o != "wo" or s.attention_bias:
                            copy(f"{ours}attn.{o}.bias", f"{at}{t}.bias")
                if s.attention_sinks:
                    copy(f"{ours}attn.sinks", at + "sinks")
                if s.qk_norm != "none":
                    copy(f"{ours}attn.q_norm.weight", at + "q_norm.weight")
                    copy(f"{ours}attn.k_norm.weight", at + "k_norm.weight")
        if not s.is_moe_layer(min(layer, s.n_layers - 1)):
            for o, t in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                copy(f"{ours}ffn.{o}.weight", f"{theirs}mlp.{t}.weight")
            return
        f = f"{ours}ffn."
        if dbrx:
            E, ff, d = s.n_experts, s.d_expert, s.d_model
            e = f"{theirs}ffn."
            copy(f + "router.gate.weight", e + "router.layer.weight")
            out[f + "experts.w_gate"] = lambda get: get(e + "experts.mlp.w1").view(E, ff, d).transpose(1, 2)
            out[f + "experts.w_up"] = lambda get: get(e + "experts.mlp.v1").view(E, ff, d).transpose(1, 2)
            out[f + "experts.w_down"] = lambda get: get(e + "experts.mlp.w2").view(E, ff, d)
            return
        if mt == "gpt_oss":  # router with a bias; experts [E, d, 2f] with gate/up columns interleaved
            m = theirs + "mlp."
            copy(f + "router.gate.weight", m + "router.weight")
            copy(f + "router.gate.bias", m + "router.bias")
            out[f + "experts.w_gate"] = lambda get: get(m + "experts.gate_up_proj")[..., 0::2]
            out[f + "experts.w_up"] = lambda get: get(m + "experts.gate_up_proj")[..., 1::2]
            out[f + "experts.b_gate"] = lambda get: get(m + "experts.gate_up_proj_bias")[..., 0::2]
            out[f + "experts.b_up"] = lambda get: get(m + "experts.gate_up_proj_bias")[..., 1::2]
            copy(f + "experts.w_down", m + "experts.down_proj")
            copy(f + "experts.b_down", m + "experts.down_proj_bias")
            return
        m = theirs + ("block_sparse_moe." if mt == "mixtral" else "mlp.")
        copy(f + "router.gate.weight", m + "gate.weight")
        names = ("w1", "w3", "w2") if mt == "mixtral" else ("gate_proj", "up_proj", "down_proj")

        def experts(which: int):
            def fn(get: Getter) -> torch.Tensor:
                fused = m + "experts." + ("gate_up_proj" if which < 2 else "down_proj")
                if _has(get, fused):  # [E, 2f, d] (gate then up) or [E, d, f]
                    w = get(fused)
                    return w.chunk(2, dim=1)[which].transpose(1, 2) if which < 2 else w.transpose(1, 2)
                return torch.stack([get(f"{m}experts.{i}.{names[which]}.weight").t() for i in range(s.n_experts)])
            return fn
        out[f + "experts.w_gate"], out[f + "experts.w_up"], out[f + "experts.w_down"] = (
            experts(0), experts(1), experts(2))
        if s.n_shared_experts:
            sh = m + ("shared_expert." if mt == "qwen2_moe" else "shared_experts.")
            for o, t in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                copy(f"{f}shared_experts.{o}.weight", f"{sh}{t}.weight")
        if s.shared_expert_gate:
            copy(f + "shared_gate.weight", m + "shared_expert_gate.weight")
        if s.router_score_bias:
            copy(f + "router.bias", m + "gate.e_score_correction_bias")

    for i in range(s.n_layers):
        block(f"blocks.{i}.", f"{pre}{'blocks' if dbrx else 'layers'}.{i}.", i)
    for k in range(mtp_layers):  # DeepSeek-V3's MTP layer(s) follow the main layers
        theirs = f"model.layers.{s.n_layers + k}."
        block(f"mtp.{k}.block.", theirs, s.n_layers + k)
        copy(f"mtp.{k}.enorm.weight", theirs + "enorm.weight")
        copy(f"mtp.{k}.hnorm.weight", theirs + "hnorm.weight")
        copy(f"mtp.{k}.proj.weight", theirs + "eh_proj.weight")
        copy(f"mtp.{k}.norm.weight", theirs + "shared_head.norm.weight")
    return out


def _has(get: Getter, name: str) -> bool:
    return name in getattr(get, "available", ())


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


NOT_BUILT = {
    # families accounting prices but the torch model does not compute, with what is missing (one line each)
    "llama4_text": "chunked attention (attention_chunk_size), NoPE layers (no_rope_layers), the weightless L2 "
                   "q/k norm, attention temperature tuning and the sigmoid top-1 router that scales the expert "
                   "input (its MoE placement is priced by accounting)",
    "llama4": "the vision encoder and projector, and in its text_config (llama4_text) chunked attention, NoPE "
              "layers, the L2 q/k norm, attention temperature tuning and the input-scaling sigmoid router",
}


def shape_for_import(cfg: Mapping[str, Any], seq_len: int | None = None, name: str = "") -> ModelShape:
    """The ``ModelShape`` ``from_hf`` builds: the accounting's shape, checked for what the torch model runs
    (family, RoPE type) and with Mistral's sliding window as the context limit."""
    family = model_type_of(cfg)
    if family in NOT_BUILT:
        raise ValueError(f"{family}: moe.from_hf does not build it; missing: {NOT_BUILT[family]}")
    kind = rope_type_of(cfg)
    if kind not in ("default", "yarn", "llama3"):
        raise ValueError(f"RoPE type {kind!r} is not supported by moe.from_hf (default, yarn and llama3 are)")
    shape = shape_from_hf_config(cfg, seq_len=seq_len, name=name)
    window = cfg.get("sliding_window")
    use_window = cfg.get("use_sliding_window", model_type_of(cfg) in ("mistral", "mixtral"))
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
    from . import build_model

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
