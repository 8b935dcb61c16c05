"""accounting.serving: expert coverage, decode bytes, fit boundary, communication, CLI, DeepSeek check."""
from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from accounting import serving as S
from accounting.cli import main as cli_main
from accounting.hardware import Hardware, get_hardware
from accounting.params import count_parameters, ffn_params
from accounting.reproduce.deepseek import deepseek_disclosed_check, deepseek_v3_shape
from accounting.reproduce.note import note_case_d_roofline
from accounting.shapes import ModelShape

# A hardware with round numbers, so that hand-worked times are easy to read.
TOY_HW = Hardware("toy", peak_bf16_flops_per_s=1e12, peak_fp8_flops_per_s=2e12, peak_fp32_flops_per_s=0.5e12,
                  memory_bandwidth_bytes_per_s=1e9, usd_per_hour=3.6, memory_bytes=10e9,
                  nvlink_bytes_per_s=1e9, network_bytes_per_s=0.1e9, gpus_per_node=2)


def _moe(**kw) -> ModelShape:
    base = dict(vocab_size=100, d_model=8, n_layers=2, n_heads=2, seq_len=64, n_experts=8, top_k=2, d_expert=16,
                ffn_kind="gelu", norm_kind="rmsnorm", name="toy-moe")
    base.update(kw)
    return ModelShape(**base)


# ----- expert coverage -------------------------------------------------------------------------------
@pytest.mark.parametrize("E,k,B", [(8, 2, 1), (8, 2, 4), (64, 8, 8), (256, 8, 32), (256, 8, 200)])
def test_expected_distinct_experts_matches_monte_carlo(E, k, B):
    import statistics
    rng = random.Random(1234 + E * 1000 + B)
    trials = 4000
    counts = [len({e for _ in range(B) for e in rng.sample(range(E), k)}) for _ in range(trials)]
    mean = statistics.fmean(counts)
    se = statistics.stdev(counts) / trials ** 0.5
    formula = S.expected_distinct_experts(E, k, B)
    # each token picks a uniform k-subset, so an expert is missed by one token with probability 1 - k/E and
    # by all B independently: the formula is exact in expectation; allow 4 Monte Carlo standard errors
    assert abs(formula - mean) <= 4 * se + 1e-9


def test_expected_distinct_experts_limits():
    assert S.expected_distinct_experts(256, 8, 1) == pytest.approx(8)
    assert S.expected_distinct_experts(256, 8, 10_000) == pytest.approx(256)
    assert S.expected_distinct_experts(8, 2, 0) == 0
    with pytest.raises(ValueError):
        S.expected_distinct_experts(8, 9, 1)


def test_expected_distinct_experts_per_gpu_splits_the_group():
    # G = 1 is the plain formula; G GPUs each own E/G experts and see all G x B tokens
    assert S.expected_distinct_experts_per_gpu(64, 8, 5, 1) == pytest.approx(S.expected_distinct_experts(64, 8, 5))
    assert S.expected_distinct_experts_per_gpu(64, 8, 5, 4) == pytest.approx(S.expected_distinct_experts(64, 8, 20) / 4)
    with pytest.raises(ValueError, match="do not divide"):
        S.expected_distinct_experts_per_gpu(64, 8, 5, 3)


# ----- decode bytes, hand-worked ------------------------------------------------------------------------
def test_decode_bytes_dense_hand_worked():
    # d=8, L=2, H=2 (hd 4), V=100, gelu d_ff=32, rmsnorm, untied; fp32 weights and cache; batch 3, context 5
    shape = ModelShape(vocab_size=100, d_model=8, n_layers=2, n_heads=2, seq_len=64, d_ff=32, norm_kind="rmsnorm")
    lay = S.Layout(weights_dtype="fp32", kv_dtype="fp32", attention_dtype="fp32")
    step = S.decode_step(shape, TOY_HW, lay, 3, 5)
    p = step.parts
    attention = 2 * (4 * 8 * 8)          # q, k, v, o: 4 d^2 per layer
    norms = 2 * 2 * 8 + 8                # two per block + final, weight only
    assert p["attention_projections"].bytes == 4 * (attention + norms)
    assert p["dense_ffn"].bytes == 4 * 2 * (2 * 8 * 32)
    assert p["output_head"].bytes == 4 * 100 * 8
    assert p["attention_cache"].bytes == 4 * 3 * 5 * (2 * 2 * 8)   # B x n x 2 L d elements
    assert p["embedding"].bytes == 4 * 3 * 8                       # one row per token
    assert p["routed_experts"].bytes == 0
    total = 4 * (attention + norms + 2 * 2 * 8 * 32 + 800 + 3 * 5 * 32 + 24)
    assert step.bytes == total
    assert step.memory_s == pytest.approx(total / 1e9)
    # flops: 2 per multiply-add, per token x batch; attention over context + 1 keys
    per_token = 2 * (2 * (4 * 64 + 6 * 2 * 2 * 4 + 2 * 8 * 32) + 800)
    assert step.flops_fma2 == 3 * per_token
    assert step.compute_s == pytest.approx(3 * per_token / 0.5e12)


