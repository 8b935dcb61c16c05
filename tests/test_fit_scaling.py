"""experiments.fit_scaling recovers known constants from synthetic isoFLOP losses with noise."""
import json
import math

import numpy as np
import pytest

from experiments import fit_scaling as F

TRUE = {"E": 1.8, "A": 480.0, "B": 2100.0, "alpha": 0.35, "beta": 0.37}
BUDGETS = (1e18, 1e19, 1e20)
SMALL_GRID = {"alpha": (0.5,), "beta": (0.5,), "e": (0.0, 0.5), "a": (5.0, 10.0), "b": (5.0, 10.0)}


def law(n, d, t=TRUE):
    return t["E"] + t["A"] / n ** t["alpha"] + t["B"] / d ** t["beta"]


def n_opt_true(c, t=TRUE):
    a, b = t["alpha"], t["beta"]
    g = (a * t["A"] / (b * t["B"])) ** (1 / (a + b))
    return g * (c / 6) ** (b / (a + b))


def synthetic_runs(noise=0.002, seed=0, compute_multiplier=None):
    """Dense runs from `law` at 7 sizes around each budget's optimum (D = C / 6N), multiplicative noise; with
    ``compute_multiplier`` m also 'moe' runs whose loss is the dense law at m times the compute
    (N and D each scaled by sqrt(m)): their true leverage is m."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in BUDGETS:
        for f in np.geomspace(1 / 8, 8, 7):
            n = n_opt_true(c) * f
            d = c / (6 * n)
            runs.append(F.Run("dense", c, f"s{f:.2f}", n, n, d, c, law(n, d) * (1 + noise * rng.standard_normal()), ""))
            if compute_multiplier:
                k = math.sqrt(compute_multiplier)
                runs.append(F.Run("moe", c, f"s{f:.2f}", n, 4 * n, d, c,
                                  law(k * n, k * d) * (1 + noise * rng.standard_normal()), ""))
    return runs


def test_approach3_recovers_constants():
    runs = synthetic_runs()
    fit = F.fit_approach3([r.params_active for r in runs], [r.tokens for r in runs], [r.loss for r in runs],
                          grid=SMALL_GRID)
    assert fit.alpha == pytest.approx(TRUE["alpha"], abs=0.03)
    assert fit.beta == pytest.approx(TRUE["beta"], abs=0.03)
    assert fit.E == pytest.approx(TRUE["E"], rel=0.05)
    # the fitted law's compute-optimal exponent b/(a+b) is recovered closely
    assert fit.beta / (fit.alpha + fit.beta) == pytest.approx(0.37 / 0.72, abs=0.02)


def test_approach3_exact_data_is_fitted_exactly():
    runs = synthetic_runs(noise=0.0)
    fit = F.fit_approach3([r.params_active for r in runs], [r.tokens for r in runs], [r.loss for r in runs],
                          grid=SMALL_GRID)
    assert (fit.E, fit.alpha, fit.beta) == pytest.approx((1.8, 0.35, 0.37), rel=1e-3)


def test_approach2_and_leverage_recover_truth():
    runs = synthetic_runs(compute_multiplier=2.0)
    a = F.analyse(runs, n_boot=30, approach3_grid=SMALL_GRID, approach3_boot=5)
    pl = a["approach2"]["dense"]["n_opt_power_law"]
    assert pl["exponent"] == pytest.approx(0.37 / 0.72, abs=0.03)  # N_opt ~ C^(beta / (alpha + beta))
    for row, c in zip(a["approach2"]["dense"]["per_budget"], BUDGETS):
        assert row["n_opt"] == pytest.approx(n_opt_true(c), rel=0.15)
        lo, hi = row["loss_opt_interval"]
        assert lo <= row["loss_opt"] <= hi
    for row in a["leverage"]["per_budget"]:
        assert row["leverage"] == pytest.approx(2.0, rel=0.2)
        assert row["interval"][0] < row["leverage"] < row["interval"][1]
    json.dumps(a)  # plain data


def test_parabola_vertex():
    x = np.log(np.array([1e6, 2e6, 4e6, 8e6, 16e6]))
    y = 0.3 * (x - math.log(4e6)) ** 2 + 3.0
    lx, ly, curv = F.parabola_vertex(x, y)
    assert math.exp(lx) == pytest.approx(4e6, rel=1e-6) and ly == pytest.approx(3.0) and curv == pytest.approx(0.3)


def test_cli_refuses_too_few_runs(tmp_path, capsys):
    assert F.main(["--runs", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: need >= 2 budgets")
