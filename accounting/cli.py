"""``python -m accounting``: the note's Table 3, its DeepSeek section, and parameter/cost/serving reports.

Subcommands: ``table3``, ``deepseek``, ``params --config SPEC``, ``cost --config SPEC --tokens D [--seq-len n]
[--gpu NAME] [--usd-per-hour X] [--mfu X]``, ``serve --config SPEC --gpu NAME --gpus G --batch B [B ...]
--context n`` (roofline of decode and prefill, accounting.serving) and ``serving-check`` (DeepSeek-V3 in
DeepSeek's disclosed layouts; the note's case D). ``--format table|json|csv``, before or after the subcommand
(table: readable, SI suffixes; json/csv: full precision). Bad input exits with status 2 and ONE line
``error: ...``. JSON field names are documented in docs/accounting.md.

Each subcommand is one `Command` in `COMMANDS`: a function adding its options to its parser, a function
turning the parsed options into its result (a frozen dataclass from `accounting.api`, whose ``to_dict()`` is
the JSON output), and a function rendering that dict as a table (CSV defaults to flattened ``field,value``
rows). A new subcommand is one ``register(Command(...))`` call; `build_parser` and `run` need no change.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import api, cost, gpu_count, press2025, scaling_cli, train_memory_cli
from .api import CONVENTION, parse_count as _parse_count
from .chinchilla import TOKENS_PER_PARAMETER
from .config_files import resolve_config
from .formatting import csv_rows as _csv, grid as _grid, si
from .hardware import HARDWARE
from .shapes import ModelShape

__all__ = ["Command", "COMMANDS", "register", "build_parser", "run", "main", "CliError", "load_config",
           "parse_count", "CONVENTION"]


class CliError(ValueError):
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


def _kv_csv(obj: dict[str, Any]) -> str:
    return _csv([{"field": k, "value": v} for k, v in flatten(obj)])


# ----- input parsing ---------------------------------------------------------------------------------
def parse_count(text: str, what: str = "value") -> float:
    """'14.8e12', '14.8T', '2B', '1500000' -> a positive finite number (K/M/B/G/T/P suffixes)."""
    try:
        return _parse_count(text, what)
    except ValueError as e:
        raise CliError(str(e)) from None


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
_gpus_or_auto = _argument("gpus_or_auto", lambda t: "auto" if t.strip().lower() == "auto" else int(t),
                          lambda v: v == "auto" or v >= 1, "a positive integer or 'auto'",
                          "a positive integer or 'auto'")
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


class _Once(argparse.Action):
    """Store an option's value; a second occurrence is an error (never a silent 'last one wins')."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = f"_seen_{self.dest}"
        if getattr(namespace, seen, False):
            parser.error(f"argument {'/'.join(self.option_strings)}: given twice "
                         f"({getattr(namespace, self.dest)!r} and {values!r}); give it once")
        setattr(namespace, seen, True)
        setattr(namespace, self.dest, values)


def load_config(spec: str, seq_len: int | None = None) -> tuple[ModelShape, str]:
    """``--config SPEC`` -> (shape, source): a shipped name, an HF config.json or a checkpoint folder holding
    one, a JSON/YAML of ModelShape fields, a run folder or its config.yaml, or a conf/model/<name>.yaml
    (`accounting.config_files`). ``seq_len`` overrides the context length."""
    loaded = resolve_config(spec, seq_len)
    return loaded.shape, loaded.source


CONFIG_HELP = ("a shipped name (deepseek-v3, ...), an HF config.json or a checkpoint folder holding one, a JSON/YAML "
               "of ModelShape fields, a run folder or its config.yaml, or conf/model/<name>.yaml (Hydra compose)")


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, action=_Once, help=CONFIG_HELP)


# ----- the command registry ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One subcommand of ``python -m accounting``.

    ``arguments(parser)`` adds the subcommand's options (``--format`` is added for every command);
    ``result(args)`` returns its result, an `accounting.api.Result` (a frozen dataclass whose ``to_dict()``
    is the JSON output; bad input raises ``ValueError`` with a one-line message); ``text(data)`` renders that
    dict as the default table output; ``csv(data)`` as CSV (default: ``field,value`` rows of the flattened
    dict)."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    result: Callable[[argparse.Namespace], "api.Result"]
    text: Callable[[dict[str, Any]], str]
    csv: Callable[[dict[str, Any]], str] = _kv_csv


COMMANDS: dict[str, Command] = {}
"""Registered subcommands, in the order ``--help`` lists them."""


