"""Compiled decode: a preallocated cache, one compiled step for every position (no recompilation per
token), the same greedy tokens as the eager ``generate``."""
from __future__ import annotations

import pytest
import torch

from dense.static_cache import CompiledDecoder, static_cache


def _tiny(name: str):
    from experiments.bench.paired import build
    from experiments.trainer import build_model
    spec = build([name], "demo", "tiny", ["model.shape.n_layers=2", "model.shape.seq_len=32"])[name]
    torch.manual_seed(0)
    return build_model(spec).eval()


def test_static_cache_is_allocated_up_front():
    model = _tiny("deepseek_mla")
    cache = static_cache(model, batch=3)
    assert len(cache.tensors()) == 2 * model.shape.n_layers
    assert cache.latent[0].shape == (3, model.shape.seq_len, model.shape.kv_lora_rank)
    dense = static_cache(_tiny("dense"), batch=2, max_len=20)
    assert dense.k[1].shape == (2, dense.n_kv_heads, 20, dense.head_dim)


def test_eager_static_decoder_equals_generate_and_checks_input():
    model = _tiny("dense")
    idx = torch.randint(0, model.shape.vocab_size, (2, 5), generator=torch.Generator().manual_seed(0))
    dec = CompiledDecoder(model, batch=2, compile=False)
    torch.testing.assert_close(dec.generate(idx, 10), model.generate(idx, 10, temperature=0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="batch 2"):
        dec.generate(idx[:1], 3)
    with pytest.raises(ValueError, match="exceed max_len"):
        dec.generate(idx, 30)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        dec.generate(idx[:, :1], 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["moe", "deepseek_mla"])   # KV cache and MLA latent cache, MoE FFNs
def test_compiled_decode_no_recompile_and_same_tokens(name):
    torch.set_num_threads(1)
    torch._dynamo.reset()
    model = _tiny(name)
    idx = torch.randint(0, model.shape.vocab_size, (2, 4), generator=torch.Generator().manual_seed(1))
    want = model.generate(idx, 12, temperature=0)
    dec = CompiledDecoder(model, batch=2)
    dec.generate(idx, 3)                                 # compiles once (positions 4, 5)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = dec.generate(idx, 12)                      # positions 4 .. 14: no recompilation
        got2 = dec.generate(want[:, :9], 20)             # another prompt length, positions 9 .. 27
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(got2[:, :13], want[:, :13], rtol=0, atol=0)
    torch.testing.assert_close(got2, model.generate(want[:, :9], 20, temperature=0), rtol=0, atol=0)
