"""The note (W. H. Press, "LLM Architecture, Scaling Laws, and Economics", 2025) as code: its Table 1
formulas, Table 2 use cases, Table 3 regenerated beside the printed values, and section 6 (DeepSeek).

Convention: every flop here is a multiply-add counted as ONE flop (the note's Table 1 caption) unless a
name says ``_fma2``/``FLOP`` (two per multiply-add, the datasheet/MFU convention). Memory rows are
element counts. Dollars and GPU-years in Table 3 use the note's ROUNDED $1e-18 per multiply-add;
``computed_exact_rate`` gives the exact $1.056e-18 (300e12 multiply-adds/s at $10,000 per GPU-year).

Table 2 reading (documented in docs/accounting.md): "K" in Table 2 is 1024 (n, V, d of A-C are then all
powers-of-two multiples, and V = 32768 is what reproduces case A's 180 M activations; V = 32000 gives
175 M -> "170 M"). Case D is a range: low = (n 100K, V 100K, d 16K, H 128, L 120), high = (n 200K,
V 200K, d 20K, H 160, L 160), K = 1024. The printed cache (1.3 T) and activations (90 B) need
n ~ 200K at the high end although Table 2 only says "n >~ 100K"; H = 160 (not 192) keeps d/H integral
and enters no Table 3 formula.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import cost
from .chinchilla import TOKENS_PER_PARAMETER, note_optimal_tokens
from .hardware import HARDWARE
from .flops import FLOP, MAC, decode_flops_per_token, forward_flops, training_flops
from .memory import kv_cache_elements, note_activation_elements, note_kv_cache_elements
from .params import count_parameters, total_parameters
from .shapes import ModelShape

K = 1024


# ----- the note's formulas (multiply-add = 1 flop) ------------------------------------------------
def note_parameters(n_layers: int, d_model: int, vocab_size: int) -> int:
    """Table 1 parameters ``12 L d^2 + 4 L d + 2 V d`` (untied input/output embeddings), elements."""
    return 12 * n_layers * d_model ** 2 + 4 * n_layers * d_model + 2 * vocab_size * d_model


def note_forward_flops(n_layers: int, seq_len: int, d_model: int, vocab_size: int) -> int:
    """Table 1 forward flops over n tokens ``12 L n d^2 + 2 L n^2 d + (2L + V) n d`` (multiply-adds)."""
    L, n, d, V = n_layers, seq_len, d_model, vocab_size
    return 12 * L * n * d * d + 2 * L * n * n * d + (2 * L + V) * n * d


def note_incremental_flops(n_layers: int, seq_len: int, d_model: int) -> int:
    """Section 4.1: one more token with a KV cache, ``L (12 d^2 + 2 n d)`` multiply-adds."""
    return n_layers * (12 * d_model ** 2 + 2 * seq_len * d_model)


def note_training_macs_per_token(d_model: int, n_layers: int, seq_len: int, vocab_size: int = 0) -> int:
    """Eq. (5) / n: ``(6 n d + 36 d^2) L + 3 V d`` multiply-adds per trained token (all-position loss)."""
    L, n, d = n_layers, seq_len, d_model
    return (6 * n * d + 36 * d * d) * L + 3 * vocab_size * d


def note_training_flops(n_layers: int, d_model: int, seq_len: int) -> int:
    """Eq. (6): ``240 L^2 d^3 (6 n + 36 d)`` multiply-adds = eq. (5)/n (no V) x ``D* = 240 L d^2``."""
    return 240 * n_layers ** 2 * d_model ** 3 * (6 * seq_len + 36 * d_model)


# ----- Table 2 ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UseCase:
    """One column of the note's Table 2 (sizes as counts, K = 1024)."""

    key: str
    label: str
    seq_len: int
    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int

    def shape(self) -> ModelShape:
        """The note's architecture at these sizes: GELU FFN of 4d, LayerNorm, MHA, untied embeddings."""
        return ModelShape(vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers,
                          n_heads=self.n_heads, seq_len=self.seq_len, ffn_kind="gelu",
                          norm_kind="layernorm", attention="mha", tied_embeddings=False,
                          name=f"note {self.key}")


