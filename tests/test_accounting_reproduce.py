"""The note's Table 3 and section 6, cell by cell, against the printed values (pure Python, fast).

Tolerances: A-C cells must ROUND to the printed digits (trailing zeros of an integer are not
significant: "180" means 175-185), except the two documented cells (C parameters within 1%, C
activations within 5%). Case D's endpoints are printed to about one "nice" figure: within a factor 1.3.
"""
import pytest

from accounting.reproduce import deepseek as D, note as P, note_section6 as NS6
from accounting.cost import NOTE_GPU, gpu_hours

ROWS = P.table3_comparison()
BY_KEY = {(r["quantity"], r["case"]): r for r in ROWS}


def test_every_printed_cell_is_compared():
    assert len(ROWS) == 9 * 5
    assert {r["case"] for r in ROWS} == {"A", "B", "C", "D low", "D high"}


@pytest.mark.parametrize("key", [k for k in BY_KEY if not k[1].startswith("D")], ids=" ".join)
def test_cases_a_to_c_round_to_printed(key):
    r = BY_KEY[key]
    if key in P.DOCUMENTED_EXCEPTIONS:
        rel, _ = P.DOCUMENTED_EXCEPTIONS[key]
        assert not r["rounds_to_printed"]          # it really is an exception
        assert abs(r["ratio"] - 1) <= rel
    else:
        assert r["rounds_to_printed"], r
    assert r["within_tolerance"]


@pytest.mark.parametrize("key", [k for k in BY_KEY if k[1].startswith("D")], ids=" ".join)
def test_case_d_within_its_printed_range(key):
    r = BY_KEY[key]
    assert 1 / 1.3 <= r["ratio"] <= 1.3, r
    assert r["within_tolerance"]


def test_case_d_low_high_bracket_consistently():
    for quantity in P.TABLE3_PRINTED:
        assert BY_KEY[(quantity, "D low")]["computed"] < BY_KEY[(quantity, "D high")]["computed"]
    # the high end needs n ~ 200K: n = 100K would give a 0.67 T cache, far below the printed 1.3 T
    hi = P.USE_CASES["D high"]
    assert 2 * hi.n_layers * (100 * 1024) * hi.d_model < 0.7e12


def test_exact_values_of_a():
    """Case A by hand: L=32, n=2048, d=4096, V=32768."""
    assert BY_KEY[("parameters", "A")]["computed"] == 12 * 32 * 4096**2 + 4 * 32 * 4096 + 2 * 32768 * 4096
    assert BY_KEY[("inference cache memory", "A")]["computed"] == 2 * 32 * 2048 * 4096
    assert BY_KEY[("training total flops", "A")]["computed"] == 240 * 32**2 * 4096**3 * (6 * 2048 + 36 * 4096)


def test_optimal_set_size_row_drops_the_vocab_term():
    b = BY_KEY[("optimal training set size", "B")]
    assert b["rounds_to_printed"]
    assert not P.Printed("540", 1e9).rounds_to(b["eq4_with_vocab"])  # full eq. 4 gives 560e9


def test_gpu_years_and_cost_use_the_rounded_rate():
    a_years, a_usd = BY_KEY[("training total GPU-years", "A")], BY_KEY[("training cost (2025)", "A")]
    assert a_years["rounds_to_printed"] and a_usd["rounds_to_printed"]
    # the exact $1.056e-18 gives 0.285 GPU-years, which would NOT print as 0.27
    assert a_years["computed_exact_rate"] == pytest.approx(a_years["computed"] * 1.0563, rel=1e-3)
    assert not P.Printed("0.27", 1).rounds_to(a_years["computed_exact_rate"])


def test_exact_accounting_differs_from_note_by_its_omissions():
    a = P.USE_CASES["A"]
    r = BY_KEY[("parameters", "A")]
    assert r["exact_accounting"] - r["computed"] == 2 * a.d_model           # final LayerNorm
    f = BY_KEY[("flops forward", "A")]
    assert f["computed"] - f["exact_accounting"] == 2 * a.n_layers * a.seq_len * a.d_model  # norms
    c = BY_KEY[("inference cache memory", "C")]
    assert c["exact_accounting"] == c["computed"]                           # MHA: 2 L n d exactly


def test_inference_sanity_check_case_d():
    lo, hi = (P.inference_usd_per_million_tokens_case(c) for c in ("D low", "D high"))
    assert 0.75 <= lo <= 1.0 and 2.0 <= hi <= 2.3  # the note: "$1-$2 per million incremental tokens"


