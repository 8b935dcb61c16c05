"""Published scaling laws, dense and mixture-of-experts, side by side (pure Python).

Each law is one function of its OWN variables with the constants printed in its paper (the table or equation
is cited in each docstring, with where we read it: "source text" = a copy of the paper's text; "secondary" =
REFERENCE.md and third-party summaries that agree with each other, the paper itself not reached).
`evaluate(point, law)` puts a model shape and a token count to a law and returns a frozen `LawResult`:

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

Units: parameters and tokens are counts; compute in FLOP with TWO flops per multiply-add (``6 N D``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from .params import count_parameters
from .shapes import ModelShape

PF_DAY_FLOPS = 1e15 * 86400
"""One petaflop/s-day in FLOP (Kaplan et al. 2020 measure compute in PF-days)."""

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


def _saturating_experts(e: float, e_start: float, e_max: float) -> float:
    """Clark et al. 2022 eq. 4 (also Ludziejewski et al. 2025 eq. 4): the transformed expert count Ehat,
    ``1/Ehat = 1/(E - 1 + (1/E_start - 1/E_max)^-1) + 1/E_max``; Ehat(1) = E_start, Ehat -> E_max."""
    if e < 1:
        raise ValueError(f"the number of experts must be >= 1, got {e}")
    return 1.0 / (1.0 / (e - 1 + 1.0 / (1.0 / e_start - 1.0 / e_max)) + 1.0 / e_max)


# ----- dense laws ------------------------------------------------------------------------------------
HOFFMANN_2022 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
"""Hoffmann et al. 2022 (arXiv 2203.15556), Approach 3, eq. (10) / Appendix D.2, as printed (source text of
many copies agree; REFERENCE.md). N counts all parameters (embeddings included), D tokens."""
HOFFMANN_2022_RANGE = {"params": (70e6, 16e9), "tokens": (5e9, 500e9)}
"""'over 400 language models ranging from 70 million to over 16 billion parameters on 5 to 500 billion
tokens' (abstract)."""

BESIROGLU_2024 = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
"""Besiroglu et al. 2024 (arXiv 2404.10102), their refit of Hoffmann's Approach 3 on data read off Hoffmann's
Figure 4 (REFERENCE.md; Epoch's analyzing-chinchilla repository). Same variables and range as Hoffmann."""


def chinchilla_form_loss(n_params: float, tokens: float, c: dict) -> float:
    """``L = E + A / N^alpha + B / D^beta`` (nats/token) with constants ``c`` (keys E, A, B, alpha, beta)."""
    if n_params <= 0 or tokens <= 0:
        raise ValueError("n_params and tokens must be > 0")
    return c["E"] + c["A"] / n_params ** c["alpha"] + c["B"] / tokens ** c["beta"]


def hoffmann_loss(n_params: float, tokens: float) -> float:
    """Hoffmann et al. 2022 eq. (10) with the printed constants (E 1.69, A 406.4, B 410.7, alpha 0.34,
    beta 0.28)."""
    return chinchilla_form_loss(n_params, tokens, HOFFMANN_2022)


def besiroglu_loss(n_params: float, tokens: float) -> float:
    """Besiroglu et al. 2024's refit of the same form (E 1.8172, A 482.01, B 2085.43, alpha 0.3478,
    beta 0.3658)."""
    return chinchilla_form_loss(n_params, tokens, BESIROGLU_2024)


def chinchilla_form_optimum(flops: float, c: dict) -> tuple[float, float]:
    """Closed-form ``(N_opt, D_opt)`` of ``E + A/N^a + B/D^b`` under ``C = 6 N D`` (C in FLOP):
    ``N = G (C/6)^(b/(a+b))``, ``D = (C/6)^(a/(a+b)) / G``, ``G = (a A / (b B))^(1/(a+b))``."""
    if flops <= 0:
        raise ValueError(f"flops must be > 0, got {flops}")
    a, b = c["alpha"], c["beta"]
    g = (a * c["A"] / (b * c["B"])) ** (1.0 / (a + b))
    x = flops / 6.0
    return g * x ** (b / (a + b)), x ** (a / (a + b)) / g


KAPLAN_2020 = {"alpha_N": 0.076, "alpha_D": 0.103, "N_c": 6.4e13, "D_c": 1.8e13,
               "N_e": 1.3e9, "p_N": 0.73, "D_e": 2e10, "p_D": 0.27}
"""Kaplan et al. 2020 (arXiv 2001.08361): Table 2 'Fits to L(N, D)' alpha_N 0.076, alpha_D 0.103,
N_c 6.4e13, D_c 1.8e13 (source text); Table 6 compute-efficient allocation N_opt = 1.3e9 C_min^0.73,
D_opt = 2e10 C_min^0.27 with C_min in PF-days (secondary: several summaries agree). N counts NON-embedding
parameters. The per-variable laws of eqs. (1.1)-(1.2) print other constants (alpha_D 0.095, N_c 8.8e13,
D_c 5.4e13): those are separate one-variable fits, not this joint one."""
KAPLAN_2020_RANGE = {"params": (768.0, 1.5e9), "tokens": (22e6, 23e9)}
"""'models from 768 to 1.5 billion non-embedding parameters', datasets from 22 million to 23 billion tokens."""