USE_CASES: dict[str, UseCase] = {
    "A": UseCase("A", "Small-scale academic model (e.g. local LLaMA-7B)", 2048, 32 * K, 4096, 32, 32),
    "B": UseCase("B", "Mid-scale enterprise assistant (LLaMA-33B, Falcon-40B)", 4096, 64 * K, 6144, 48, 60),
    "C": UseCase("C", "Large-scale ca. 2021 (GPT-3, PaLM-62B class)", 8192, 80 * K, 12288, 96, 96),
    "D low": UseCase("D low", "State-of-the-art (2025), low end", 100 * K, 100 * K, 16 * K, 128, 120),
    "D high": UseCase("D high", "State-of-the-art (2025), high end", 200 * K, 200 * K, 20 * K, 160, 160),
}
CASES = tuple(USE_CASES)


def table2_shapes() -> dict[str, Any]:
    """``{"A": shape, "B": shape, "C": shape, "D": (low, high)}`` as `ModelShape` objects."""
    out: dict[str, Any] = {k: USE_CASES[k].shape() for k in ("A", "B", "C")}
    out["D"] = (USE_CASES["D low"].shape(), USE_CASES["D high"].shape())
    return out


# ----- Table 3 as printed -------------------------------------------------------------------------
@dataclass(frozen=True)
class Printed:
    """A printed value: the mantissa as printed, its scale, and half a unit of its last digit.

    Trailing zeros of an integer mantissa are not significant ("180" has unit 10, "200" unit 100).
    """

    text: str
    scale: float
    power: bool = False  # printed as "x 10^k" (flops, tokens) rather than with a K/M/B/T suffix

    @property
    def value(self) -> float:
        return float(self.text) * self.scale

    @property
    def half_unit(self) -> float:
        if "." in self.text:
            unit = 10.0 ** -len(self.text.split(".")[1])
        else:
            stripped = self.text.rstrip("0")
            unit = 10.0 ** (len(self.text) - len(stripped)) if stripped else 1.0
        return 0.5 * unit * self.scale

    @property
    def display(self) -> str:
        """As the note prints it: '6.7 B', '15e12', '$2.7K'-style suffixes K, M, B, T or a power of ten."""
        suffix = None if self.power else {1.0: "", 1e3: " K", 1e6: " M", 1e9: " B", 1e12: " T"}.get(self.scale)
        return self.text + suffix if suffix is not None else f"{self.text}e{round(math.log10(self.scale))}"

    def rounds_to(self, x: float) -> bool:
        """Whether ``x`` rounds to this printed value at its printed precision."""
        return abs(x - self.value) <= self.half_unit * (1 + 1e-12)


def _p(text: str, scale: float) -> Printed:
    return Printed(text, scale)


def _e(text: str, scale: float) -> Printed:
    return Printed(text, scale, power=True)


_B, _M, _T, _KK = 1e9, 1e6, 1e12, 1e3
TABLE3_PRINTED: dict[str, dict[str, Printed]] = {
    "parameters": {"A": _p("6.7", _B), "B": _p("28", _B), "C": _p("175", _B),
                   "D low": _p("400", _B), "D high": _p("800", _B)},
    "activations memory": {"A": _p("180", _M), "B": _p("600", _M), "C": _p("1.9", _B),
                           "D low": _p("30", _B), "D high": _p("90", _B)},
    "inference cache memory": {"A": _p("0.5", _B), "B": _p("3", _B), "C": _p("20", _B),
                               "D low": _p("0.4", _T), "D high": _p("1.3", _T)},
    "flops forward": {"A": _e("15", 1e12), "B": _e("125", 1e12), "C": _e("1.6", 1e15),
                      "D low": _e("80", 1e15), "D high": _e("400", 1e15)},
    "flops incremental": {"A": _e("7", 1e9), "B": _e("30", 1e9), "C": _e("200", 1e9),
                          "D low": _e("1", 1e12), "D high": _e("2", 1e12)},
    "optimal training set size": {"A": _e("130", 1e9), "B": _e("540", 1e9), "C": _e("3.5", 1e12),
                                  "D low": _e("8", 1e12), "D high": _e("15", 1e12)},
    "training total flops": {"A": _e("2.7", 1e21), "B": _e("50", 1e21), "C": _e("2", 1e24),
                             "D low": _e("20", 1e24), "D high": _e("100", 1e24)},
    "training total GPU-years": {"A": _p("0.27", 1), "B": _p("5", 1), "C": _p("200", 1),
                                 "D low": _p("2000", 1), "D high": _p("10000", 1)},
    "training cost (2025)": {"A": _p("2.7", _KK), "B": _p("50", _KK), "C": _p("2", _M),
                             "D low": _p("20", _M), "D high": _p("100", _M)},
}
TABLE3_UNITS = {"parameters": "params", "activations memory": "elements", "inference cache memory": "elements",
                "flops forward": "flops_mac", "flops incremental": "flops_mac",
                "optimal training set size": "tokens", "training total flops": "flops_mac",
                "training total GPU-years": "gpu_years", "training cost (2025)": "usd"}
