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
                 "step_time_s": 0.064, "tokens_per_s": tps, "train_flops_fma2_per_token": fpt,
                 "train_flops_fma2_per_token_routed": fpt, "achieved_flops_fma2_per_s": fpt * tps,
                 "peak_flops_per_s": 1e11, "mfu": fpt * tps / 1e11, "memory_bytes": 1, "aux_losses": {},
                 "router": router})
    (run / "summary.json").write_text(json.dumps({"status": "completed", "final_val_loss": 5.0}))
    return run


def _write_bench(path: Path) -> None:
    from experiments.bench.grid import COLUMNS
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


def _write_paired(path: Path, repeats: int = 6) -> dict:
    """A real (short) paired benchmark of the demo's dense and moe models."""
    from experiments.bench import paired as PB
    rows, summary, env = PB.run(["dense", "moe"], repeats=repeats, warmup=1, progress=False)
    PB.write(path, rows, summary, env)
    return summary


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import warnings
    root = tmp_path_factory.mktemp("runs")
    _write_run(root, "dense", False, "dense")
    _write_run(root, "moe", True, "aux_loss")
    _write_run(root, "moe_none", True, "none")
    _write_bench(root / "bench.csv")
    _write_paired(root / "paired")
    from experiments.bench import moe_layer as MLB
    MLB.run(MLB.parse_args(["--quick", "--shapes", "fine", "--dtypes", "fp32", "--threads", "1", "--quiet",
                            "--no-peers", "--out", str(root / "moe_layer_cpu.csv")]))
    out = tmp_path_factory.mktemp("out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = B.build([str(root)], out)
    rep.caught, rep.root = caught, root
    return rep, out, (out / "REPORT.md").read_text()


def test_old_flop_field_names_read_the_same(tmp_path):
    """metrics.jsonl written before the ``_fma2`` rename (the committed runs) reads as the renamed fields."""
    from reports.collect import load_run
    run = _write_run(tmp_path / "new", "moe", True, "aux_loss", steps=3)
    old = _write_run(tmp_path / "old", "moe", True, "aux_loss", steps=3)
    renames = {"train_flops_fma2_per_token": "train_flops_per_token",
               "train_flops_fma2_per_token_routed": "train_flops_per_token_routed",
               "achieved_flops_fma2_per_s": "achieved_flops_per_s"}
    recs = [json.loads(ln) for ln in (old / "metrics.jsonl").read_text().splitlines()]
    (old / "metrics.jsonl").write_text("".join(json.dumps({renames.get(k, k): v for k, v in r.items()}) + "\n"
                                               for r in recs))
    drop = ("path", "run")
    new_rows = [{k: v for k, v in r.items() if k not in drop} for r in load_run(run)[1]]
    old_rows = [{k: v for k, v in r.items() if k not in drop} for r in load_run(old)[1]]
    assert new_rows == old_rows and new_rows[0]["train_flops_per_token"] > 0


def test_every_section_and_figure(report):
    rep, out, text = report
    for title in B.SECTIONS:
        assert f"## {title}" in text
    figs = sorted((out / "figures").glob("*.png"))
    names = {p.stem for p in figs}
    assert {"deepseek_waterfall", "loss_curves", "maxvio", "throughput", "decode", "mfu_runs",
            "router_load", "paired_cost_ratio_paired", "moe_layer_ratios_cpu"} <= names, names
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
    from accounting.reproduce import deepseek
    from reports import deepseek as DS
    c = DS.corrections()
    rep_ = deepseek.DEEPSEEK_REPORTED
    assert rep.values["deepseek_mfu"] == pytest.approx(
        c["flops"] / (rep_["gpu_hours_pretrain"] * 3600 * 989e12))
    assert c["steps"][-1].usd == pytest.approx(rep_["usd_total"])
    cnt = count_parameters(c["shape"])
    assert rep.values["deepseek_total_params"] == cnt.total


def test_deepseek_section_is_press2025(report):
    """Section 2 prints press2025.section6()'s numbers and deepseek_v3_estimates' exact-architecture values."""
    from accounting import cost as AC
    from accounting.reproduce import deepseek, note_section6
    from accounting.flops import FLOP
    from reports import deepseek as DS
    from reports.tables import si, usd
    rep, _, text = report
    s6 = note_section6.section6()
    sec2 = text.split("## 2.")[1].split("## 3.")[0]
    assert rep.values["deepseek_note_gpu_hours"] == s6["gpu_hours_note_method"]
    assert rep.values["deepseek_note_gpu_hours"] == pytest.approx(2.9e6 / AC.NOTE_GPU.usd_per_hour)
    assert rep.values["deepseek_gpu_hours_from_unrounded_usd"] == s6["gpu_hours_from_unrounded_usd"]
    assert rep.values["deepseek_note_macs"] == s6["train_flops_mac"]
    assert rep.values["deepseek_note_usd"] == s6["cost_usd_rounded_rate"]
    # the note's-method GPU-hours row: printed 2.5M beside press2025's 2.54M (not the 2.58M of unrounded $)
    row = next(l for l in sec2.splitlines() if l.startswith("| GPU-hours, the note's method"))
    assert row.endswith(f"| {si(s6['printed']['gpu_hours'])} | {si(s6['gpu_hours_note_method'])} |"), row
    assert si(s6["gpu_hours_note_method"]) == "2.54M"
    row = next(l for l in sec2.splitlines() if l.startswith("| GPU-hours from the recomputed"))
    assert row.endswith(f"| - | {si(s6['gpu_hours_from_unrounded_usd'])} |"), row
    row = next(l for l in sec2.splitlines() if l.startswith("| dollars ($1e-18 per flop)"))
    assert row == f"| dollars ($1e-18 per flop) | {usd(s6['printed']['cost_usd'])} | {usd(s6['cost_usd_rounded_rate'])} |"
    # exact architecture: deepseek_v3_estimates
    est = deepseek.deepseek_v3_estimates(seq_len=4096)["methods"]
    assert rep.values["deepseek_exact_flops_per_token"] == est["exact_causal_n4096"]["flops_fma2_per_token"]
    assert rep.values["deepseek_flops"] == est["exact_causal_n4096_with_mtp"]["flops_fma2"]
    assert rep.values["deepseek_mfu"] == est["exact_causal_n4096_with_mtp"]["implied_mfu_bf16"]
    # the chain: starts at section6's dollars, reaches the H800-at-peak cost, ends at DeepSeek's $5.576M
    c = DS.corrections()
    steps = c["steps"]
    assert steps[0].usd == s6["cost_usd_rounded_rate"]
    import math
    assert math.prod(s.factor for s in steps) * steps[0].usd == pytest.approx(deepseek.DEEPSEEK_REPORTED["usd_total"])
    h800 = next(s for s in steps if s.label.startswith("H800"))
    assert h800.usd == pytest.approx(est["exact_causal_n4096_with_mtp"]["cost_usd_h800_at_peak"])
    assert steps[1].factor == FLOP
    for s in steps:
        assert f"| {s.label} |" in sec2
    assert "reports/data/published" not in text


def test_measured_ratio(report):
    rep, _, text = report
    # synthetic runs: MoE logs 0.7 x dense tokens/s; the MFU ratio follows from the two flops per token
    assert "mfu_ratio_training runs" in rep.values
    assert rep.values["mfu_ratio_bench, best backend"] == pytest.approx(0.5)


def test_section5_uses_the_paired_ratio(report):
    """Section 5 prints the paired benchmark's median and interval (from its summary.json) and draws
    dollars only from it; the key findings repeat it with its source."""
    import json
    rep, out, text = report
    src = next(p for p in rep.col.paired)
    m = src["summary"]["models"]["moe"]
    assert rep.values["paired_cost_ratio"] == m["cost_ratio_median"]
    assert m["cost_ratio_low"] <= m["cost_ratio_median"] <= m["cost_ratio_high"]
    sec5 = text.split("## 5.")[1]
    assert f"| {m['cost_ratio_median']:.3f} | [{m['cost_ratio_low']:.3f}, {m['cost_ratio_high']:.3f}] |" in sec5
    assert m["verdict"] in sec5
    summ = json.loads((Path(src["source"]) / "summary.json").read_text())
    assert summ["repeats"] == 6
    findings = text.split("## Key findings")[1].split("## 1.")[0]
    assert f"c = {m['cost_ratio_median']:.3f}" in findings and "paired.csv" in findings
    assert "Unpaired measurements (context only, not used for dollars)" in sec5


def test_report_header_names_the_machine(report):
    """The header lists each measurement's device, cores, torch, threads and commit from its env.json."""
    rep, _, text = report
    head = text.split("## Key findings")[0]
    env = rep.col.paired[0]["env"]
    assert env["cpu_model"] and env["cpu_count"] and env["torch_threads"] and env["git_commit"]
    assert f"{env['device_name']}, {env['cpu_count']} cores, torch {env['torch']}, {env['torch_threads']} thread(s)" in head


def test_definitions_and_single_seed(report):
    rep, _, text = report
    sec4 = text.split("## 4.")[1].split("## 5.")[0]
    first = sec4.index("MaxVio")
    assert "**MaxVio** = max load / mean load - 1" in sec4[first - 40:first + 60]
    assert "**CV** = standard deviation / mean" in sec4
    assert "Each configuration was trained once (seed 0)" in sec4


def test_moe_layer_section_reads_the_csv(report):
    """The MoE-layer table shows the CSV's own ratio rows (median [q1, q3]) and names the file."""
    import pandas as pd
    rep, _, text = report
    assert "### One MoE layer against a dense FFN" in text
    df = pd.read_csv(rep.root / "moe_layer_cpu.csv")
    r = df[(df.row == "ratio") & (df.contender == "ours_grouped") & (df.vs == "dense")].iloc[0]
    line = next(ln for ln in text.splitlines() if ln.startswith("| fine fp32 1t"))
    assert f"{r['median']:.2f} [{r['q1']:.2f}, {r['q3']:.2f}]" in line.split("|")[2]
    assert "moe_layer_cpu.csv" in text and "goal ours/dense <= 1.2" in text


def test_no_deprecation_warnings_from_figures(report):
    rep, _, _ = report
    bad = [str(w.message) for w in rep.caught if issubclass(w.category, (PendingDeprecationWarning, DeprecationWarning))]
    assert not bad, bad


def test_figures_are_clean(report):
    """Every figure of the report: no text outside the canvas, no two point labels overlapping, no empty
    panel, no legend over data points, no axis offset text (`reports.layout.layout_problems`)."""
    rep, _, _ = report
    names = {p.stem for p in rep.figures}
    assert {"cost_vs_params", "inference_cost"} <= names  # the scatters with point labels are among them
    assert {"loss_curves", "router_load", "serving_usd_vs_batch", "cost_vs_params"} <= names  # the redrawn four
    assert set(rep.layout_problems) == names  # every figure was checked
    problems = {n: rep.layout_problems[n] for n in names if rep.layout_problems[n]}
    assert not problems, problems


def test_costs_use_accounting(report):
    """Section 3: the note's cases are press2025.table2_shapes(), prices DeepSeek's $/h at section 2's MFU."""
    from accounting import cost as AC
    from accounting.reproduce import deepseek, note
    from accounting.flops import FLOP, training_flops_per_token as tfpt
    from accounting.hf_config import shipped_configs
    from reports import costs as C
    rep, _, _ = report
    df = rep.costs
    t2 = note.table2_shapes()
    assert set(df["model"]) == {"note A", "note B", "note C", "note D (low)", "note D (high)", *shipped_configs()}
    row = df[df["model"] == "note D (high)"].iloc[0]
    from accounting.params import total_parameters
    assert row["total_params"] == total_parameters(t2["D"][1])
    pr = C.price(rep.values["deepseek_mfu"])
    rate = AC.gpu_rate("h800", usd_per_hour=deepseek.DEEPSEEK_REPORTED["usd_per_gpu_hour"])
    assert pr["usd_per_flop"] == pytest.approx(AC.usd_per_flop(rate, FLOP) / rep.values["deepseek_mfu"])
    ds = df[df["model"] == "deepseek-v3"].iloc[0]
    est = deepseek.deepseek_v3_estimates(seq_len=4096)
    assert ds["total_params"] == est["total_params"] and ds["active_params"] == est["active_params"]
    assert ds["train_flops_per_token"] == pytest.approx(est["methods"]["exact_causal_n4096"]["flops_fma2_per_token"])
    assert ds["train_flops_per_token"] == tfpt(deepseek.deepseek_v3_shape(), C.TRAIN_WINDOW, flops_per_mac=FLOP, causal=True)


def test_committed_report_cites_only_files_in_the_checkout():
    """Every data file and figure that the committed REPORT.md names exists in this checkout (a fresh clone
    included): a measurement cited but ignored by git would make the report unreproducible."""
    import re
    root = Path(__file__).resolve().parents[1]
    text = (root / "reports" / "REPORT.md").read_text()
    cited = set(re.findall(r"`(reports/data/[^`]+)`", text))
    figures = set(re.findall(r"\]\((figures/[^)]+\.png)\)", text))
    assert cited and figures
    # a cited file exists; a cited folder (a run folder or paired benchmark in the header) holds files
    missing = sorted(p for p in cited if not ((root / p).is_file() or
                                              ((root / p).is_dir() and any(x.is_file() for x in (root / p).iterdir()))))
    missing += sorted(f for f in figures if not (root / "reports" / f).is_file())
    assert not missing, missing
    assert "runs/demo" not in re.sub(r"reports/data/runs/", "", text)  # nothing from the uncommitted runs/


def test_cli_rejects_a_missing_runs_folder(tmp_path, capsys):
    from reports.__main__ import main
    assert main(["--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_committed_flopcheck_equals_a_live_count():
    """The report reads reports/flopcheck.csv and builds no model; the models must still count as committed."""
    from reports import flopcheck
    committed, msg = flopcheck.read()
    live, skipped = flopcheck.flop_check()
    assert msg == "" and skipped == ""
    assert committed["shape"].tolist() == live["shape"].tolist() == list(SHAPES)
    for col in ("tokens", "accounting_flops", "flopcounter_flops"):
        assert committed[col].tolist() == live[col].tolist()
    assert (committed["accounting_flops"] == committed["flopcounter_flops"]).all()


def test_paired_rows_lead_with_the_compiled_ratio():
    """A paired benchmark that timed compiled copies: its compiled MoE row (against dense_compiled) comes first,
    so the headline c is the compiled one; an eager-only benchmark keeps its order."""
    from reports.context import paired_rows
    v = {"cost_ratio_median": 1.0, "cost_ratio_low": 0.9, "cost_ratio_high": 1.1, "verdict": "x"}
    eager = {"source": "a", "env": {}, "summary": {"repeats": 3, "models": {"dense": {}, "moe": v, "deepseek": v}}}
    both = {"source": "b", "env": {}, "summary": {"repeats": 3, "models": {
        "dense": {}, "moe": v, "dense_compiled": {}, "moe_compiled": v}}}
    rows = paired_rows([eager, both])
    assert [(r["source"], r["model"], r["dense"], r["compiled"]) for r in rows] == [
        ("b", "moe_compiled", "dense_compiled", True), ("a", "moe", "dense", False),
        ("a", "deepseek", "dense", False), ("b", "moe", "dense", False)]
    assert [r["model"] for r in paired_rows([eager])] == ["moe", "deepseek"]
