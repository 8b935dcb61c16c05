"""The Python API behind ``python -m accounting``: one function per command, each returning a frozen dataclass.

=====================  ========================  =======================================================
command                function                  result
=====================  ========================  =======================================================
``table3``             `table3()`                `Table3Result`: the note's Table 3 beside the printed values
``deepseek``           `deepseek()`              `DeepSeekResult`: section 6 and DeepSeek-V3 by six methods
``params``             `parameters(config)`      `ParamsResult`: total / active parameters by component
``cost``               `price(config, tokens)`   `CostResult`: training flops, GPU time, dollars, inference
``serve``              `serve(config, gpu, ...)` `ServeResult`: roofline of decode and prefill, $ per Mtok
``serving-check``      `serving_check()`         `ServingCheckResult`: DeepSeek's disclosed layouts; case D
=====================  ========================  =======================================================

``result.to_dict()`` is exactly the command's ``--format json`` object (`dataclasses.asdict`, the fields in
order, with an optional field that is None left out: only `ParamsResult.published`). Field names carry units
(``_params``, ``_tokens``, ``_flops_fma2`` = two flops per multiply-add, ``_flops_mac`` = one, ``_bytes``,
``_s``, ``_usd``); docs/accounting.md lists every field.

``config`` is anything `load_shape` takes: a shipped name (``'qwen3-30b-a3b'``), a file, a folder, or a
`ModelShape` (the result's ``config`` field is then ``"ModelShape"``; otherwise ``shipped:NAME`` or the path read). The defaults are the CLI's: flops count TWO per multiply-add (``FLOP``) and attention is causal;
the note's own convention (one per multiply-add, full n x n attention) is used only where the note is
reproduced (`table3`, `deepseek`, `accounting.reproduce`) and is named there.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Sequence

from . import cost as _cost, scaling_cli as _scaling_cli, serving as _serving
from .chinchilla import FITS, chinchilla_tokens
from .config_files import LoadedConfig, load_shape, published_counts, resolve_config
from .flops import FLOP, MAC, decode_flops_per_token, six_n_d, training_flops_per_token
from .gpu_count import auto_layout, wall_clock
from .hardware import get_hardware, resolve_gpu
from .memory import kv_cache_elements_per_token
from .params import COMPONENTS, active_parameters_with_input_embedding, count_parameters
from .reproduce import deepseek as _deepseek, note as _note, note_section6 as _note_section6
from .shapes import ModelShape
from .train_memory_cli import TrainMemoryReport, train_memory as _train_memory
from .training_settings import Settings as TrainingSettings

__all__ = ["Result", "Table3Result", "DeepSeekResult", "ParamsResult", "CostResult", "ServeResult",
           "ServingCheckResult", "TrainMemoryReport", "TrainingSettings", "table3", "deepseek", "parameters", "price",
           "serve", "serving_check", "train_memory", "scaling_laws", "ScalingResult", "load_shape",
           "parse_count", "CONVENTION"]

CONVENTION = {"flops_mac": "multiply-add = 1 flop (the note's convention)",
              "flops_fma2": "multiply-add = 2 flops (datasheet peaks, MFU, 6ND)"}
"""The two flop conventions, as the JSON outputs state them."""


@dataclass(frozen=True)
class Result:
    """Base of every command's result. ``to_dict()`` is the command's JSON object."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ()
    """Fields left out of `to_dict` when None."""

    def to_dict(self) -> dict[str, Any]:
        """`dataclasses.asdict`, fields in order, with the `OPTIONAL` fields that are None left out."""
        data = asdict(self)
        for key in self.OPTIONAL:
            if data.get(key) is None:
                data.pop(key, None)
        return data


def _config(config: str | Path | ModelShape, seq_len: int | None = None) -> LoadedConfig:
    if isinstance(config, ModelShape):
        return LoadedConfig(load_shape(config, seq_len), "ModelShape")
    return resolve_config(config, seq_len)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


_SCALE = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}


