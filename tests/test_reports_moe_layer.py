"""reports.moe_layer: which CSV is shown, how cells are marked, what the goal sentence says."""
from __future__ import annotations

import pandas as pd

from reports import moe_layer as M


def _rows(source: str, start: float, device: str = "AMD EPYC", dense=(1.1, 1.05, 1.15)) -> list[dict]:
    base = {"source": source, "time_start_unix_s": start, "device_name": device, "git_commit": "abc1234def",
            "shape": "fine", "dtype": "fp32", "threads": 1, "load1_start": 0.5, "load1_end": 0.6, "status": "ok"}
    med, q1, q3 = dense
    return [{**base, "row": "ratio", "contender": "ours_grouped", "vs": "dense", "median": med, "q1": q1, "q3": q3},
            {**base, "row": "ratio", "contender": "ours_grouped", "vs": "grouped_matmul", "median": 1.1, "q1": 1.0,
             "q3": 1.3},
            {**base, "row": "ratio", "contender": "ours_grouped", "vs": "ours_grouped@66dcf62", "median": 0.8,
             "q1": 0.79, "q3": 0.81},
            {**base, "row": "time", "contender": "dense", "vs": "", "median": 2.0, "q1": 1.9, "q3": 2.1},
            {**base, "row": "time", "contender": "grouped_matmul", "vs": "", "median": 2.5, "q1": 2.4, "q3": 2.6},
            {**base, "row": "ratio", "contender": "ours_loop", "vs": "dense", "median": 9.0, "q1": 9.0, "q3": 9.0}]


def test_newest_csv_per_device_is_shown_older_are_listed():
    df = pd.DataFrame(_rows("old.csv", 1.0) + _rows("new.csv", 2.0) + _rows("gpu.csv", 0.5, device="NVIDIA H100"))
    shown, older = M.newest_per_device(df)
    assert set(shown["source"]) == {"new.csv", "gpu.csv"}
    assert list(older["source"]) == ["old.csv"]


def test_table_cells_marks_and_floor():
    df = pd.DataFrame(_rows("a.csv", 1.0))
    text, cols = M.table(df)
    assert cols == ["dense", "grouped_matmul", "ours_grouped@66dcf62"]
    row = next(ln for ln in text.splitlines() if ln.startswith("| fine fp32 1t")).split("|")
    assert row[2].strip() == "1.10 [1.05, 1.15]"           # IQR 9% of the median: not marked
    assert row[3].strip() == "1.10 [1.00, 1.30] ‡"         # IQR 27%: too noisy to conclude
    assert row[4].strip() == "0.80 [0.79, 0.81]"
    assert row[5].strip() == "1.25"                        # floor / dense = 2.5 s / 2.0 s
    assert "grouped as of 66dcf62" in text and "9.00" not in text  # only ours_grouped's rows


def test_goal_lines_say_met_and_missed():
    met = M.goal_lines(pd.DataFrame(_rows("a.csv", 1.0, dense=(1.19, 1.18, 1.2))))
    missed = M.goal_lines(pd.DataFrame(_rows("a.csv", 1.0, dense=(1.31, 1.3, 1.32))))
    assert met == ["- fine: goal ours/dense <= 1.2; met by fine fp32 1t."]
    assert missed == ["- fine: goal ours/dense <= 1.2; met by none; not met by fine fp32 1t (1.31)."]


def test_gpu_rows_have_no_thread_count():
    rows = [dict(r, threads=0, device_name="NVIDIA H100") for r in _rows("gpu.csv", 1.0)]
    text, _ = M.table(pd.DataFrame(rows))
    assert "| fine fp32 |" in text and "0t" not in text


def _compiled_rows(source: str, start: float) -> list[dict]:
    rows = _rows(source, start)
    base = {k: rows[0][k] for k in ("source", "time_start_unix_s", "device_name", "git_commit", "shape", "dtype",
                                     "threads", "load1_start", "load1_end", "status")}
    return rows + [{**base, "row": "ratio", "contender": "ours_grouped_compiled", "vs": vs, "median": m,
                    "q1": m - 0.01, "q3": m + 0.01}
                   for vs, m in (("ours_grouped", 0.96), ("dense_compiled", 1.14), ("grouped_matmul", 1.18))]


def test_a_compiled_run_is_shown_beside_the_newest_eager_one():
    df = pd.DataFrame(_rows("eager.csv", 1.0) + _compiled_rows("compiled.csv", 2.0) + _rows("older.csv", 0.5))
    shown, older = M.newest_per_device(df)
    assert set(shown["source"]) == {"eager.csv", "compiled.csv"}
    assert list(older["source"]) == ["older.csv"]


def test_compiled_table_lists_the_compiled_layers_ratios():
    assert M.compiled_table(pd.DataFrame(_rows("eager.csv", 1.0))) is None
    text = M.compiled_table(pd.DataFrame(_compiled_rows("compiled.csv", 1.0)))
    header, _, row = text.splitlines()[:3]
    assert "compiled / eager layer" in header and "compiled / compiled dense FFN" in header
    assert [c.strip() for c in row.split("|")[1:-1]] == ["fine fp32 1t", "0.96 [0.95, 0.97]", "1.14 [1.13, 1.15]",
                                                         "1.18 [1.17, 1.19]"]


def test_finding_of_a_compiled_run_names_the_compiled_ratios():
    df = pd.DataFrame(_compiled_rows("compiled.csv", 1.0)).assign(n_experts=64, top_k=8)
    line = M.finding(df, "compiled.csv")
    assert "compiled (torch.compile), the layer costs 1.14x the compiled dense FFN and 0.96x its own eager time" in line
    assert "compiled (torch.compile)" not in M.finding(pd.DataFrame(_rows("e.csv", 1.0)).assign(n_experts=64, top_k=8),
                                                      "e.csv")
