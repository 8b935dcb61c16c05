"""Load run folders and measurement CSVs into pandas DataFrames.

A run folder is any directory holding ``metrics.jsonl`` (written by ``experiments.train``; format in
``experiments/metrics.py``), usually with ``config.yaml``, ``env.json`` and ``summary.json`` next to it.
A measurement CSV is any ``*.csv`` with the bench columns ``kind`` and ``median_s``
(``experiments.bench``); a MoE-layer CSV one with the columns of ``experiments.bench.moe_layer`` (``row``,
``contender``, ``vs``, ``median``), its ``<csv>.env.json`` beside it; a paired benchmark is a folder with ``paired.csv`` and ``summary.json``
(``experiments.bench.paired``). Every row keeps the path it came from (``source``), so captions can name
their data and CSVs from different places are never pooled.

Runs are selected by their key ``<experiment>/<model>/<size>-seed<seed>`` with shell-style patterns
(``fnmatch``): ``demo/*``, ``*/moe*/*``, or a bare experiment name ``equal_flops`` (= ``equal_flops/*``).
A job of a ``-m`` sweep has the swept keys in its folder name (``tiny-seed0,model.shape.top_k=2``; see
``experiments/sweep.py``), so its key ends with them; each run's ``swept`` holds them as ``{key: value}``
(the value from its config.yaml when the key names a setting there, else as the folder writes it).
"""
from __future__ import annotations

import fnmatch
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd
import yaml

from accounting import ModelShape
from accounting.memory import kv_cache_elements_per_token
from experiments.paths import portable_path

METRICS = "metrics.jsonl"
BENCH_COLUMNS = {"kind", "median_s"}
MOE_LAYER_COLUMNS = {"row", "contender", "vs", "median", "threads"}


@dataclass
class Collected:
    """Everything the report draws on. Empty frames when nothing was found."""

    runs: pd.DataFrame = field(default_factory=pd.DataFrame)         # one row per run folder
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)      # one row per logged step
    router_load: pd.DataFrame = field(default_factory=pd.DataFrame)  # step x layer x expert
    router_layer: pd.DataFrame = field(default_factory=pd.DataFrame) # step x layer statistics
    bench: pd.DataFrame = field(default_factory=pd.DataFrame)        # rows of every bench CSV
    moe_layer: pd.DataFrame = field(default_factory=pd.DataFrame)    # rows of every MoE-layer CSV
    paired: list[dict] = field(default_factory=list)                 # paired benchmarks (summary, env, source)
    roots: list[str] = field(default_factory=list)
    select: list[str] = field(default_factory=list)                  # run patterns applied
    skipped: list[str] = field(default_factory=list)                 # run keys found but not selected

    @property
    def run_paths(self) -> list[str]:
        return [] if self.runs.empty else sorted(self.runs["path"].unique())

    @property
    def bench_paths(self) -> list[str]:
        return [] if self.bench.empty else sorted(self.bench["source"].unique())


def find_run_dirs(roots: Iterable[str | Path]) -> list[Path]:
    """Every directory under ``roots`` that holds a metrics.jsonl (sorted, no duplicates)."""
    found = set()
    for root in map(Path, roots):
        if root.is_dir():
            found.update(p.parent.resolve() for p in root.rglob(METRICS))
    return sorted(found)


def find_csvs(roots: Iterable[str | Path], columns: set[str] = BENCH_COLUMNS) -> list[Path]:
    """Every CSV under ``roots`` whose header holds ``columns`` (default: the bench format)."""
    out = set()
    for root in map(Path, roots):
        candidates = [root] if root.is_file() else (root.rglob("*.csv") if root.is_dir() else [])
        for p in candidates:
            try:
                cols = set(pd.read_csv(p, nrows=0).columns)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
                continue
            if columns <= cols:
                out.add(p.resolve())
    return sorted(out)