def parse_count(text: str | float, what: str = "value") -> float:
    """'14.8e12', '14.8T', '2B', '1500000' (or a number) -> a positive finite number (K/M/B/G/T/P
    suffixes, powers of 1000); ValueError naming ``what`` otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().replace("_", "").replace(",", "")
        suffix = s[-1:].upper() if s[-1:].isalpha() and s[-1:].upper() in _SCALE else ""
        number = s[:-1] if suffix else s
        try:
            value = float(number) * _SCALE[suffix]
        except ValueError:
            raise ValueError(f"{what} must be a positive number like 14.8e12 or 14.8T, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {text!r}")
    return value


# ----- table3 -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table3Result(Result):
    """The note's Table 3 recomputed from its Table 2 (flops: ONE per multiply-add, the note's; memory in
    elements). ``rows``: one dict per (quantity, case) cell, with the printed and computed values."""

    convention: str
    usd_per_flop_mac_rounded: float
    usd_per_flop_mac_exact: float
    use_cases: dict[str, dict[str, int]]
    rows: list[dict[str, Any]]
    inference_usd_per_million_tokens: dict[str, dict[str, float]]


def table3() -> Table3Result:
    """``python -m accounting table3``: the note's Table 3 beside its printed values (`accounting.reproduce.note`)."""
    return Table3Result(
        convention=CONVENTION["flops_mac"] + "; memory rows are elements",
        usd_per_flop_mac_rounded=_cost.NOTE_ROUNDED_USD_PER_MAC,
        usd_per_flop_mac_exact=_cost.usd_per_flop(_cost.NOTE_GPU, MAC),
        use_cases={k: {"seq_len": u.seq_len, "vocab_size": u.vocab_size, "d_model": u.d_model,
                       "n_heads": u.n_heads, "n_layers": u.n_layers} for k, u in _note.USE_CASES.items()},
        rows=_note.table3_comparison(),
        inference_usd_per_million_tokens={
            case: {"rounded_rate_usd": _note.inference_usd_per_million_tokens_case(case),
                   "exact_rate_usd": _note.inference_usd_per_million_tokens_case(case, exact_rate=True)}
            for case in _note.CASES})


# ----- params -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamsResult(Result):
    """Exact parameter counts of one shape. ``active_params`` counts ONE row of the input embedding
    (DeepSeek's convention), ``active_with_input_embedding_params`` the whole table; MTP modules are not in
    ``total_params``. ``published``: the published counts of the shipped model with the same architecture
    and sizes (matched on content, `accounting.config_files.published_counts`), else None (left out of JSON)."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("published",)
    name: str
    config: str
    convention: str
    shape: dict[str, Any]
    total_params: int
    active_params: int
    active_with_input_embedding_params: int
    active_fraction: float
    mtp_params: int
    mtp_active_params: int
    total_with_mtp_params: int
    components: dict[str, dict[str, int]]
    chinchilla_total_basis_tokens: int
    chinchilla_active_basis_tokens: int
    kv_cache_elements_per_token: int
    kv_cache_bytes_per_token_bf16: int
    published: dict[str, Any] | None = None


def _params(shape: ModelShape, source: str) -> ParamsResult:
    c = count_parameters(shape)
    pub = published_counts(shape)
    return ParamsResult(
        name=shape.name, config=source,
        convention="active = what one token touches, with ONE row of the input embedding (DeepSeek's); "
                   "active_with_input_embedding counts the whole V x d table (most model cards); "
                   "MTP modules are excluded from total",
        shape=shape.to_dict(), total_params=c.total, active_params=c.active,
        active_with_input_embedding_params=active_parameters_with_input_embedding(shape),
        active_fraction=c.active_fraction, mtp_params=c.mtp_total, mtp_active_params=c.mtp_active,
        total_with_mtp_params=c.total_with_mtp,
        components={k: {"total_params": c.total_by_component[k], "active_params": c.active_by_component[k]}
                    for k in COMPONENTS},
        chinchilla_total_basis_tokens=chinchilla_tokens(c.total),
        chinchilla_active_basis_tokens=chinchilla_tokens(c.active),
        kv_cache_elements_per_token=kv_cache_elements_per_token(shape),
        kv_cache_bytes_per_token_bf16=2 * kv_cache_elements_per_token(shape),
        published=None if pub is None else {"total_params": pub["total"], "active_params": pub["active"],
                                            "source": pub["source"]})


def parameters(config: str | Path | ModelShape, seq_len: int | None = None) -> ParamsResult:
    """``python -m accounting params --config CONFIG [--seq-len n]``: total and active parameters by component,
    Chinchilla tokens (20 per parameter) and the KV cache per token. ``seq_len`` replaces the config's context
    length (no parameter count depends on it). (Named ``parameters``, not ``params``: `accounting.params` is
    the counting module.)"""
    loaded = _config(config, seq_len)
    return _params(loaded.shape, loaded.source)


# ----- cost (price) -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CostResult(Result):
    """Training and inference cost of ``tokens`` trained tokens at window ``seq_len``. Flops: ``_flops_fma2``
    count two per multiply-add, ``_flops_mac`` one; ``gpu.peak_convention`` says which the preset's peak uses.
    ``compute_optimal``: the Hoffmann (2022) and Besiroglu (2024) optimal params/tokens at this FLOP budget."""

    name: str
    config: str
    convention: dict[str, str]
    tokens: float
    seq_len: int
    causal_attention: bool
    gpu: dict[str, Any]
    total_params: int
    active_params: int
    chinchilla_total_basis_tokens: int
    chinchilla_active_basis_tokens: int
    training_flops_fma2_per_token: float
    training_flops_mac_per_token: float
    training_flops_fma2: float
    training_flops_mac: float
    six_n_active_d_flops_fma2: float
    gpu_s: float
    gpu_hours: float
    gpu_years: float
    cost_usd: float
    usd_per_flop_fma2: float
    year: float
    cost_usd_at_year: float
    decode_flops_fma2_per_token: int
    inference_usd_per_million_tokens: float
    compute_optimal: dict[str, dict[str, float]]
    gpus: int | None = None
    wall_clock_hours: float | None = None
    wall_clock_days: float | None = None
    gpus_auto: dict[str, Any] | None = None
    """``gpus='auto'`` only: the training-memory layout chosen (`cost_gpus_auto`); ``gpus`` is its count."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("gpus", "wall_clock_hours", "wall_clock_days", "gpus_auto")


