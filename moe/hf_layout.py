"""Where a transformers checkpoint keeps each of our model's tensors: ``weight_map(shape, config)``, the one
place that knows transformers' names and layouts, with one function per family in ``FAMILIES`` (keyed by
``model_type``, the keys of ``accounting.hf_config.FAMILIES``). ``moe.hf`` loads and writes checkpoints
through it.

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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from accounting.hf_config import model_type_of
from accounting.shapes import ModelShape

Getter = Callable[[str], torch.Tensor]
_QKVO = (("wq", "q_proj"), ("wk", "k_proj"), ("wv", "v_proj"), ("wo", "o_proj"))
_MLP = (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj"))
_NORMS = (("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"))


class _Map:
    """The mapping being built for one shape and config: ``out[our key] = fn(get) -> tensor``."""

    def __init__(self, shape: ModelShape, cfg: Mapping[str, Any]):
        self.s, self.cfg = shape, cfg
        self.out: dict[str, Callable[[Getter], torch.Tensor]] = {}

    def copy(self, ours: str, theirs: str) -> None:
        self.out[ours] = lambda get, t=theirs: get(t)

    def put(self, ours: str, fn: Callable[[Getter], torch.Tensor]) -> None:
        self.out[ours] = fn

    def copy_all(self, ours: str, theirs: str, names: tuple[tuple[str, str], ...], suffix: str = ".weight") -> None:
        for o, t in names:
            self.copy(f"{ours}{o}{suffix}", f"{theirs}{t}{suffix}")


def _has(get: Getter, name: str) -> bool:
    return name in getattr(get, "available", ())


def _rope_rows(width: int, start: int, rope: int, heads: int, block: int) -> torch.Tensor:
    """Row order that turns interleaved rotary pairs into halves: for each of ``heads`` blocks of
    ``block`` rows, rows ``start .. start + rope`` become [even ones, odd ones]."""
    order = torch.arange(width)
    perm = torch.cat([torch.arange(0, rope, 2), torch.arange(1, rope, 2)])
    for h in range(heads):
        base = h * block + start
        order[base:base + rope] = base + perm
    return order


# shared pieces: one decoder layer's parts, ``ours`` / ``theirs`` the layer's prefixes
def _llama_attention(m: _Map, ours: str, theirs: str) -> None:
    """``input_layernorm``, ``post_attention_layernorm`` and ``self_attn``'s q/k/v/o, with the biases, sinks
    and q/k norms the shape has."""
    s, a, at = m.s, ours + "attn.", theirs + "self_attn."
    m.copy_all(ours, theirs, _NORMS)
    m.copy_all(a, at, _QKVO)
    m.copy_all(a, at, tuple(p for p in _QKVO if s.attention_bias or (s.qkv_bias and p[0] != "wo")), ".bias")
    if s.attention_sinks:
        m.copy(a + "sinks", at + "sinks")
    if s.qk_norm != "none":
        m.copy_all(a, at, (("q_norm", "q_norm"), ("k_norm", "k_norm")))


def _mla_attention(m: _Map, ours: str, theirs: str, interleaved: bool) -> None:
    """DeepSeek's norms and latent attention; ``interleaved``: the checkpoint pairs adjacent rotary dimensions,
    so the rotary rows of the query projection and of ``kv_a_proj_with_mqa`` are permuted into halves."""
    s, a, at = m.s, ours + "attn.", theirs + "self_attn."
    m.copy_all(ours, theirs, _NORMS)
    n, p, H, r = s.qk_nope_head_dim, s.qk_rope_head_dim, s.n_heads, s.kv_lora_rank
    q_rows = _rope_rows(H * (n + p), n, p, H, n + p) if interleaved else None
    kv_rows = _rope_rows(r + p, r, p, 1, r + p) if interleaved else None

    def rows(name: str, order: torch.Tensor | None) -> Callable[[Getter], torch.Tensor]:
        return lambda get: get(name) if order is None else get(name)[order]
    if s.q_lora_rank:
        m.copy(a + "wq_a.weight", at + "q_a_proj.weight")
        m.copy(a + "q_norm.weight", at + "q_a_layernorm.weight")
        m.put(a + "wq_b.weight", rows(at + "q_b_proj.weight", q_rows))
    else:
        m.put(a + "wq.weight", rows(at + "q_proj.weight", q_rows))
    m.put(a + "wkv_a.weight", rows(at + "kv_a_proj_with_mqa.weight", kv_rows))
    m.copy_all(a, at, (("kv_norm", "kv_a_layernorm"), ("wkv_b", "kv_b_proj"), ("wo", "o_proj")))


def _stacked(m: _Map, f: str, moe: str, names: tuple[str, str, str]) -> None:
    """Our stacked experts ``w_gate``/``w_up`` [E, d, f], ``w_down`` [E, f, d] (x @ w) from transformers'
    per-expert ``{moe}experts.{i}.{name}.weight`` [out, in] (``names``: gate, up, down), or from the fused
    ``gate_up_proj`` [E, 2f, d] (gate then up) and ``down_proj`` [E, d, f] of newer checkpoints."""
    def matrix(which: int) -> Callable[[Getter], torch.Tensor]:
        def fn(get: Getter) -> torch.Tensor:
            fused = moe + "experts." + ("gate_up_proj" if which < 2 else "down_proj")
            if _has(get, fused):
                w = get(fused)
                return w.chunk(2, dim=1)[which].transpose(1, 2) if which < 2 else w.transpose(1, 2)
            return torch.stack([get(f"{moe}experts.{i}.{names[which]}.weight").t() for i in range(m.s.n_experts)])
        return fn
    for which, ours in enumerate(("w_gate", "w_up", "w_down")):
        m.put(f"{f}experts.{ours}", matrix(which))


def _ffn(m: _Map, ours: str, theirs: str, layer: int, moe: str = "mlp.",
         names: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj"), shared: str = "shared_experts.") -> None:
    """Layer ``layer``'s feed-forward: ``mlp.{gate,up,down}_proj`` when dense; else the router ``{moe}gate``,
    the experts (``_stacked``), the shared experts under ``{moe}{shared}``, the shared expert's gate and the
    router's score-correction bias, as far as the shape has them."""
    s, f = m.s, ours + "ffn."
    if not s.is_moe_layer(min(layer, s.n_layers - 1)):
        m.copy_all(f, theirs + "mlp.", _MLP)
        return
    m.copy(f + "router.gate.weight", theirs + moe + "gate.weight")
    _stacked(m, f, theirs + moe, names)
    if s.n_shared_experts:
        m.copy_all(f + "shared_experts.", theirs + moe + shared, _MLP)
    if s.shared_expert_gate:
        m.copy(f + "shared_gate.weight", theirs + moe + "shared_expert_gate.weight")
    if s.router_score_bias:
        m.copy(f + "router.bias", theirs + moe + "gate.e_score_correction_bias")


