"""Mixture-of-experts models on top of ``dense``: router, balancing, expert backends, MoE FFN and model.

    model = moe.build_model(shape, router=moe.RouterConfig(balancing="loss_free"), backend="grouped")
    model = moe.from_hf("folder/with/config.json+safetensors")   # a transformers checkpoint (moe.hf)
    moe.register_bias_update(model, opt)   # loss-free balancing: the bias step runs before opt.step()
    out = model(idx, targets)          # out.loss includes the auxiliary losses; out.router_stats per layer
    out.loss.backward(); opt.step()

Importing ``moe`` registers a FlopCounterMode formula for ``torch._grouped_mm``.
"""
from __future__ import annotations

from . import flop_formulas  # noqa: F401  (registers the _grouped_mm flop formula)
from .balance import Collapse, RouterStats, detect_collapse, routed_assignments
from .experts import BACKENDS, make_experts
from .hf import from_hf, to_hf
from .model import MoEOutput, MoETransformer, build_model, register_bias_update
from .mtp import MTPModule
from .moe_ffn import MoEFFN
from .router import Router, RouterConfig


__all__ = ["BACKENDS", "Collapse", "MTPModule", "MoEFFN", "MoEOutput", "MoETransformer", "Router", "RouterConfig", "RouterStats",
           "build_model", "from_hf", "to_hf", "detect_collapse", "make_experts", "register_bias_update",
           "routed_assignments"]