TABLE3_FORMULAS = {
    "parameters": "12 L d^2 + 4 L d + 2 V d",
    "activations memory": "13 n d + n V",
    "inference cache memory": "2 L n d",
    "flops forward": "12 L n d^2 + 2 L n^2 d + (2L + V) n d",
    "flops incremental": "L (12 d^2 + 2 n d)",
    "optimal training set size": "240 L d^2 (eq. 4 without its 40 V d term)",
    "training total flops": "240 L^2 d^3 (6 n + 36 d) (eq. 6)",
    "training total GPU-years": "eq. 6 x $1e-18 / $10,000 per GPU-year",
    "training cost (2025)": "eq. 6 x $1e-18",
}

D_RATIO_TOLERANCE = 1.3
"""Case D's endpoints are printed to about one "nice" significant figure (0.79e12 -> 1e12,
94e24 -> 100e24): a D cell passes within a factor 1.3 of the printed endpoint."""

DOCUMENTED_EXCEPTIONS: dict[tuple[str, str], tuple[float, str]] = {
    ("parameters", "C"): (0.01, "the formula gives 176.0 B; the printed 175 B is GPT-3's published count"),
    ("activations memory", "C"): (0.05, "the formula gives 1.98 B; the printed 1.9 B is truncated"),
}
"""A-C cells that do not round to the printed value: (relative tolerance, reason)."""


def _computed(quantity: str, u: UseCase) -> dict[str, float | None]:
    """Our value for one Table 3 cell by the note's formula, plus the exact accounting where it exists."""
    L, n, d, V = u.n_layers, u.seq_len, u.d_model, u.vocab_size
    s = u.shape()
    train = note_training_flops(L, d, n)
    out: dict[str, float | None] = {"exact_accounting": None, "computed_exact_rate": None}
    if quantity == "parameters":
        out.update(computed=note_parameters(L, d, V), exact_accounting=total_parameters(s))
    elif quantity == "activations memory":
        out.update(computed=note_activation_elements(n, d, V))
    elif quantity == "inference cache memory":
        out.update(computed=note_kv_cache_elements(L, n, d), exact_accounting=kv_cache_elements(s, n))
    elif quantity == "flops forward":
        out.update(computed=note_forward_flops(L, n, d, V),
                   exact_accounting=forward_flops(s, n, flops_per_mac=MAC)["total"])
    elif quantity == "flops incremental":
        out.update(computed=note_incremental_flops(L, n, d),
                   exact_accounting=decode_flops_per_token(s, n, flops_per_mac=MAC))
    elif quantity == "optimal training set size":
        out.update(computed=note_optimal_tokens(L, d, V, include_vocab=False),
                   eq4_with_vocab=note_optimal_tokens(L, d, V, include_vocab=True))
    elif quantity == "training total flops":
        out.update(computed=train)
    elif quantity == "training total GPU-years":
        out.update(computed=cost.note_rounded_gpu_years(train), computed_exact_rate=cost.gpu_years(train, MAC))
    elif quantity == "training cost (2025)":
        out.update(computed=cost.note_rounded_cost_usd(train), computed_exact_rate=cost.cost_usd(train, MAC))
    else:
        raise ValueError(f"unknown Table 3 quantity {quantity!r}")
    return out


