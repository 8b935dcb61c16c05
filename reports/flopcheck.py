"""Accounting's forward flops vs what ``torch.utils.flop_counter.FlopCounterMode`` counts, on tiny shapes
(FLOP = 2 per multiply-add, full n x n attention: FlopCounterMode does not halve causal attention). Experts
run on the ``loop`` backend, whose per-expert matmuls FlopCounterMode sees (it counts ``torch._grouped_mm``
as 0).

The report reads the committed table ``reports/flopcheck.csv`` (`read`) and builds no model (importing this
module imports torch and ``moe``, to build them when asked);
``python -m reports.flopcheck`` measures it again (`flop_check`, torch) and writes it, and
``tests/test_reports.py`` holds the committed file equal to a live measurement.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

import moe
from accounting.flops import FLOP, forward_flops
from accounting.shapes import ModelShape

SEQ = 32
SHAPES = {
    "dense gelu mha": ModelShape(vocab_size=256, d_model=64, n_layers=2, n_heads=4, seq_len=SEQ),
    "dense swiglu gqa": ModelShape(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                   attention="gqa", seq_len=SEQ, ffn_kind="swiglu", norm_kind="rmsnorm", d_ff=96),
    "moe E=8 k=2": ModelShape(vocab_size=256, d_model=64, n_layers=2, n_heads=4, seq_len=SEQ, n_experts=8,
                              top_k=2, d_expert=128),
    "deepseek-like: shared expert, dense first layer": ModelShape(
        vocab_size=256, d_model=64, n_layers=3, n_heads=4, seq_len=SEQ, ffn_kind="swiglu", norm_kind="rmsnorm",
        n_experts=8, top_k=2, n_shared_experts=1, d_expert=64, d_ff=192, first_dense_layers=1),
    "MLA (DeepSeek attention)": ModelShape(
        vocab_size=256, d_model=64, n_layers=2, n_heads=4, seq_len=SEQ, ffn_kind="swiglu", norm_kind="rmsnorm",
        attention="mla", q_lora_rank=32, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16),
}


CSV = Path(__file__).with_name("flopcheck.csv")
COLUMNS = ["shape", "tokens", "accounting_flops", "flopcounter_flops", "ratio"]


def read(path: Path = CSV) -> tuple[pd.DataFrame, str]:
    """(table, message) from the committed CSV; an empty table and the reason when it cannot be read."""
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        return pd.DataFrame(), f"`{path}` could not be read ({type(e).__name__}); write it with `python -m reports.flopcheck`"
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        return pd.DataFrame(), f"`{path}` lacks the column(s) {', '.join(missing)}"
    return df[COLUMNS], ""


def flop_check(batch: int = 2) -> tuple[pd.DataFrame, str]:
    """(table, message). The table has one row per shape: accounting vs FlopCounterMode forward flops."""
    rows, skipped = [], []
    for name, shape in SHAPES.items():
        try:
            torch.manual_seed(0)
            model = moe.build_model(shape, backend="loop").eval()
            idx = torch.randint(0, shape.vocab_size, (batch, SEQ))
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                model(idx)
            measured = fc.get_total_flops()
        except Exception as e:  # noqa: BLE001  (a model that cannot be built is reported, not fatal)
            skipped.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160])
            continue
        acc = forward_flops(shape, SEQ, batch=batch, flops_per_mac=FLOP)["total"]
        rows.append({"shape": name, "tokens": batch * SEQ, "accounting_flops": acc,
                     "flopcounter_flops": measured, "ratio": measured / acc if acc else float("nan")})
    msg = "; ".join(skipped)
    return pd.DataFrame(rows), msg


def main(argv: list[str] | None = None) -> int:
    """``python -m reports.flopcheck [out.csv]``: measure and write the table (default ``reports/flopcheck.csv``)."""
    out = Path((argv if argv is not None else sys.argv[1:] or [str(CSV)])[0])
    df, msg = flop_check()
    df.to_csv(out, index=False)
    print(f"wrote {out} ({len(df)} shapes){'; ' + msg if msg else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
