"""Accelerator peaks and prices used for GPU time, dollars and MFU.

Peaks are in FLOP/s with TWO flops per multiply-add (datasheet convention), dense (no sparsity), with one
exception: the ``press2025`` preset stores the note's "300 Tflop/s", which counts MULTIPLY-ADDS (the note's
convention), in the same field. ``accounting.cost.gpu_rate`` records that convention
(``rate_flops_per_mac = 1`` for it, 2 for the others) so the two are never mixed; read peaks through it.
Prices are rental dollars per GPU-hour; change them freely (``dataclasses.replace``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


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
    memory_bytes: float | None = None
    """HBM capacity (bytes, 1 GB = 1e9)."""
    nvlink_bytes_per_s: float | None = None
    """GPU-to-GPU bandwidth inside a node, per GPU and per direction (bytes/s)."""
    network_bytes_per_s: float | None = None
    """Scale-out network (InfiniBand) bandwidth across nodes, per GPU and per direction (bytes/s)."""
    gpus_per_node: int = 8

    def peak(self, dtype: str = "bf16") -> float:
        """Peak FLOP/s for ``dtype`` in {"bf16", "fp16", "fp8", "fp32"} (2 flops per multiply-add)."""
        value = {"bf16": self.peak_bf16_flops_per_s, "fp16": self.peak_bf16_flops_per_s,
                 "fp8": self.peak_fp8_flops_per_s, "fp32": self.peak_fp32_flops_per_s}.get(dtype)
        if value is None:
            raise ValueError(f"no {dtype!r} peak recorded for {self.name}")
        return value


# Roofline fields (memory_bytes, nvlink_bytes_per_s, network_bytes_per_s), each with its source:
# * H100 SXM: 80 GB HBM3 at 3.35 TB/s; NVLink 4 at 900 GB/s bidirectional = 450 GB/s per direction
#   (NVIDIA H100 datasheet); one 400 Gb/s ConnectX-7 InfiniBand NIC per GPU = 50 GB/s per direction.
# * H800 SXM: H100 compute and memory with NVLink cut to 400 GB/s bidirectional = 200 GB/s per direction
#   (NVIDIA H800 product brief); InfiniBand 50 GB/s per GPU (DeepSeek-V3 report, arXiv 2412.19437,
#   section 3.2.2: "IB ... 50 GB/s"; it measures NVLink at about 160 GB/s achievable, below the 200 here).
# * H100 PCIe: 80 GB HBM2e at 2.0 TB/s, NVLink bridge 600 GB/s bidirectional (pairs only) (datasheet).
# * H200 SXM: 141 GB HBM3e at 4.8 TB/s, NVLink 900 GB/s bidirectional (NVIDIA H200 datasheet).
# * A100 SXM 80GB: 2.0 TB/s HBM2e, NVLink 3 at 600 GB/s bidirectional, 200 Gb/s HDR IB = 25 GB/s (datasheet).
HARDWARE: dict[str, Hardware] = {
    "h100-sxm": Hardware("H100 SXM", 989e12, 1979e12, 67e12, 3.35e12, 2.0,
                         "NVIDIA datasheet, dense; 1979 TFLOP/s bf16 assumes 2:4 sparsity",
                         memory_bytes=80e9, nvlink_bytes_per_s=450e9, network_bytes_per_s=50e9),
    "h800": Hardware("H800 SXM", 989e12, 1979e12, 67e12, 3.35e12, 2.0,
                     "H100 compute with slower NVLink; $2/GPU-hour is DeepSeek-V3's own assumption",
                     memory_bytes=80e9, nvlink_bytes_per_s=200e9, network_bytes_per_s=50e9),
    "h100-pcie": Hardware("H100 PCIe", 756e12, 1513e12, 51e12, 2.0e12, 2.0, "NVIDIA datasheet, dense",
                          memory_bytes=80e9, nvlink_bytes_per_s=300e9, network_bytes_per_s=50e9),
    "h200": Hardware("H200 SXM", 989e12, 1979e12, 67e12, 4.8e12, 3.0, "NVIDIA datasheet, dense",
                     memory_bytes=141e9, nvlink_bytes_per_s=450e9, network_bytes_per_s=50e9),
    "a100": Hardware("A100 SXM 80GB", 312e12, None, 19.5e12, 2.0e12, 1.5, "NVIDIA datasheet, dense",
                     memory_bytes=80e9, nvlink_bytes_per_s=300e9, network_bytes_per_s=25e9),
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


GPU_SPEC_FIELDS = ("name", "peak_bf16_flops_per_s", "peak_fp8_flops_per_s", "memory_bytes",
                   "memory_bandwidth_bytes_per_s", "nvlink_bytes_per_s", "network_bytes_per_s", "gpus_per_node",
                   "usd_per_hour")
"""Every field a ``--gpu SPEC.yaml`` file must give (FLOP/s with 2 flops per multiply-add, dense; bytes and
bytes/s per GPU, per direction for the links; dollars per GPU-hour). ``peak_fp8_flops_per_s`` may be null."""


def load_gpu_spec(path: str) -> Hardware:
    """A ``Hardware`` from a YAML (or JSON) file holding every field of ``GPU_SPEC_FIELDS``; one ValueError
    naming the file and the missing or bad fields otherwise."""
    import yaml  # optional dependency (pyyaml), lazily: only spec files need it
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ValueError(f"cannot read GPU spec {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of {', '.join(GPU_SPEC_FIELDS)}")
    missing = [k for k in GPU_SPEC_FIELDS if k not in data]
    if missing:
        raise ValueError(f"{path}: missing field(s): {', '.join(missing)}")
    unknown = sorted(set(data) - set(GPU_SPEC_FIELDS) - {"note", "peak_fp32_flops_per_s"})
    if unknown:
        raise ValueError(f"{path}: unknown field(s): {', '.join(map(str, unknown))}")
    for k in GPU_SPEC_FIELDS[1:]:
        v = data[k]
        if k == "peak_fp8_flops_per_s" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
            raise ValueError(f"{path}: {k} must be a number > 0, got {v!r}")
    if not isinstance(data["gpus_per_node"], int):
        raise ValueError(f"{path}: gpus_per_node must be an integer, got {data['gpus_per_node']!r}")
    return Hardware(str(data["name"]), float(data["peak_bf16_flops_per_s"]),
                    None if data["peak_fp8_flops_per_s"] is None else float(data["peak_fp8_flops_per_s"]),
                    data.get("peak_fp32_flops_per_s"), float(data["memory_bandwidth_bytes_per_s"]),
                    float(data["usd_per_hour"]), str(data.get("note", f"spec file {path}")),
                    memory_bytes=float(data["memory_bytes"]), nvlink_bytes_per_s=float(data["nvlink_bytes_per_s"]),
                    network_bytes_per_s=float(data["network_bytes_per_s"]), gpus_per_node=data["gpus_per_node"])


def resolve_gpu(name_or_path: str) -> Hardware:
    """``--gpu``: a preset key, or a path to a spec file (ending .yaml/.yml/.json, or an existing file)."""
    if name_or_path.lower().endswith((".yaml", ".yml", ".json")) or Path(name_or_path).is_file():
        return load_gpu_spec(name_or_path)
    return get_hardware(name_or_path)