def table3_comparison() -> list[dict[str, Any]]:
    """Every Table 3 cell: printed, computed (the note's formula), ratio and whether it is within the
    stated tolerance. One dict per (quantity, case); case D is two rows, ``D low`` and ``D high``."""
    rows = []
    for quantity, printed_row in TABLE3_PRINTED.items():
        for case in CASES:
            pr, u = printed_row[case], USE_CASES[case]
            c = _computed(quantity, u)
            value = float(c["computed"])
            rounds = pr.rounds_to(value)
            if case.startswith("D"):
                tol = f"within x{D_RATIO_TOLERANCE} (D printed to ~1 figure)"
                within = 1 / D_RATIO_TOLERANCE <= value / pr.value <= D_RATIO_TOLERANCE
            elif (quantity, case) in DOCUMENTED_EXCEPTIONS:
                rel, why = DOCUMENTED_EXCEPTIONS[(quantity, case)]
                tol = f"within {rel:.0%}: {why}"
                within = abs(value / pr.value - 1) <= rel
            else:
                tol = "rounds to the printed digits"
                within = rounds
            row = {"quantity": quantity, "case": case, "unit": TABLE3_UNITS[quantity],
                   "formula": TABLE3_FORMULAS[quantity], "printed_text": pr.text, "printed_display": pr.display, "printed": pr.value,
                   "computed": value, "ratio": value / pr.value, "rounds_to_printed": rounds,
                   "tolerance": tol, "within_tolerance": within,
                   "exact_accounting": c["exact_accounting"], "computed_exact_rate": c["computed_exact_rate"]}
            if "eq4_with_vocab" in c:
                row["eq4_with_vocab"] = c["eq4_with_vocab"]
            rows.append(row)
    return rows


def inference_usd_per_million_tokens_case(case: str, exact_rate: bool = False) -> float:
    """The note's sanity check: incremental flops per token x 1e6 x $ per multiply-add (case D: $1-$2)."""
    u = USE_CASES[case]
    macs = note_incremental_flops(u.n_layers, u.seq_len, u.d_model)
    if exact_rate:
        return cost.inference_usd_per_million_tokens(macs, MAC)
    return macs * 1e6 * cost.NOTE_ROUNDED_USD_PER_MAC


# ----- Section 6: DeepSeek -----------------------------------------------------------------------
DEEPSEEK_NOTE = {"d_model": 7168, "n_layers": 61, "n_heads": 128, "inference_seq_len": 128 * K,
                 "train_seq_len": 32 * K, "total_params": 671e9}
DEEPSEEK_REPORTED = {
    "total_params": 671e9, "active_params": 37e9, "pretrain_tokens": 14.8e12, "pretrain_seq_len": 4096,
    "gpu_hours_pretrain": 2.664e6, "gpu_hours_context_extension": 0.119e6, "gpu_hours_post_training": 0.005e6,
    "gpu_hours_total": 2.788e6, "usd_per_gpu_hour": 2.0, "usd_total": 5.576e6,
    "train_flops_per_token_reported": 250e9, "peak_bf16_flops_per_s": HARDWARE["h800"].peak_bf16_flops_per_s,
}
"""DeepSeek-V3 technical report (arXiv 2412.19437): H800 GPU-hours, $2/GPU-hour, 14.8T tokens at 4K."""
SECTION6_PRINTED = {"active_12Ld2_params": _p("38", _B), "chinchilla_tokens": _p("13.4", _T),
                    "train_flops_mac": _e("2.9", 1e24), "gpu_hours": _p("2.5", _M), "cost_usd": _p("2.9", _M),
                    "reported_gpu_hours": _p("2.8", _M), "reported_usd": _p("5.6", _M)}
"""Section 6 as printed (the text says 38B, 13.4T, 2.9e24 flops, 2.5M GPU-hours, $2.9M; reported 2.8M h, $5.6M)."""


def section6() -> dict[str, Any]:
    """The note's DeepSeek arithmetic recomputed (multiply-add = 1 flop, n = 32K, $1e-18 per flop)."""
    d, L, n = DEEPSEEK_NOTE["d_model"], DEEPSEEK_NOTE["n_layers"], DEEPSEEK_NOTE["train_seq_len"]
    tokens = DEEPSEEK_REPORTED["pretrain_tokens"]
    chin = TOKENS_PER_PARAMETER * DEEPSEEK_NOTE["total_params"]
    per_token = note_training_macs_per_token(d, L, n)
    macs = per_token * tokens
    usd = cost.note_rounded_cost_usd(macs)
    usd_per_hour = cost.NOTE_GPU.usd_per_hour
    printed_usd = SECTION6_PRINTED["cost_usd"].value
    return {
        "convention": "multiply-add = 1 flop (the note's)",
        "d_model": d, "n_layers": L, "n_heads": DEEPSEEK_NOTE["n_heads"], "train_seq_len": n,
        "active_12Ld2_params": 12 * L * d * d,
        "total_params": DEEPSEEK_NOTE["total_params"],
        "chinchilla_tokens": chin, "reported_tokens": tokens, "reported_over_chinchilla": tokens / chin,
        "train_flops_mac_per_token": per_token,
        "train_flops_mac": macs, "train_flops_fma2": macs * FLOP,
        "cost_usd_rounded_rate": usd,
        "gpu_hours_note_method": printed_usd / usd_per_hour,
        "gpu_hours_from_unrounded_usd": usd / usd_per_hour,
        "gpu_hours_exact_300T": cost.gpu_hours(macs, MAC),
        "cost_usd_exact_rate": cost.cost_usd(macs, MAC),
        "note_usd_per_gpu_hour": usd_per_hour,
        "reported_gpu_hours": DEEPSEEK_REPORTED["gpu_hours_total"],
        "reported_usd": DEEPSEEK_REPORTED["usd_total"],
        "reported_over_note_usd": DEEPSEEK_REPORTED["usd_total"] / usd,
        "printed": {k: v.value for k, v in SECTION6_PRINTED.items()},
    }


