"""Report section: training memory per GPU (``accounting.training_memory``), dense vs MoE, and GPU counts.

``section(ctx)`` returns the section (markdown with its ``## `` heading) and draws one stacked-bar figure
into ``<out>/figures``. Everything is computed here from the planner; nothing is measured (the planner's
activations equal what autograd saves to the byte for our tiny models: tests/test_accounting_training_memory_torch.py).

Models: Mixtral 8x7B (the shipped config) and two dense models with its attention and width, one of equal
ACTIVE parameters (d_ff = 2 x 14336, the two experts a token uses) and one of equal TOTAL parameters
(d_ff = 8 x 14336).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import seaborn as sns

from accounting import count_parameters
from accounting.flops import FLOP, training_flops_per_token
from accounting.hardware import get_hardware
from accounting.hf_config import load_shipped
from accounting.memory import kv_cache_bytes
from accounting.gpu_count import auto_layout
from accounting.training_memory import plan
from accounting.training_settings import Layout, Settings

from ..context import Context
from ..layout import Drawn, plt, save
from ..tables import markdown
from . import Page, Section

SEQ = 4096
SETTINGS = Settings(seq_len=SEQ, micro_batch=1, precision="bf16-pure", attention_kernel="flash",
                    recompute="selective", fused_swiglu=True, router_aux_loss=True, router_z_loss=False)
LAYOUTS = {"8 GPUs, ZeRO-1": Layout(8, zero=1, ep=8), "8 GPUs, ZeRO-3": Layout(8, zero=3, ep=8),
           "8 GPUs, TP8 + SP": Layout(8, tp=8, sp=True)}
KINDS = ("weights", "gradients", "optimizer", "activations")
GPU = "h100-sxm"
TRAIN_TOKENS, TRAIN_DAYS, MFU = 1e12, 30, 0.4
SERVE_BATCH, SERVE_CONTEXT = 64, SEQ


def models() -> dict:
    """Mixtral 8x7B and its dense counterparts of equal active and equal total parameters."""
    moe = load_shipped("mixtral-8x7b", seq_len=SEQ)
    dense = dict(n_experts=0, top_k=0, n_shared_experts=0, first_dense_layers=0, router_groups=0,
                 router_topk_groups=0, router_score_bias=False)
    return {"Mixtral 8x7B (MoE)": moe,
            "dense, equal active": moe.replace(**dense, d_ff=moe.top_k * moe.d_expert, name="dense-active"),
            "dense, equal total": moe.replace(**dense, d_ff=moe.n_experts * moe.d_expert, name="dense-total")}


def rows() -> list[dict]:
    """Bytes per GPU by kind for every model and layout (ep applies to the MoE only)."""
    gpu, out = get_hardware(GPU), []
    for name, shape in models().items():
        for lname, lay in LAYOUTS.items():
            if not shape.is_moe:
                lay = Layout(lay.gpus, lay.tp, lay.pp, 1, lay.zero, lay.sp)
            r = plan(shape, SETTINGS, lay, gpu)
            out.append({"model": name, "layout": lname, **{k: r.per_gpu_bytes[k] for k in KINDS},
                        "total": r.per_gpu_bytes["total"], "fits": r.fits})
    return out


def serve_gpus(shape, capacity: float, per_node: int) -> int:
    """GPUs whose memory holds the bf16 weights and the KV cache of SERVE_BATCH sequences of SERVE_CONTEXT
    (memory only; the roofline is in the serving section): powers of two up to a node, then whole nodes."""
    need = 2 * count_parameters(shape).total + kv_cache_bytes(shape, SERVE_CONTEXT, SERVE_BATCH)
    g = 1
    while g * capacity < need:
        g = g * 2 if g < per_node else g + per_node
    return g


def counts() -> list[dict]:
    """GPUs to train (memory: ``--gpus auto``), to serve (memory) and to train in TRAIN_DAYS (compute)."""
    gpu, out = get_hardware(GPU), []
    for name, shape in models().items():
        r, _ = auto_layout(shape, SETTINGS, gpu)
        c = count_parameters(shape)
        flops = training_flops_per_token(shape, SEQ, flops_per_mac=FLOP, causal=True) * TRAIN_TOKENS
        compute = math.ceil(flops / (gpu.peak("bf16") * MFU * TRAIN_DAYS * 86400))
        lay = r.layout
        out.append({"model": name, "total params": c.total, "active params": c.active,
                    "train: GPUs that fit": lay.gpus,
                    "its layout": f"tp {lay.tp}, pp {lay.pp}, ep {lay.ep}, ZeRO-{lay.zero}",
                    "serve: GPUs that fit": serve_gpus(shape, gpu.memory_bytes, gpu.gpus_per_node),
                    f"train {TRAIN_TOKENS / 1e12:g}T tokens in {TRAIN_DAYS} days": compute})
    return out


def figure(data: list[dict], figdir: Path) -> Drawn:
    """Stacked bars: bytes per GPU by kind, one group per layout, one bar per model; the GPU's capacity."""
    colours = dict(zip(KINDS, sns.color_palette("colorblind", 10)[3:7]))
    names = list(models())
    fig, axes = plt.subplots(1, len(LAYOUTS), figsize=(12, 4.2), sharey=True)
    for ax, lname in zip(axes, LAYOUTS):
        sub = [r for r in data if r["layout"] == lname]
        bottom = [0.0] * len(sub)
        for kind in KINDS:
            vals = [r[kind] / 1e9 for r in sub]
            ax.bar(range(len(sub)), vals, bottom=bottom, color=colours[kind], label=kind)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.axhline(get_hardware(GPU).memory_bytes / 1e9, color="black", ls="--", lw=1, label="H100 80 GB")
        ax.set_xticks(range(len(sub)), [n.replace(" (MoE)", "\n(MoE)").replace(", ", "\n") for n in names],
                      fontsize=8)
        ax.set_title(lname, fontsize=10)
    axes[0].set_ylabel("GB per GPU")
    axes[-1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Training memory per GPU, {SEQ}-token sequences, micro-batch 1, bf16, selective recompute",
                 fontsize=10)
    return save(fig, figdir, "training_memory")


