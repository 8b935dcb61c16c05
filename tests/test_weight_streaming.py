"""The decode step's GEMM bound from measured weight-streaming rates (experiments.bench.weight_streaming)."""
from __future__ import annotations

import pytest
import torch

from experiments.bench.weight_streaming import rate_at, streaming_bound_s, streaming_rates, main

RATES = {"linear": {1: 20e9, 2: 10e9, 4: 8e9}, "mm": {1: 24e9, 2: 13e9, 4: 9e9}}


def test_rate_at_takes_the_largest_measured_batch_not_above():
    assert rate_at(RATES["linear"], 1) == 20e9
    assert rate_at(RATES["linear"], 3.9) == 10e9
    assert rate_at(RATES["linear"], 64) == 8e9
    assert rate_at(RATES["linear"], 0.5) == 20e9          # below every measured batch: the smallest


def test_bound_adds_weights_routed_experts_and_cache_at_their_rates():
    dense = streaming_bound_s(compute_s=0.0, weight_bytes=4e8, routed_bytes=0.0, kv_bytes=2e7, batch=2, top_k=0,
                              distinct_experts=None, rates=RATES, bandwidth=20e9)
    assert dense == pytest.approx(4e8 / 10e9 + 2e7 / 20e9)
    # 8 rows of top-2 over 4 distinct experts: 4 rows per expert -> the mm rate at 4
    moe = streaming_bound_s(compute_s=0.0, weight_bytes=6e8, routed_bytes=4e8, kv_bytes=0.0, batch=8, top_k=2,
                            distinct_experts=4.0, rates=RATES, bandwidth=20e9)
    assert moe == pytest.approx(2e8 / 8e9 + 4e8 / 9e9)
    assert streaming_bound_s(compute_s=1.0, weight_bytes=4e8, routed_bytes=0.0, kv_bytes=0.0, batch=1, top_k=0,
                             distinct_experts=None, rates=RATES, bandwidth=20e9) == 1.0   # compute-bound


def test_streaming_rates_are_positive_for_both_layouts():
    rates = streaming_rates(torch.device("cpu"), torch.float32, [1, 3], k=64, n=128, n_bytes=2 ** 20, repeats=2)
    assert set(rates) == {"linear", "mm"}
    assert all(set(v) == {1, 3} and min(v.values()) > 0 for v in rates.values())


def test_command_rejects_a_non_positive_batch(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--rows", "0"])
    assert e.value.code == 2
    assert "must be positive" in capsys.readouterr().err