def deepseek_v3_shape(seq_len: int = 4096) -> ModelShape:
    """DeepSeek-V3 from the shipped ``configs/deepseek-v3.json`` at its 4K pretraining window."""
    from .hf_config import load_shipped
    return load_shipped("deepseek-v3", seq_len=seq_len)


def deepseek_v3_estimates(shape: ModelShape | None = None, tokens: float | None = None,
                          seq_len: int = 4096) -> dict[str, Any]:
    """DeepSeek-V3's pretraining compute three ways, in both conventions, with the MFU each implies
    against the reported 2.664M H800-hours at 989 TFLOP/s (bf16 dense, 2 per multiply-add).

    Methods: the note's ``(6 n d + 36 d^2) L`` per token (at its n = 32K and at the real 4K);
    ``6 N_active D`` (our exact active count, and the published 37B); the exact architecture
    (`accounting.flops`: MLA, 3 dense + 58 MoE layers with 8 routed + 1 shared expert, causal attention,
    output head; MTP module excluded, and included as a separate line).
    """
    shape = shape if shape is not None else deepseek_v3_shape(seq_len)
    tokens = DEEPSEEK_REPORTED["pretrain_tokens"] if tokens is None else tokens
    counts = count_parameters(shape)
    d, L = shape.d_model, shape.n_layers
    peak, hours = DEEPSEEK_REPORTED["peak_bf16_flops_per_s"], DEEPSEEK_REPORTED["gpu_hours_pretrain"]
    h800 = cost.gpu_rate("h800", usd_per_hour=DEEPSEEK_REPORTED["usd_per_gpu_hour"])  # bf16 dense peak
    macs_per_token = {
        "note_formula_n32768": float(note_training_macs_per_token(d, L, 32 * K)),
        f"note_formula_n{seq_len}": float(note_training_macs_per_token(d, L, seq_len)),
        "six_n_active_d": 3.0 * counts.active,
        "six_n_active_d_published_37b": 3.0 * DEEPSEEK_REPORTED["active_params"],
        f"exact_causal_n{seq_len}": training_flops(shape, 1, seq_len, flops_per_mac=MAC, causal=True),
        f"exact_causal_n{seq_len}_with_mtp": training_flops(shape, 1, seq_len, flops_per_mac=MAC, causal=True,
                                                            include_mtp=True),
    }
    methods = {}
    for name, mpt in macs_per_token.items():
        total_mac = mpt * tokens
        methods[name] = {
            "flops_mac_per_token": mpt, "flops_fma2_per_token": mpt * FLOP,
            "flops_mac": total_mac, "flops_fma2": total_mac * FLOP,
            "implied_mfu_bf16": cost.implied_mfu(total_mac, MAC, hours, peak),
            "h800_hours_at_peak": cost.gpu_hours(total_mac, MAC, h800),
            "cost_usd_h800_at_peak": cost.cost_usd(total_mac, MAC, h800),
            "cost_usd_note_gpu_exact_rate": cost.cost_usd(total_mac, MAC),
            "cost_usd_note_rounded_rate": cost.note_rounded_cost_usd(total_mac),
        }
    return {
        "tokens": tokens, "seq_len": seq_len,
        "total_params": counts.total, "active_params": counts.active, "mtp_params": counts.mtp_total,
        "published_total_params": DEEPSEEK_REPORTED["total_params"],
        "published_active_params": DEEPSEEK_REPORTED["active_params"],
        "reported_gpu_hours_pretrain": hours, "reported_gpu_hours_total": DEEPSEEK_REPORTED["gpu_hours_total"],
        "reported_usd_total": DEEPSEEK_REPORTED["usd_total"], "peak_bf16_flops_per_s": peak,
        "methods": methods,
    }
