"""GPU time and dollars for a flop count, the note's price trend, and inference $ per million tokens.

Conventions (the trap this module exists to avoid):

* A flop count always comes with ``flops_per_mac``: 1 when a multiply-add counts as ONE flop (the
  note, Press 2025), 2 when it counts as two (hardware datasheets, MFU, ``6 N D``).
* A :class:`GpuRate` states the convention of its own peak (``rate_flops_per_mac``). The note's GPU
  does "300 Tflop/s" in ITS convention, i.e. 300e12 multiply-adds per second (600 TFLOP/s in the
  datasheet convention); an H100's 989 TFLOP/s (bf16, dense) is 494.5e12 multiply-adds per second.
  Work is converted to multiply-adds before it is divided by a rate, so mixing the two cannot happen.
* ``mfu`` (model flops utilisation, 0 < mfu <= 1) scales the peak down to the achieved rate.
* Prices: dollars per GPU-hour. The note's $10,000 per GPU-year is $1.1408 per hour (a Julian year of
  365.25 days); with 300e12 multiply-adds per second that is $1.056e-18 per multiply-add, which the
  note rounds to $1e-18 (``NOTE_ROUNDED_USD_PER_MAC``) for its Table 3.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .flops import check_convention
from .hardware import get_hardware

SECONDS_PER_HOUR = 3600.0
HOURS_PER_YEAR = 365.25 * 24.0
SECONDS_PER_YEAR = HOURS_PER_YEAR * SECONDS_PER_HOUR

NOTE_PEAK_MACS_PER_S = 300e12
"""The note's "300 Tflop/s" GPU, in its own convention: multiply-adds per second."""
NOTE_USD_PER_GPU_YEAR = 10_000.0
"""The note's capital-dominated 2025 cost of one GPU for one year."""
NOTE_ROUNDED_USD_PER_MAC = 1e-18
"""The note's printed "$1 x 10^-18 per executed flop" (its flop = one multiply-add)."""
NOTE_BASE_YEAR = 2025
COST_HALVING_YEARS = 2.0

# The note's rates as it prints them ("$1e-18", "300e12", "$10K"), for text that quotes the note.
NOTE_USD_PER_MAC_TEXT = f"${NOTE_ROUNDED_USD_PER_MAC:g}"
NOTE_PEAK_MACS_TEXT = f"{NOTE_PEAK_MACS_PER_S / 1e12:g}e12"
NOTE_USD_PER_GPU_YEAR_TEXT = f"${NOTE_USD_PER_GPU_YEAR / 1e3:g}K"
"""GPU compute cost halves about every 2.0 years (note, section 7, after Hobbhahn & Besiroglu)."""


@dataclass(frozen=True)
class GpuRate:
    """One GPU's throughput and price.

    Attributes:
        name: label.
        peak_flops_per_s: peak rate, in the convention ``rate_flops_per_mac``.
        rate_flops_per_mac: 1 if the peak counts multiply-adds (the note's "300 Tflop/s"), 2 for
            datasheet FLOP/s.
        usd_per_hour: price of one GPU-hour (dollars).
        mfu: achieved fraction of the peak (1.0 = the peak itself, as the note assumes).
    """

    name: str
    peak_flops_per_s: float
    rate_flops_per_mac: int
    usd_per_hour: float
    mfu: float = 1.0

    def __post_init__(self) -> None:
        check_convention(self.rate_flops_per_mac)
        if not self.peak_flops_per_s > 0:
            raise ValueError(f"peak_flops_per_s must be > 0, got {self.peak_flops_per_s}")
        if not self.usd_per_hour >= 0:
            raise ValueError(f"usd_per_hour must be >= 0, got {self.usd_per_hour}")
        if not 0 < self.mfu <= 1:
            raise ValueError(f"mfu must be in (0, 1], got {self.mfu}")

    @property
    def macs_per_s(self) -> float:
        """Achieved multiply-adds per second: peak / rate_flops_per_mac x mfu."""
        return self.peak_flops_per_s / self.rate_flops_per_mac * self.mfu

    def flops_per_s(self, flops_per_mac: int) -> float:
        """Achieved rate in the convention ``flops_per_mac`` (flop/s)."""
        check_convention(flops_per_mac)
        return self.macs_per_s * flops_per_mac

    def with_(self, **changes) -> "GpuRate":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


NOTE_GPU = GpuRate("Press (2025) GPU: 300 Tflop/s (multiply-adds), $10K/GPU-year", NOTE_PEAK_MACS_PER_S, 1,
                   NOTE_USD_PER_GPU_YEAR / HOURS_PER_YEAR, 1.0)
"""The note's idealised GPU at 100% utilisation: $1.1408 per hour, $1.0563e-18 per multiply-add."""


def gpu_rate(name: str = "press2025", *, usd_per_hour: float | None = None, mfu: float | None = None,
             dtype: str = "bf16") -> GpuRate:
    """A :class:`GpuRate` from an ``accounting.hardware`` preset (``h100-sxm``, ``h800``, ...).

    ``press2025`` is the note's GPU (peak in multiply-adds/s); other presets use their datasheet dense
    ``dtype`` peak (FLOP/s, 2 per multiply-add). ``usd_per_hour`` and ``mfu`` override the preset's
    price and the default utilisation 1.0.
    """
    key = name.lower()
    if key == "press2025":
        rate = NOTE_GPU
    else:
        hw = get_hardware(key)
        if hw.usd_per_hour is None and usd_per_hour is None:
            raise ValueError(f"hardware {name!r} has no price; pass usd_per_hour")
        rate = GpuRate(hw.name, hw.peak(dtype), 2, hw.usd_per_hour if hw.usd_per_hour is not None else 0.0)
    changes = {}
    if usd_per_hour is not None:
        changes["usd_per_hour"] = usd_per_hour
    if mfu is not None:
        changes["mfu"] = mfu
    return rate.with_(**changes) if changes else rate