def kaplan_loss(n_nonembedding: float, tokens: float) -> float:
    """Kaplan et al. 2020 eq. (1.5) with Table 2: ``L = ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D``
    (nats/token of WebText2 with GPT-2's tokenizer); N non-embedding parameters, D tokens."""
    k = KAPLAN_2020
    if n_nonembedding <= 0 or tokens <= 0:
        raise ValueError("n_nonembedding and tokens must be > 0")
    return ((k["N_c"] / n_nonembedding) ** (k["alpha_N"] / k["alpha_D"]) + k["D_c"] / tokens) ** k["alpha_D"]


def kaplan_compute_efficient(flops: float) -> tuple[float, float]:
    """Kaplan et al. 2020 Table 6: ``(N_opt, D_opt)`` = (1.3e9 C^0.73, 2e10 C^0.27), C in PF-days
    (``flops / PF_DAY_FLOPS``). It comes from learning curves at the critical batch size, so
    ``6 N_opt D_opt`` is not exactly C."""
    c = flops / PF_DAY_FLOPS
    k = KAPLAN_2020
    return k["N_e"] * c ** k["p_N"], k["D_e"] * c ** k["p_D"]


DEEPSEEK_LLM_2024 = {"M_base": 0.1715, "a": 0.5243, "D_base": 5.8316, "b": 0.4757}
"""DeepSeek LLM 2024 (arXiv 2401.02954), section 3.2: ``M_opt = 0.1715 C^0.5243``, ``D_opt = 5.8316
C^0.4757`` with C = M D, M = non-embedding FLOP per token ``72 n_layer d^2 + 12 n_layer d l_seq``
(secondary: REFERENCE.md and a third-party summary agree; the paper's text was not reached here). The
product 0.1715 x 5.8316 = 1.0001 and the exponents sum to 1, so M_opt D_opt = C, as it must."""
DEEPSEEK_LLM_2024_RANGE = {"compute": (1e17, 3e20)}
"""IsoFLOP budgets 1e17 to 3e20 FLOP (secondary)."""


def deepseek_llm_flops_per_token(n_layers: int, d_model: int, seq_len: int) -> float:
    """DeepSeek LLM's M: non-embedding FLOP per token ``72 n_layer d^2 + 12 n_layer d l_seq`` (dense
    transformer: 6 x 12 L d^2 for the weights, the rest attention)."""
    return 72.0 * n_layers * d_model ** 2 + 12.0 * n_layers * d_model * seq_len


def deepseek_llm_optimum(flops: float) -> tuple[float, float]:
    """``(M_opt, D_opt)``: the optimal non-embedding FLOP per token and tokens at budget C = M D (FLOP)."""
    if flops <= 0:
        raise ValueError(f"flops must be > 0, got {flops}")
    k = DEEPSEEK_LLM_2024
    return k["M_base"] * flops ** k["a"], k["D_base"] * flops ** k["b"]


# ----- MoE laws --------------------------------------------------------------------------------------
CLARK_2022 = {"a": -0.082, "b": -0.108, "c": 0.009, "d": 1.104, "E_start": 1.847, "E_max": 314.478}
"""Clark et al. 2022 (arXiv 2202.01169), Table 3, S-BASE row, eq. (1) with the saturating transform
(secondary: REFERENCE.md and a third-party reading agree, as does Ludziejewski 2025's restatement of the
form). Logarithms are base 10 (ln makes the loss ~0.5 at 1B parameters; log10 gives ~2.3, and the
printed cut-off where routing stops helping, N = 10^(-b/c) ~ 1e12 'about 937B', needs base 10)."""
CLARK_2022_RANGE = {"params": (15e6, 1.3e9), "experts": (1.0, 512.0)}
"""Dense base models of about 15M to 1.3B parameters, 1 to 512 experts, every run at 130B tokens
(secondary)."""
CLARK_2022_TOKENS = 130e9


def clark_loss(n_params: float, n_experts: float) -> float:
    """Clark et al. 2022 eq. (1): ``log10 L = a log10 N + b log10 Ehat + c log10 N log10 Ehat + d``; N the
    dense base model's parameters (~ active), E experts (E = 1: dense). Fitted at 130B tokens only."""
    k = CLARK_2022
    if n_params <= 0:
        raise ValueError("n_params must be > 0")
    ln, le = math.log10(n_params), math.log10(_saturating_experts(n_experts, k["E_start"], k["E_max"]))
    return 10 ** (k["a"] * ln + k["b"] * le + k["c"] * ln * le + k["d"])


def clark_effective_params(n_params: float, n_experts: float) -> float:
    """Clark et al.'s effective parameter count: the dense (E = 1) size with the same predicted loss."""
    k = CLARK_2022
    e1 = math.log10(_saturating_experts(1, k["E_start"], k["E_max"]))
    target = math.log10(clark_loss(n_params, n_experts)) - k["d"] - k["b"] * e1
    return 10 ** (target / (k["a"] + k["c"] * e1))


