"""experiments.bench.moe_layer: a quick run writes a well-formed CSV; the numerical check stops a wrong
contender before it is timed; peers (when importable) pass it on the same weights."""
from __future__ import annotations

import copy
import csv
import importlib.util
import json
import subprocess

import pytest
import torch

from experiments.bench import moe_layer as B
from experiments.bench import moe_layer_contenders as C
from experiments.environment import REPO

_spec = importlib.util.spec_from_file_location("moe_layer_against_commit", REPO / "scripts" / "moe_layer_against_commit.py")
S = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(S)

QUICK = ["--quick", "--shapes", "fine", "--dtypes", "fp32", "--threads", "1", "--quiet"]


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_quick_run_writes_well_formed_csv(tmp_path):
    out = tmp_path / "bench.csv"
    B.run(B.parse_args(QUICK + ["--no-peers", "--out", str(out)]))
    header, rows = _rows(out)
    assert header == B.COLUMNS
    times = {r["contender"]: r for r in rows if r["row"] == "time"}
    assert set(times) == {"ours_loop", "ours_grouped", "dense", "matmul", "grouped_matmul"}
    for name, r in times.items():
        assert r["status"] == "ok", r
        q1, med, q3 = float(r["q1"]), float(r["median"]), float(r["q3"])
        assert 0 < float(r["min"]) <= q1 <= med <= q3 <= float(r["max"])
        assert int(r["repeats"]) == 2 and r["dtype"] == "fp32" and r["threads"] == "1"
        assert float(r["tflops_per_s"]) == pytest.approx(int(r["flops"]) / med / 1e12)
    for name in ("ours_loop", "ours_grouped"):          # checked against the reference, exactly in fp32
        assert float(times[name]["rel_err"]) <= 1e-4
    E, k, d, f, T = 64, 8, 64, 256, 256
    assert int(times["dense"]["flops"]) == 3 * 2 * T * k * 3 * d * f
    assert int(times["ours_grouped"]["router_flops"]) == 3 * 2 * T * E * d
    ratios = {(r["contender"], r["vs"]): r for r in rows if r["row"] == "ratio"}
    for vs in ("dense", "matmul", "grouped_matmul", "ours_loop"):
        r = ratios[("ours_grouped", vs)]
        assert float(r["q1"]) <= float(r["median"]) <= float(r["q3"])
    env = json.loads((tmp_path / "bench.csv.env.json").read_text())
    for key in ("cpu_model", "cpu_count", "torch", "git_commit", "load_avg_start", "load_avg_end"):
        assert key in env