def test_decode_flops_parts_sum_to_accounting():
    from accounting.flops import FLOP, decode_flops_per_token
    for shape in (deepseek_v3_shape(4096), _moe()):
        parts = S.decode_flops_by_part(shape, 777)
        assert sum(parts.values()) == pytest.approx(decode_flops_per_token(shape, 777, flops_per_mac=FLOP))
        assert min(parts.values()) >= 0


def test_moe_decode_reads_active_at_batch_1_and_total_at_large_batch():
    shape = deepseek_v3_shape(4096)
    c = count_parameters(shape)
    lay = S.Layout(weights_dtype="bf16", kv_dtype="bf16")
    hw = replace(get_hardware("h100-sxm"), memory_bytes=10e12)   # memory fit is not the point here

    def weight_bytes(b):
        parts = S.decode_step(shape, hw, lay, b, 0).parts
        return sum(v.bytes for k, v in parts.items() if k not in ("attention_cache", "embedding"))

    active_bytes = 2 * (c.active - c.active_by_component["embedding"])   # all weights but the input table
    total_bytes = 2 * (c.total - c.total_by_component["embedding"])
    assert weight_bytes(1) == pytest.approx(active_bytes, rel=1e-9)
    assert weight_bytes(4096) == pytest.approx(total_bytes, rel=1e-3)
    assert weight_bytes(1) < weight_bytes(8) < weight_bytes(64) < weight_bytes(4096)


# ----- memory fit ---------------------------------------------------------------------------------------
def test_fit_and_largest_batch_boundary():
    shape = _moe()
    lay = S.Layout(gpus=2, weights_dtype="bf16", kv_dtype="bf16", workspace_bytes=1000)
    w = S.weight_params_per_gpu(shape, lay)
    c = count_parameters(shape)
    # routed experts split over the 2 GPUs, everything else replicated (tp = 1 for an MoE)
    assert w["routed_experts"] == 4 * 2 * ffn_params(shape, 16)
    assert w["non_expert"] == c.total - c.total_by_component["routed_experts"]
    weights = 2 * w["total"]
    per_seq = 2 * 100 * (2 * 2 * 8)                       # bf16, context 100, 2 L d per token
    capacity = weights + 1000 + 7 * per_seq               # exactly 7 sequences per GPU of room
    hw = replace(TOY_HW, memory_bytes=capacity)
    fit = S.memory_fit(shape, hw, lay, 7, 100)
    assert fit.fits and fit.max_batch == 7 and fit.bytes_needed == capacity
    over = S.memory_fit(shape, hw, lay, 7.5, 100)
    assert not over.fits and over.bytes_needed > over.bytes_available
    # fp8 KV halves the cache: 14 sequences fit
    assert S.memory_fit(shape, hw, replace(lay, kv_dtype="fp8"), 1, 100).max_batch == 14
    tiny = replace(TOY_HW, memory_bytes=weights / 2)
    assert S.memory_fit(shape, tiny, lay, 1, 100).max_batch == 0


def test_mla_cache_is_compressed_and_whole_on_every_tp_rank():
    shape = deepseek_v3_shape(4096)
    per_seq = S.kv_cache_bytes_per_sequence_per_gpu(shape, 1000, S.Layout(kv_dtype="bf16"))
    assert per_seq == 1000 * 70_272                       # 61 x (512 + 64) x 2 bytes per token
    assert S.kv_cache_bytes_per_sequence_per_gpu(shape, 1000, S.Layout(gpus=8, tp=8)) == 8 * per_seq