# ----- one function per family: ``(m, ours, theirs, layer)`` maps one decoder layer ----------------------
def _llama(m: _Map, ours: str, theirs: str, layer: int) -> None:
    """Llama, Mistral, Qwen2/3 (dense), Qwen3-MoE, OLMoE: ``self_attn`` and ``mlp`` (an MLP or experts)."""
    _llama_attention(m, ours, theirs)
    _ffn(m, ours, theirs, layer)


def _qwen2_moe(m: _Map, ours: str, theirs: str, layer: int) -> None:
    """Qwen2-MoE: as Llama, its one shared expert under ``mlp.shared_expert``."""
    _llama_attention(m, ours, theirs)
    _ffn(m, ours, theirs, layer, shared="shared_expert.")


def _mixtral(m: _Map, ours: str, theirs: str, layer: int) -> None:
    """Mixtral: the experts under ``block_sparse_moe``, named ``w1`` (gate), ``w3`` (up), ``w2`` (down)."""
    _llama_attention(m, ours, theirs)
    _ffn(m, ours, theirs, layer, moe="block_sparse_moe.", names=("w1", "w3", "w2"))


def _deepseek_v2(m: _Map, ours: str, theirs: str, layer: int) -> None:
    """DeepSeek-V2: latent attention with interleaved rotary pairs; shared experts ``mlp.shared_experts``."""
    _mla_attention(m, ours, theirs, interleaved=True)
    _ffn(m, ours, theirs, layer)


def _deepseek_v3(m: _Map, ours: str, theirs: str, layer: int) -> None:
    """DeepSeek-V3: as V2, the rotary pairs interleaved unless ``rope_interleave`` is false."""
    _mla_attention(m, ours, theirs, interleaved=m.cfg.get("rope_interleave", True) is not False)
    _ffn(m, ours, theirs, layer)


def _gpt_oss(m: _Map, ours: str, theirs: str, layer: int) -> None:
    """gpt-oss: a router with a bias; experts ``gate_up_proj`` [E, d, 2f] (already x @ w) with gate and up in
    alternate columns (0::2, 1::2), its bias [E, 2f] likewise; ``down_proj`` [E, f, d] and its bias as they are."""
    _llama_attention(m, ours, theirs)
    f, e = ours + "ffn.", theirs + "mlp."
    m.copy_all(f + "router.gate.", e + "router.", (("weight", "weight"), ("bias", "bias")), "")
    m.put(f + "experts.w_gate", lambda get: get(e + "experts.gate_up_proj")[..., 0::2])
    m.put(f + "experts.w_up", lambda get: get(e + "experts.gate_up_proj")[..., 1::2])
    m.put(f + "experts.b_gate", lambda get: get(e + "experts.gate_up_proj_bias")[..., 0::2])
    m.put(f + "experts.b_up", lambda get: get(e + "experts.gate_up_proj_bias")[..., 1::2])
    m.copy_all(f + "experts.", e + "experts.", (("w_down", "down_proj"), ("b_down", "down_proj_bias")), "")


