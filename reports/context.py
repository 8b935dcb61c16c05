"""What the report computes once, before any section is written: sections only read a `Context`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from accounting.reproduce.deepseek import DisclosedServingCheck, deepseek_disclosed_check
from experiments.bench.paired import BASELINES, CONCLUSIVE_WIDTH, baseline_of

from . import costs as cost_table
from . import deepseek as deepseek_costs
from . import moe_layer
from .collect import Collected
from .measured import bench_mfu, run_summary


@dataclass(frozen=True)
class Context:
    """The collected data, the output folder and every number computed from them that several parts read.

    ``deepseek``: `reports.deepseek.corrections()`; ``costs``: `reports.costs.cost_table` at DeepSeek's implied
    MFU; ``summary``: one row per run; ``bench_mfu``: bench rows with MFU; ``paired``: one row per MoE model of
    each paired benchmark; ``moe_layer`` / ``moe_layer_older``: the newest MoE-layer CSV per device and the
    older ones; ``disclosed``: `accounting.reproduce.deepseek.deepseek_disclosed_check()`; ``conclusive_width``: the
    widest interval, relative to its median, from which a dollar figure is drawn."""
    col: Collected
    out: Path
    deepseek: dict
    costs: pd.DataFrame
    summary: pd.DataFrame
    bench_mfu: pd.DataFrame
    paired: list[dict]
    moe_layer: pd.DataFrame
    moe_layer_older: pd.DataFrame
    disclosed: DisclosedServingCheck
    conclusive_width: float

    @property
    def figdir(self) -> Path:
        return self.out / "figures"


def compute(col: Collected, out: str | Path) -> Context:
    """Every shared number, once."""
    deepseek = deepseek_costs.corrections()
    shown, older = moe_layer.newest_per_device(col.moe_layer)
    return Context(col=col, out=Path(out), deepseek=deepseek, costs=cost_table.cost_table(deepseek["mfu"]),
                   summary=run_summary(col), bench_mfu=bench_mfu(col.bench), paired=paired_rows(col.paired),
                   moe_layer=shown, moe_layer_older=older, disclosed=deepseek_disclosed_check(),
                   conclusive_width=_conclusive_width(col.paired))


def paired_rows(paired: list[dict]) -> list[dict]:
    """One row per MoE model of each paired benchmark: its cost ratio c against dense (a ``<name>_compiled``
    model against ``dense_compiled``), with the source. Compiled rows come first, so the headline c (the first
    row) is the compiled one when a benchmark timed compiled models; ``compiled`` says which."""
    rows = [{"source": pb["source"], "model": m, **v, "device": pb["env"].get("device_name", "?"),
             "repeats": pb["summary"]["repeats"], "compiled": m.endswith("_compiled"), "dense": baseline_of(m)}
            for pb in paired for m, v in pb["summary"]["models"].items() if m not in BASELINES]
    return sorted(rows, key=lambda r: not r["compiled"])


def _conclusive_width(paired: list[dict]) -> float:
    ws = [p["summary"].get("conclusive_width") for p in paired if p["summary"].get("conclusive_width")]
    return float(ws[0]) if ws else CONCLUSIVE_WIDTH