# ----- communication --------------------------------------------------------------------------------------
def test_expert_parallel_bytes_hand_worked():
    # 4 GPUs on 2 nodes of 2; d = 8, 2 MoE layers, k = 2; fp8 dispatch (1 byte) + bf16 combine (2 bytes)
    shape = _moe()
    lay = S.Layout(gpus=4, dispatch_dtype="fp8", combine_dtype="bf16")
    b = S.expert_parallel_bytes_per_token(shape, TOY_HW, lay)
    per_dest = 8 * 3 * 2
    # E = 8 experts, 4 per node and 2 per GPU; a token's k = 2 experts are distinct: it misses a node with
    # probability C(4, 2) / C(8, 2) = 6/28 and a GPU with C(6, 2) / C(8, 2) = 15/28
    remote_nodes = 2 * (1 - 6 / 28) * (1 / 2)             # the other node of the two
    distinct_gpus = 4 * (1 - 15 / 28)
    assert b["network"] == pytest.approx(remote_nodes * per_dest)      # 37.7 bytes (36 drawing with replacement)
    assert b["nvlink"] == pytest.approx(distinct_gpus * 0.5 * per_dest)
    step = S.decode_step(shape, TOY_HW, lay, 10, 0)
    assert step.network_bytes == pytest.approx(10 * remote_nodes * per_dest)
    assert step.communication_s == pytest.approx(max(10 * remote_nodes * per_dest / 0.1e9,
                                                        10 * distinct_gpus * 0.5 * per_dest / 1e9))
    # none for one GPU or a dense model
    assert S.expert_parallel_bytes_per_token(shape, TOY_HW, S.Layout(gpus=1)) == {"network": 0.0, "nvlink": 0.0}