def _is_auto(gpus: Any) -> bool:
    return isinstance(gpus, str) and gpus.strip().lower() == "auto"


def cost_gpus_auto(shape: ModelShape, seq_len: int, gpu: str) -> dict[str, Any]:
    """``cost --gpus auto``: the smallest GPU count (with its layout) whose training memory per GPU fits
    ``gpu`` (`accounting.gpu_count.auto_layout` with the default settings: bf16 activations and weights,
    AdamW with fp32 master weights and moments, no recompute) for micro-batches of ONE sequence of
    ``seq_len`` tokens. Bytes per GPU (1 GB = 1e9). ValueError (one line) when ``gpu`` has no memory recorded
    or no layout fits."""
    hardware = resolve_gpu(gpu)
    if hardware.memory_bytes is None:
        raise ValueError(f"--gpus auto needs a --gpu with its memory recorded (h100-sxm, h800, h200, ...); "
                         f"{gpu} has none")
    try:
        plan, reason = auto_layout(shape, TrainingSettings(seq_len=seq_len, micro_batch=1), hardware)
    except ValueError as e:
        raise ValueError(f"{e} (cost prices train-memory's defaults: no recompute, bf16 activations; "
                         f"`train-memory --gpus auto --recompute full` tries more)") from None
    d = plan.to_dict()
    return {"gpu": hardware.name, "seq_len": seq_len, "micro_batch": 1, "layout": d["layout"],
            "per_gpu_bytes": d["per_gpu_bytes"], "capacity_bytes": d["capacity_bytes"], "reason": reason}