def register(command: Command) -> Command:
    """Add ``command`` to `COMMANDS` (a second registration of a name is a programming error)."""
    if command.name in COMMANDS:
        raise ValueError(f"accounting subcommand {command.name!r} is registered twice")
    COMMANDS[command.name] = command
    return command


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A subcommand without options of its own."""


# ----- table3 ------------------------------------------------------------------------------------------
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



register(Command("table3", "the note's Table 3 recomputed beside the printed values", _no_arguments,
                 lambda args: api.table3(), table3_text, csv=lambda data: _csv(data["rows"])))


# ----- deepseek ----------------------------------------------------------------------------------------
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



register(Command("deepseek", "the note's section 6 and DeepSeek-V3 priced by six methods", _no_arguments,
                 lambda args: api.deepseek(),
                 lambda d: deepseek_text(d) + "\n\n" + scaling_cli.deepseek_text(d["scaling"])))


# ----- scaling (accounting.scaling_cli) -----------------------------------------------------------------
def scaling_arguments(p: argparse.ArgumentParser) -> None:
    _config_argument(p)
    p.add_argument("--tokens", required=True, help="training tokens D, e.g. 14.8e12 or 14.8T")
    p.add_argument("--seq-len", type=_positive_int, default=None,
                   help="training window (DeepSeek LLM's attention term; default: the config's context)")


def scaling_result(args: argparse.Namespace) -> api.ScalingResult:
    return api.scaling_laws(args.config, _parse_count(args.tokens, "--tokens"), args.seq_len)


register(Command("scaling", "published dense and MoE scaling laws put to one model", scaling_arguments,
                 scaling_result, scaling_cli.scaling_text, csv=scaling_cli.csv))


# ----- params ------------------------------------------------------------------------------------------
def params_arguments(p: argparse.ArgumentParser) -> None:
    _config_argument(p)
    p.add_argument("--seq-len", type=_positive_int, default=None, help="override the context length")


def params_text(d: dict[str, Any]) -> str:
    s = d["shape"]
    out = [f"{d['name']} ({d['config']}): V={s['vocab_size']} d={s['d_model']} L={s['n_layers']} "
           f"H={s['n_heads']} attention={s['attention']} ffn={s['ffn_kind']} E={s['n_experts']} "
           f"k={s['top_k']} shared={s['n_shared_experts']} dense_layers={(s['moe_layer_pattern'].count('D') if s.get('moe_layer_pattern') else s['first_dense_layers']) if s['n_experts'] else s['n_layers']}",
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



register(Command("params", "parameter counts of a config", params_arguments,
                 lambda args: api.parameters(args.config, args.seq_len), params_text))


# ----- cost --------------------------------------------------------------------------------------------
def cost_arguments(pc: argparse.ArgumentParser) -> None:
    _config_argument(pc)
    pc.add_argument("--tokens", required=True, help="training tokens D, e.g. 14.8e12 or 14.8T")
    pc.add_argument("--seq-len", type=_positive_int, default=None,
                    help="training window n in tokens (default: the config's context length, e.g. an HF "
                         "config's max_position_embeddings)")
    pc.add_argument("--gpu", default="press2025", choices=sorted(HARDWARE),
                    help=f"hardware preset (default press2025: the note's {cost.NOTE_PEAK_MACS_TEXT} multiply-adds/s at "
                         f"{cost.NOTE_USD_PER_GPU_YEAR_TEXT}/year)")
    pc.add_argument("--usd-per-hour", type=_nonneg, default=None, help="override the preset's $/GPU-hour")
    pc.add_argument("--mfu", type=_fraction, default=None, help="model flops utilisation in (0, 1] (default 1.0)")
    pc.add_argument("--gpus", type=_gpus_or_auto, default=None,
                    help="GPUs: adds the wall-clock days at this MFU; 'auto': the smallest count whose training "
                         "memory fits --gpu (micro-batch 1 at --seq-len, train-memory's defaults)")
    pc.add_argument("--full-attention", action="store_true", help="count the full n x n scores (default: causal)")
    pc.add_argument("--year", type=_year, default=cost.NOTE_BASE_YEAR,
                    help=f"price year (cost halves every {cost.COST_HALVING_YEARS:g} years from {cost.NOTE_BASE_YEAR})")


def cost_result(args: argparse.Namespace) -> api.CostResult:
    tokens = parse_count(args.tokens, "--tokens")
    result = api.price(args.config, tokens, args.seq_len, gpu=args.gpu, usd_per_hour=args.usd_per_hour,
                       mfu=args.mfu, causal=not args.full_attention, year=args.year, gpus=args.gpus)
    _check_finite(result.to_dict(), f"cost of --tokens {args.tokens} at --seq-len {result.seq_len}")
    return result


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
    ]) + gpu_count.wall_clock_line(d) + _cost_gpus_auto_line(d)


def _cost_gpus_auto_line(d: dict[str, Any]) -> str:
    """The line ``cost --gpus auto`` adds: the layout chosen and why."""
    a = d.get("gpus_auto")
    if not a:
        return ""
    lay, b = a["layout"], a["per_gpu_bytes"]
    return (f"\n--gpus auto: {lay['gpus']} x {a['gpu']} (tp {lay['tp']}, pp {lay['pp']}, ep {lay['ep']}, dp {lay['dp']}, "
            f"ZeRO {lay['zero']}): training memory {b['total'] / 1e9:,.1f} of {a['capacity_bytes'] / 1e9:g} GB per GPU "
            f"(micro-batch {a['micro_batch']} x {a['seq_len']} tokens); {a['reason']}")



register(Command("cost", "training and inference cost of a config", cost_arguments, cost_result, cost_text))


# ----- train-memory (accounting.training_memory) -------------------------------------------------------
def train_memory_arguments(p: argparse.ArgumentParser) -> None:
    _config_argument(p)
    train_memory_cli.train_memory_arguments(p)


def train_memory_result(args: argparse.Namespace) -> train_memory_cli.TrainMemoryReport:
    if args.seq_len < 1:
        raise CliError(f"--seq-len must be a positive integer, got {args.seq_len}")
    settings = {k: v for k, v in vars(train_memory_cli.settings_from_args(args)).items()
                if k not in ("seq_len", "micro_batch")}
    return api.train_memory(args.config, args.seq_len, args.micro_batch, args.gpus, tp=args.tp, pp=args.pp,
                            ep=args.ep, zero=args.zero, sp=args.sp, gpu=args.gpu, **settings)


register(Command("train-memory", "training memory per GPU and the GPU count that fits", train_memory_arguments,
                 train_memory_result, train_memory_cli.text))


# ----- serve and serving-check (accounting.serving) ----------------------------------------------------
def serve_arguments(ps: argparse.ArgumentParser) -> None:
    _config_argument(ps)
    ps.add_argument("--gpu", required=True, choices=sorted(k for k, h in HARDWARE.items() if h.memory_bytes),
                    help="hardware preset (peaks, HBM, NVLink, network)")
    ps.add_argument("--gpus", type=_gpus_or_auto, default=1,
                    help="GPUs of one replica, G (expert-parallel degree); 'auto': the smallest power of two that "
                         "holds the weights and the KV cache of the largest --batch")
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


def serve_result(args: argparse.Namespace) -> api.ServeResult:
    return api.serve(args.config, args.gpu, args.batch, args.context, gpus=args.gpus, prompt_len=args.prompt_len,
                     weights=args.weights, kv_dtype=args.kv_dtype, usd_per_hour=args.usd_per_hour,
                     efficiency=args.efficiency, tp=args.tp, redundant_experts=args.redundant_experts,
                     mtp_acceptance=args.mtp_acceptance, cache_hit_share=args.cache_hit_share,
                     dense_equivalent=args.dense_equivalent)


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
    if d.get("gpus_auto"):
        out.append(f"--gpus auto: {d['gpus_auto']['reason']}")
    return "\n".join(out)



register(Command("serve", "roofline of decode and prefill, memory fit and $ per Mtok", serve_arguments,
                 serve_result, serve_text, csv=lambda data: _csv([dict(flatten(r)) for r in data["rows"]])))


def serving_check_arguments(pk: argparse.ArgumentParser) -> None:
    pk.add_argument("--context", type=_positive_int, default=4096, help="assumed decode context (not disclosed)")
    pk.add_argument("--prompt-len", type=_positive_int, default=4096, help="assumed prompt length (not disclosed)")


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


register(Command("serving-check", "DeepSeek-V3 in DeepSeek's disclosed layouts vs what it achieved; the note's case D",
                 serving_check_arguments, lambda args: api.serving_check(args.context, args.prompt_len),
                 serving_check_text))


# ----- entry point ---------------------------------------------------------------------------------
FORMATS = ("table", "json", "csv")


def build_parser() -> _Parser:
    """The parser of every registered command. ``--format`` is accepted before the subcommand (dest
    ``format_before``) or after it (dest ``format``); `run` refuses it in both places."""
    p = _Parser(prog="python -m accounting", description=__doc__.split("\n\n")[0])
    p.add_argument("--format", dest="format_before", choices=FORMATS, default=None, action=_Once,
                   help="table (readable, SI suffixes; default), json or csv (full precision); before or "
                        "after the subcommand")
    sub = p.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    sub.required = True
    for command in COMMANDS.values():
        sp = sub.add_parser(command.name, help=command.help)
        sp.add_argument("--format", choices=FORMATS, default=argparse.SUPPRESS, action=_Once,
                        help="table (default), json or csv")
        command.arguments(sp)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; ``args.format`` is the one ``--format`` given (default ``table``)."""
    args = build_parser().parse_args(argv)
    after = getattr(args, "format", None)
    if args.format_before is not None and after is not None:
        raise CliError(f"argument --format: given twice ({args.format_before!r} before the subcommand and "
                       f"{after!r} after it); give it once")
    args.format = after or args.format_before or "table"
    return args


def run(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv`` and return the output text (raises CliError/ValueError on bad input)."""
    args = parse_args(argv)
    command = COMMANDS[args.command]
    data = command.result(args).to_dict()
    if args.format == "json":
        return _json(data)
    if args.format == "csv":
        return command.csv(data)
    return command.text(data)


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
