"""Mixture-of-experts models on top of ``dense``: router, balancing, expert backends, MoE FFN and model.

    model = moe.build_model(shape, router=moe.RouterConfig(balancing="loss_free"), backend="grouped")
    model = moe.from_hf("folder/with/config.json+safetensors")   # a transformers checkpoint (moe.hf)
    moe.register_bias_update(model, opt)   # loss-free balancing: the bias step runs before opt.step()
    out = model(idx, targets)          # out.loss includes the auxiliary losses; out.router_stats per layer
    out.loss.backward(); opt.step()

Importing ``moe`` registers a FlopCounterMode formula for ``torch._grouped_mm``.
"""
from __future__ import annotations

from torch import nn

from accounting.shapes import ModelShape

from . import flop_formulas  # noqa: F401  (registers the _grouped_mm flop formula)
from .balance import Collapse, RouterStats, detect_collapse, routed_assignments
from .experts import BACKENDS, make_experts
from .hf import from_hf, to_hf
from .model import MoEOutput, MoETransformer, check_backend, register_bias_update
from .mtp import MTPModule
from .moe_ffn import MoEFFN
from .router import Router, RouterConfig


def build_model(shape: ModelShape, router: RouterConfig | dict | None = None, backend: str = "loop",
                mtp_loss_weight: float = 0.3, **backend_kwargs) -> nn.Module:
    """A ``dense.Transformer`` when ``shape.n_experts == 0``, else a ``MoETransformer`` (with DeepSeek-V3's
    MTP modules when ``shape.mtp_modules``; ``mtp_loss_weight`` weighs their loss).

    ``router`` and ``backend`` are validated in both cases (a dense model ignores them).
    """
    check_backend(backend)
    config = RouterConfig.from_any(router)
    if not shape.is_moe:
        from dense import Transformer
        return Transformer(shape)
    return MoETransformer(shape, router=config, backend=backend, mtp_loss_weight=mtp_loss_weight, **backend_kwargs)


__all__ = ["BACKENDS", "Collapse", "MTPModule", "MoEFFN", "MoEOutput", "MoETransformer", "Router", "RouterConfig", "RouterStats",
           "build_model", "from_hf", "to_hf", "detect_collapse", "make_experts", "register_bias_update",
           "routed_assignments"]