def test_bins_reached_counts_distinct_experts():
    # hypergeometric: b (1 - C(S - S/b, k) / C(S, k)); k = 1 reaches exactly one bin; k = S reaches all
    assert S.expected_bins_reached(8, 2, 2) == pytest.approx(2 * (1 - 6 / 28))
    assert S.expected_bins_reached(256, 32, 1) == pytest.approx(1.0)
    assert S.expected_bins_reached(16, 4, 16) == pytest.approx(4.0)
    # a Monte Carlo of distinct top-k picks agrees (E = 16 over 4 bins, k = 3)
    rng = random.Random(0)
    hits = sum(len({e // 4 for e in rng.sample(range(16), 3)}) for _ in range(20_000)) / 20_000
    assert hits == pytest.approx(S.expected_bins_reached(16, 4, 3), rel=0.01)
    # bins that do not divide the slots: the with-replacement form
    assert S.expected_bins_reached(10, 3, 2) == pytest.approx(3 * (1 - (2 / 3) ** 2))
    with pytest.raises(ValueError):
        S.expected_bins_reached(8, 2, 9)


def test_bound_switches_and_efficiency_scales():
    shape = deepseek_v3_shape(4096)
    hw = get_hardware("h800")
    lay = S.Layout(gpus=144, redundant_experts=32, weights_dtype="fp8")
    small = S.decode_step(shape, hw, lay, 1, 4096)
    big = S.decode_step(shape, hw, lay, 128, 4096)
    assert small.bound == "memory" and big.bound == "communication"
    half = S.decode_step(shape, hw, lay, 128, 4096, communication_efficiency=0.5)
    assert half.communication_s == pytest.approx(2 * big.communication_s)
    assert half.tokens_per_s_per_gpu == pytest.approx(big.tokens_per_s_per_gpu / 2)
    assert S.usd_per_million_tokens(1000, 3.6) == pytest.approx(1.0)
    assert S.usd_per_million_input_tokens(1000, 3.6, 0.75) == pytest.approx(0.25)


# ----- checks against the world -------------------------------------------------------------------------
def test_deepseek_bound_lies_above_what_they_achieved():
    d = deepseek_disclosed_check()
    assert d.decode_layout["expert_copies_per_gpu"] == 2 and d.prefill_layout["expert_copies_per_gpu"] == 9
    assert d.fits
    assert 0 < d.decode_fraction_of_bound < 1 and 0 < d.prefill_fraction_of_bound < 1
    # DeepSeek's own figures: 14.8k / 8 GPUs at $2/h is $0.30 per Mtok; the bound is cheaper
    assert d.usd_per_million_output_tokens_disclosed == pytest.approx(0.30, abs=0.005)
    assert d.usd_per_million_output_tokens_bound < d.usd_per_million_output_tokens_disclosed
    # the compute-only method (the note's) is cheaper still than the roofline bound
    assert d.usd_per_million_output_tokens_note_method < d.usd_per_million_output_tokens_bound


def test_note_case_d_is_memory_bound_and_far_above_the_note():
    rows = note_case_d_roofline()
    for r in rows:
        assert r.bound == "memory"
        assert r.usd_per_million_output_tokens >= r.usd_per_million_output_tokens_kv_floor
        assert r.usd_per_million_output_tokens > 10 * r.note_usd_per_million_tokens


def test_dense_equivalent_matches_target():
    shape = deepseek_v3_shape(4096)
    c = count_parameters(shape)
    for target in (c.active, c.total):
        dense = S.dense_equivalent(shape, target)
        assert not dense.is_moe
        assert count_parameters(dense).total == pytest.approx(target, rel=1e-4)


# ----- CLI ------------------------------------------------------------------------------------------------
def _run(capsys, *argv):
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_serve_json_fields(capsys):
    code, out, err = _run(capsys, "serve", "--config", "deepseek-v3", "--gpu", "h800", "--gpus", "144",
                          "--redundant-experts", "32", "--weights", "fp8", "--batch", "1", "64", "--context", "4096",
                          "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert [r["batch"] for r in data["rows"]] == [1, 64]
    for r in data["rows"]:
        for key in ("decode_tokens_per_s_per_gpu", "prefill_tokens_per_s_per_gpu", "usd_per_million_output_tokens",
                    "usd_per_million_input_tokens", "fits", "max_batch", "bound",
                    "note_method_usd_per_million_output_tokens"):
            assert key in r
        assert r["bound"] in S.BOUNDS
    assert data["rows"][1]["decode_tokens_per_s_per_gpu"] > data["rows"][0]["decode_tokens_per_s_per_gpu"]


def test_cli_serve_not_fitting_is_reported_not_an_error(capsys):
    code, out, err = _run(capsys, "serve", "--config", "deepseek-v3", "--gpu", "h100-sxm", "--gpus", "8",
                          "--batch", "1", "--context", "4096", "--format", "json")
    assert code == 0, err
    r = json.loads(out)["rows"][0]
    assert r["fits"] is False and r["bytes_needed_per_gpu"] > r["bytes_available_per_gpu"] and r["max_batch"] == 0


def test_cli_serve_csv_and_table(capsys):
    code, out, _ = _run(capsys, "serve", "--config", "mixtral-8x7b", "--gpu", "h100-sxm", "--gpus", "2",
                        "--batch", "1", "16", "--context", "1024", "--format", "csv")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 3 and "decode_tokens_per_s_per_gpu" in lines[0]
    code, out, _ = _run(capsys, "serve", "--config", "mixtral-8x7b", "--gpu", "h100-sxm", "--gpus", "2",
                        "--batch", "1", "--context", "1024", "--dense-equivalent", "active")
    assert code == 0 and "dense, active params of mixtral-8x7b" in out


@pytest.mark.parametrize("argv,match", [
    (["--batch", "0"], "--batch"),
    (["--batch", "-3"], "--batch"),
    (["--weights", "int4"], "--weights"),
    (["--kv-dtype", "fp4"], "--kv-dtype"),
    (["--gpus", "3"], "does not divide"),
    (["--gpus", "0"], "--gpus"),
    (["--efficiency", "1.5"], "--efficiency"),
    (["--context", "-1"], "--context"),
    (["--gpu", "press2025"], "--gpu"),
    (["--tp", "3"], "tensor-parallel"),
    (["--cache-hit-share", "1"], "cache-hit-share"),
])
def test_cli_serve_bad_input_is_one_line_exit_2(capsys, argv, match):
    base = {"--config": "mixtral-8x7b", "--gpu": "h100-sxm", "--gpus": "2", "--batch": "4", "--context": "128"}
    for i in range(0, len(argv), 2):
        base[argv[i]] = argv[i + 1]
    code, out, err = _run(capsys, "serve", *[x for kv in base.items() for x in kv])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and match in err


def test_cli_serving_check(capsys):
    code, out, err = _run(capsys, "serving-check", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["deepseek"]["decode_fraction_of_bound"] < 1
    assert [r["case"] for r in data["note_case_d"]] == ["D low", "D high"]


# ----- the decode bench and the report section ------------------------------------------------------------
def test_decode_bench_quick_writes_well_formed_csv(tmp_path):
    import csv
    import subprocess
    import sys
    out = tmp_path / "decode_cpu.csv"
    proc = subprocess.run([sys.executable, "-m", "experiments.bench.decode_vs_roofline", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from experiments.bench.decode_vs_roofline import FIELDS
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and list(rows[0]) == FIELDS
    assert {r["model"] for r in rows} == {"dense", "moe-e8k2", "moe-e64k8", "mla"}
    for r in rows:
        med, q1, q3 = float(r["step_s_median"]), float(r["step_s_q1"]), float(r["step_s_q3"])
        assert 0 < float(r["step_s_min"]) <= q1 <= med <= q3 <= float(r["step_s_max"])
        assert float(r["predicted_step_s"]) > 0 and r["predicted_bound"] in S.BOUNDS
        assert float(r["measured_over_predicted_tokens_per_s"]) == pytest.approx(
            float(r["predicted_step_s"]) / med)
        if int(r["n_experts"]):
            k, E = int(r["top_k"]), int(r["n_experts"])
            assert k <= float(r["distinct_experts_measured"]) <= min(E, k * int(r["batch"]))
        bound = float(r["streaming_bound_step_s"])   # GEMMs at the measured streaming rates: >= the roofline
        assert bound >= float(r["predicted_compute_s"]) and float(r["linear_weight_bytes_per_s"]) > 0
        assert float(r["measured_over_streaming_bound"]) == pytest.approx(bound / med)
    env = json.loads((tmp_path / "decode_cpu_env.json").read_text())
    assert set(env["weight_streaming_bytes_per_s"]) == {"linear", "mm"}
    for key in ("device", "cpu_model", "cpu_count", "torch_threads", "torch", "git_commit",
                "measured_peak_flops_fma2_per_s", "measured_read_bandwidth_bytes_per_s"):
        assert key in env

    from reports import context
    from reports.collect import collect
    from reports.sections import serving as SV
    part = SV.section(context.compute(collect([tmp_path]), tmp_path / "report"))
    md, figures = part.markdown, part.figures
    assert md.startswith("## ") and "decode_cpu.csv" in md and "could not be read" not in md
    assert "experiments.bench.weight_streaming" in md and "B=1: " in md   # the streaming-bound table
    assert len(figures) == 3 and all(p.is_file() for p in figures)


def test_h800_nvlink_is_slower_than_h100_for_the_same_layout():
    # EP8 inside one node: all expert traffic rides NVLink, 200 vs 450 GB/s per direction
    shape = deepseek_v3_shape(4096)
    lay = S.Layout(gpus=8, weights_dtype="fp8")
    h100 = S.decode_step(shape, get_hardware("h100-sxm"), lay, 64, 4096)
    h800 = S.decode_step(shape, get_hardware("h800"), lay, 64, 4096)
    assert h100.network_s == h800.network_s == 0
    assert h800.communication_s == pytest.approx(h100.communication_s * 450 / 200)


def test_prefill_is_the_causal_forward_at_the_peak():
    from accounting.flops import FLOP, full_recompute_flops
    shape = ModelShape(vocab_size=1000, d_model=256, n_layers=4, n_heads=4, seq_len=8192)
    hw = get_hardware("h100-sxm")
    short, long = (S.prefill(shape, hw, S.Layout(), p) for p in (512, 8192))
    assert short.flops_fma2 == full_recompute_flops(shape, 511, flops_per_mac=FLOP)
    assert short.compute_s == pytest.approx(short.flops_fma2 / 989e12)
    # causal attention makes a token of a longer prompt dearer
    assert long.flops_fma2 / 8192 > short.flops_fma2 / 512
    # a small model's prefill of one prompt is bound by reading its weights; many prompts amortise them
    many = S.prefill(shape, hw, S.Layout(), 512, prompts_per_gpu=64)
    assert many.tokens_per_s_per_gpu >= short.tokens_per_s_per_gpu
