"""A model put to every published law of `accounting.scaling`, side by side (pure Python).

`evaluate_all(shape, tokens)` reduces a model shape and a token count to the laws' variables
(`ScalingPoint`) and returns one frozen `LawResult` per law:

* ``loss``: the law's predicted loss, in ITS OWN units (nats per token of its own data and tokenizer).
  Losses of different papers are NOT comparable with each other; compare leverage and optimal sizes.
* ``dense_equivalent_flops``: the training compute a compute-optimal DENSE model needs to reach the same
  predicted loss, by the same paper's dense law (the law with one expert / sparsity 0 / its dense row).
* ``leverage``: that compute divided by the model's own training compute (``own_flops``, in the law's own
  compute convention, stated per law: mostly ``6 N_active D``).
* ``optimal_tokens`` / ``optimal_active_params``: the compute-optimal split of the model's own budget under
  the law, keeping the architecture's ratios (experts, granularity, sparsity, total/active) fixed.
* ``extrapolation``: for each variable the law was fitted on, how far the point lies outside the fitted
  range (a factor, 1 = inside).

`disagreement` is the spread of leverage and optimal tokens among the MoE laws. Units: parameters and tokens
are counts; compute in FLOP with TWO flops per multiply-add (``6 N D``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from .params import count_parameters
from .scaling import (ABNAR_2025_RANGE, BESIROGLU_2024, CLARK_2022_RANGE, CLARK_2022_TOKENS,
                      DEEPSEEK_LLM_2024_RANGE, HOFFMANN_2022, HOFFMANN_2022_RANGE, KAPLAN_2020_RANGE,
                      KRAJEWSKI_2024_RANGE, LUDZIEJEWSKI_2025_RANGE, abnar_loss, chinchilla_form_loss,
                      chinchilla_form_optimum, clark_effective_params, clark_loss, deepseek_llm_optimum,
                      kaplan_compute_efficient, kaplan_loss, krajewski_dense_loss, krajewski_loss,
                      ludziejewski_loss)
from .shapes import ModelShape

LOSS_UNITS_NOTE = ("each law's loss is in its own units (its own data and tokenizer): never compare losses "
                   "across papers, compare leverage and optimal sizes")


# ----- the model as the laws see it ------------------------------------------------------------------
@dataclass(frozen=True)
class ScalingPoint:
    """A model shape and a token count, reduced to the variables the laws use (counts of parameters).

    ``total_params``/``active_params`` are accounting.params' counts (active = what one token touches, with
    one input-embedding row and the output head); the ``_nonembedding`` counts drop the input embedding and
    the output head. ``experts_per_token`` = routed top-k; ``expansion`` = routed experts / top-k (the
    routed FFN's total/active ratio: Ludziejewski's E for top-1 models); ``granularity`` = 4 d_model /
    d_expert (Krajewski's G with d_ff = 4 d_model); ``sparsity`` = (E - k) / E (Abnar's S).
    """

    name: str
    tokens: float
    total_params: float
    active_params: float
    total_nonembedding: float
    active_nonembedding: float
    n_experts: int
    experts_per_token: int
    granularity: float
    n_layers: int
    d_model: int
    seq_len: int

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def expansion(self) -> float:
        return self.n_experts / self.experts_per_token if self.is_moe else 1.0

    @property
    def sparsity(self) -> float:
        return (self.n_experts - self.experts_per_token) / self.n_experts if self.is_moe else 0.0

    @property
    def ratio_total_active_nonembedding(self) -> float:
        return self.total_nonembedding / self.active_nonembedding


def scaling_point(shape: ModelShape, tokens: float) -> ScalingPoint:
    """The law variables of ``shape`` trained on ``tokens`` tokens."""
    if not (tokens > 0 and math.isfinite(tokens)):
        raise ValueError(f"tokens must be a positive finite number, got {tokens}")
    c = count_parameters(shape)
    emb_total = c.total_by_component["embedding"] + c.total_by_component["output_head"]
    emb_active = c.active_by_component["embedding"] + c.active_by_component["output_head"]
    g = 4 * shape.d_model / shape.d_expert if shape.is_moe else 1.0
    return ScalingPoint(shape.name or "model", float(tokens), float(c.total), float(c.active),
                        float(c.total - emb_total), float(c.active - emb_active), shape.n_experts,
                        shape.top_k if shape.is_moe else 0, g, shape.n_layers, shape.d_model, shape.seq_len)


# ----- results --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extrapolation:
    """How far one variable lies outside the law's fitted range: ``factor`` = value / hi above the range,
    lo / value below it, 1.0 inside."""

    variable: str
    value: float
    lo: float
    hi: float

    @property
    def factor(self) -> float:
        if self.value > self.hi:
            return self.value / self.hi
        if self.value < self.lo:
            return self.lo / self.value
        return 1.0

    @property
    def inside(self) -> bool:
        return self.factor == 1.0

    def describe(self) -> str:
        if self.inside:
            return f"{self.variable} inside"
        return f"{self.variable} {self.factor:.3g}x {'above' if self.value > self.hi else 'below'}"


@dataclass(frozen=True)
class LawResult:
    """What one law says about one point (see the module docstring for each field's meaning)."""

    law: str
    loss: float | None
    own_flops: float
    own_flops_convention: str
    dense_equivalent_flops: float | None
    leverage: float | None
    optimal_tokens: float | None
    optimal_active_params: float | None
    extrapolation: tuple[Extrapolation, ...]
    note: str = ""

    @property
    def max_extrapolation(self) -> float:
        return max((e.factor for e in self.extrapolation), default=1.0)

    def extrapolation_text(self) -> str:
        out = [e.describe() for e in self.extrapolation if not e.inside]
        return "; ".join(out) if out else "inside the fitted range"

    def to_dict(self) -> dict:
        return {"law": self.law, "loss": self.loss, "own_flops": self.own_flops,
                "own_flops_convention": self.own_flops_convention,
                "dense_equivalent_flops": self.dense_equivalent_flops, "leverage": self.leverage,
                "optimal_tokens": self.optimal_tokens, "optimal_active_params": self.optimal_active_params,
                "extrapolation": {"max_factor": self.max_extrapolation, "summary": self.extrapolation_text(),
                                  "variables": [{"variable": e.variable, "value": e.value, "lo": e.lo, "hi": e.hi,
                                                 "factor": e.factor} for e in self.extrapolation]},
                "note": self.note}


# ----- numerics (pure Python) ------------------------------------------------------------------------
def _argmin_log(f: Callable[[float], float], lo: float, hi: float, iters: int = 120) -> float:
    """Golden-section search for the minimiser of ``f`` over [lo, hi] in log space (``f`` unimodal)."""
    a, b = math.log(lo), math.log(hi)
    r = (math.sqrt(5) - 1) / 2
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(math.exp(c)), f(math.exp(d))
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(math.exp(d))
    return math.exp((a + b) / 2)


def optimal_split(loss: Callable[[float, float], float], flops: float, flops_per_param_token: float = 6.0
                  ) -> tuple[float, float, float]:
    """``(N_opt, D_opt, L_opt)`` minimising ``loss(N, D)`` subject to ``flops = k N D`` (k = 6 by default)."""
    if not (flops > 0 and math.isfinite(flops)):
        raise ValueError(f"flops must be a positive finite number, got {flops}")
    x = flops / flops_per_param_token
    n = _argmin_log(lambda m: loss(m, x / m), x ** 0.5 * 1e-9, x ** 0.5 * 1e9)
    return n, x / n, loss(n, x / n)


def compute_for_loss(frontier: Callable[[float], float], target: float, lo: float = 1.0, hi: float = 1e45
                     ) -> float | None:
    """The compute C with ``frontier(C) == target`` by bisection in log C (``frontier`` decreasing); None when
    the target is below what the frontier reaches at ``hi`` (or above it at ``lo``)."""
    if frontier(hi) > target or frontier(lo) < target:
        return None
    a, b = math.log(lo), math.log(hi)
    for _ in range(100):
        m = (a + b) / 2
        if frontier(math.exp(m)) > target:
            a = m
        else:
            b = m
    return math.exp((a + b) / 2)


# ----- putting a point to each law --------------------------------------------------------------------
def _range(point_values: dict[str, float], ranges: dict[str, tuple[float, float]]) -> tuple[Extrapolation, ...]:
    return tuple(Extrapolation(k, point_values[k], lo, hi) for k, (lo, hi) in ranges.items() if k in point_values)


def _dense_frontier(loss: Callable[[float, float], float]) -> Callable[[float], float]:
    return lambda c: optimal_split(loss, c)[2]


def _chinchilla_like(name: str, consts: dict, p: ScalingPoint) -> LawResult:
    n = p.active_params
    own = 6.0 * n * p.tokens
    loss = chinchilla_form_loss(n, p.tokens, consts)
    eq = compute_for_loss(_dense_frontier(lambda m, d: chinchilla_form_loss(m, d, consts)), loss)
    n_opt, d_opt = chinchilla_form_optimum(own, consts)
    note = ("N = active parameters (the model taken as a dense model of its active size: experts get no "
            "credit, so leverage <= 1 measures only the split of N and D)") if p.is_moe else "N = all parameters"
    return LawResult(name, loss, own, "6 N_active D", eq, None if eq is None else eq / own, d_opt, n_opt,
                     _range({"params": n, "tokens": p.tokens}, HOFFMANN_2022_RANGE), note)


def law_hoffmann2022(p: ScalingPoint) -> LawResult:
    """Hoffmann et al. 2022 on the active parameters (see `HOFFMANN_2022`)."""
    return _chinchilla_like("hoffmann2022", HOFFMANN_2022, p)


def law_besiroglu2024(p: ScalingPoint) -> LawResult:
    """Besiroglu et al. 2024 on the active parameters (see `BESIROGLU_2024`)."""
    return _chinchilla_like("besiroglu2024", BESIROGLU_2024, p)


def law_kaplan2020(p: ScalingPoint) -> LawResult:
    """Kaplan et al. 2020 on the active non-embedding parameters; optimal split from Table 6."""
    n = p.active_nonembedding
    own = 6.0 * n * p.tokens
    loss = kaplan_loss(n, p.tokens)
    eq = compute_for_loss(_dense_frontier(kaplan_loss), loss)
    n_opt, d_opt = kaplan_compute_efficient(own)
    return LawResult("kaplan2020", loss, own, "6 N_active,non-embedding D", eq, None if eq is None else eq / own,
                     d_opt, n_opt, _range({"params": n, "tokens": p.tokens}, KAPLAN_2020_RANGE),
                     "N = active non-embedding parameters; dense-equivalent from the L(N, D) surface, optimal "
                     "split from Table 6 (C_min in PF-days)")


def law_deepseek_llm2024(p: ScalingPoint) -> LawResult:
    """DeepSeek LLM 2024: no loss law, only the optimal split. C = M D with M = 6 N_active,non-embedding +
    12 n_layer d l_seq (the paper's attention term); optimal active parameters = (M_opt - attention) / 6."""
    attention = 12.0 * p.n_layers * p.d_model * p.seq_len
    m = 6.0 * p.active_nonembedding + attention
    own = m * p.tokens
    m_opt, d_opt = deepseek_llm_optimum(own)
    return LawResult("deepseek_llm2024", None, own, "M D, M = 6 N_active,non-embedding + 12 L d seq_len", None, None,
                     d_opt, max(m_opt - attention, 0.0) / 6.0, _range({"compute": own}, DEEPSEEK_LLM_2024_RANGE),
                     "no loss law: only M_opt(C) and D_opt(C); optimal params = (M_opt - attention term) / 6")


def law_clark2022(p: ScalingPoint) -> LawResult:
    """Clark et al. 2022 (S-BASE): N = active non-embedding parameters (the dense base model), E = routed
    experts / top-k (its models route top-1). Fitted at 130B tokens only: the loss ignores D, the dense
    equivalent is the effective parameter count trained on the same tokens, and there is no optimal split."""
    n, e = p.active_nonembedding, p.expansion
    own = 6.0 * n * p.tokens
    loss = clark_loss(n, e)
    eq = 6.0 * clark_effective_params(n, e) * p.tokens
    ext = _range({"params": n, "experts": e}, CLARK_2022_RANGE) + (
        Extrapolation("tokens", p.tokens, CLARK_2022_TOKENS, CLARK_2022_TOKENS),)
    return LawResult("clark2022", loss, own, "6 N_active,non-embedding D", eq, eq / own, None, None, ext,
                     "fixed 130B tokens: dense equivalent = effective parameter count x the same tokens, "
                     "not a compute-optimal dense model; E = routed experts / top-k")


def law_krajewski2024(p: ScalingPoint) -> LawResult:
    """Krajewski et al. 2024: N = total non-embedding parameters, G = 4 d / d_expert; dense counterpart the
    dense row of Table 1; optimal split at the model's budget keeps total/active and G fixed."""
    own = 6.0 * p.active_nonembedding * p.tokens
    if p.is_moe:
        r, g = p.ratio_total_active_nonembedding, p.granularity
        loss = krajewski_loss(p.total_nonembedding, p.tokens, g)
        split = optimal_split(lambda n, d: krajewski_loss(r * n, d, g), own)
    else:
        loss = krajewski_dense_loss(p.total_nonembedding, p.tokens)
        split = optimal_split(krajewski_dense_loss, own)
    eq = compute_for_loss(_dense_frontier(krajewski_dense_loss), loss)
    values = {"params": p.total_nonembedding, "tokens": p.tokens, "granularity": p.granularity}
    return LawResult("krajewski2024", loss, own, "6 N_active,non-embedding D (routing flops ignored)", eq,
                     None if eq is None else eq / own, split[1], split[0],
                     _range(values, KRAJEWSKI_2024_RANGE if p.is_moe else
                            {k: v for k, v in KRAJEWSKI_2024_RANGE.items() if k != "granularity"}),
                     "N = total non-embedding parameters; fitted with E = 64 only")


def law_abnar2025(p: ScalingPoint) -> LawResult:
    """Abnar et al. 2025: N = total parameters, S = (E - k)/E; dense counterpart S = 0; optimal split keeps
    total/active and S fixed."""
    own = 6.0 * p.active_nonembedding * p.tokens
    s, r = p.sparsity, p.total_params / p.active_nonembedding
    loss = abnar_loss(p.total_params, p.tokens, s)
    n_opt, d_opt, _ = optimal_split(lambda n, d: abnar_loss(r * n, d, s), own)
    eq = compute_for_loss(_dense_frontier(lambda n, d: abnar_loss(n, d, 0.0)), loss)
    return LawResult("abnar2025", loss, own, "6 N_active,non-embedding D", eq, None if eq is None else eq / own,
                     d_opt, n_opt, _range({"compute": own, "sparsity": s}, ABNAR_2025_RANGE),
                     "N = total parameters, S = (E - k)/E; shared experts count as active, not in S")


def law_ludziejewski2025(p: ScalingPoint) -> LawResult:
    """Ludziejewski et al. 2025: N_act = active parameters, E = routed experts / top-k (its models are
    top-1); dense counterpart E = 1; optimal split at fixed E."""
    n, e = p.active_params, p.expansion
    own = 6.0 * n * p.tokens
    loss = ludziejewski_loss(n, p.tokens, e)
    n_opt, d_opt, _ = optimal_split(lambda m, d: ludziejewski_loss(m, d, e), own)
    eq = compute_for_loss(_dense_frontier(lambda m, d: ludziejewski_loss(m, d, 1.0)), loss)
    return LawResult("ludziejewski2025", loss, own, "6 N_active D", eq, None if eq is None else eq / own,
                     d_opt, n_opt, _range({"params": n, "experts": e}, LUDZIEJEWSKI_2025_RANGE),
                     "N = active parameters; E = routed experts / top-k (top-1 fits)")


LAWS: dict[str, Callable[[ScalingPoint], LawResult]] = {
    "hoffmann2022": law_hoffmann2022, "besiroglu2024": law_besiroglu2024, "kaplan2020": law_kaplan2020,
    "deepseek_llm2024": law_deepseek_llm2024, "clark2022": law_clark2022, "krajewski2024": law_krajewski2024,
    "abnar2025": law_abnar2025, "ludziejewski2025": law_ludziejewski2025,
}
"""Every law by name. Ling et al. 2025 (arXiv 2507.17702) is left out: its fitted constants were not found
in any text we could read."""

MOE_LAWS = ("clark2022", "krajewski2024", "abnar2025", "ludziejewski2025")


def evaluate_all(shape: ModelShape, tokens: float, laws: tuple[str, ...] | None = None) -> tuple[LawResult, ...]:
    """Every law's `LawResult` for ``shape`` trained on ``tokens`` tokens."""
    p = scaling_point(shape, tokens)
    return tuple(LAWS[name](p) for name in (laws or tuple(LAWS)))


@dataclass(frozen=True)
class Disagreement:
    """How far the laws disagree: max/min of the leverages and of the optimal token counts they give."""

    leverage_min: float | None
    leverage_max: float | None
    optimal_tokens_min: float | None
    optimal_tokens_max: float | None
    laws: tuple[str, ...] = field(default=())

    @property
    def leverage_spread(self) -> float | None:
        return None if not self.leverage_min else self.leverage_max / self.leverage_min

    @property
    def optimal_tokens_spread(self) -> float | None:
        return None if not self.optimal_tokens_min else self.optimal_tokens_max / self.optimal_tokens_min


def disagreement(results: tuple[LawResult, ...], laws: tuple[str, ...] = MOE_LAWS) -> Disagreement:
    """The spread of leverage and optimal tokens among ``laws`` (default: the MoE laws)."""
    lev = [r.leverage for r in results if r.law in laws and r.leverage]
    tok = [r.optimal_tokens for r in results if r.law in laws and r.optimal_tokens]
    return Disagreement(min(lev, default=None), max(lev, default=None), min(tok, default=None),
                        max(tok, default=None), laws)