def test_table2_shapes():
    shapes = P.table2_shapes()
    assert set(shapes) == {"A", "B", "C", "D"} and len(shapes["D"]) == 2
    assert shapes["B"].vocab_size == 65536 and shapes["D"][1].seq_len == 204800


def test_printed_precision_rule():
    assert P.Printed("180", 1e6).half_unit == 5e6
    assert P.Printed("0.27", 1).half_unit == pytest.approx(0.005)
    assert P.Printed("10000", 1).half_unit == 5000
    assert P.Printed("1.9", 1e9).rounds_to(1.94e9) and not P.Printed("1.9", 1e9).rounds_to(1.96e9)


# ----- section 6 ------------------------------------------------------------------------------------
S6 = NS6.section6()


def test_section6_numbers():
    assert S6["active_12Ld2_params"] == 12 * 61 * 7168**2
    assert S6["active_12Ld2_params"] / 1e9 == pytest.approx(37.6, abs=0.05)
    assert NS6.SECTION6_PRINTED["active_12Ld2_params"].rounds_to(S6["active_12Ld2_params"])  # "38B"
    assert S6["chinchilla_tokens"] == pytest.approx(13.42e12)
    assert NS6.SECTION6_PRINTED["chinchilla_tokens"].rounds_to(S6["chinchilla_tokens"])
    assert S6["reported_tokens"] == 14.8e12
    assert S6["train_flops_mac_per_token"] == (6 * 32768 * 7168 + 36 * 7168**2) * 61
    assert S6["train_flops_mac_per_token"] == pytest.approx(1.988e11, rel=1e-3)
    assert S6["train_flops_mac"] == pytest.approx(2.94e24, rel=2e-3)
    assert NS6.SECTION6_PRINTED["train_flops_mac"].rounds_to(S6["train_flops_mac"])
    assert S6["train_flops_fma2"] == pytest.approx(5.88e24, rel=2e-3)
    assert S6["cost_usd_rounded_rate"] == pytest.approx(2.94e6, rel=2e-3)


def test_section6_gpu_hours():
    assert NOTE_GPU.usd_per_hour == pytest.approx(1.1408, abs=1e-4)
    assert S6["gpu_hours_note_method"] == pytest.approx(2.9e6 / 1.1408, rel=1e-4)
    assert NS6.SECTION6_PRINTED["gpu_hours"].rounds_to(S6["gpu_hours_note_method"])   # 2.54M -> "2.5M"
    assert S6["gpu_hours_exact_300T"] == pytest.approx(2.72e6, rel=2e-3)
    assert S6["gpu_hours_exact_300T"] == pytest.approx(gpu_hours(S6["train_flops_mac"], 1))
    assert S6["reported_gpu_hours"] == 2.788e6 and S6["reported_usd"] == 5.576e6
    assert S6["reported_over_note_usd"] == pytest.approx(1.895, abs=0.002)


# ----- DeepSeek-V3 three ways --------------------------------------------------------------------------
EST = D.deepseek_v3_estimates()


def test_deepseek_v3_three_way():
    m = EST["methods"]
    note32 = m["note_formula_n32768"]
    assert note32["flops_mac"] == pytest.approx(S6["train_flops_mac"])
    assert note32["flops_fma2"] == 2 * note32["flops_mac"]
    assert m["six_n_active_d_published_37b"]["flops_fma2"] == pytest.approx(3.29e24, rel=2e-3)
    assert m["six_n_active_d"]["flops_fma2"] == pytest.approx(6 * EST["active_params"] * 14.8e12)
    exact = m["exact_causal_n4096"]
    assert exact["flops_fma2_per_token"] / 1e9 == pytest.approx(250, rel=0.01)  # DeepSeek's ~250 GFLOP/token
    assert exact["flops_fma2"] == pytest.approx(3.7e24, rel=0.01)
    assert exact["implied_mfu_bf16"] == pytest.approx(0.39, abs=0.005)
    assert m["exact_causal_n4096_with_mtp"]["flops_fma2"] > exact["flops_fma2"]
    # the ordering the report relies on: 6ND < exact (attention) < note at 32K
    assert m["six_n_active_d"]["flops_fma2"] < exact["flops_fma2"] < note32["flops_fma2"]
    assert note32["implied_mfu_bf16"] == pytest.approx(0.62, abs=0.005)