def section(ctx: Context) -> Section:
    data = rows()
    page = Page()
    path = page.record(figure(data, ctx.figdir))
    table = [{"model": r["model"], "layout": r["layout"], **{k: f"{r[k] / 1e9:.1f}" for k in (*KINDS, "total")},
              "fits 80 GB": "yes" if r["fits"] else "no"} for r in data]
    cnt = [{**r, "total params": f"{r['total params'] / 1e9:.1f}B", "active params": f"{r['active params'] / 1e9:.1f}B"}
           for r in counts()]
    page.add(
        "## Training memory per GPU, and how many GPUs\n",
        "`accounting.training_memory` prices weights, gradients, optimizer state (AdamW, 16 bytes per parameter "
        "under ZeRO's mixed-precision convention) and activations (the tensors autograd keeps, tensor by tensor; "
        "equal to the byte to what our tiny models save in torch, in fp32, bf16 autocast and bf16). Below: "
        f"Mixtral 8x7B against dense models of its width with equal active and equal total parameters, "
        f"{SEQ}-token sequences, micro-batch 1, bf16 parameters, flash attention, selective recompute and a "
        "fused SwiGLU, on 8 H100s in three layouts (the MoE with its 8 experts over ep = 8 where dp allows).\n",
        f"![Training memory per GPU](figures/{path.name})\n\n*Figure: training memory per GPU by kind; dashed: "
        "the H100's 80 GB; data: `accounting.training_memory.plan`, computed, not measured.*\n",
        markdown(pd.DataFrame(table)),
        "\nThe MoE's weights, gradients and optimizer state scale with its TOTAL parameters (every expert is "
        "stored and updated) while its activations scale with the ACTIVE ones (each token keeps the tensors of "
        "its k experts, plus the router and the dispatch indices): in memory it is the dense model of equal "
        "total parameters, not of equal active ones, until expert parallelism and ZeRO divide its state.\n",
        f"GPU counts ({GPU}): to train, the smallest count whose layout fits (`train-memory --gpus auto`, same "
        f"settings); to serve, the GPUs whose memory holds the bf16 weights and the KV cache of {SERVE_BATCH} "
        f"sequences of {SERVE_CONTEXT} tokens; and, beside them, the GPUs that train {TRAIN_TOKENS / 1e12:g}T "
        f"tokens in {TRAIN_DAYS} days at {MFU:.0%} MFU (causal attention, 2 FLOP per multiply-add).\n",
        markdown(pd.DataFrame(cnt)),
        "\nCommands: `python -m accounting train-memory --config mixtral-8x7b --seq-len 4096 --micro-batch 1 "
        "--gpus auto --activations bf16-pure --attention flash --recompute selective --fused-swiglu`.\n",
    )
    return page.section()
