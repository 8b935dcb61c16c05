"""Accelerator peaks and prices used for GPU time, dollars and MFU.

Peaks are in FLOP/s with TWO flops per multiply-add (datasheet convention), dense (no sparsity), with one
exception: the ``press2025`` preset stores the note's "300 Tflop/s", which counts MULTIPLY-ADDS (the note's
convention), in the same field. ``accounting.cost.gpu_rate`` records that convention
(``rate_flops_per_mac = 1`` for it, 2 for the others) so the two are never mixed; read peaks through it.
Prices are rental dollars per GPU-hour; change them freely (``dataclasses.replace``).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    """One accelerator: its dense peak (FLOP/s, 2 per multiply-add) by dtype and a price."""

    name: str
    peak_bf16_flops_per_s: float
    peak_fp8_flops_per_s: float | None = None
    peak_fp32_flops_per_s: float | None = None
    memory_bandwidth_bytes_per_s: float | None = None
    usd_per_hour: float | None = None
    note: str = ""

    def peak(self, dtype: str = "bf16") -> float:
        """Peak FLOP/s for ``dtype`` in {"bf16", "fp16", "fp8", "fp32"} (2 flops per multiply-add)."""
        value = {"bf16": self.peak_bf16_flops_per_s, "fp16": self.peak_bf16_flops_per_s,
                 "fp8": self.peak_fp8_flops_per_s, "fp32": self.peak_fp32_flops_per_s}.get(dtype)
        if value is None:
            raise ValueError(f"no {dtype!r} peak recorded for {self.name}")
        return value


HARDWARE: dict[str, Hardware] = {
    "h100-sxm": Hardware("H100 SXM", 989e12, 1979e12, 67e12, 3.35e12, 2.0,
                         "NVIDIA datasheet, dense; 1979 TFLOP/s bf16 assumes 2:4 sparsity"),
    "h800": Hardware("H800 SXM", 989e12, 1979e12, 67e12, 3.35e12, 2.0,
                     "H100 compute with slower NVLink; $2/GPU-hour is DeepSeek-V3's own assumption"),
    "h100-pcie": Hardware("H100 PCIe", 756e12, 1513e12, 51e12, 2.0e12, 2.0, "NVIDIA datasheet, dense"),
    "h200": Hardware("H200 SXM", 989e12, 1979e12, 67e12, 4.8e12, 3.0, "NVIDIA datasheet, dense"),
    "a100": Hardware("A100 SXM 80GB", 312e12, None, 19.5e12, 2.0e12, 1.5, "NVIDIA datasheet, dense"),
    # The note's idealised GPU: 300 Tflop/s at $10,000 per GPU-year. The note counts a multiply-add as
    # ONE flop, so its "300 Tflop/s" is 300e12 multiply-adds per second here.
    "press2025": Hardware("Press (2025) GPU", 300e12, None, None, None, 10_000 / (365.25 * 24),
                          "the note's 300 Tflop/s at $10K per GPU-year; its flops are multiply-adds"),
}


def get_hardware(name: str) -> Hardware:
    """Look up a preset by key (case-insensitive); the error lists the known keys."""
    key = name.lower()
    if key not in HARDWARE:
        raise ValueError(f"unknown hardware {name!r}; known: {', '.join(sorted(HARDWARE))}")
    return HARDWARE[key]
