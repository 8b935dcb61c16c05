"""reports.sections.scaling and experiments.fit_scaling end to end on a synthetic tree of isoFLOP run records."""
import json
import math

import yaml

from accounting.params import count_parameters
from accounting.shapes import ModelShape
from experiments import fit_scaling as F
from reports import context
from reports.collect import collect
from reports.sections import scaling as R

RUNGS = {"iso0": (16, 2, 2), "iso1": (32, 2, 2), "iso2": (48, 2, 3), "iso3": (64, 3, 4), "iso4": (96, 3, 4),
         "iso5": (128, 4, 4)}


def _write_tree(root):
    """dense and moe records at budgets 1e11, 1e12 and 1e13: loss = 1.5 + 60/N^0.3 + 90/D^0.3 (MoE: the same law
    at twice the compute), with the summary.json / config.yaml fields the trainer writes."""
    for budget in (1e11, 1e12, 1e13):
        for fam in ("dense", "moe"):
            for size, (d, layers, heads) in RUNGS.items():
                shape = {"vocab_size": 512, "d_model": d, "n_layers": layers, "n_heads": heads, "seq_len": 128,
                         "n_experts": 8 if fam == "moe" else 0, "top_k": 2 if fam == "moe" else 0,
                         "d_expert": 2 * d if fam == "moe" else None}
                c = count_parameters(ModelShape(**shape))
                tokens = budget / (6 * c.active)
                k = math.sqrt(2) if fam == "moe" else 1.0
                loss = 1.5 + 60 / (k * c.active) ** 0.3 + 90 / (k * tokens) ** 0.3
                run = root / f"isoflop_{budget:.0e}" / fam / f"{size}-seed0"
                run.mkdir(parents=True)
                (run / "summary.json").write_text(json.dumps({
                    "status": "completed", "final_val_loss": loss, "parameters_active": c.active,
                    "parameters_total": c.total, "tokens": tokens, "train_flops": budget}))
                (run / "config.yaml").write_text(yaml.safe_dump({
                    "model": {"name": fam, "size": size, "shape": shape}, "train": {"flops_budget": budget}}))


def test_fit_and_section_on_synthetic_records(tmp_path, capsys):
    data = tmp_path / "isoflop"
    _write_tree(data)
    assert F.main(["--runs", str(data), "--bootstrap", "10", "--starts", "small"]) == 0
    printed = capsys.readouterr().out
    assert "Measured leverage of MoE (E=8, k=2) over dense" in printed
    fit = json.loads((data / "fit.json").read_text())
    assert len(fit["leverage"]["per_budget"]) == 3
    for row in fit["leverage"]["per_budget"]:
        assert 1.2 < row["leverage"] < 3.5  # the MoE is the dense law at twice the compute
    assert set(fit["published_at_our_scale"][0]["laws"]) == {"clark2022", "krajewski2024", "abnar2025",
                                                             "ludziejewski2025"}
    part = R.section(context.compute(collect([]), tmp_path / "out"), data)
    text, figures = part.markdown, part.figures
    assert text.startswith(f"## {R.TITLE}")
    assert "Published laws put to DeepSeek-V3" in text and "Our isoFLOP study" in text
    assert [p.name for p in figures] == ["isoflop_curves.png", "isoflop_leverage.png"]
    assert all(p.stat().st_size > 10_000 for p in figures)


def test_section_without_records_says_how_to_make_them(tmp_path):
    text = R.section(context.compute(collect([]), tmp_path / "out"), tmp_path / "nothing").markdown
    assert "No fitted isoFLOP study" in text and "experiments.fit_scaling" in text