def test_grouped_from_a_commit_is_timed_beside_today(tmp_path, capsys):
    """--grouped-from loads moe/experts.py of a commit and times it, checked, on the same weights."""
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    out = tmp_path / "bench.csv"
    S.run(S.parse_args(QUICK + ["--no-peers", "--backends", "grouped", "--grouped-from", "HEAD", "--out", str(out)]))
    _, rows = _rows(out)
    times = {r["contender"]: r for r in rows if r["row"] == "time"}
    assert times["ours_grouped@HEAD"]["status"] == "ok" and float(times["ours_grouped@HEAD"]["rel_err"]) <= 1e-4
    assert any(r["row"] == "ratio" and r["vs"] == "ours_grouped@HEAD" for r in rows)
    with pytest.raises(SystemExit) as e:
        S.parse_args(["--grouped-from", "no-such-commit"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--grouped-from no-such-commit" in err and "Traceback" not in err


def test_check_catches_a_wrong_contender(tmp_path):
    """A copy of our layer passes; one with a down projection off by 1% is marked and never timed."""
    def extra(ref_mod, x, gy):
        good, bad = copy.deepcopy(ref_mod), copy.deepcopy(ref_mod)
        with torch.no_grad():
            bad.experts.w_down.mul_(1.01)
        return [B.module_contender("copy", good, x, gy), B.module_contender("wrong", bad, x, gy)]

    out = tmp_path / "bench.csv"
    B.run(B.parse_args(QUICK + ["--no-peers", "--backends", "grouped", "--out", str(out)]), extra)
    _, rows = _rows(out)
    times = {r["contender"]: r for r in rows if r["row"] == "time"}
    assert times["copy"]["status"] == "ok" and times["copy"]["median"]
    assert times["wrong"]["status"] == "mismatch"
    assert times["wrong"]["median"] == "" and float(times["wrong"]["rel_err"]) > 1e-4
    assert not any(r["row"] == "ratio" and "wrong" in (r["contender"], r["vs"]) for r in rows)


def test_rel_err_forgives_a_few_tied_tokens_only():
    torch.manual_seed(0)
    ref = torch.randn(200, 16)
    few = ref.clone()
    few[:3] += 5.0                                     # 1.5% of tokens routed differently (ties)
    assert C.rel_err(few, ref) < 1e-6
    assert C.rel_err(ref * 1.001, ref) == pytest.approx(1e-3, rel=1e-3)
    many = ref.clone()
    many[:20] += 5.0                                   # 10%: a real difference
    assert C.rel_err(many, ref) > 0.1
    assert C.rel_err(torch.full_like(ref, float("nan")), ref) != C.rel_err(ref, ref)  # NaN fails


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")
def test_transformers_peers_agree_on_same_weights(tmp_path):
    out = tmp_path / "bench.csv"
    B.run(B.parse_args(QUICK + ["--backends", "grouped", "--out", str(out)]))
    _, rows = _rows(out)
    times = {r["contender"]: r for r in rows if r["row"] == "time"}
    for name in ("mixtral_grouped_mm", "qwen3moe_grouped_mm"):
        assert times[name]["status"] == "ok", times[name]
        assert float(times[name]["rel_err"]) <= 1e-4
    tt = times["torchtitan"]
    assert tt["status"] in ("ok", "unavailable"), tt


def test_ratio_table_from_before_and_after(tmp_path):
    out = tmp_path / "bench.csv"
    B.run(B.parse_args(QUICK + ["--no-peers", "--backends", "grouped", "--out", str(out)]))
    table = B.ratio_table({"before": out, "after": out})
    lines = table.splitlines()
    assert lines[0].startswith("| shape | dtype | threads | vs |") and "after" in lines[0]
    dense = [ln for ln in lines if "| dense |" in ln]
    assert len(dense) == 1 and dense[0].startswith("| fine | fp32 | 1 | dense |")
    assert any("load avg" in ln for ln in lines)


@pytest.mark.parametrize("args, message", [
    (["--tokens", "-5"], "--tokens must be >= 1, got -5"),
    (["--d-model", "0"], "--d-model must be >= 1, got 0"),
    (["--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["--threads", "1", "0"], "--threads must be >= 1, got 0"),
    (["--profile", "-1"], "--profile must be >= 0, got -1"),
])
def test_bad_sizes_are_one_line_errors(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        B.parse_args(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(message)


def test_environment_is_written_before_the_first_configuration(tmp_path):
    """A run that dies in its first configuration still leaves <out>.env.json (without the end's fields)."""
    out = tmp_path / "bench.csv"

    def boom(ref_mod, x, gy):
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        B.run(B.parse_args(QUICK + ["--no-peers", "--out", str(out)]), boom)
    env = json.loads((tmp_path / "bench.csv.env.json").read_text())
    assert "load_avg_start" in env and "git_commit" in env and "load_avg_end" not in env
    _, rows = _rows(out)
    assert rows == []


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_skipped_on_a_cpu_without_native_bf16(native, capsys):
    env = {"cpu_bf16_native": native, "cpu_capability": "AVX2"}
    got = B._dtypes_this_device_runs(["fp32", "bf16"], torch.device("cpu"), env)
    assert got == (["fp32", "bf16"] if native else ["fp32"])
    err = capsys.readouterr().err
    assert ("skipping bf16" in err and "AVX2" in err) != native
    assert B._dtypes_this_device_runs(["bf16"], torch.device("cuda"), env) == ["bf16"]   # a GPU keeps bf16


def test_profile_writes_top_operators_per_contender(tmp_path):
    out = tmp_path / "bench.csv"
    B.run(B.parse_args(QUICK + ["--no-peers", "--backends", "grouped", "--profile", "1", "--out", str(out)]))
    header, rows = _rows(str(out) + ".profile.csv")
    assert header == B.PROFILE_COLUMNS
    assert {r["contender"] for r in rows} == {"ours_grouped", "dense", "matmul", "grouped_matmul"}
    ours = [r for r in rows if r["contender"] == "ours_grouped"]
    assert 0 < len(ours) <= B.PROFILE_TOP
    assert any(r["operator"] == "aten::mm" for r in ours)
    shares = [float(r["share_of_step"]) for r in ours]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.05   # self times within the step