def warn(message: str) -> None:
    """One warning line on stderr (a skipped file, run or line)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _read_mapping(path: Path, parse, kind: str) -> dict | None:
    """The mapping in ``path``; {} when the file is absent; None (after a one-line warning naming the file)
    when it is unreadable, not ``kind`` or not a mapping."""
    if not path.exists():
        return {}
    try:
        data = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError) as e:
        warn(f"{portable_path(path)}: not valid {kind} ({' '.join(str(e).split())[:80]}); ignored")
        return None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        warn(f"{portable_path(path)}: holds a {type(data).__name__}, not a {kind} mapping; ignored")
        return None
    return data


def find_paired(roots: Iterable[str | Path]) -> list[Path]:
    """Every folder under ``roots`` holding a paired benchmark (``paired.csv`` + ``summary.json``)."""
    found = set()
    for root in map(Path, roots):
        if root.is_dir():
            found.update(p.parent.resolve() for p in root.rglob("paired.csv") if (p.parent / "summary.json").is_file())
    return sorted(found)


def load_paired(dirs: Iterable[Path]) -> list[dict]:
    """``{"source", "summary", "env"}`` per paired-benchmark folder (folders whose summary does not load
    are left out)."""
    out = []
    for d in dirs:
        summ = _read_json(d / "summary.json")
        if not isinstance(summ.get("models"), dict):
            continue
        out.append({"source": portable_path(d), "summary": summ, "env": _read_json(d / "env.json")})
    return out


def normalise_patterns(patterns: Iterable[str] | None) -> list[str]:
    """Run-key patterns: a bare experiment name ``demo`` becomes ``demo/*``; None or empty selects all."""
    pats = [p.strip().strip("/") for p in (patterns or []) if p and p.strip()]
    return [p if "/" in p or any(c in p for c in "*?[") else f"{p}/*" for p in pats] or ["*"]


def selected(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _read_json(path: Path) -> dict:
    return _read_mapping(path, json.loads, "JSON") or {}


def _read_yaml(path: Path) -> dict | None:
    return _read_mapping(path, yaml.safe_load, "YAML")


def _float(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def swept_values(run_dir: Path, cfg: dict | None = None) -> dict[str, object]:
    """``{key: value}`` of the swept keys a sweep job's folder name carries after its first comma
    (``tiny-seed0,model.shape.top_k=2,optim.lr=0.001``); {} for a single run's folder. A value is read from
    ``cfg`` (the run's config.yaml) when the key names a plain setting there, else taken from the name."""
    out: dict[str, object] = {}
    for part in run_dir.name.split(",")[1:]:
        key, sep, text = part.partition("=")
        if not sep or not key:
            continue
        node: object = cfg or {}
        for k in key.split("."):
            node = node.get(k) if isinstance(node, dict) else None
        out[key] = node if node is not None and not isinstance(node, (dict, list)) else text
    return out


def run_key(run_dir: Path) -> str | None:
    """A run folder's key ``<experiment>/<model>/<folder name>`` as `run_info` forms it, read quietly (None when
    its config.yaml does not load: `collect` warns about it)."""
    try:
        cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
        model = cfg.get("model") or {}
        family = model.get("name") or ("moe" if int((model.get("shape") or {}).get("n_experts") or 0) else "dense")
        return f"{cfg.get('name', Path(run_dir).parent.parent.name)}/{family}/{Path(run_dir).name}"
    except (OSError, ValueError, TypeError, AttributeError, UnicodeDecodeError, yaml.YAMLError):
        return None


def run_info(run_dir: Path) -> dict | None:
    """One row describing a run: family, balancing, sizes, device, peak (from config/env/summary); None
    (with a one-line warning) when its config.yaml is missing or unusable: the run cannot be labelled
    (dense or MoE) without it, and is skipped rather than mislabelled. A bad env.json or summary.json is
    ignored with a warning."""
    cfg = _read_yaml(run_dir / "config.yaml")
    model = cfg.get("model") if cfg else None
    shape = model.get("shape") if isinstance(model, dict) else None
    if not isinstance(shape, dict) or not isinstance(model.get("router") or {}, dict):
        warn(f"{portable_path(run_dir)}: skipped: its config.yaml is missing or has no model.shape "
             f"mapping, so the run cannot be labelled")
        return None
    try:
        n_experts, top_k = int(shape.get("n_experts") or 0), int(shape.get("top_k") or 0)
    except (TypeError, ValueError):
        warn(f"{portable_path(run_dir)}: skipped: model.shape.n_experts/top_k in its config.yaml are not "
             f"integers, so the run cannot be labelled")
        return None
    env, summ = _read_json(run_dir / "env.json"), _read_json(run_dir / "summary.json")
    router = model.get("router") or {}
    is_moe = n_experts > 0
    family = model.get("name") or ("moe" if is_moe else "dense")
    balancing = router.get("balancing", "none") if is_moe else "dense"
    if is_moe and _float(router.get("z_loss_coef")) > 0 and balancing == "none":
        balancing = "z_loss"
    return {
        "path": portable_path(run_dir), "run": f"{cfg.get('name', run_dir.parent.parent.name)}/"
                                               f"{family}/{run_dir.name}",
        "experiment": cfg.get("name", ""), "family": family, "is_moe": is_moe, "balancing": balancing,
        "z_loss_coef": _float(router.get("z_loss_coef")), "backend": model.get("backend", ""),
        "size": model.get("size", ""), "seed": cfg.get("seed"), "shape": shape,
        "n_experts": n_experts, "top_k": top_k,
        "d_model": shape.get("d_model"), "n_layers": shape.get("n_layers"), "seq_len": shape.get("seq_len"),
        "parameters_total": env.get("parameters_total", summ.get("parameters_total")),
        "parameters_active": env.get("parameters_active", summ.get("parameters_active")),
        "device": env.get("device", ""), "device_name": env.get("device_name", ""),
        "cpu_count": env.get("cpu_count"), "torch_threads": env.get("torch_threads"),
        "dtype": env.get("dtype", ""), "torch": env.get("torch", ""), "git_commit": env.get("git_commit", ""),
        "peak_flops_per_s": _float(env.get("peak_flops_per_s")), "peak_source": env.get("peak_source", ""),
        "status": summ.get("status", "running or killed"), "final_val_loss": _float(summ.get("final_val_loss")),
        "attention": shape.get("attention", "mha"), "kv_cache_per_token": _kv_cache_per_token(shape),
        "swept": swept_values(run_dir, cfg),
    }


def _kv_cache_per_token(shape: dict) -> float:
    """Decode-cache elements per token (``accounting.memory``) of a run's shape; NaN if it does not load."""
    try:
        return float(kv_cache_elements_per_token(ModelShape.from_dict(shape)))
    except (TypeError, ValueError):
        return float("nan")


def _metric_records(path: Path) -> list[dict]:
    """The usable lines of a metrics.jsonl: JSON objects with an integer-valued ``step``. Any other line is
    skipped with a one-line warning naming the file and line (a torn last line of a killed run included)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        warn(f"{portable_path(path)}: unreadable ({e.strerror}); skipped")
        return []
    out = []
    for i, ln in enumerate(raw.split(b"\n"), start=1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            rec = None
        step = rec.get("step") if isinstance(rec, dict) else None
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) \
                or step != int(step):
            warn(f"{portable_path(path)} line {i}: not a metrics record with an integer step; skipped")
            continue
        rec["step"] = int(step)
        out.append(rec)
    return out


def _renamed(rec: dict, name: str, old: str):
    """``rec[name]``, or ``rec[old]`` in files written before the field got its ``_fma2`` suffix."""
    return rec[name] if name in rec else rec.get(old)


def load_run(run_dir: Path, info: dict | None = None) -> tuple[dict, list[dict], list[dict], list[dict]] | None:
    """(run row, metric rows, router load rows, router layer rows) of one run folder; None when the run is
    skipped (see `run_info`)."""
    info = info or run_info(run_dir)
    if info is None:
        return None
    keys = {k: info[k] for k in ("run", "path", "family", "is_moe", "balancing", "size", "backend",
                                 "device_name")}
    metrics, loads, layers = [], [], []
    for rec in _metric_records(run_dir / METRICS):
        tokens = _float(rec.get("tokens"))
        fpt = _float(_renamed(rec, "train_flops_fma2_per_token", "train_flops_per_token"))
        metrics.append({**keys, "step": int(rec["step"]), "tokens": tokens,
                        "train_loss": _float(rec.get("train_loss")), "val_loss": _float(rec.get("val_loss")),
                        "train_flops_per_token": fpt, "train_flops": tokens * fpt,
                        "train_flops_per_token_routed": _float(_renamed(rec, "train_flops_fma2_per_token_routed",
                                                                                 "train_flops_per_token_routed")),
                        "tokens_per_s": _float(rec.get("tokens_per_s")),
                        "step_time_s": _float(rec.get("step_time_s")), "mfu": _float(rec.get("mfu")),
                        "achieved_flops_per_s": _float(_renamed(rec, "achieved_flops_fma2_per_s", "achieved_flops_per_s")),
                        "peak_flops_per_s": _float(rec.get("peak_flops_per_s"))})
        for i, r in enumerate(rec.get("router") if isinstance(rec.get("router"), list) else []):
            if not isinstance(r, dict):
                continue
            layer = r.get("layer", i) if r.get("layer") is not None else i
            layers.append({**keys, "step": int(rec["step"]), "layer": int(layer),
                           **{k: _float(r.get(k)) for k in ("max_vio", "cv", "entropy", "dropped_fraction",
                                                            "aux_loss", "z_loss")}})
            for e, f in enumerate(r.get("load_fraction") or []):
                loads.append({**keys, "step": int(rec["step"]), "layer": int(layer), "expert": e,
                              "load_fraction": _float(f)})
    return info, metrics, loads, layers


def load_bench(paths: Iterable[Path]) -> pd.DataFrame:
    frames = []
    for p in paths:
        df = pd.read_csv(p)
        df["source"] = portable_path(p)
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    for c in ("median_s", "min_s", "flops", "tflops_per_s", "tokens", "context", "n_experts", "top_k",
              "d_model", "d_expert"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "note" in df:
        df["note"] = df["note"].astype(object).where(df["note"].notna(), "").astype(str)
    return df


def load_moe_layer(paths: Iterable[Path]) -> pd.DataFrame:
    """Rows of MoE-layer CSVs, each with its ``source`` and, from ``<csv>.env.json``, the run's start time
    (``time_start_unix_s``, NaN when unknown) for picking the newest run per device."""
    frames = []
    for p in paths:
        try:
            df = pd.read_csv(p)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
            warn(f"{portable_path(p)}: unreadable MoE-layer CSV ({' '.join(str(e).split())[:80]}); ignored")
            continue
        env = _read_json(Path(str(p) + ".env.json"))
        df["source"] = portable_path(p)
        df["time_start_unix_s"] = _float(env.get("time_start_unix_s"))
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    for c in ("median", "q1", "q3", "threads", "n_experts", "top_k", "d_model", "d_expert", "tokens",
              "load1_start", "load1_end"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("note", "vs", "status", "device_name", "git_commit"):
        if c in df:
            df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return df


def collect(roots: Iterable[str | Path], select: Iterable[str] | None = None) -> Collected:
    """Load the run folders whose key matches ``select`` (all when None), every bench CSV and every paired
    benchmark under ``roots``."""
    roots = [str(r) for r in roots]
    patterns = normalise_patterns(select)
    infos, metrics, loads, layers = [], [], [], []
    seen: set[str] = set()
    skipped: set[str] = set()
    # Roots in order: a run found under an earlier root (e.g. fresh runs/) hides the same run
    # (experiment/model/size-seed) committed under a later one (reports/data/runs/).
    run_dirs = [d for root in roots for d in find_run_dirs([root])]
    for d in run_dirs:
        info = run_info(d)
        if info is None or info["run"] in seen:
            continue
        if not selected(info["run"], patterns):
            skipped.add(info["run"])
            continue
        seen.add(info["run"])
        i, m, lo, la = load_run(d, info)
        infos.append(i)
        metrics += m
        loads += lo
        layers += la
    return Collected(runs=pd.DataFrame(infos), metrics=pd.DataFrame(metrics),
                     router_load=pd.DataFrame(loads), router_layer=pd.DataFrame(layers),
                     bench=load_bench(find_csvs(roots)), paired=load_paired(find_paired(roots)), roots=roots,
                     moe_layer=load_moe_layer(find_csvs(roots, MOE_LAYER_COLUMNS)),
                     select=patterns, skipped=sorted(skipped - seen))
