"""reports: run selection, stale figures, bench sources kept apart, the layout check itself, the CLI's
default output, the paired benchmark's statistics and the sweep progress counter."""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from reports import build as B
from reports import collect as K
from reports import figures as F
from reports import layout as L
from reports.measured import mfu_ratio_bench, bench_mfu

from test_reports import _write_bench, _write_run


def _move(run: Path, experiment: str) -> None:
    """Re-label a synthetic run folder as belonging to ``experiment`` (config name and folder)."""
    import yaml
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["name"] = experiment
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture()
def two_experiments(tmp_path):
    root = tmp_path / "runs"
    _write_run(root, "dense", False, "dense", steps=3)
    _write_run(root, "moe", True, "aux_loss", steps=3)
    other = tmp_path / "other"
    for fam, moe, bal in (("dense", False, "dense"), ("moe", True, "none")):
        _move(_write_run(other, fam, moe, bal, steps=3), "sweep2")
    return root, other


def test_select_by_experiment_and_pattern(two_experiments):
    root, other = two_experiments
    col = K.collect([root, other], ["synthetic"])
    assert sorted(col.runs["run"]) == ["synthetic/dense/tiny-seed0", "synthetic/moe/tiny-seed0"]
    assert col.skipped == ["sweep2/dense/tiny-seed0", "sweep2/moe/tiny-seed0"]
    col = K.collect([root, other], ["*/moe/*"])
    assert sorted(col.runs["run"]) == ["sweep2/moe/tiny-seed0", "synthetic/moe/tiny-seed0"]
    assert set(col.metrics["run"]) == set(col.runs["run"]) and set(col.router_load["run"]) <= set(col.runs["run"])
    assert len(K.collect([root, other]).runs) == 4          # None: every run
    assert K.collect([root, other], ["demo"]).runs.empty     # the CLI's default selects nothing here
    assert K.normalise_patterns(["demo", "x/*", " "]) == ["demo/*", "x/*"]


def test_stale_figures_are_removed_and_names_are_stable(two_experiments, tmp_path):
    root, other = two_experiments
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    stale = out / "figures" / "router_load_7.png"
    stale.write_bytes(b"old")
    keep_other = out / "figures" / "notes.txt"
    keep_other.write_text("not a figure")
    rep = B.build([root, other], out, select=["synthetic"])
    assert not stale.exists() and keep_other.exists()
    assert stale in rep.stale
    first = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert first == sorted(p.name for p in rep.figures)
    assert "router_load.png" in first and not any(n[-5].isdigit() for n in first if n.startswith("router"))
    # adding runs does not rename figures: the same names (plus none) come back
    rep2 = B.build([root, other], out, select=["*"])
    assert sorted(p.name for p in rep2.figures) == first
    text = (out / "REPORT.md").read_text()
    assert "4 run folder(s) selected by `*`" in text


def _bench_csv(path: Path, moe_tflops: float, recompute_ms: float, device: str) -> None:
    from experiments.bench.grid import COLUMNS
    rows = [{"kind": "layer", "backend": "dense", "n_experts": 0, "top_k": 2, "tokens": 512, "median_s": 0.01,
             "flops": 1e9, "tflops_per_s": 0.1},
            {"kind": "layer", "backend": "loop", "n_experts": 4, "top_k": 2, "tokens": 512, "median_s": 0.02,
             "flops": 1e9, "tflops_per_s": moe_tflops}]
    rows += [{"kind": k, "backend": "loop", "context": c, "tokens": 1, "median_s": ms * c / 64e3, "flops": 1e6,
              "tflops_per_s": 1e-3} for c in (64, 128, 256) for k, ms in (("decode", 1.0), ("recompute", recompute_ms))]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, device if c == "device_name" else "") for c in COLUMNS})


def test_bench_sources_are_never_pooled(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _bench_csv(a / "bench.csv", 0.05, 4.0, "cpu-A")
    _bench_csv(b / "bench.csv", 0.025, 8.0, "cpu-B")
    col = K.collect([a, b])
    assert len(col.bench_paths) == 2
    rb = mfu_ratio_bench(bench_mfu(col.bench)).set_index("source")
    assert sorted(rb["median_ratio"]) == pytest.approx([0.25, 0.5])  # not 0.375, the pooled mean
    drawn = {}

    def keep(fig, figdir, name, layout=True):
        drawn[name] = fig
        return Path(figdir) / f"{name}.png"

    monkeypatch.setattr(F, "save", keep)
    F.decode(col.bench, tmp_path)
    lines = [l for l in drawn["decode"].axes[0].get_lines() if not l.get_label().startswith("_")]
    assert len(lines) == 4  # decode and recompute per CSV
    for l in lines:  # each line is one CSV's, monotone in the context (no zig-zag between sources)
        y = l.get_ydata()
        assert list(l.get_xdata()) == [64, 128, 256] and all(np.diff(y) > 0)
        assert any(s in l.get_label() for s in col.bench_paths)
    F.throughput(col.bench, tmp_path)
    titles = [ax.get_title() for ax in drawn["throughput"].axes]
    assert sum(col.bench_paths[0] in t.replace("\n", "") for t in titles) == 1
    assert sum(col.bench_paths[1] in t.replace("\n", "") for t in titles) == 1
    for fig in drawn.values():
        plt.close(fig)


def test_layout_check_catches_clipping_and_overlap():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_title("a title far too long to fit inside a four-inch-wide figure at any reasonable font size")
    assert any(p.startswith("clipped") for p in L.layout_problems(fig))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4, 3))
    for name in ("first", "second"):
        ax.annotate(name, (0.5, 0.5), fontsize=10).set_gid(L.POINT_LABEL)
    assert any(p.startswith("overlap") for p in L.layout_problems(fig))
    plt.close(fig)


