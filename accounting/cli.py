"""``python -m accounting``: the note's Table 3, its DeepSeek section, and parameter/cost reports.

Subcommands: ``table3``, ``deepseek``, ``params --config FILE``, ``cost --config FILE --tokens D
--seq-len n [--gpu NAME] [--usd-per-hour X] [--mfu X]``, ``serve --config FILE --gpu NAME --gpus G --batch B
[B ...] --context n`` (roofline of decode and prefill, accounting.serving) and ``serving-check``
(DeepSeek-V3 in DeepSeek's disclosed layouts; the note's case D). ``--format table|json|csv`` (table: readable,
SI suffixes; json/csv: full precision). Bad input exits with status 2 and ONE line ``error: ...``.
JSON field names are documented in docs/accounting.md.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from . import cost, press2025, serving, training_memory
from .chinchilla import FITS, TOKENS_PER_PARAMETER, chinchilla_tokens
from .flops import FLOP, MAC, decode_flops_per_token, six_n_d, training_flops_per_token
from .formatting import si
from .hardware import HARDWARE, get_hardware
from .hf_config import CONFIG_DIR, PUBLISHED_COUNTS, read_json, shape_from_hf_config, shipped_configs
from .memory import kv_cache_elements_per_token
from .params import COMPONENTS, active_parameters_with_input_embedding, count_parameters
from .shapes import ModelShape

CONVENTION = {"flops_mac": "multiply-add = 1 flop (the note's convention)",
              "flops_fma2": "multiply-add = 2 flops (datasheet peaks, MFU, 6ND)"}


class CliError(Exception):
    """Bad input: printed as one line ``error: ...``."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        raise CliError(message)


# ----- formatting ----------------------------------------------------------------------------------
def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts -> [(dotted.key, value)]; lists of scalars are joined with ';'."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        out.append((prefix, ";".join(str(v) for v in obj)))
    else:
        out.append((prefix, obj))
    return out


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else repr(r[k]) if isinstance(r.get(k), float) else r.get(k))
                    for k in fields})
    return buf.getvalue()


def _kv_csv(obj: dict[str, Any]) -> str:
    return _csv([{"field": k, "value": v} for k, v in flatten(obj)])


