"""KV-cache decoding: cached logits equal full forwards; generate agrees with and without the cache."""
from __future__ import annotations

import pytest
import torch

import dense
from torch.utils.flop_counter import FlopCounterMode

from accounting import ModelShape
from accounting.flops import decode_flops_per_token
from accounting.memory import kv_cache_elements
from experiments.bench.decode_vs_recompute import format_table, time_decode

TOL = dict(rtol=1e-5, atol=1e-5)  # fp32; differences come only from summation order in attention

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


CACHED = {
    "mha": dict(),
    "gqa-swiglu-tied": dict(attention="gqa", n_kv_heads=2, ffn_kind="swiglu", norm_kind="rmsnorm",
                            tied_embeddings=True),
    "mla": dict(attention="mla", q_lora_rank=12, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
                v_head_dim=6),
    "mla-noqlora": dict(attention="mla", kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=6, v_head_dim=8,
                        norm_kind="rmsnorm"),
}


@pytest.mark.parametrize("kw", list(CACHED.values()), ids=list(CACHED))
def test_cached_logits_equal_full_forward(kw):
    torch.manual_seed(0)
    shape = ModelShape(vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=24, **kw)
    model = dense.Transformer(shape).eval()
    idx = torch.randint(0, 64, (2, 24))
    with torch.no_grad():
        full = model(idx).logits
        cache = model.new_cache(2)
        pieces = [model(idx[:, :9], cache=cache).logits]       # prefill 9 tokens
        pieces.append(model(idx[:, 9:13], cache=cache).logits)  # a chunk of 4 after a prefix
        for t in range(13, 24):                                 # then one token at a time
            pieces.append(model(idx[:, t:t + 1], cache=cache).logits)
    # the cache holds what accounting prices: 2 L KV hd per token (MHA/GQA), L (kv_rank + rope) (MLA)
    assert cache.pos == 24 and cache.numel() == kv_cache_elements(shape, 24, batch=2)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, **TOL)


@pytest.mark.parametrize("kw", list(CACHED.values()), ids=list(CACHED))
@pytest.mark.parametrize("context", [0, 9])
def test_decode_step_flops_match_accounting(kw, context):
    """One cached decode step under FlopCounterMode equals accounting's incremental-decode flops (2 per
    multiply-add): projections, attention to context + 1 keys (MLA: the absorbed latent form), FFNs and
    the head at one position."""
    torch.manual_seed(0)
    shape = ModelShape(vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=24, **kw)
    model = dense.Transformer(shape).eval()
    idx = torch.randint(0, 64, (3, context + 1))
    with torch.no_grad():
        cache = model.new_cache(3)
        if context:
            model(idx[:, :context], cache=cache)
        with FlopCounterMode(display=False) as counter:
            model(idx[:, context:], cache=cache, last_only=True)
    assert counter.get_total_flops() == 3 * decode_flops_per_token(shape, context, flops_per_mac=2)


def test_generate_with_and_without_cache_agree_past_the_window():
    torch.manual_seed(0)
    shape = ModelShape(vocab_size=64, d_model=32, n_layers=2, n_heads=4, seq_len=16)
    model = dense.Transformer(shape).eval()
    prompt = torch.randint(0, 64, (2, 5))
    a = model.generate(prompt, 20, temperature=0)             # runs past seq_len = 16
    b = model.generate(prompt, 20, temperature=0, use_cache=False)
    assert a.shape == (2, 25) and torch.equal(a, b)
    torch.manual_seed(1)
    sampled = model.generate(prompt, 4, temperature=0.8, top_k=5)
    assert sampled.shape == (2, 9) and sampled.max() < 64


def test_time_decode_rows():
    shape = ModelShape(vocab_size=64, d_model=32, n_layers=1, n_heads=4, seq_len=8)
    rows = time_decode(shape, [4, 16], warmup=0, repeats=1)
    assert [r["context"] for r in rows] == [4, 16]
    assert all(r["cached_s"] > 0 and r["recompute_flops"] > r["cached_flops"] for r in rows)
    one = time_decode(dense.Transformer(shape.replace(seq_len=32)), context=8, warmup=0, repeats=1)
    assert one["context"] == 8 and "recompute_s" in one
    assert "cached ms/tok" in format_table(rows)
