"""``python -m accounting``: every subcommand in every format (subprocess), and bad input."""
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, ok=True):
    p = subprocess.run([sys.executable, "-m", "accounting", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    if ok:
        assert p.returncode == 0, p.stderr
        assert p.stderr == ""
    return p


def test_table3_all_formats():
    text = run("table3").stdout
    assert "flops incremental" in text and "FAIL" not in text and "6.71B" in text
    data = json.loads(run("table3", "--format", "json").stdout)
    assert len(data["rows"]) == 45 and all(r["within_tolerance"] for r in data["rows"])
    assert "multiply-add = 1 flop" in data["convention"]
    rows = list(csv.DictReader(io.StringIO(run("table3", "--format", "csv").stdout)))
    assert len(rows) == 45
    a = next(r for r in rows if r["quantity"] == "training total flops" and r["case"] == "A")
    assert float(a["computed"]) == 240 * 32**2 * 4096**3 * (6 * 2048 + 36 * 4096)   # full precision


def test_deepseek_json_and_table():
    d = json.loads(run("deepseek", "--format", "json").stdout)
    assert d["deepseek_v3"]["params"]["total_params"] == 671_026_404_352
    m = d["deepseek_v3"]["estimates"]["methods"]
    assert m["exact_causal_n4096"]["flops_fma2"] == pytest.approx(3.707e24, rel=1e-3)
    assert d["section6"]["train_flops_mac"] == pytest.approx(2.942e24, rel=1e-3)
    text = run("deepseek").stdout
    assert "39.1%" in text and "671,026,404,352" in text
    flat = dict(csv.reader(io.StringIO(run("deepseek", "--format", "csv").stdout)))
    assert float(flat["section6.gpu_hours_exact_300T"]) == pytest.approx(2.724e6, rel=1e-3)


def test_params_shipped_hf_file_and_yaml(tmp_path):
    d = json.loads(run("params", "--config", "mixtral-8x7b", "--format", "json").stdout)
    assert d["total_params"] == 46_702_792_704 and d["published"]["total_params"] == 46.7e9
    cfg = ROOT / "accounting" / "configs" / "olmoe-1b-7b.json"
    d = json.loads(run("params", "--config", str(cfg), "--format", "json").stdout)
    assert d["shape"]["n_experts"] == 64
    y = tmp_path / "m.yaml"
    y.write_text("name: tiny\nshape:\n  vocab_size: 256\n  d_model: 64\n  n_layers: 2\n  n_heads: 4\n"
                 "  seq_len: 64\n  n_experts: 4\n  top_k: 2\n  ffn_kind: swiglu\n")
    d = json.loads(run("params", "--config", str(y), "--format", "json").stdout)
    assert d["name"] == "tiny" and d["total_params"] > d["active_params"]
    top = tmp_path / "top.json"
    top.write_text(json.dumps({"vocab_size": 256, "d_model": 64, "n_layers": 2, "n_heads": 4, "seq_len": 64}))
    assert "TOTAL" in run("params", "--config", str(top)).stdout
    flat = dict(csv.reader(io.StringIO(run("params", "--config", "dbrx", "--format", "csv").stdout)))
    assert int(flat["components.routed_experts.total_params"]) == 40 * 16 * 3 * 6144 * 10752


def test_params_of_a_committed_run_config_equals_what_the_run_counted():
    """A run folder's resolved config.yaml prices the model that run trained (sum of numel, in env.json)."""
    runs = sorted((ROOT / "reports" / "data" / "runs").glob("*/*/*/config.yaml"))
    assert runs
    for cfg in runs:
        env = json.loads((cfg.parent / "env.json").read_text())
        d = json.loads(run("params", "--config", str(cfg), "--format", "json").stdout)
        assert d["total_params"] == env["parameters_counted"] == env["parameters_total"], cfg
        assert d["active_params"] == env["parameters_active"], cfg


def test_cost():
    d = json.loads(run("cost", "--config", "deepseek-v3", "--tokens", "14.8T", "--seq-len", "4096", "--gpu",
                       "h800", "--usd-per-hour", "2", "--mfu", "0.391", "--format", "json").stdout)
    assert d["tokens"] == 14.8e12 and d["gpu"]["mfu"] == 0.391
    assert d["training_flops_fma2"] == pytest.approx(3.707e24, rel=1e-3)
    assert d["gpu_hours"] == pytest.approx(2.664e6, rel=0.01)          # the reported pretraining hours
    assert d["cost_usd"] == pytest.approx(2 * d["gpu_hours"])
    note = json.loads(run("cost", "--config", "llama-3-8b", "--tokens", "1e12", "--seq-len", "2048",
                          "--format", "json").stdout)
    assert note["gpu"]["peak_convention"].startswith("multiply-add = 1")
    assert note["cost_usd"] == pytest.approx(note["training_flops_mac"] * 1.0563e-18, rel=1e-4)
    assert "GPU-hours" in run("cost", "--config", "llama-3-8b", "--tokens", "1e12", "--seq-len", "2048").stdout
    assert run("cost", "--config", "llama-3-8b", "--tokens", "1e12", "--seq-len", "2048",
               "--format", "csv").stdout.startswith("field,value\n")


@pytest.mark.parametrize("args, needle", [
    (["params", "--config", "/no/such/config.json"], "no such file"),
    (["params", "--config", "no-such-model"], "shipped"),
    (["params", "--config", "{gpt2}"], "'gpt2'"),
    (["params", "--config", "{k>E}"], "top_k=9 exceeds n_experts=8"),
    (["params", "--config", "{negative}"], "n_layers"),
    (["params", "--config", "{float}"], "d_model must be an integer"),
    (["params", "--config", "{badjson}"], "not valid JSON"),
    (["cost", "--config", "dbrx", "--tokens", "lots", "--seq-len", "4096"], "--tokens"),
    (["cost", "--config", "dbrx", "--tokens", "-1e12", "--seq-len", "4096"], "--tokens"),
    (["cost", "--config", "dbrx", "--tokens", "1e12", "--seq-len", "4k"], "--seq-len"),
    (["cost", "--config", "dbrx", "--tokens", "1e12", "--seq-len", "4096", "--mfu", "0"], "--mfu"),
    (["cost", "--config", "dbrx", "--tokens", "1e12", "--seq-len", "0"], "--seq-len"),
    (["table3", "--format", "xml"], "--format"),
])
def test_bad_input_is_one_line(tmp_path, args, needle):
    files = {"{gpt2}": {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]},
             "{k>E}": {"shape": {"vocab_size": 10, "d_model": 8, "n_layers": 1, "n_heads": 2, "seq_len": 8,
                                 "n_experts": 8, "top_k": 9}},
             "{negative}": {"vocab_size": 10, "d_model": 8, "n_layers": -1, "n_heads": 2, "seq_len": 8},
             "{float}": {"vocab_size": 10, "d_model": 8.5, "n_layers": 1, "n_heads": 2, "seq_len": 8}}
    args = list(args)
    for i, a in enumerate(args):
        if a in files:
            p = tmp_path / "c.json"
            p.write_text(json.dumps(files[a]))
            args[i] = str(p)
        elif a == "{badjson}":
            p = tmp_path / "bad.json"
            p.write_text("{not json")
            args[i] = str(p)
    p = run(*args, ok=False)
    assert p.returncode != 0 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    assert needle in lines[0]


def test_accounting_never_imports_torch():
    code = "import sys, accounting, accounting.cli, accounting.reproduce.note; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_one_si_format():
    """The CLI and the report format numbers with one function (accounting.formatting.si)."""
    import numpy as np

    from accounting.commands import reproduce as cli
    from accounting.formatting import si
    from reports import tables
    assert cli.si is si and tables.si is si
    assert [si(x) for x in (None, float("nan"), 0, 2.54e6, 2.94e24, 1.6e15, 201.7, 0.003998, "x", True)] == \
        ["-", "-", "0", "2.54M", "2.94e24", "1.60e15", "201.7", "0.003998", "x", "True"]
    assert si(np.int64(1024)) == si(1024) == "1.02K" and si(np.float64(0.27)) == "0.27"
