"""One palette for every figure: dense vs MoE colours, backends, distinct colours per configuration.

Dense is always blue, MoE orange, DeepSeek-style MoE green; the same key maps to the same colour in
every figure (seaborn's colour-blind palette).
"""
from __future__ import annotations

import seaborn as sns

_CB = sns.color_palette("colorblind", 10)

FAMILY = {"dense": _CB[0], "moe": _CB[1], "deepseek": _CB[2], "note": _CB[7], "real MoE": _CB[1],
          "note (dense)": _CB[0]}
BACKEND = {"dense": _CB[0], "loop": _CB[3], "grouped": _CB[1], "megablocks": _CB[4]}
MARKER = {"dense": "o", "moe": "s", "deepseek": "D", "real MoE": "s", "note (dense)": "o"}
WATERFALL = {"up": _CB[3], "down": _CB[2], "total": _CB[7], "reported": _CB[0]}
DECODE = {"decode": _CB[0], "recompute": _CB[3]}


def family_colour(family: str):
    """Colour for a model family: 'dense', 'moe', 'deepseek', or a variant named after one of them
    ('moe-nobalance', 'deepseek-mla'); anything else is grey."""
    name = str(family)
    if name in FAMILY:
        return FAMILY[name]
    for base in ("deepseek", "moe", "dense"):
        if name.startswith(base):
            return FAMILY[base]
    return _CB[7]


DISTINCT = [_CB[0], _CB[1], _CB[2], (0.15, 0.15, 0.15), sns.color_palette("tab10")[4], _CB[9], _CB[5], _CB[8]]
"""Colours that stay apart side by side (blue, orange, green, near-black, purple, sky blue, tan, yellow),
one per configuration in the loss curves."""


def run_colours(runs) -> dict:
    """One distinct colour per run (colour-blind palette, then a 20-colour one beyond 10 runs)."""
    runs = list(runs)
    cols = _CB if len(runs) <= len(_CB) else sns.color_palette("tab20", len(runs))
    return {r: cols[i % len(cols)] for i, r in enumerate(runs)}


LINESTYLES = ["-", "--", ":", "-."]
"""Cycled per run, so runs that share a colour stay apart."""


def colour(mapping: dict, key: str, index: int = 0):
    """``mapping[key]`` or a stable colour from the palette for unknown keys."""
    return mapping.get(str(key), _CB[(5 + index) % len(_CB)])