def _grid(header: Sequence[str], rows: list[Sequence[Any]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----- input parsing ---------------------------------------------------------------------------------
_SCALE = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}


def parse_count(text: str, what: str = "value") -> float:
    """'14.8e12', '14.8T', '2B', '1500000' -> a positive finite number (K/M/B/G/T/P suffixes)."""
    s = str(text).strip().replace("_", "").replace(",", "")
    suffix = s[-1:].upper() if s[-1:].isalpha() and s[-1:].upper() in _SCALE else ""
    number = s[:-1] if suffix else s
    try:
        value = float(number) * _SCALE[suffix]
    except ValueError:
        raise CliError(f"{what} must be a positive number like 14.8e12 or 14.8T, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise CliError(f"{what} must be a positive finite number, got {text!r}")
    return value


def _argument(name: str, parse, ok, not_parsed: str, refused: str):
    """An argparse ``type``: ``parse(text)``; "must be <not_parsed>" when that fails, "must be <refused>" when
    ``ok(value)`` is false (one validator, several ranges)."""
    def check(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {not_parsed}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {refused}, got {text!r}")
        return value
    check.__name__ = name
    return check


YEAR_RANGE = (1900.0, 2200.0)
"""``--year``: price years the halving-cost model is asked about (outside: refused, not overflowed)."""

_positive_int = _argument("positive_int", int, lambda v: v >= 1, "a positive integer", "a positive integer")
_nonneg_int = _argument("nonneg_int", int, lambda v: v >= 0, "an integer >= 0", "an integer >= 0")
_fraction = _argument("fraction", float, lambda v: 0 < v <= 1, "a number in (0, 1]", "in (0, 1]")
_unit_interval = _argument("unit_interval", float, lambda v: 0 <= v <= 1, "a number in [0, 1]", "in [0, 1]")
_nonneg = _argument("nonneg", float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0",
                    "a finite number >= 0")
_positive_number = _argument("positive_number", float, lambda v: math.isfinite(v) and v > 0, "a number > 0",
                             "a finite number > 0")
_year = _argument("year", float, lambda v: math.isfinite(v) and YEAR_RANGE[0] <= v <= YEAR_RANGE[1],
                  "a year like 2027", f"a year in [{YEAR_RANGE[0]:g}, {YEAR_RANGE[1]:g}]")


def _check_finite(data: Any, what: str) -> None:
    """Raise `CliError` naming the first non-finite number in ``data`` (an overflow), never print it."""
    for key, value in flatten(data):
        if isinstance(value, float) and not math.isfinite(value):
            raise CliError(f"{what}: {key} is {value} (the numbers overflow); use smaller inputs")


def _json(data: Any) -> str:
    """Strict JSON: never ``Infinity`` or ``NaN``."""
    _check_finite(data, "no JSON output")
    return json.dumps(data, indent=2, allow_nan=False)


def _read_mapping(path: Path) -> dict[str, Any]:
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # lazily: only YAML model files need it
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise CliError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    else:
        data = read_json(path)
    if not isinstance(data, dict):
        raise CliError(f"{path} must hold a mapping (JSON object / YAML mapping)")
    return data


def load_config(spec: str, seq_len: int | None = None) -> tuple[ModelShape, str]:
    """``--config``: an HF config.json, a JSON/YAML of ModelShape fields (top level or under ``shape:``),
    a run folder's resolved ``config.yaml`` (fields under ``model.shape``), or a shipped config name
    (``deepseek-v3``). ``seq_len`` overrides the file's context length."""
    path = Path(spec)
    if path.is_file():
        data, source, stem = _read_mapping(path), str(path), path.stem
    elif (CONFIG_DIR / f"{spec}.json").is_file():
        path = CONFIG_DIR / f"{spec}.json"
        data, source, stem = read_json(path), f"shipped:{spec}", spec
    elif path.exists():
        raise CliError(f"--config {spec!r} is not a file")
    elif "/" in spec or path.suffix.lower() in (".json", ".yaml", ".yml"):
        raise CliError(f"no such file: {spec}")
    else:
        raise CliError(f"no such file or shipped config: {spec!r} (shipped: {', '.join(shipped_configs())})")
    if "model_type" in data or "architectures" in data:
        return shape_from_hf_config(data, seq_len=seq_len, name=stem), source
    if isinstance(data.get("model"), dict) and "shape" in data["model"]:  # a run folder's resolved config.yaml
        data = data["model"]
    fields = data.get("shape", data)
    if not isinstance(fields, dict):
        raise CliError(f"{source}: 'shape' must be a mapping of ModelShape fields")
    fields = dict(fields)
    unresolved = sorted(k for k, v in fields.items() if isinstance(v, str) and "${" in v)
    if unresolved:
        raise CliError(f"{source}: Hydra interpolations are not resolved here ({', '.join(unresolved)}); "
                       "give plain numbers, or pass a run folder's resolved config.yaml "
                       "(runs/<experiment>/<model>/<size>-seed<seed>/config.yaml)")
    if seq_len is not None:
        fields["seq_len"] = seq_len
    fields.setdefault("name", str(data.get("name") or stem))
    return ModelShape.from_dict(fields), source


# ----- commands --------------------------------------------------------------------------------------
def table3_data() -> dict[str, Any]:
    return {
        "convention": CONVENTION["flops_mac"] + "; memory rows are elements",
        "usd_per_flop_mac_rounded": cost.NOTE_ROUNDED_USD_PER_MAC,
        "usd_per_flop_mac_exact": cost.usd_per_flop(cost.NOTE_GPU, MAC),
        "use_cases": {k: {"seq_len": u.seq_len, "vocab_size": u.vocab_size, "d_model": u.d_model,
                          "n_heads": u.n_heads, "n_layers": u.n_layers} for k, u in press2025.USE_CASES.items()},
        "rows": press2025.table3_comparison(),
        "inference_usd_per_million_tokens": {
            case: {"rounded_rate_usd": press2025.inference_usd_per_million_tokens_case(case),
                   "exact_rate_usd": press2025.inference_usd_per_million_tokens_case(case, exact_rate=True)}
            for case in press2025.CASES},
    }


def table3_text(data: dict[str, Any]) -> str:
    out = ["Press (2025) Table 3 recomputed from Table 2 (multiply-add = 1 flop; memory in elements; K = 1024 in Table 2)."]
    out.append("use cases: " + "; ".join(f"{k}: n={u['seq_len']} V={u['vocab_size']} d={u['d_model']} "
                                          f"H={u['n_heads']} L={u['n_layers']}" for k, u in data["use_cases"].items()))
    rows = []
    for r in data["rows"]:
        rows.append([r["quantity"], r["case"], r["printed_display"], si(r["computed"]),
                     f"{r['ratio']:.3f}", "yes" if r["rounds_to_printed"] else "no",
                     "ok" if r["within_tolerance"] else "FAIL", si(r["computed_exact_rate"])])
    out.append(_grid(["quantity", "case", "printed", "ours", "ours/printed", "rounds", "tolerance",
                      "ours @exact $"], rows))
    out.append(f"GPU-years and $ use the note's rounded {cost.NOTE_USD_PER_MAC_TEXT} per multiply-add; "
               f"'ours @exact $' uses ${data['usd_per_flop_mac_exact']:.4g} ({cost.NOTE_PEAK_MACS_TEXT} "
               f"multiply-adds/s at {cost.NOTE_USD_PER_GPU_YEAR_TEXT} per GPU-year).")
    out.append("Optimal training set size is 240 L d^2 (eq. 4 without 40 V d): with the V term B would be "
               + si(next(r["eq4_with_vocab"] for r in data["rows"] if r["quantity"] == "optimal training set size"
                         and r["case"] == "B")) + ", not the printed 540e9.")
    for key, (tol, why) in press2025.DOCUMENTED_EXCEPTIONS.items():
        out.append(f"{key[0]} {key[1]}: {why} (tolerance {tol:.0%}).")
    inf = data["inference_usd_per_million_tokens"]
    out.append("Inference $ per million incremental tokens (note: $1-$2 for D): D low "
               f"${inf['D low']['rounded_rate_usd']:.2f}, D high ${inf['D high']['rounded_rate_usd']:.2f} "
               f"(exact rate ${inf['D low']['exact_rate_usd']:.2f}-${inf['D high']['exact_rate_usd']:.2f}).")
    return "\n".join(out)


def params_data(shape: ModelShape, source: str) -> dict[str, Any]:
    c = count_parameters(shape)
    data: dict[str, Any] = {
        "name": shape.name, "config": source,
        "convention": "active = what one token touches, with ONE row of the input embedding (DeepSeek's); "
                      "active_with_input_embedding counts the whole V x d table (most model cards); "
                      "MTP modules are excluded from total",
        "shape": shape.to_dict(),
        "total_params": c.total, "active_params": c.active,
        "active_with_input_embedding_params": active_parameters_with_input_embedding(shape),
        "active_fraction": c.active_fraction, "mtp_params": c.mtp_total, "mtp_active_params": c.mtp_active,
        "total_with_mtp_params": c.total_with_mtp,
        "components": {k: {"total_params": c.total_by_component[k], "active_params": c.active_by_component[k]}
                       for k in COMPONENTS},
        "chinchilla_total_basis_tokens": chinchilla_tokens(c.total),
        "chinchilla_active_basis_tokens": chinchilla_tokens(c.active),
        "kv_cache_elements_per_token": kv_cache_elements_per_token(shape),
        "kv_cache_bytes_per_token_bf16": 2 * kv_cache_elements_per_token(shape),
    }
    stem = source.removeprefix("shipped:") if source.startswith("shipped:") else Path(source).stem
    if stem in PUBLISHED_COUNTS:
        pub = PUBLISHED_COUNTS[stem]
        data["published"] = {"total_params": pub["total"], "active_params": pub["active"], "source": pub["source"]}
    return data


def params_text(d: dict[str, Any]) -> str:
    s = d["shape"]
    out = [f"{d['name']} ({d['config']}): V={s['vocab_size']} d={s['d_model']} L={s['n_layers']} "
           f"H={s['n_heads']} attention={s['attention']} ffn={s['ffn_kind']} E={s['n_experts']} "
           f"k={s['top_k']} shared={s['n_shared_experts']} dense_layers={s['first_dense_layers'] if s['n_experts'] else s['n_layers']}",
           _grid(["component", "total", "active"],
                 [[k, si(v["total_params"]), si(v["active_params"])] for k, v in d["components"].items()]
                 + [["TOTAL", si(d["total_params"]), si(d["active_params"])]])]
    out.append(f"exact: total {d['total_params']:,}  active {d['active_params']:,} "
               f"({d['active_fraction']:.2%}); active with the whole input embedding "
               f"{d['active_with_input_embedding_params']:,}")
    if d["mtp_params"]:
        out.append(f"MTP modules (not in total): {d['mtp_params']:,}; total with MTP {d['total_with_mtp_params']:,}")
    out.append(f"Chinchilla ({TOKENS_PER_PARAMETER:g} tokens/param): {si(d['chinchilla_total_basis_tokens'])} tokens on total, "
               f"{si(d['chinchilla_active_basis_tokens'])} on active")
    out.append(f"KV cache: {d['kv_cache_elements_per_token']:,} elements per token ({si(d['kv_cache_bytes_per_token_bf16'])}B in bf16)")
    if "published" in d:
        p = d["published"]
        out.append(f"published: total {si(p['total_params'])} (ours/published {d['total_params'] / p['total_params']:.4f}), "
                   f"active {si(p['active_params'])} -- {p['source']}")
    return "\n".join(out)


def cost_data(shape: ModelShape, source: str, tokens: float, seq_len: int, rate: cost.GpuRate,
              causal: bool = True, year: float = cost.NOTE_BASE_YEAR) -> dict[str, Any]:
    c = count_parameters(shape)
    fpt2 = training_flops_per_token(shape, seq_len, flops_per_mac=FLOP, causal=causal)
    flops2 = fpt2 * tokens
    summary = cost.cost_summary(flops2, FLOP, rate)
    decode2 = decode_flops_per_token(shape, seq_len, flops_per_mac=FLOP)
    return {
        "name": shape.name, "config": source, "convention": CONVENTION,
        "tokens": tokens, "seq_len": seq_len, "causal_attention": causal,
        "gpu": {"name": rate.name, "peak_flops_per_s": rate.peak_flops_per_s,
                "peak_convention": CONVENTION["flops_mac" if rate.rate_flops_per_mac == 1 else "flops_fma2"],
                "usd_per_hour": rate.usd_per_hour, "mfu": rate.mfu,
                "achieved_flops_fma2_per_s": rate.flops_per_s(FLOP)},
        "total_params": c.total, "active_params": c.active,
        "chinchilla_total_basis_tokens": chinchilla_tokens(c.total),
        "chinchilla_active_basis_tokens": chinchilla_tokens(c.active),
        "training_flops_fma2_per_token": fpt2, "training_flops_mac_per_token": fpt2 / FLOP,
        "training_flops_fma2": flops2, "training_flops_mac": flops2 / FLOP,
        "six_n_active_d_flops_fma2": six_n_d(c.active, tokens),
        "gpu_s": summary["gpu_s"], "gpu_hours": summary["gpu_hours"], "gpu_years": summary["gpu_years"],
        "cost_usd": summary["cost_usd"], "usd_per_flop_fma2": cost.usd_per_flop(rate, FLOP),
        "year": year, "cost_usd_at_year": cost.cost_at_year(summary["cost_usd"], year),
        "decode_flops_fma2_per_token": decode2,
        "inference_usd_per_million_tokens": cost.inference_usd_per_million_tokens(decode2, FLOP, rate),
        "compute_optimal": {fit: dict(zip(("params", "tokens"), FITS[fit].compute_optimal(flops2)))
                            for fit in FITS},
    }


def cost_text(d: dict[str, Any]) -> str:
    g = d["gpu"]
    return "\n".join([
        f"{d['name']} ({d['config']}): {si(d['tokens'])} tokens at seq_len {d['seq_len']} "
        f"({'causal' if d['causal_attention'] else 'full'} attention)",
        f"GPU: {g['name']}, peak {si(g['peak_flops_per_s'])}flop/s ({g['peak_convention']}), "
        f"mfu {g['mfu']:g}, ${g['usd_per_hour']:.4g}/GPU-hour",
        f"params: total {si(d['total_params'])}, active {si(d['active_params'])}; Chinchilla tokens "
        f"{si(d['chinchilla_total_basis_tokens'])} (total) / {si(d['chinchilla_active_basis_tokens'])} (active)",
        f"training: {si(d['training_flops_fma2_per_token'])} FLOP/token (2 per MAC) -> {si(d['training_flops_fma2'])} FLOP "
        f"= {si(d['training_flops_mac'])} multiply-adds; 6 N_active D = {si(d['six_n_active_d_flops_fma2'])} FLOP",
        f"time and money: {si(d['gpu_hours'])} GPU-hours = {si(d['gpu_years'])} GPU-years -> ${si(d['cost_usd'])}"
        f" (${si(d['cost_usd_at_year'])} at {d['year']:g} with cost halving every {cost.COST_HALVING_YEARS:g} years)",
        f"inference: {si(d['decode_flops_fma2_per_token'])} FLOP per generated token at context {d['seq_len']} "
        f"-> ${d['inference_usd_per_million_tokens']:.3g} per million tokens",
        "compute-optimal at this budget (C = 6ND): " + "; ".join(
            f"{k}: N={si(v['params'])}, D={si(v['tokens'])}" for k, v in d["compute_optimal"].items()),
    ])


def deepseek_data() -> dict[str, Any]:
    shape = press2025.deepseek_v3_shape(press2025.DEEPSEEK_REPORTED["pretrain_seq_len"])
    return {"convention": CONVENTION, "section6": press2025.section6(),
            "deepseek_v3": {"config": "shipped:deepseek-v3", "params": params_data(shape, "shipped:deepseek-v3"),
                            "estimates": press2025.deepseek_v3_estimates(shape)}}


def deepseek_text(d: dict[str, Any]) -> str:
    s = d["section6"]
    pr = s["printed"]
    out = [f"Section 6 of the note, recomputed (multiply-add = 1 flop, n = 32K, {cost.NOTE_USD_PER_MAC_TEXT} per flop):",
           _grid(["quantity", "note printed", "ours", "comment"], [
               ["12 L d^2 (d=7168, L=61)", si(pr["active_12Ld2_params"]), si(s["active_12Ld2_params"]), "'active' width"],
               ["Chinchilla 671B x 20", si(pr["chinchilla_tokens"]), si(s["chinchilla_tokens"]),
                f"reported 14.8T = x{s['reported_over_chinchilla']:.3f}"],
               ["(6nd+36d^2)L per token", "", si(s["train_flops_mac_per_token"]), "multiply-adds, n = 32768"],
               ["x 14.8T tokens", si(pr["train_flops_mac"]), si(s["train_flops_mac"]),
                f"= {si(s['train_flops_fma2'])} FLOP (2 per MAC)"],
               [f"cost at {cost.NOTE_USD_PER_MAC_TEXT}", "$" + si(pr["cost_usd"]), "$" + si(s["cost_usd_rounded_rate"]),
                f"exact rate: ${si(s['cost_usd_exact_rate'])}"],
               ["GPU-hours", si(pr["gpu_hours"]), si(s["gpu_hours_note_method"]),
                f"= $2.9M / ${s['note_usd_per_gpu_hour']:.2f}/h; exact at {cost.NOTE_PEAK_MACS_TEXT} MAC/s: {si(s['gpu_hours_exact_300T'])}"],
               ["reported (DeepSeek)", f"{si(pr['reported_gpu_hours'])} h, ${si(pr['reported_usd'])}",
                f"{si(s['reported_gpu_hours'])} h, ${si(s['reported_usd'])}",
                f"$ ratio reported/note {s['reported_over_note_usd']:.2f}"]])]
    p = d["deepseek_v3"]["params"]
    e = d["deepseek_v3"]["estimates"]
    out.append("")
    out.append(f"DeepSeek-V3 from accounting/configs/deepseek-v3.json: total {p['total_params']:,} "
               f"({p['total_params'] / 1e9:.2f}B vs 671B), active {p['active_params']:,} ({p['active_params'] / 1e9:.2f}B "
               f"vs '37B'; one input-embedding row), MTP {si(p['mtp_params'])} excluded")
    out.append(_grid(["component", "total", "active"],
                     [[k, si(v["total_params"]), si(v["active_params"])] for k, v in p["components"].items()]))
    out.append("")
    out.append(f"Pretraining compute, {si(e['tokens'])} tokens at {e['seq_len']} (MFU vs {si(e['reported_gpu_hours_pretrain'])} "
               f"H800-hours x {si(e['peak_bf16_flops_per_s'])}FLOP/s bf16):")
    rows = [[k, si(v["flops_mac_per_token"]), si(v["flops_fma2_per_token"]), si(v["flops_mac"]), si(v["flops_fma2"]),
             f"{v['implied_mfu_bf16']:.1%}", si(v["h800_hours_at_peak"]), "$" + si(v["cost_usd_h800_at_peak"])]
            for k, v in e["methods"].items()]
    out.append(_grid(["method", "MAC/token", "FLOP/token", "MAC total", "FLOP total", "implied MFU",
                      "H800-h at peak", f"$ at ${press2025.DEEPSEEK_REPORTED['usd_per_gpu_hour']:g}/h, peak"], rows))
    return "\n".join(out)


# ----- serving (accounting.serving) ----------------------------------------------------------------------
def add_serve_parsers(sub, fmt: _Parser) -> None:
    ps = sub.add_parser("serve", parents=[fmt], help="roofline of decode and prefill, memory fit and $ per Mtok")
    ps.add_argument("--config", required=True, help="HF config.json, JSON/YAML of ModelShape fields, or a shipped name")
    ps.add_argument("--gpu", required=True, choices=sorted(k for k, h in HARDWARE.items() if h.memory_bytes),
                    help="hardware preset (peaks, HBM, NVLink, network)")
    ps.add_argument("--gpus", type=_positive_int, default=1, help="GPUs of one replica, G (expert-parallel degree)")
    ps.add_argument("--batch", type=_positive_number, nargs="+", required=True,
                    help="concurrent sequences per GPU; several values give a sweep table")
    ps.add_argument("--context", type=_nonneg_int, required=True, help="tokens already in each sequence's cache")
    ps.add_argument("--prompt-len", type=_positive_int, default=None, help="prefill prompt length (default: --context)")
    ps.add_argument("--weights", choices=("bf16", "fp8"), default="bf16", help="weights precision (default bf16)")
    ps.add_argument("--kv-dtype", choices=("bf16", "fp8"), default="bf16", help="KV cache precision (default bf16)")
    ps.add_argument("--usd-per-hour", type=_nonneg, default=None, help="$ per GPU-hour (default: the preset's)")
    ps.add_argument("--efficiency", type=_fraction, default=1.0,
                    help="achieved fraction of every peak (compute, HBM, links), in (0, 1]; default 1.0 = the bound")
    ps.add_argument("--tp", type=_positive_int, default=None,
                    help="tensor-parallel degree of the non-expert weights (default: G for dense, 1 for MoE)")
    ps.add_argument("--redundant-experts", type=_nonneg_int, default=0, help="extra routed-expert copies (DeepSeek: 32)")
    ps.add_argument("--mtp-acceptance", type=_unit_interval, default=0.0,
                    help="multi-token-prediction acceptance rate (0 = no speculative decoding)")
    ps.add_argument("--cache-hit-share", type=_unit_interval, default=0.0,
                    help="share of prompt tokens served from a prompt cache (priced at 0)")
    ps.add_argument("--dense-equivalent", choices=("active", "total"), default=None,
                    help="price instead a dense model with the config's attention and widths whose FFN makes its "
                         "parameters equal the MoE's active or total count")
    pk = sub.add_parser("serving-check", parents=[fmt],
                        help="DeepSeek-V3 in DeepSeek's disclosed layouts vs what it achieved; the note's case D")
    pk.add_argument("--context", type=_positive_int, default=4096, help="assumed decode context (not disclosed)")
    pk.add_argument("--prompt-len", type=_positive_int, default=4096, help="assumed prompt length (not disclosed)")


def serve_data(args) -> dict[str, Any]:
    shape, source = load_config(args.config)
    if args.dense_equivalent:
        if not shape.is_moe:
            raise CliError(f"--dense-equivalent needs an MoE config; {shape.name} is dense")
        c = count_parameters(shape)
        target = c.active if args.dense_equivalent == "active" else c.total
        shape = serving.dense_equivalent(shape, target, name=f"dense, {args.dense_equivalent} params of {shape.name}")
    if args.cache_hit_share >= 1:
        raise CliError("--cache-hit-share must be below 1")
    hw = get_hardware(args.gpu)
    layout = serving.Layout(gpus=args.gpus, tp=args.tp, redundant_experts=args.redundant_experts,
                      weights_dtype=args.weights, kv_dtype=args.kv_dtype)
    layout.resolved(shape)  # one-line error for a bad layout before any work
    rows = [serving.serve(shape, hw, layout, b, args.context, prompt_len=args.prompt_len,
                    usd_per_gpu_hour=args.usd_per_hour, efficiency=args.efficiency,
                    mtp_acceptance=args.mtp_acceptance, cache_hit_share=args.cache_hit_share)
            for b in args.batch]
    for r in rows:
        if r["batch"] == int(r["batch"]):
            r["batch"] = int(r["batch"])
    return {"name": shape.name, "config": source,
            "convention": "flops: 2 per multiply-add; bytes (1 GB = 1e9); seconds; US dollars; "
                          "batch = concurrent sequences per GPU; bound = the slowest of compute, memory, "
                          "communication (full overlap)",
            "rows": rows}


def serve_text(d: dict[str, Any]) -> str:
    r0 = d["rows"][0]
    out = [f"{d['name']} ({d['config']}) on {r0['gpus']} x {r0['gpu']} (tp {r0['tp']}, ep {r0['ep']}, "
           f"{r0['expert_copies_per_gpu']} expert copies/GPU), weights {r0['weights_dtype']}, KV {r0['kv_dtype']}, "
           f"context {r0['context']}, efficiency {r0['efficiency']:g}, ${r0['usd_per_gpu_hour']:.4g}/GPU-hour"
           + (f", MTP acceptance {r0['mtp_acceptance']:g}" if r0["mtp_acceptance"] else ""),
           f"params: total {si(r0['total_params'])}, active {si(r0['active_params'])}; "
           f"largest batch that fits: {si(r0['max_batch'])} sequences/GPU"]
    rows = []
    for r in d["rows"]:
        fits = "yes" if r["fits"] else f"NO ({r['bytes_needed_per_gpu'] / 1e9:.1f} of {r['bytes_available_per_gpu'] / 1e9:.0f} GB)"
        rows.append([si(r["batch"]), fits, f"{r['expected_distinct_experts_per_gpu']:.3g}" if r["ep"] > 1 or
                     r["expected_distinct_experts_per_gpu"] else "-",
                     f"{1e3 * r['decode_compute_s']:.3g}", f"{1e3 * r['decode_memory_s']:.3g}",
                     f"{1e3 * r['decode_communication_s']:.3g}", r["bound"], si(r["decode_tokens_per_s_per_gpu"]),
                     f"{r['usd_per_million_output_tokens']:.3g}", f"{r['note_method_usd_per_million_output_tokens']:.3g}"])
    out.append(_grid(["batch/GPU", "fits", "experts read/GPU", "compute ms", "memory ms", "comm ms", "bound",
                      "decode tok/s/GPU", "$/Mtok out", "note's $/Mtok"], rows))
    out.append(f"prefill ({r0['prompt_len']}-token prompts): {si(r0['prefill_tokens_per_s_per_gpu'])} tokens/s/GPU "
               f"({r0['prefill_bound']}-bound) -> ${r0['usd_per_million_input_tokens']:.3g} per million input tokens"
               + (f" with {r0['cache_hit_share']:.0%} prompt-cache hits" if r0["cache_hit_share"] else ""))
    out.append("note's $/Mtok: decode FLOP at the datasheet peak only (the note's method, kept for comparison); "
               "experts read/GPU: expected distinct routed experts per MoE layer on one GPU; times per decode step")
    return "\n".join(out)


def serve_output(args) -> str:
    data = serve_data(args)
    if args.format == "json":
        return _json(data)
    if args.format == "csv":
        return _csv([dict(flatten(r)) for r in data["rows"]])
    return serve_text(data)


def serving_check_data(context: int = 4096, prompt_len: int = 4096) -> dict[str, Any]:
    return {"convention": "flops: 2 per multiply-add; tokens/s; US dollars",
            "deepseek": serving.deepseek_disclosed_check(context, prompt_len), "note_case_d": serving.note_case_d_roofline()}


def serving_check_text(d: dict[str, Any]) -> str:
    k = d["deepseek"]
    out = [f"DeepSeek-V3 on {k['hardware']} in DeepSeek's disclosed layouts ({k['source']}).",
           f"Assumed (not disclosed): context {k['context_assumed']}, prompt length {k['prompt_len_assumed']}. "
           f"Decode batch from the disclosure: {k['decode_batch_per_gpu']:.1f} sequences/GPU "
           f"(14.8k tokens/s/node / 8 / 21 tokens/s per user); MTP acceptance {k['mtp_acceptance_bound']:g} "
           "(the favourable end of 0.85-0.90).",
           _grid(["phase", "layout", "bound (tok/s/node)", "binding", "achieved (tok/s/node)", "achieved/bound",
                  "$/Mtok at bound", "$/Mtok achieved"], [
               ["decode", f"EP{k['decode_layout']['gpus']}, {k['decode_layout']['expert_copies_per_gpu']} experts/GPU, FP8",
                si(k["decode_bound_tokens_per_s_per_node"]), k["decode_bound"],
                si(k["decode_achieved_tokens_per_s_per_node"]), f"{k['decode_fraction_of_bound']:.1%}",
                f"{k['usd_per_million_output_tokens_bound']:.3g}", f"{k['usd_per_million_output_tokens_disclosed']:.3g}"],
               ["prefill", f"EP{k['prefill_layout']['gpus']}, {k['prefill_layout']['expert_copies_per_gpu']} experts/GPU, FP8",
                si(k["prefill_bound_with_cache_hits_tokens_per_s_per_node"]), k["prefill_bound"],
                si(k["prefill_achieved_tokens_per_s_per_node"]), f"{k['prefill_fraction_of_bound']:.1%}",
                f"{k['usd_per_million_input_tokens_bound']:.3g}", f"{k['usd_per_million_input_tokens_disclosed']:.3g}"]]),
           f"decode step at the bound: communication {1e3 * k['decode_communication_s']:.1f} ms (network "
           f"{1e3 * k['decode_network_s']:.1f}, NVLink {1e3 * k['decode_nvlink_s']:.1f}), compute "
           f"{1e3 * k['decode_compute_s']:.1f} ms (attention over the cache {1e3 * k['decode_compute_attention_cache_s']:.1f}), "
           f"memory {1e3 * k['decode_memory_s']:.1f} ms (weights {1e3 * k['decode_memory_weights_s']:.1f}, KV cache "
           f"{1e3 * k['decode_memory_kv_s']:.1f}); without MTP the bound is "
           f"{si(k['decode_bound_no_mtp_tokens_per_s_per_node'])} tok/s/node.",
           "the context is not disclosed; decode bound (fraction achieved) at context " + ", ".join(
               f"{n}: {si(v['bound_tokens_per_s_per_node'])} tok/s/node, {v['bound']}-bound ({v['fraction_of_bound']:.0%}"
               + ("" if v["fits"] else f"; {k['decode_batch_per_gpu']:.0f} sequences do not fit") + ")"
               for n, v in k["decode_by_context"].items()) + ".",
           f"prefill input tokens/s include {DEEPSEEK_HIT_TEXT}: computed-prefill bound "
           f"{si(k['prefill_bound_tokens_per_s_per_node'])} tok/s/node / (1 - hit share).",
           f"$ per million output tokens: roofline bound ${k['usd_per_million_output_tokens_bound']:.3g}; DeepSeek's "
           f"throughput ${k['usd_per_million_output_tokens_disclosed']:.3g}; their whole day's cost over output "
           f"tokens ${k['usd_per_million_output_tokens_day_total']:.3g}; the note's method (FLOP at peak) "
           f"${k['usd_per_million_output_tokens_note_method']:.3g} (all at ${k['usd_per_gpu_hour']:g}/GPU-hour).",
           "",
           "The note's case D ('$1-2 per million tokens') with the roofline: dense MHA at its own context, bf16, "
           "tensor-parallel over the smallest power-of-two replica holding one sequence:",
           _grid(["case", "context", "params", "GPUs", "sequences", "bound", "$/Mtok roofline", "$/Mtok KV floor",
                  "note's $/Mtok"],
                 [[r["case"], si(r["context"]), si(r["total_params"]), r["gpus"], f"{r['sequences_per_replica']:g}",
                   r["bound"], f"{r['usd_per_million_output_tokens']:.4g}",
                   f"{r['usd_per_million_output_tokens_kv_floor']:.4g}", f"{r['note_usd_per_million_tokens']:.3g}"]
                  for r in d["note_case_d"]]),
           f"(case D on {d['note_case_d'][0]['hardware']} at ${d['note_case_d'][0]['usd_per_gpu_hour']:g}/GPU-hour; "
           "KV floor: reading one sequence's cache per token, whatever the batch)"]
    return "\n".join(out)


DEEPSEEK_HIT_TEXT = "prompt-cache hits (56.3% of input tokens, disclosed)"


# ----- entry point ---------------------------------------------------------------------------------
def build_parser() -> _Parser:
    fmt = _Parser(add_help=False)
    fmt.add_argument("--format", choices=("table", "json", "csv"), default="table",
                     help="table (readable, SI suffixes; default), json or csv (full precision)")
    p = _Parser(prog="python -m accounting", description=__doc__.split("\n\n")[0], parents=[fmt])
    sub = p.add_subparsers(dest="command", metavar="{table3,deepseek,params,cost,serve,serving-check}")
    sub.required = True
    sub.add_parser("table3", parents=[fmt], help="the note's Table 3 recomputed beside the printed values")
    sub.add_parser("deepseek", parents=[fmt], help="the note's section 6 and DeepSeek-V3 priced by six methods")
    pp = sub.add_parser("params", parents=[fmt], help="parameter counts of a config")
    pp.add_argument("--config", required=True, help="HF config.json, JSON/YAML of ModelShape fields, or a shipped name")
    pp.add_argument("--seq-len", type=_positive_int, default=None, help="override the context length")
    pc = sub.add_parser("cost", parents=[fmt], help="training and inference cost of a config")
    pc.add_argument("--config", required=True, help="HF config.json, JSON/YAML of ModelShape fields, or a shipped name")
    pc.add_argument("--tokens", required=True, help="training tokens D, e.g. 14.8e12 or 14.8T")
    pc.add_argument("--seq-len", type=_positive_int, required=True, help="training window n (tokens)")
    pc.add_argument("--gpu", default="press2025", choices=sorted(HARDWARE),
                    help=f"hardware preset (default press2025: the note's {cost.NOTE_PEAK_MACS_TEXT} multiply-adds/s at "
                         f"{cost.NOTE_USD_PER_GPU_YEAR_TEXT}/year)")
    pc.add_argument("--usd-per-hour", type=_nonneg, default=None, help="override the preset's $/GPU-hour")
    pc.add_argument("--mfu", type=_fraction, default=None, help="model flops utilisation in (0, 1] (default 1.0)")
    pc.add_argument("--gpus", type=_positive_int, default=None, help="GPUs: adds the wall-clock days at this MFU")
    pc.add_argument("--full-attention", action="store_true", help="count the full n x n scores (default: causal)")
    pc.add_argument("--year", type=_year, default=cost.NOTE_BASE_YEAR,
                    help=f"price year (cost halves every {cost.COST_HALVING_YEARS:g} years from {cost.NOTE_BASE_YEAR})")
    add_serve_parsers(sub, fmt)
    training_memory.add_parser(sub, fmt)
    return p


def run(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv`` and return the output text (raises CliError/ValueError on bad input)."""
    args = build_parser().parse_args(argv)
    if args.command == "table3":
        data = table3_data()
        if args.format == "csv":
            return _csv(data["rows"])
        return _json(data) if args.format == "json" else table3_text(data)
    if args.command == "deepseek":
        data = deepseek_data()
        render = deepseek_text
    elif args.command == "params":
        shape, source = load_config(args.config, args.seq_len)
        data, render = params_data(shape, source), params_text
    elif args.command == "serve":
        return serve_output(args)
    elif args.command == "train-memory":
        return training_memory.output(args)
    elif args.command == "serving-check":
        data = serving_check_data(args.context, args.prompt_len)
        render = serving_check_text
    else:
        tokens = parse_count(args.tokens, "--tokens")
        shape, source = load_config(args.config, args.seq_len)
        rate = cost.gpu_rate(args.gpu, usd_per_hour=args.usd_per_hour, mfu=args.mfu)
        data = cost_data(shape, source, tokens, args.seq_len, rate, causal=not args.full_attention, year=args.year)
        _check_finite(data, f"cost of --tokens {args.tokens} at --seq-len {args.seq_len}")
        if args.gpus:
            data.update(training_memory.wall_clock(data["gpu_hours"], args.gpus))
        render = lambda d: cost_text(d) + training_memory.wall_clock_line(d)  # noqa: E731
    if args.format == "json":
        return _json(data)
    if args.format == "csv":
        return _kv_csv(data)
    return render(data)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        text = run(argv)
    except (CliError, ValueError, OSError, KeyError, TypeError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  (never a traceback)
        print(f"error: internal {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return 0
