"""reports: the whole report on a temp dir with a tiny synthetic run folder and bench CSV (< 60 s)."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from accounting.flops import FLOP, forward_flops
from accounting.params import count_parameters
from accounting.shapes import ModelShape
from experiments.metrics import MetricsWriter, load_balance, train_flops_per_token
from reports import build as B
from reports.flopcheck import SEQ, SHAPES
from reports.tables import sci

SHAPE = {"vocab_size": 256, "d_model": 32, "n_layers": 2, "n_heads": 2, "seq_len": 16}


def _write_run(root: Path, family: str, moe: bool, balancing: str, steps: int = 6) -> Path:
    """A run folder in experiments.train's format, written with experiments.metrics' own writer."""
    shape = dict(SHAPE, n_experts=4, top_k=2, d_expert=32) if moe else dict(SHAPE)
    s = ModelShape(**shape)
    run = root / "synthetic" / family / "tiny-seed0"
    run.mkdir(parents=True)
    cfg = {"name": "synthetic", "seed": 0, "model": {"name": family, "size": "tiny", "shape": shape,
                                                       "router": {"balancing": balancing, "z_loss_coef": 0.0},
                                                       "backend": "loop"}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    c = count_parameters(s)
    (run / "env.json").write_text(json.dumps({"device": "cpu", "device_name": "x86_64", "torch": "2.13",
                                              "peak_flops_per_s": 1e11, "peak_source": "measured 1024^3 fp32 matmul",
                                              "parameters_total": c.total, "parameters_active": c.active}))
    w = MetricsWriter(run)
    w.reset()
    fpt = train_flops_per_token(s)
    for step in range(1, steps + 1):
        router = []
        if moe:
            for layer in range(s.n_moe_layers):
                counts = [10.0 + step * (e - 1.5) * (1 if balancing == "none" else 0.2) for e in range(4)]
                router.append({"layer": layer, "tokens_per_expert": counts, **load_balance(counts),
                               "dropped_fraction": 0.0, "entropy": 1.3, "aux_loss": 0.01, "z_loss": 0.0, "bias": None})
        tps = 1000.0 * (0.7 if moe else 1.0)
        w.write({"step": step, "tokens": step * 64, "train_loss": 5.5 - 0.1 * step, "train_total_loss": 5.5 - 0.1 * step,
                 "val_loss": 5.6 - 0.1 * step if step % 3 == 0 else None, "lr": 1e-3, "grad_norm": 1.0,
                 "step_time_s": 0.064, "tokens_per_s": tps, "train_flops_per_token": fpt,
                 "train_flops_per_token_routed": fpt, "achieved_flops_per_s": fpt * tps,
                 "peak_flops_per_s": 1e11, "mfu": fpt * tps / 1e11, "memory_bytes": 1, "aux_losses": {},
                 "router": router})
    (run / "summary.json").write_text(json.dumps({"status": "completed", "final_val_loss": 5.0}))
    return run


def _write_bench(path: Path) -> None:
    from experiments.bench import COLUMNS
    rows = [{"kind": "matmul_peak", "dtype": "fp32", "tokens": 1024, "median_s": 0.02, "tflops_per_s": 0.1},
            {"kind": "layer", "ffn": "dense", "backend": "dense", "n_experts": 0, "top_k": 2, "tokens": 512,
             "median_s": 0.01, "flops": 1e9, "tflops_per_s": 0.1},
            {"kind": "layer", "ffn": "moe", "backend": "loop", "n_experts": 4, "top_k": 2, "tokens": 512,
             "median_s": 0.02, "flops": 1e9, "tflops_per_s": 0.05},
            {"kind": "decode", "backend": "loop", "context": 64, "tokens": 1, "median_s": 0.001, "flops": 1e6, "tflops_per_s": 1e-3},
            {"kind": "decode", "backend": "loop", "context": 256, "tokens": 1, "median_s": 0.0012, "flops": 2e6, "tflops_per_s": 1e-3},
            {"kind": "recompute", "backend": "loop", "context": 64, "tokens": 1, "median_s": 0.004, "flops": 1e8, "tflops_per_s": 0.02},
            {"kind": "recompute", "backend": "loop", "context": 256, "tokens": 1, "median_s": 0.02, "flops": 4e8, "tflops_per_s": 0.02}]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "x86_64" if c == "device_name" else "") for c in COLUMNS})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    _write_run(root, "dense", False, "dense")
    _write_run(root, "moe", True, "aux_loss")
    _write_run(root, "moe_none", True, "none")
    _write_bench(root / "bench.csv")
    out = tmp_path_factory.mktemp("out")
    rep = B.build([str(root)], out)
    return rep, out, (out / "REPORT.md").read_text()


def test_every_section_and_figure(report):
    rep, out, text = report
    for title in B.SECTIONS:
        assert f"## {title}" in text
    figs = sorted((out / "figures").glob("*.png"))
    names = {p.stem for p in figs}
    assert {"deepseek_waterfall", "loss_curves", "maxvio", "throughput", "decode", "mfu_runs",
            "router_load_0", "router_load_1"} <= names, names
    assert {p.resolve() for p in rep.figures} == {p.resolve() for p in figs}
    for p in figs:
        assert p.stat().st_size > 5000, p
        assert f"figures/{p.name}" in text
    # every figure's caption names its data
    for cap in re.findall(r"\*Figure: (.*?)\*\n", text):
        assert "data:" in cap, cap
    assert "Section failed" not in text


def test_numbers_equal_accounting(report):
    rep, out, text = report
    # the live FlopCounter table prints accounting's forward flops for each shape it could build
    for name, shape in SHAPES.items():
        if f"| {name} |" in text:
            acc = forward_flops(shape, SEQ, batch=2, flops_per_mac=FLOP)["total"]
            assert f"| {name} | {2 * SEQ} | {sci(acc, 6)} |" in text
    # DeepSeek: the implied MFU equals accounting's flops over the reported GPU-hours
    from reports import deepseek as DS, published as P
    c = DS.corrections()
    assert rep.values["deepseek_mfu"] == pytest.approx(
        c["flops"] / (P.deepseek("gpu_hours_pretrain") * 3600 * 989e12))
    assert c["steps"][-1].usd == pytest.approx(P.deepseek("usd_total"))
    if c["shape"] is not None:
        cnt = count_parameters(c["shape"])
        assert rep.values["deepseek_total_params"] == cnt.total


def test_measured_ratio(report):
    rep, _, text = report
    # synthetic runs: MoE logs 0.7 x dense tokens/s; the MFU ratio follows from the two flops per token
    assert "mfu_ratio_training runs" in rep.values
    assert rep.values["mfu_ratio_bench, best backend"] == pytest.approx(0.5)
