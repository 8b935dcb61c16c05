"""``python -m experiments.bench.expert_parallel``: 2 gloo ranks launched by the module itself time dispatch, expert
compute and combine separately and write the bytes beside accounting.serving's uniform-routing expectation."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_ep_bench_times_the_three_phases_and_counts_bytes(tmp_path):
    out = tmp_path / "ep.json"
    p = subprocess.run([sys.executable, "-m", "experiments.bench.expert_parallel", "--tokens", "128", "--d-model", "16",
                        "--experts", "4", "--top-k", "2", "--repeats", "2", "--warmup", "1", "--out", str(out)],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["ranks"] == 2 and rec["backend"] == "gloo" and len(rec["per_rank"]) == 2
    r0, r1 = rec["per_rank"]
    for r in (r0, r1):
        assert r["dispatch_s"] > 0 and r["compute_s"] > 0 and r["combine_s"] > 0 and r["a2a_s"] > 0
        assert 0 < r["dedup_dispatch_bytes"] <= r["dispatch_bytes"]
        assert r["dispatch_bytes"] % (16 * 4) == 0  # whole rows of d fp32 elements
    assert r0["dispatch_bytes"] == r1["combine_bytes"] and r1["dispatch_bytes"] == r0["combine_bytes"]
    # accounting: G=2, one node, E=4 experts (2 per rank), k=2 distinct, fp32 both ways: the other rank is
    # missed with probability C(2, 2) / C(4, 2) = 1/6: d * 8 bytes * 2 (1 - 1/6) / 2 per token
    assert abs(rec["accounting_bytes_per_token"] - 16 * 8 * (1 - 1 / 6)) < 1e-9
    assert rec["dedup_bytes_per_token"] <= rec["measured_bytes_per_token"]
    assert "dispatch_ms" in p.stdout and "accounting (uniform)" in p.stdout


def test_ep_bench_refuses_a_split_that_does_not_divide(tmp_path):
    p = subprocess.run([sys.executable, "-m", "experiments.bench.expert_parallel", "--nproc", "3", "--experts", "8"], cwd=tmp_path,
                       env=ENV, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--nproc 3 must divide --experts 8" in p.stderr.strip().splitlines()[-1]