def test_layout_check_catches_empty_panels_legends_over_data_and_offset_text():
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    axes[0].plot([1, 2], [1, 2], marker="o")
    assert any(p.startswith("empty panel") for p in L.layout_problems(fig))  # axes[1] holds nothing
    axes[1].set_visible(False)
    assert any(p.startswith("empty panel") for p in L.layout_problems(fig))  # a hidden panel is still blank
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([0, 1, 2], [0, 1, 2], marker="o", label="data")
    ax.legend(loc="center")  # over the middle point
    assert any(p.startswith("legend over data") for p in L.layout_problems(fig))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    assert not any(p.startswith("legend over data") for p in L.layout_problems(fig))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([1e12, 2e12], [1, 2])
    assert any(p.startswith("offset text") for p in L.layout_problems(fig))
    plt.close(fig)


def test_place_labels_separates_a_cluster():
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [1.0, 1.02, 1.04, 1.06, 3.0, 3.01]
    ys = [1.0, 1.01, 0.99, 1.0, 2.0, 2.02]
    ax.scatter(xs, ys)
    ax.margins(0.3)
    fig.tight_layout()
    L.place_labels(ax, xs, ys, [f"label number {i}" for i in range(len(xs))])
    assert L.layout_problems(fig) == []
    assert sum(t.get_gid() == L.POINT_LABEL for t in ax.texts) == len(xs)
    plt.close(fig)


def test_cli_default_writes_an_untracked_demo_report(tmp_path, monkeypatch, capsys):
    """``python -m reports`` with no arguments writes runs/report/, never reports/REPORT.md."""
    from reports.__main__ import main
    monkeypatch.chdir(tmp_path)
    _write_run(tmp_path / "runs", "dense", False, "dense", steps=3)
    _move(tmp_path / "runs" / "synthetic" / "dense" / "tiny-seed0", "demo")
    assert main([]) == 0
    assert (tmp_path / "runs" / "report" / "REPORT.md").is_file()
    assert not (tmp_path / "reports").exists()
    assert "from 1 run(s)" in capsys.readouterr().out
    assert main(["--select", "nothing"]) == 2  # an explicit selection that matches nothing is an error
    assert "--select nothing matches no run" in capsys.readouterr().err


def test_bootstrap_and_verdict():
    from experiments.bench.paired import bootstrap_median, verdict
    rng = np.random.default_rng(1)
    x = 1.2 + 0.05 * rng.standard_normal(500)
    med, lo, hi = bootstrap_median(x)
    assert lo < med < hi and hi - lo < 0.02 and med == pytest.approx(np.median(x))
    assert verdict(med, lo, hi) == "an MoE FLOP costs more than a dense FLOP"
    bmed, blo, bhi = bootstrap_median(x, block=20)
    assert bmed == med and blo < bmed < bhi
    drift = np.linspace(1.0, 1.4, 400) + 0.01 * rng.standard_normal(400)  # slow drift: blocks see it
    assert np.subtract(*bootstrap_median(drift, block=50)[2:0:-1]) > np.subtract(*bootstrap_median(drift)[2:0:-1])
    med, lo, hi = bootstrap_median(1.0 + 0.5 * rng.standard_normal(20))
    assert verdict(med, lo, hi).startswith("too wide to conclude")
    assert verdict(1.0, 0.98, 1.02) == "an MoE FLOP costs the same as a dense FLOP within the interval"


def test_paired_cli_rejects_bad_input(capsys):
    from experiments.bench.paired import main
    assert main(["--models", "moe", "deepseek", "--repeats", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "dense" in err and len(err.splitlines()) == 1
    assert main(["--models", "dense", "nosuchmodel", "--repeats", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_sweep_progress_counts_jobs():
    from omegaconf import OmegaConf
    from experiments.progress import count_jobs
    cfg = OmegaConf.create({"hydra": {"overrides": {"task": ["model=dense,moe,deepseek", "seed=0,1", "x=1"]},
                                      "sweeper": {"params": None}}})
    assert count_jobs(cfg) == 6
    cfg = OmegaConf.create({"hydra": {"overrides": {"task": ["model=dense"]}, "sweeper": {"params": {"seed": "0,1,2"}}}})
    assert count_jobs(cfg) == 3