def price(config: str | Path | ModelShape, tokens: float | str, seq_len: int | None = None, *,
          gpu: str = "press2025", usd_per_hour: float | None = None, mfu: float | None = None,
          causal: bool = True, year: float = _cost.NOTE_BASE_YEAR, gpus: int | str | None = None) -> CostResult:
    """``python -m accounting cost``: price training on ``tokens`` tokens (a number or text like ``'14.8T'``)
    at window ``seq_len`` (default: the config's own context length, ``shape.seq_len``).

    ``gpu``: an `accounting.hardware` preset (default ``press2025``, the note's GPU: 300e12 multiply-adds/s
    at $10K per GPU-year); ``usd_per_hour`` and ``mfu`` (in (0, 1], default 1.0) override it. Attention is
    causal unless ``causal=False`` (full n x n scores). ``year``: the dollar figure also at that year, cost
    halving every `cost.COST_HALVING_YEARS` years from 2025. ``gpus``: also the wall-clock time on that many
    GPUs (GPU-hours at this MFU / gpus); ``gpus='auto'``: at the smallest count whose training memory fits
    ``gpu`` (`cost_gpus_auto`, the field ``gpus_auto``; ``gpu`` must have its memory recorded, e.g. ``h100-sxm``).
    Inputs so large that a figure overflows give
    ``inf`` fields (the CLI refuses them).
    """
    tokens = parse_count(tokens, "tokens")
    loaded = _config(config)
    shape = loaded.shape
    seq_len = shape.seq_len if seq_len is None else _positive_int("seq_len", seq_len)
    if mfu is not None and not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu!r}")
    if usd_per_hour is not None and not (math.isfinite(usd_per_hour) and usd_per_hour >= 0):
        raise ValueError(f"usd_per_hour must be a finite number >= 0, got {usd_per_hour!r}")
    rate = _cost.gpu_rate(gpu, usd_per_hour=None if usd_per_hour is None else float(usd_per_hour),
                          mfu=None if mfu is None else float(mfu))
    auto = None
    if _is_auto(gpus):
        auto = cost_gpus_auto(_config(config, seq_len).shape, seq_len, gpu)
        gpus = auto["layout"]["gpus"]
    c = count_parameters(shape)
    fpt2 = training_flops_per_token(shape, seq_len, flops_per_mac=FLOP, causal=causal)
    flops2 = fpt2 * tokens
    summary = _cost.cost_summary(flops2, FLOP, rate)
    decode2 = decode_flops_per_token(shape, seq_len, flops_per_mac=FLOP)
    return CostResult(
        name=shape.name, config=loaded.source, convention=dict(CONVENTION),
        tokens=tokens, seq_len=seq_len, causal_attention=causal,
        gpu={"name": rate.name, "peak_flops_per_s": rate.peak_flops_per_s,
             "peak_convention": CONVENTION["flops_mac" if rate.rate_flops_per_mac == 1 else "flops_fma2"],
             "usd_per_hour": rate.usd_per_hour, "mfu": rate.mfu,
             "achieved_flops_fma2_per_s": rate.flops_per_s(FLOP)},
        total_params=c.total, active_params=c.active,
        chinchilla_total_basis_tokens=chinchilla_tokens(c.total),
        chinchilla_active_basis_tokens=chinchilla_tokens(c.active),
        training_flops_fma2_per_token=fpt2, training_flops_mac_per_token=fpt2 / FLOP,
        training_flops_fma2=flops2, training_flops_mac=flops2 / FLOP,
        six_n_active_d_flops_fma2=six_n_d(c.active, tokens),
        gpu_s=summary.gpu_s, gpu_hours=summary.gpu_hours, gpu_years=summary.gpu_years,
        cost_usd=summary.cost_usd, usd_per_flop_fma2=_cost.usd_per_flop(rate, FLOP),
        year=year, cost_usd_at_year=_cost.cost_at_year(summary.cost_usd, year),
        decode_flops_fma2_per_token=decode2,
        inference_usd_per_million_tokens=_cost.inference_usd_per_million_tokens(decode2, FLOP, rate),
        compute_optimal={fit: dict(zip(("params", "tokens"), FITS[fit].compute_optimal(flops2))) for fit in FITS},
        **({} if gpus is None else wall_clock(summary.gpu_hours, gpus)), gpus_auto=auto)


# ----- deepseek ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeepSeekResult(Result):
    """The note's section 6 recomputed (flops ONE per multiply-add, as the note counts) and DeepSeek-V3 from its
    shipped config: ``deepseek_v3.params`` (as `ParamsResult.to_dict`) and ``deepseek_v3.estimates``
    (pretraining compute by six methods, both conventions, implied MFU)."""

    convention: dict[str, str]
    section6: dict[str, Any]
    deepseek_v3: dict[str, Any]
    scaling: dict[str, Any]
    """The published scaling laws put to DeepSeek-V3 on its 14.8T tokens (`accounting.scaling_cli.deepseek_section`)."""


def deepseek() -> DeepSeekResult:
    """``python -m accounting deepseek``: section 6 of the note, DeepSeek-V3 priced six ways and the published
    scaling laws put to it."""
    shape = _deepseek.deepseek_v3_shape(_deepseek.DEEPSEEK_REPORTED["pretrain_seq_len"])
    return DeepSeekResult(
        convention=dict(CONVENTION), section6=_note_section6.section6(),
        deepseek_v3={"config": "shipped:deepseek-v3", "params": _params(shape, "shipped:deepseek-v3").to_dict(),
                     "estimates": _deepseek.deepseek_v3_estimates(shape)},
        scaling=_scaling_cli.deepseek_section(shape))


