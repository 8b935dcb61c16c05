"""The run's environment record (device, torch, git commit, ...) and the hardware peak used for MFU.

Peaks are FLOP/s with TWO flops per multiply-add. On a CUDA device the datasheet peak comes from
`accounting.hardware` (looked up by device name); on a CPU the peak is MEASURED at start: the best of a
few n x n x n fp32 matmuls, 2 n^3 FLOP each.
"""
from __future__ import annotations

import os
import platform
import resource  # POSIX only: runs are trained on Linux
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from accounting.hardware import get_hardware

REPO = Path(__file__).resolve().parent.parent


def git_commit(repo: Path = REPO) -> str:
    """``<sha>`` or ``<sha>-dirty``; ``unknown`` outside a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``sysctl`` on macOS), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, the CPU model otherwise."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def cpu_features() -> dict:
    """What the CPU's matmul kernels can use: torch's dispatch level (``AVX2``, ``AVX512``, ...) and whether
    oneDNN has a native bf16 matmul on it (without one, a bf16 matmul runs a reference kernel, about
    100x slower than fp32: hosts named alike, e.g. "AMD EPYC", differ here)."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}


def environment(device: torch.device, dtype: str, world_size: int = 1) -> dict:
    """A JSON-able record of where and with what the run ran."""
    return {**cpu_features(), "device": str(device), "device_name": device_name(device), "dtype": dtype,
            "world_size": world_size, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": sys.version.split()[0], "platform": platform.platform(), "host": socket.gethostname(),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "git_commit": git_commit(), "time_unix_s": time.time()}


def measure_matmul_peak(device: torch.device | str = "cpu", n: int = 1024, repeats: int = 5,
                        dtype: torch.dtype = torch.float32) -> float:
    """Best achieved FLOP/s (2 per multiply-add) of an n x n @ n x n matmul on ``device``."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


_CUDA_NAMES = (("H100 PCIe", "h100-pcie"), ("H100", "h100-sxm"), ("H800", "h800"), ("H200", "h200"),
               ("A100", "a100"))


def hardware_peak(hw_cfg: dict, device: torch.device, train_dtype: str) -> dict:
    """``{"peak_flops_per_s", "peak_source", "peak_dtype"}`` for MFU, from the ``hardware`` config node."""
    dtype = hw_cfg["peak_dtype"] if hw_cfg["peak_dtype"] != "auto" else train_dtype
    if hw_cfg["peak_flops_per_s"]:
        return {"peak_flops_per_s": float(hw_cfg["peak_flops_per_s"]), "peak_source": "config",
                "peak_dtype": dtype}
    name = hw_cfg["name"]
    if name == "auto" and device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        name = next((key for frag, key in _CUDA_NAMES if frag in gpu), "measure")
    if name in ("auto", "measure"):
        tdtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        n = 4096 if device.type == "cuda" else 1024
        # best of 30 (~0.5 s on a CPU): on a shared machine the best run is the least disturbed one
        return {"peak_flops_per_s": measure_matmul_peak(device, n=n, repeats=30, dtype=tdtype),
                "peak_source": f"measured {n}^3 {dtype} matmul", "peak_dtype": dtype}
    hw = get_hardware(name)
    return {"peak_flops_per_s": hw.peak(dtype), "peak_source": f"datasheet {hw.name}", "peak_dtype": dtype}


def memory_bytes(device: torch.device) -> dict:
    """Peak memory: CUDA allocator peak on a GPU, the process's max resident set on a CPU (bytes)."""
    if device.type == "cuda":
        return {"memory_bytes": int(torch.cuda.max_memory_allocated(device)), "memory_kind": "cuda_max_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"memory_bytes": int(rss * (1 if sys.platform == "darwin" else 1024)), "memory_kind": "max_rss"}
