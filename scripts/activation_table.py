"""Print the planner's activations beside the bytes autograd saves, for every tiny model, backend, precision
and recompute mode (the table in docs/accounting.md). Run: ``PYTHONPATH=.:tests .venv/bin/python
scripts/activation_table.py``; tests/test_accounting_training_memory_torch.py asserts each row's equality."""
from __future__ import annotations

import torch

from _saved_tensors import saved_activation_bytes
from accounting.activations import total_activation_bytes
from test_accounting_training_memory_torch import CASES, B, batch, build, settings_of


def main() -> None:
    torch.set_num_threads(1)
    print(f"| model | backend | precision | recompute | planner (bytes) | measured (bytes) |   (micro-batch {B} x 64)")
    print("| :--- | :--- | :--- | :--- | ---: | ---: |")
    for model, backend in CASES:
        for rec in ("none", "full"):
            for prec in ("fp32", "bf16", "bf16-pure"):
                spec, m = build(model, backend)
                if prec == "bf16-pure":
                    m = m.to(torch.bfloat16)
                m.recompute = rec
                idx, tgt = batch(spec.shape)
                meas = saved_activation_bytes(m, idx, tgt, autocast=prec == "bf16")["total"]
                ours = total_activation_bytes(spec.shape, settings_of(spec, precision=prec, recompute=rec))
                print(f"| {model} | {backend} | {prec} | {rec} | {ours:,.0f} | {meas:,} |")


if __name__ == "__main__":
    main()