def gpu_seconds(flops: float, flops_per_mac: int, rate: GpuRate = NOTE_GPU) -> float:
    """GPU-seconds to execute ``flops`` (counted with ``flops_per_mac``) at ``rate`` (seconds)."""
    check_convention(flops_per_mac)
    if flops < 0:
        raise ValueError(f"flops must be >= 0, got {flops}")
    return flops / flops_per_mac / rate.macs_per_s


def gpu_hours(flops: float, flops_per_mac: int, rate: GpuRate = NOTE_GPU) -> float:
    """GPU-hours for ``flops`` (hours)."""
    return gpu_seconds(flops, flops_per_mac, rate) / SECONDS_PER_HOUR


def gpu_years(flops: float, flops_per_mac: int, rate: GpuRate = NOTE_GPU) -> float:
    """GPU-years for ``flops`` (years of 365.25 days)."""
    return gpu_seconds(flops, flops_per_mac, rate) / SECONDS_PER_YEAR


def usd_per_flop(rate: GpuRate = NOTE_GPU, flops_per_mac: int = 1) -> float:
    """Dollars per flop of convention ``flops_per_mac`` at ``rate``: $/hour / (flop/s x 3600).

    Note's GPU: 1.0563e-18 $/multiply-add (``flops_per_mac=1``), 5.28e-19 $/FLOP (``=2``).
    """
    return rate.usd_per_hour / SECONDS_PER_HOUR / rate.flops_per_s(flops_per_mac)


def cost_usd(flops: float, flops_per_mac: int, rate: GpuRate = NOTE_GPU) -> float:
    """Dollars to execute ``flops`` at ``rate``: GPU-hours x $/hour."""
    return gpu_hours(flops, flops_per_mac, rate) * rate.usd_per_hour


def note_rounded_cost_usd(flops_mac: float) -> float:
    """The note's Table 3 dollars: multiply-adds x the rounded $1e-18."""
    return flops_mac * NOTE_ROUNDED_USD_PER_MAC


def note_rounded_gpu_years(flops_mac: float) -> float:
    """The note's Table 3 GPU-years: rounded dollars / $10,000 per GPU-year."""
    return note_rounded_cost_usd(flops_mac) / NOTE_USD_PER_GPU_YEAR


def cost_at_year(usd: float, year: float, base_year: float = NOTE_BASE_YEAR,
                 halving_years: float = COST_HALVING_YEARS) -> float:
    """``usd`` (a cost in ``base_year``) in ``year``, halving every ``halving_years`` (dollars)."""
    if halving_years <= 0:
        raise ValueError("halving_years must be > 0")
    return usd * 0.5 ** ((year - base_year) / halving_years)


def inference_usd_per_million_tokens(flops_per_token: float, flops_per_mac: int,
                                     rate: GpuRate = NOTE_GPU) -> float:
    """Dollars per million generated tokens from decode flops per token (in ``flops_per_mac``)."""
    return cost_usd(1e6 * flops_per_token, flops_per_mac, rate)


def implied_mfu(flops: float, flops_per_mac: int, gpu_hours_used: float, peak_flops_per_s: float) -> float:
    """Model flops utilisation: useful FLOP / (GPU-seconds x datasheet peak), both 2 per MAC.

    ``flops`` is converted to FLOP (2 per multiply-add) first; ``peak_flops_per_s`` is a datasheet
    FLOP/s peak (e.g. 989e12 for H100/H800 bf16 dense).
    """
    check_convention(flops_per_mac)
    if gpu_hours_used <= 0 or peak_flops_per_s <= 0:
        raise ValueError("gpu_hours_used and peak_flops_per_s must be > 0")
    return flops / flops_per_mac * 2 / (gpu_hours_used * SECONDS_PER_HOUR * peak_flops_per_s)


@dataclass(frozen=True)
class CostSummary:
    """GPU time and dollars for one flop count at one rate (`cost_summary`): ``gpu_s`` GPU-seconds, the others
    derived from it (hours, years of 365.25 days, dollars at ``usd_per_hour``)."""

    gpu_s: float
    usd_per_hour: float

    @property
    def gpu_hours(self) -> float:
        return self.gpu_s / SECONDS_PER_HOUR

    @property
    def gpu_years(self) -> float:
        return self.gpu_s / SECONDS_PER_YEAR

    @property
    def cost_usd(self) -> float:
        return self.gpu_hours * self.usd_per_hour


def cost_summary(flops: float, flops_per_mac: int, rate: GpuRate = NOTE_GPU) -> CostSummary:
    """GPU-seconds, -hours, -years and dollars for ``flops`` (counted with ``flops_per_mac``) at ``rate``."""
    return CostSummary(gpu_seconds(flops, flops_per_mac, rate), rate.usd_per_hour)