KRAJEWSKI_2024 = {"moe": {"a": 18.1, "alpha": 0.115, "b": 30.8, "beta": 0.147, "g": 2.1, "gamma": 0.58, "c": 0.47},
                  "dense": {"a": 16.3, "alpha": 0.126, "b": 26.7, "beta": 0.127, "c": 0.47}}
"""Krajewski et al. 2024 (arXiv 2402.07871), eq. (9) and Table 1 (source text, v1). N = total non-embedding
parameters, D tokens, G = d_ff / d_expert with d_ff = 4 d_model."""
KRAJEWSKI_2024_RANGE = {"params": (129e6, 3.7e9), "tokens": (16e9, 130e9), "granularity": (1.0, 16.0)}
"""'models with sizes ranging from 129M to 3.7B parameters ... from 16B to 130B tokens ... granularity
between 1 and 16', expansion rate E = 64 fixed (section 5)."""


def krajewski_loss(n_total_nonembedding: float, tokens: float, granularity: float) -> float:
    """Krajewski et al. 2024 eq. (9): ``L = c + (g / G^gamma + a) / N^alpha + b / D^beta``."""
    k = KRAJEWSKI_2024["moe"]
    if n_total_nonembedding <= 0 or tokens <= 0 or granularity <= 0:
        raise ValueError("N, D and G must be > 0")
    return (k["c"] + (k["g"] / granularity ** k["gamma"] + k["a"]) / n_total_nonembedding ** k["alpha"]
            + k["b"] / tokens ** k["beta"])


def krajewski_dense_loss(n_nonembedding: float, tokens: float) -> float:
    """Krajewski et al. 2024's dense row of Table 1: ``L = c + a / N^alpha + b / D^beta``."""
    k = KRAJEWSKI_2024["dense"]
    return k["c"] + k["a"] / n_nonembedding ** k["alpha"] + k["b"] / tokens ** k["beta"]


ABNAR_2025 = {"a": 16612.5, "alpha": 0.5962, "b": 5455.67, "beta": 0.3954, "c": 0.4598, "lambda": -0.1666,
              "d": 17.26, "delta": 0.1603, "gamma": 0.1595, "e": 0.94}
"""Abnar et al. 2025 (arXiv 2501.12370), eq. (6) and Table 3 (secondary: REFERENCE.md, two third-party
copies agree). N total parameters, D tokens, S = (E - K) / E the sparsity."""
ABNAR_2025_RANGE = {"compute": (3e19, 1e21), "sparsity": (0.0, 0.98)}
"""IsoFLOP budgets 3e19 to 1e21 FLOP, sparsity up to 0.98 (the held-out S = 0.98) (secondary)."""


def abnar_loss(n_total: float, tokens: float, sparsity: float) -> float:
    """Abnar et al. 2025 eq. (6): ``L = a/N^alpha + b/D^beta + c/(1-S)^lambda + d/((1-S)^delta N^gamma) + e``."""
    k = ABNAR_2025
    if n_total <= 0 or tokens <= 0 or not 0 <= sparsity < 1:
        raise ValueError("N and D must be > 0 and the sparsity in [0, 1)")
    dense = 1 - sparsity
    return (k["a"] / n_total ** k["alpha"] + k["b"] / tokens ** k["beta"] + k["c"] / dense ** k["lambda"]
            + k["d"] / (dense ** k["delta"] * n_total ** k["gamma"]) + k["e"])


LUDZIEJEWSKI_2025 = {"a": 35.91, "alpha": -0.1889, "delta": -0.2285, "gamma": 0.0098, "b": 35.98,
                     "beta": -0.1775, "omega": 0.5529, "zeta": -0.0259, "E_start": 2.0732,
                     "E_max": 290.4521, "c": 1.3637}
"""Ludziejewski et al. 2025 (arXiv 2502.05172), eq. (1)/(6) and Appendix B Table 3 (source text). N_act
active parameters, D tokens, E experts (top-1; E = 1 is dense) through the transform of eq. (4)."""
LUDZIEJEWSKI_2025_RANGE = {"params": (1e7, 2.7e9), "experts": (1.0, 32.0)}
"""'over 280 experiments with up to 2.7B active parameters and up to 5B total parameters', E up to 32
(the lower end of the active range is not stated in what we read; 1e7 is a placeholder bound)."""


def ludziejewski_loss(n_active: float, tokens: float, n_experts: float) -> float:
    """Ludziejewski et al. 2025 eq. (6): ``L = a Ehat^delta N^(alpha + gamma ln Ehat) + b Ehat^omega
    D^(beta + zeta ln Ehat) + c``."""
    k = LUDZIEJEWSKI_2025
    if n_active <= 0 or tokens <= 0:
        raise ValueError("n_active and tokens must be > 0")
    eh = _saturating_experts(n_experts, k["E_start"], k["E_max"])
    le = math.log(eh)
    return (k["a"] * eh ** k["delta"] * n_active ** (k["alpha"] + k["gamma"] * le)
            + k["b"] * eh ** k["omega"] * tokens ** (k["beta"] + k["zeta"] * le) + k["c"])


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