# ----- serve ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServeResult(Result):
    """A roofline of decode and prefill for one replica, one row per batch (concurrent sequences per GPU);
    flops TWO per multiply-add, bytes (1 GB = 1e9), seconds, US dollars (`accounting.serving.serve`)."""

    name: str
    config: str
    convention: str
    rows: list[_serving.ServeRow]
    gpus_auto: dict[str, Any] | None = None
    """``gpus='auto'`` only: the GPU count chosen and why (`serve_gpus_auto`)."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ("gpus_auto",)


def serve_gpus_auto(shape: ModelShape, hw: Any, layout: _serving.Layout, batch: float, context: int) -> dict[str, Any]:
    """``serve --gpus auto``: the smallest power-of-two GPU count G (dividing the routed-expert copies of an
    MoE) at which the weights, the KV cache of ``batch`` sequences per GPU at ``context`` and the workspace
    fit one GPU (`accounting.serving.smallest_fitting_gpus`); bytes per GPU at G and, for the reason, at G/2."""
    g = _serving.smallest_fitting_gpus(shape, hw, layout, context, batch)
    fit = _serving.memory_fit(shape, hw, replace(layout, gpus=g), batch, context)
    lay = replace(layout, gpus=g).resolved(shape)
    parts = (f"weights {fit.weights_bytes / 1e9:.1f} GB + KV cache {fit.kv_cache_bytes / 1e9:.1f} GB + "
             f"workspace {fit.workspace_bytes / 1e9:.1f} GB = {fit.bytes_needed / 1e9:.1f} GB of "
             f"{fit.bytes_available / 1e9:g} GB per GPU")
    why = (f"{g} GPU{'s' if g > 1 else ''} (tp {lay.tp}, ep {g if shape.is_moe else 1}) is the smallest power of two"
           + (" dividing the routed-expert copies" if shape.is_moe else "")
           + f" that holds {batch:g} sequence(s) per GPU at context {context}: {parts}")
    if g > 1:
        try:
            half = _serving.memory_fit(shape, hw, replace(layout, gpus=g // 2), batch, context)
            why += f"; {g // 2} GPUs would need {half.bytes_needed / 1e9:.1f} GB per GPU"
        except ValueError as e:  # G/2 is not a layout this model takes
            why += f"; {g // 2} GPUs is no layout ({e})"
    return {"gpus": g, "tp": lay.tp, "batch": batch, "context": context, "weights_bytes_per_gpu": fit.weights_bytes,
            "kv_cache_bytes_per_gpu": fit.kv_cache_bytes, "workspace_bytes_per_gpu": fit.workspace_bytes,
            "bytes_needed_per_gpu": fit.bytes_needed, "bytes_available_per_gpu": fit.bytes_available,
            "reason": why}


def serve(config: str | Path | ModelShape, gpu: str, batch: float | Sequence[float], context: int, *,
          gpus: int | str = 1, prompt_len: int | None = None, weights: str = "bf16", kv_dtype: str = "bf16",
          usd_per_hour: float | None = None, efficiency: float = 1.0, tp: int | None = None,
          redundant_experts: int = 0, mtp_acceptance: float = 0.0, cache_hit_share: float = 0.0,
          dense_equivalent: str | None = None) -> ServeResult:
    """``python -m accounting serve``: decode and prefill of ``config`` on ``gpus`` x ``gpu`` (a preset with
    HBM figures: ``h100-sxm``, ``h800``, ``h200``, ``h100-pcie``, ``a100``) at ``batch`` sequences per GPU (one
    value or several: one row each) with ``context`` tokens cached. Options as the CLI's (``--tp``,
    ``--redundant-experts``, ...); ``dense_equivalent='active'|'total'`` prices instead a dense model with the
    config's attention and widths whose parameters equal the MoE's active or total count. ``gpus='auto'``:
    the smallest count that holds the weights and the KV cache of the largest ``batch`` (`serve_gpus_auto`,
    the field ``gpus_auto``).
    """
    loaded = _config(config)
    shape = loaded.shape
    batches = [batch] if isinstance(batch, (int, float)) else list(batch)
    if not batches or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not (math.isfinite(b) and b > 0)
                          for b in batches):
        raise ValueError(f"batch must be one or more numbers > 0, got {batch!r}")
    if dense_equivalent is not None:
        if dense_equivalent not in ("active", "total"):
            raise ValueError(f"dense_equivalent must be 'active' or 'total', got {dense_equivalent!r}")
        if not shape.is_moe:
            raise ValueError(f"--dense-equivalent needs an MoE config; {shape.name} is dense")
        c = count_parameters(shape)
        target = c.active if dense_equivalent == "active" else c.total
        shape = _serving.dense_equivalent(shape, target, name=f"dense, {dense_equivalent} params of {shape.name}")
    if cache_hit_share >= 1:
        raise ValueError("--cache-hit-share must be below 1")
    hw = get_hardware(gpu)
    auto = None
    if _is_auto(gpus):
        auto = serve_gpus_auto(shape, hw, _serving.Layout(gpus=1, tp=tp, redundant_experts=redundant_experts,
                                                          weights_dtype=weights, kv_dtype=kv_dtype),
                               float(max(batches)), context)
        gpus = auto["gpus"]
    layout = _serving.Layout(gpus=gpus, tp=tp, redundant_experts=redundant_experts, weights_dtype=weights,
                             kv_dtype=kv_dtype)
    layout.resolved(shape)  # one-line error for a bad layout before any work
    rows = [_serving.serve(shape, hw, layout, float(b), context, prompt_len=prompt_len,
                           usd_per_gpu_hour=None if usd_per_hour is None else float(usd_per_hour), efficiency=efficiency, mtp_acceptance=mtp_acceptance, cache_hit_share=cache_hit_share)
            for b in batches]
    rows = [replace(r, batch=int(r.batch)) if r.batch == int(r.batch) else r for r in rows]
    return ServeResult(name=shape.name, config=loaded.source,
                       convention="flops: 2 per multiply-add; bytes (1 GB = 1e9); seconds; US dollars; "
                                  "batch = concurrent sequences per GPU; bound = the slowest of compute, memory, "
                                  "communication (full overlap)",
                       rows=rows, gpus_auto=auto)


# ----- serving-check ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServingCheckResult(Result):
    """DeepSeek-V3 in DeepSeek's disclosed serving layouts against what it achieved (``deepseek``), and the
    note's case D with the roofline (``note_case_d``); flops TWO per multiply-add."""

    convention: str
    deepseek: _deepseek.DisclosedServingCheck
    note_case_d: list[_note.CaseDRoofline]