def _dbrx(m: _Map, ours: str, theirs: str, layer: int) -> None:
    """DBRX: ``norm_attn_norm`` holds both norms and the fused ``Wqkv`` (split into q, k, v); the experts are
    fused ``w1`` (gate), ``v1`` (up), ``w2`` (down), each [E f, d]."""
    s, a, e, f = m.s, theirs + "norm_attn_norm.", theirs + "ffn.", ours + "ffn."
    m.copy_all(ours, a, (("norm1", "norm_1"), ("norm2", "norm_2")))
    q, kv = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
    for name, lo, hi in (("wq", 0, q), ("wk", q, q + kv), ("wv", q + kv, q + 2 * kv)):
        m.put(f"{ours}attn.{name}.weight", lambda get, lo=lo, hi=hi: get(a + "attn.Wqkv.weight")[lo:hi])
    m.copy(f"{ours}attn.wo.weight", a + "attn.out_proj.weight")
    E, ff, d = s.n_experts, s.d_expert, s.d_model
    m.copy(f + "router.gate.weight", e + "router.layer.weight")
    m.put(f + "experts.w_gate", lambda get: get(e + "experts.mlp.w1").view(E, ff, d).transpose(1, 2))
    m.put(f + "experts.w_up", lambda get: get(e + "experts.mlp.v1").view(E, ff, d).transpose(1, 2))
    m.put(f + "experts.w_down", lambda get: get(e + "experts.mlp.w2").view(E, ff, d))


@dataclass(frozen=True)
class Family:
    """How a family's checkpoint names our model: ``layer(m, ours, theirs, i)`` maps decoder layer i, the
    model-level names are ``embed``, ``norm`` and ``layers`` + i; or ``missing``: what our model lacks to
    compute it (``from_hf`` refuses it in one line)."""

    layer: Callable[[_Map, str, str, int], None] | None = None
    missing: str = ""
    embed: str = "model.embed_tokens.weight"
    norm: str = "model.norm.weight"
    layers: str = "model.layers."


FAMILIES: dict[str, Family] = {
    # transformers model_type -> its checkpoint layout (accounting.hf_config.FAMILIES has the same keys)
    "llama": Family(_llama), "mistral": Family(_llama), "qwen2": Family(_llama), "qwen3": Family(_llama),
    "mixtral": Family(_mixtral), "qwen2_moe": Family(_qwen2_moe), "qwen3_moe": Family(_llama),
    "olmoe": Family(_llama),
    "dbrx": Family(_dbrx, embed="transformer.wte.weight", norm="transformer.norm_f.weight",
                   layers="transformer.blocks."),
    "deepseek_v2": Family(_deepseek_v2), "deepseek_v3": Family(_deepseek_v3), "gpt_oss": Family(_gpt_oss),
    "llama4_text": Family(missing="chunked attention (attention_chunk_size), NoPE layers (no_rope_layers), the "
                          "weightless L2 q/k norm, attention temperature tuning and the sigmoid top-1 router that "
                          "scales the expert input (its MoE placement is priced by accounting)"),
    "llama4": Family(missing="the vision encoder and projector, and in its text_config (llama4_text) chunked "
                     "attention, NoPE layers, the L2 q/k norm, attention temperature tuning and the input-scaling "
                     "sigmoid router"),
}


def weight_map(shape: ModelShape, cfg: Mapping[str, Any], mtp_layers: int = 0) -> dict[str, Callable[[Getter], torch.Tensor]]:
    """``{our state-dict key: fn(get) -> tensor}``, where ``get(hf_name)`` returns a checkpoint tensor.

    This is the one place that knows transformers' names and layouts (``FAMILIES``; see the module
    docstring). DeepSeek-V3's ``mtp_layers`` follow the main layers in the checkpoint.
    """
    family, m = FAMILIES[model_type_of(cfg)], _Map(shape, cfg)
    m.copy("embedding.wte.weight", family.embed)
    if not shape.tied_embeddings:
        m.copy("embedding.head.weight", "lm_head.weight")
    m.copy("norm.weight", family.norm)
    for i in range(shape.n_layers):
        family.layer(m, f"blocks.{i}.", f"{family.layers}{i}.", i)
    for k in range(mtp_layers):
        ours, theirs = f"mtp.{k}.", f"model.layers.{shape.n_layers + k}."
        family.layer(m, ours + "block.", theirs, shape.n_layers + k)
        m.copy_all(ours, theirs, (("enorm", "enorm"), ("hnorm", "hnorm"), ("proj", "eh_proj"),
                                  ("norm", "shared_head.norm")))
    return m.out
