"""Published scaling laws, dense and mixture-of-experts (pure Python).

Each law is one function of its OWN variables with the constants printed in its paper (the table or equation
is cited in each docstring, with where we read it: "source text" = a copy of the paper's text; "secondary" =
REFERENCE.md and third-party summaries that agree with each other, the paper itself not reached), beside the
ranges it was fitted on (``*_RANGE``). `accounting.scaling_evaluation` puts a model to every law side by side.

Units: parameters and tokens are counts; compute in FLOP with TWO flops per multiply-add (``6 N D``); losses
in nats per token of each paper's own data and tokenizer.
"""
from __future__ import annotations

import math

PF_DAY_FLOPS = 1e15 * 86400
"""One petaflop/s-day in FLOP (Kaplan et al. 2020 measure compute in PF-days)."""


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
