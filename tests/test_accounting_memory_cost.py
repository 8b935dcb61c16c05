"""memory, chinchilla and cost: formulas, conventions and the traps other calculators fell into."""
import pytest

from accounting import chinchilla as CH
from accounting import cost as C
from accounting import memory as M
from accounting.hf_config import load_shipped
from accounting.shapes import ModelShape

NOTE_A = ModelShape(vocab_size=32768, d_model=4096, n_layers=32, n_heads=32, seq_len=2048)


# ----- memory -------------------------------------------------------------------------------------
def test_note_memory_formulas():
    assert M.note_activation_elements(2048, 4096, 32768) == 13 * 2048 * 4096 + 2048 * 32768
    assert M.activation_elements(NOTE_A, batch=2) == 2 * M.note_activation_elements(2048, 4096, 32768)
    assert M.note_kv_cache_elements(32, 2048, 4096) == 2 * 32 * 2048 * 4096


def test_kv_cache_mha_gqa_mla():
    assert M.kv_cache_elements(NOTE_A) == 2 * 32 * 2048 * 4096            # MHA: the note's 2 L n d
    llama = load_shipped("llama-3-8b")                                    # GQA: 8 KV heads of 128
    assert M.kv_cache_elements_per_token(llama) == 2 * 32 * 8 * 128
    assert M.kv_cache_elements(llama, 8192) * 4 == M.note_kv_cache_elements(32, 8192, 4096)
    ds = load_shipped("deepseek-v3")                                      # MLA: latent + rope key
    assert M.kv_cache_elements_per_token(ds) == 61 * (512 + 64)
    assert M.kv_cache_bytes(ds, context=4096, batch=2, bytes_per_element=2) == 2 * 4096 * 61 * 576 * 2
    s = M.memory_summary(llama, 1000, bytes_per_element=1)
    assert s["kv_cache_bytes"] == s["kv_cache_elements"] == 1000 * 2 * 32 * 8 * 128


def test_memory_rejects_negative():
    with pytest.raises(ValueError):
        M.kv_cache_elements(NOTE_A, context=-1)
    with pytest.raises(ValueError):
        M.parameter_bytes(10, -2)


# ----- chinchilla ---------------------------------------------------------------------------------
def test_twenty_tokens_per_parameter():
    assert CH.chinchilla_tokens(671e9) == pytest.approx(13.42e12)
    ds = load_shipped("deepseek-v3")
    assert CH.chinchilla_tokens_for_shape(ds) == 20 * 671_026_404_352
    assert CH.chinchilla_tokens_for_shape(ds, "active") == 20 * 36_625_610_752
    with pytest.raises(ValueError):
        CH.chinchilla_tokens_for_shape(ds, "embedding")


def test_eq4():
    assert CH.note_optimal_tokens(32, 4096, 32000) == 240 * 32 * 4096**2 + 40 * 32000 * 4096
    assert CH.note_optimal_tokens(32, 4096, 32000, include_vocab=False) == 240 * 32 * 4096**2
    # eq. 4 is 20 x the note's parameter count without the 4 L d norms
    assert CH.note_optimal_tokens(60, 6144, 64000) == 20 * (12 * 60 * 6144**2 + 2 * 64000 * 6144)


@pytest.mark.parametrize("fit", list(CH.FITS.values()), ids=lambda f: f.name)
def test_compute_optimal_is_the_minimum(fit):
    c = 5.76e23
    n, d = fit.compute_optimal(c)
    assert 6 * n * d == pytest.approx(c)
    best = fit.loss(n, d)
    for f in (0.8, 0.9, 1.1, 1.25):
        assert fit.loss(n * f, c / (6 * n * f)) > best


def test_the_two_fits_differ_as_reported():
    c = 5.76e23  # Chinchilla's own budget
    assert 15 < CH.BESIROGLU_2024.tokens_per_parameter(c) < 25    # the refit recovers ~20
    assert CH.HOFFMANN_2022.tokens_per_parameter(c) > 60          # the printed constants give far more
    assert CH.HOFFMANN_2022.loss(70e9, 1.4e12) == pytest.approx(1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28)


# ----- cost ---------------------------------------------------------------------------------------
def test_note_gpu_price():
    assert C.NOTE_GPU.usd_per_hour == pytest.approx(10_000 / 8766)
    assert C.usd_per_flop() == pytest.approx(1.0563e-18, rel=1e-4)          # per multiply-add
    assert C.usd_per_flop(C.NOTE_GPU, 2) == pytest.approx(1.0563e-18 / 2, rel=1e-4)
    assert C.gpu_years(300e12 * C.SECONDS_PER_YEAR, 1) == pytest.approx(1.0)
    assert C.cost_usd(300e12 * C.SECONDS_PER_YEAR, 1) == pytest.approx(10_000)


def test_conventions_do_not_mix():
    """The same work in either convention costs the same time."""
    macs = 1e21
    assert C.gpu_hours(macs, 1) == pytest.approx(C.gpu_hours(2 * macs, 2))
    h100 = C.gpu_rate("h100-sxm")
    assert h100.macs_per_s == pytest.approx(989e12 / 2)
    assert C.gpu_seconds(989e12, 2, h100) == pytest.approx(1.0)
    assert C.gpu_seconds(989e12, 1, h100) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        C.gpu_hours(1e20, 3)


def test_presets_price_and_mfu():
    r = C.gpu_rate("h800", usd_per_hour=2.0, mfu=0.4)
    assert r.usd_per_hour == 2.0 and r.mfu == 0.4
    assert C.gpu_hours(989e12 * 3600 * 0.4, 2, r) == pytest.approx(1.0)
    assert C.gpu_rate("press2025").rate_flops_per_mac == 1
    with pytest.raises(ValueError, match="unknown hardware"):
        C.gpu_rate("tpu-v9")
    with pytest.raises(ValueError, match="mfu"):
        C.gpu_rate("h100-sxm", mfu=1.5)


def test_cost_halving_and_inference():
    assert C.cost_at_year(100.0, 2027) == pytest.approx(50.0)
    assert C.cost_at_year(100.0, 2031) == pytest.approx(12.5)
    assert C.inference_usd_per_million_tokens(1e12, 1) == pytest.approx(1e18 * 1.0563e-18, rel=1e-4)


def test_implied_mfu():
    flops = 0.39 * 2.664e6 * 3600 * 989e12
    assert C.implied_mfu(flops, 2, 2.664e6, 989e12) == pytest.approx(0.39)
    assert C.implied_mfu(flops / 2, 1, 2.664e6, 989e12) == pytest.approx(0.39)