def serving_check(context: int = 4096, prompt_len: int = 4096) -> ServingCheckResult:
    """``python -m accounting serving-check``: ``context`` and ``prompt_len`` are assumed (not disclosed)."""
    _positive_int("context", context)
    _positive_int("prompt_len", prompt_len)
    return ServingCheckResult(convention="flops: 2 per multiply-add; tokens/s; US dollars",
                              deepseek=_deepseek.deepseek_disclosed_check(context, prompt_len),
                              note_case_d=_note.note_case_d_roofline())


# ----- train-memory -------------------------------------------------------------------------------------------
def train_memory(config: str | Path | ModelShape, seq_len: int, micro_batch: int = 1, gpus: int | str = 1, *,
                 tp: int = 1, pp: int = 1, ep: int = 1, zero: int = 1, sp: bool = False, gpu: str = "h100-sxm",
                 **settings: Any) -> TrainMemoryReport:
    """``python -m accounting train-memory``: training memory per GPU of ``config`` for micro-batches of
    ``micro_batch`` x ``seq_len`` tokens on ``gpus`` GPUs (or ``'auto'``: the smallest count and layout that
    fit ``gpu``). ``settings``: the other fields of `accounting.training_settings.Settings` (precision,
    weights, optimizer, recompute, backend, ...)."""
    loaded = _config(config, seq_len)
    s = TrainingSettings(seq_len=seq_len, micro_batch=micro_batch, **settings)
    return _train_memory(loaded.shape, s, gpus, tp=tp, pp=pp, ep=ep, zero=zero, sp=sp, gpu=gpu, source=loaded.source)


# ----- scaling ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScalingResult(Result):
    """Every published law of `accounting.scaling` put to one model on ``tokens`` tokens: ``laws`` (one dict per
    law: loss in its own units, dense-equivalent FLOP, leverage, compute-optimal tokens and active parameters,
    extrapolation) and how far the MoE laws disagree. FLOP count two per multiply-add."""

    name: str
    config: str
    tokens: float
    convention: str
    note: str
    params: dict[str, Any]
    laws: list[dict[str, Any]]
    disagreement_moe_laws: dict[str, Any]


def scaling_laws(config: str | Path | ModelShape, tokens: float | str, seq_len: int | None = None) -> ScalingResult:
    """``python -m accounting scaling``: the published scaling laws put to ``config`` trained on ``tokens``
    tokens (``seq_len``: the window of DeepSeek LLM's attention term; default the config's context)."""
    loaded = _config(config, seq_len)
    return ScalingResult(**_scaling_cli.scaling_data(loaded.shape, loaded.source, parse_count(tokens, "tokens")))
