"""KV-cache decoding: cached logits equal full forwards; generate agrees with and without the cache."""
from __future__ import annotations

import pytest
import torch

import dense
from accounting import ModelShape
from dense.decode_timing import format_table, time_decode
from _model_helpers import one_thread  # noqa: F401,E402 (autouse fixture: 1 intra-op thread)

TOL = dict(rtol=1e-5, atol=1e-5)  # fp32; differences come only from summation order in attention


@pytest.mark.parametrize("kw", [dict(), dict(attention="gqa", n_kv_heads=2, ffn_kind="swiglu",
                                             norm_kind="rmsnorm", tied_embeddings=True)])
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
    assert cache.pos == 24 and cache.numel() == 2 * 2 * 2 * shape.n_kv_heads * 24 * shape.head_dim
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, **TOL)


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
