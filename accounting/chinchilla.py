"""Compute-optimal training-set sizes: the note's 20-tokens-per-parameter rule (eq. 4) and the
Hoffmann et al. (2022) parametric loss ``L(N, D) = E + A / N^alpha + B / D^beta``.

Units: parameters and tokens are counts. The compute budget ``C`` of :meth:`LossFit.compute_optimal`
is in FLOP with TWO flops per multiply-add (``C = 6 N D``, the Chinchilla convention); pass
``C_mac * 2`` for a count in the note's multiply-add convention.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import scaling as _scaling
from .params import count_parameters
from .shapes import ModelShape

TOKENS_PER_PARAMETER = 20
"""The note's Chinchilla rule: about 20 training tokens per parameter."""


def chinchilla_tokens(n_params: float, tokens_per_param: float = TOKENS_PER_PARAMETER) -> float:
    """Optimal training-set size ``D* = tokens_per_param x N`` (tokens)."""
    if n_params < 0 or tokens_per_param < 0:
        raise ValueError("n_params and tokens_per_param must be >= 0")
    return tokens_per_param * n_params


def chinchilla_tokens_for_shape(shape: ModelShape, basis: str = "total",
                                tokens_per_param: float = TOKENS_PER_PARAMETER) -> float:
    """``D*`` (tokens) for ``shape`` on its ``total`` parameters (the note's choice, default) or its
    ``active`` ones (what one token touches; see ``accounting.params``)."""
    counts = count_parameters(shape)
    if basis not in ("total", "active"):
        raise ValueError(f"basis must be 'total' or 'active', got {basis!r}")
    return chinchilla_tokens(counts.total if basis == "total" else counts.active, tokens_per_param)


def note_optimal_tokens(n_layers: int, d_model: int, vocab_size: int, include_vocab: bool = True) -> int:
    """The note's eq. (4): ``D* = 240 L d^2 + 40 V d`` tokens, i.e. 20 x (12 L d^2 + 2 V d).

    ``include_vocab=False`` drops the ``40 V d`` term, as the note's Table 3 row and eq. (6) do
    (``240 L d^2``; this is what reproduces the printed 540 x 10^9 of use case B).
    """
    return 240 * n_layers * d_model ** 2 + (40 * vocab_size * d_model if include_vocab else 0)


@dataclass(frozen=True)
class LossFit:
    """A parametric loss fit ``L(N, D) = E + A / N^alpha + B / D^beta`` (nats per token).

    N: parameters; D: training tokens. ``compute_optimal(C)`` minimises L subject to ``C = 6 N D``
    (C in FLOP, two per multiply-add).
    """

    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = ""

    def loss(self, n_params: float, tokens: float) -> float:
        """Predicted loss (nats/token) of an N-parameter model trained on D tokens."""
        if n_params <= 0 or tokens <= 0:
            raise ValueError("n_params and tokens must be > 0")
        return self.E + self.A / n_params ** self.alpha + self.B / tokens ** self.beta

    def compute_optimal(self, flops: float) -> tuple[float, float]:
        """``(N_opt, D_opt)`` for a budget of ``flops`` FLOP (2 per multiply-add) with ``C = 6 N D``.

        Closed form: ``N = G (C/6)^(beta/(alpha+beta))``, ``D = (C/6)^(alpha/(alpha+beta)) / G`` with
        ``G = (alpha A / (beta B))^(1/(alpha+beta))``.
        """
        if flops <= 0:
            raise ValueError(f"flops must be > 0, got {flops}")
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1.0 / (a + b))
        x = flops / 6.0
        return g * x ** (b / (a + b)), x ** (a / (a + b)) / g

    def tokens_per_parameter(self, flops: float) -> float:
        """``D_opt / N_opt`` at budget ``flops`` (FLOP, 2 per multiply-add)."""
        n, d = self.compute_optimal(flops)
        return d / n


# The constants live in accounting.scaling (one place for every published law); these are views of them.
HOFFMANN_2022 = LossFit("hoffmann2022", **_scaling.HOFFMANN_2022,
                        source="Hoffmann et al. 2022 (arXiv 2203.15556), approach 3, as published")
BESIROGLU_2024 = LossFit("besiroglu2024", **_scaling.BESIROGLU_2024,
                         source="Besiroglu et al. 2024 (arXiv 2404.10102), refit of the same data")
FITS = {f.name: f for f in (HOFFMANN_2022, BESIROGLU_2024)}
