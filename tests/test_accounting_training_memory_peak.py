"""The planner's total beside the peak memory of a real training step on the CPU (issue check: the peak of a
real step, the ratio stated and explained in docs/accounting.md, "Peak of a real step")."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_peak_of_a_real_step_is_near_the_planner_total(kind):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(REPO / "tests" / "_peak_rss.py"), kind, "4", "256"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    # weights + gradients + AdamW moments are exact (tests/test_accounting_training_memory_torch.py); the
    # planner's total adds the activations, although a first step never holds all four at once (AdamW's
    # moments are allocated in step(), after backward freed the activations), while the resident set also
    # holds freed-but-kept allocator memory and the step's transient buffers: measured 1.03 (dense) and
    # 1.07 (moe) on this CPU. A ratio outside [0.9, 1.3] means the planner misses or invents a term.
    assert 0.9 <= r["ratio"] <= 1.3, r
    assert r["peak_minus_before"] > r["planner"]["weights"] + r["planner"]["gradients"] + r["planner"]["optimizer"]
