"""The training-memory planner (accounting.training_memory, no torch) against published layouts and formulas,
and the ``train-memory`` command: its JSON, ``--gpus auto`` and its one-line errors.

The byte-for-byte checks against torch are in test_accounting_training_memory_torch.py."""
from __future__ import annotations

import json

import pytest

from accounting import ModelShape, count_parameters
from accounting.cli import main
from accounting.hardware import get_hardware
from accounting.hf_config import load_shipped
from accounting.activations import activation_bytes, total_activation_bytes
from accounting.gpu_count import auto_layout
from accounting.training_memory import plan, sharded_state_bytes, state_bytes_per_parameter
from accounting.training_settings import Layout, LayoutError, Settings

GB = 1e9


@pytest.mark.parametrize("zero,published_gb", [(0, 120), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_zero_paper_7_5b_at_dp64(zero, published_gb):
    """ZeRO (arXiv 1910.02054, Figure 1): 7.5B parameters, N_d = 64, mixed-precision Adam (K = 12):
    120 / 31.4 / 16.6 / 1.9 GB for stages 0-3; the paper rounds to 0.1 GB (tolerance 0.05 GB)."""
    per_param = state_bytes_per_parameter(Settings(seq_len=1), d_model=4096)
    assert per_param == {"weights": 2, "gradients": 2, "optimizer": 12}
    got = sum(sharded_state_bytes(7.5e9, per_param, zero, 64).values())
    assert abs(got / GB - published_gb) < 0.05


# ----- Megatron-LM's theoretical memory (megatron/training/theoretical_memory_usage.py) ----------------------
GPT = ModelShape(vocab_size=50304, d_model=2048, n_layers=24, n_heads=16, seq_len=2048, d_ff=8192,
                 ffn_kind="gelu", norm_kind="layernorm", name="gpt-1.3b")


def megatron_parameters(s: ModelShape) -> int:
    """``compute_weight_and_optimizer_memory``'s count for a dense MHA LayerNorm GELU model (untied)."""
    per_layer = 2 * s.d_model * s.d_model * 2 + 2 * s.d_model * (s.d_ff + 2)
    return s.n_layers * per_layer + 2 * s.d_model + 2 * s.vocab_size * s.d_model


@pytest.mark.parametrize("dp,distributed", [(1, False), (8, True)])
def test_megatron_weights_and_optimizer(dp, distributed):
    """Megatron: 18 bytes per parameter (bf16 weights, fp32 gradients, fp32 master + 2 moments), or
    6 + 12 / dp with the distributed optimizer; equal to ours with ``fp32_grads`` at ZeRO 0 or 1."""
    assert megatron_parameters(GPT) == count_parameters(GPT).total
    per_param = 6 + 12 / dp if distributed else 18
    r = plan(GPT, Settings(seq_len=2048, fp32_grads=True), Layout(gpus=dp, zero=1 if distributed else 0))
    ours = r.per_gpu_bytes["weights"] + r.per_gpu_bytes["gradients"] + r.per_gpu_bytes["optimizer"]
    assert ours == pytest.approx(megatron_parameters(GPT) * per_param, rel=1e-12)


def test_megatron_activation_formula_with_every_difference_named():
    """Megatron's per-layer activations (Korthikanti et al. 2022 Table 2 with selective recompute, as
    ``compute_activation_memory`` codes it): ``s b h (18 + 4 f / h)`` bytes, 34 s b h at f = 4h. Ours for
    the same GPT in bf16 (flash attention, nothing recomputed: flash keeps no scores either) differs by
    exactly three named terms: no dropout (its two masks, attention output and MLP output, 1 byte each:
    -2 s b h), LayerNorm's mean and rstd (2 norms x 2 statistics x 2 bytes: +8 s b) and flash attention's
    log-sum-exp (fp32 per head and token: +4 s b a). Outside the layers Megatron counts the input ids
    (8 s b) and the embedding's dropout mask (s b h), which we leave out (ids by definition, no dropout),
    and its ``4 s b h (1 + V / h)`` for the output layer equals our final-norm input, head input and fp32
    log-softmax, plus the final norm's statistics (+4 s b) and the loss's 4-byte total weight."""
    s, b, h, a, f, V = GPT.seq_len, 1, GPT.d_model, GPT.n_heads, GPT.d_ff, GPT.vocab_size
    st = Settings(seq_len=s, micro_batch=b, precision="bf16-pure")
    ours_layer = total_activation_bytes(GPT, st, layers=range(1), head=False)
    megatron_layer = s * b * h * (18 + 4 * f / h)
    assert ours_layer == megatron_layer - 2 * s * b * h + 8 * s * b + 4 * s * b * a
    ours_head = total_activation_bytes(GPT, st, layers=range(0), head=True)
    megatron_head = s * b * h * 4 * (1 + V / h)
    assert ours_head == megatron_head + 4 * s * b + 4
    # the whole model: Megatron's total less the ids and the embedding dropout, then the named terms
    megatron_total = GPT.n_layers * megatron_layer + 8 * s * b + s * b * h + megatron_head
    ours_total = total_activation_bytes(GPT, st)
    named = GPT.n_layers * (-2 * s * b * h + 8 * s * b + 4 * s * b * a) - 8 * s * b - s * b * h + 4 * s * b + 4
    assert ours_total == megatron_total + named
    assert abs(ours_total / megatron_total - 1) < 0.06


# ----- DeepSeek-V3 as trained and Llama-3-405B ----------------------------------------------------------------
V3 = load_shipped("deepseek-v3", seq_len=4096)
V3_TRAINED = Settings(seq_len=4096, micro_batch=1, precision="bf16-pure", attention_kernel="flash",
                      recompute="selective", fp8_cache=True, optimizer="adamw-bf16", router_aux_loss=False,
                      router_z_loss=False)
V3_LAYOUT = Layout(gpus=2048, tp=1, pp=16, ep=64, zero=1)


def test_deepseek_v3_as_trained_fits_80gb():
    """DeepSeek-V3 (report section 3.2-3.3): 2048 H800, PP16, EP64, ZeRO-1, no TP, 4K sequences; with its
    savings that the planner models -- recompute of RMSNorm and the MLA up-projections (``selective``: only
    the latents, the attention output and the log-sum-exp are kept), FP8-cached MoE inputs with the SwiGLU
    output recomputed (``fp8_cache``), BF16 AdamW moments (``adamw-bf16``), bf16 parameters -- at micro-batch
    1 with 1F1B's 16 micro-batches in flight on the first stage, the worst GPU needs 67.6 GB of 80.
    Not modelled: DualPipe's schedule (two copies of the parameters of its stages, and PP + 1 micro-batches
    in flight), the 14B multi-token-prediction module on the last stage, and communication buffers."""
    r = plan(V3, V3_TRAINED, V3_LAYOUT, get_hardware("h800"))
    assert r.fits
    assert 60 * GB < r.per_gpu_bytes["total"] < 75 * GB
    assert r.stage.stage == 0 and r.stage.in_flight == 16   # three dense FFN layers of 18432 on stage 0
    # expert parallelism divides the routed experts' weights: 64 experts' worth of 256 would not fit
    assert 2 * GB < r.per_gpu_bytes["weights"] < 8 * GB


def test_deepseek_v3_without_its_savings_or_without_ep_or_zero():
    """How far from fitting: as our torch models run (bf16 autocast, fp32 residual, no recompute, the CPU's
    materialising MLA kernel) about 9x over; without EP (ep = 1) 2.7x over (each GPU holds its stage's 256
    experts); without ZeRO (optimizer state replicated over dp = 128) 1.14x over."""
    h800 = get_hardware("h800")
    ours = plan(V3, Settings(seq_len=4096, micro_batch=1), V3_LAYOUT, h800)
    no_ep = plan(V3, V3_TRAINED, Layout(2048, 1, 16, 1, 1), h800)
    no_zero = plan(V3, V3_TRAINED, Layout(2048, 1, 16, 64, 0), h800)
    for r, low, high in ((ours, 8, 10), (no_ep, 2.5, 3), (no_zero, 1.05, 1.25)):
        assert not r.fits
        assert low < r.per_gpu_bytes["total"] / (80 * GB) < high


LLAMA_405B = ModelShape(vocab_size=128256, d_model=16384, n_layers=126, n_heads=128, n_kv_heads=8, attention="gqa",
                        seq_len=8192, d_ff=53248, ffn_kind="swiglu", norm_kind="rmsnorm", name="llama-3-405b")


@pytest.mark.parametrize("recompute,fused,fits", [("none", False, False), ("selective", False, False),
                                                  ("selective", True, True), ("full", False, True)])
def test_llama_3_405b_tp8_pp16_on_h100(recompute, fused, fits):
    """Llama 3 405B (arXiv 2407.21783, section 3.3.2): 16K H100, TP8 with sequence parallel, PP16, dp 128,
    8K sequences. At micro-batch 1 with 16 micro-batches in flight on the first stage the planner finds
    that it fits 80 GB only when the SwiGLU keeps just its inputs and the attention core is recomputed
    (``selective`` + ``fused_swiglu``: 59.8 GB) or with full recompute (18.4 GB); our unfused SwiGLU's four
    [N, f/8] tensors per layer alone put it at 87.7 GB."""
    assert round(count_parameters(LLAMA_405B).total / 1e9, 1) == 405.9
    st = Settings(seq_len=8192, micro_batch=1, precision="bf16-pure", recompute=recompute, fused_swiglu=fused)
    r = plan(LLAMA_405B, st, Layout(16384, tp=8, pp=16, zero=1, sp=True), get_hardware("h100-sxm"))
    assert r.fits is fits
    assert 6 * GB < r.per_gpu_bytes["weights"] < 8 * GB     # 405.9B / 128 GPUs of a replica, 2 bytes each


# ----- activations' scaling rules -----------------------------------------------------------------------------
def test_tensor_and_sequence_parallel_divide_activations():
    st = Settings(seq_len=2048, precision="bf16-pure")
    whole = activation_bytes(GPT, st)
    tp8 = activation_bytes(GPT, st, tp=8)
    sp8 = activation_bytes(GPT, st, tp=8, sp=True)
    assert sum(sp8.values()) == pytest.approx(sum(whole.values()) / 8)
    assert sum(sp8.values()) < sum(tp8.values()) < sum(whole.values())
    assert tp8["norms"] == whole["norms"]      # the norms' tensors are replicated without sp


def test_pipeline_in_flight_and_recompute():
    st = Settings(seq_len=2048, micro_batch=1, precision="bf16-pure")
    one = plan(GPT, st, Layout(gpus=1))
    pp4 = plan(GPT, st, Layout(gpus=4, pp=4))
    first = pp4.stages[0]
    assert first.in_flight == 4 and pp4.stages[-1].in_flight == 1
    per_layer = total_activation_bytes(GPT, st, layers=range(1), head=False)
    assert first.activations == pytest.approx(4 * 6 * per_layer)
    full = plan(GPT, Settings(seq_len=2048, precision="bf16-pure", recompute="full"), Layout())
    N, d = 2048, GPT.d_model
    assert full.stage.activation_bytes_by_component["block_inputs"] == GPT.n_layers * N * d * 2
    assert full.recompute_working_bytes == per_layer
    assert full.per_gpu_bytes["activations"] < one.per_gpu_bytes["activations"] / 5


def test_optimizers_and_weight_precisions():
    s = lambda **kw: state_bytes_per_parameter(Settings(seq_len=1, **kw), d_model=1024)  # noqa: E731
    assert s(fp32_grads=True) == {"weights": 2, "gradients": 4, "optimizer": 12}       # Megatron's 18
    assert s(weights="fp32") == {"weights": 4, "gradients": 4, "optimizer": 8}         # no master copy
    assert s(weights="fp8")["weights"] == 1
    assert s(optimizer="sgd")["optimizer"] == 8
    assert s(optimizer="adamw-bf16")["optimizer"] == 8
    assert s(optimizer="adafactor")["optimizer"] == pytest.approx(4 + 8 / 1024)


def test_auto_layout_is_the_smallest_count_that_fits():
    st = Settings(seq_len=2048, micro_batch=1, precision="bf16-pure", recompute="full")
    r, why = auto_layout(GPT, st, get_hardware("h100-sxm"))
    assert r.layout.gpus == 1 and r.fits and "smallest" in why
    big, _ = auto_layout(LLAMA_405B, Settings(seq_len=8192, precision="bf16-pure", recompute="full"),
                         get_hardware("h100-sxm"))
    assert big.fits and big.layout.gpus > 8
    smaller = big.layout.gpus - 8
    from accounting.gpu_count import candidate_layouts
    assert not any(plan(LLAMA_405B, Settings(seq_len=8192, precision="bf16-pure", recompute="full"), lay,
                        get_hardware("h100-sxm")).fits for lay in candidate_layouts(LLAMA_405B, smaller))


# ----- the command ---------------------------------------------------------------------------------------------
def run_cli(capsys, *argv):
    code = main(["train-memory", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_fields(capsys):
    code, out, _ = run_cli(capsys, "--config", "deepseek-v3", "--seq-len", "4096", "--micro-batch", "1",
                           "--gpus", "2048", "--pp", "16", "--ep", "64", "--zero", "1", "--gpu", "h800",
                           "--activations", "bf16-pure", "--attention", "flash", "--recompute", "selective",
                           "--fp8-cache", "--optimizer", "adamw-bf16", "--format", "json")
    assert code == 0
    d = json.loads(out)
    assert set(d["per_gpu_bytes"]) == {"weights", "gradients", "optimizer", "activations", "total"}
    assert d["layout"] == {"gpus": 2048, "tp": 1, "pp": 16, "ep": 64, "dp": 128, "zero": 1, "sp": False}
    assert d["capacity_bytes"] == 80e9 and d["fits"] is True
    assert sum(d["activation_bytes_by_component"].values()) == pytest.approx(d["per_gpu_bytes"]["activations"])
    r = plan(V3, dataclasses_replace(V3_TRAINED, router_aux_loss=True, router_z_loss=True), V3_LAYOUT)
    assert d["per_gpu_bytes"]["total"] == pytest.approx(r.per_gpu_bytes["total"])


def dataclasses_replace(obj, **kw):
    import dataclasses
    return dataclasses.replace(obj, **kw)


def test_cli_auto_and_table(capsys):
    code, out, _ = run_cli(capsys, "--config", "deepseek-v2-lite", "--seq-len", "4096", "--micro-batch", "1",
                           "--gpus", "auto", "--recompute", "full")
    assert code == 0 and "why:" in out and "fits" in out


def test_gpu_spec_file(tmp_path, capsys):
    spec = tmp_path / "gpu.yaml"
    fields = dict(name="test GPU", peak_bf16_flops_per_s=1e15, peak_fp8_flops_per_s=2e15, memory_bytes=40e9,
                  memory_bandwidth_bytes_per_s=2e12, nvlink_bytes_per_s=4e11, network_bytes_per_s=5e10,
                  gpus_per_node=4, usd_per_hour=2.0)
    spec.write_text("\n".join(f"{k}: {v}" for k, v in fields.items()))
    code, out, _ = run_cli(capsys, "--config", "llama-3-8b", "--seq-len", "2048", "--micro-batch", "1",
                           "--gpu", str(spec), "--format", "json")
    assert code == 0 and json.loads(out)["capacity_bytes"] == 40e9
    del fields["memory_bytes"]
    spec.write_text("\n".join(f"{k}: {v}" for k, v in fields.items()))
    code, _, err = run_cli(capsys, "--config", "llama-3-8b", "--seq-len", "2048", "--micro-batch", "1",
                           "--gpu", str(spec))
    assert code == 2 and "missing field(s): memory_bytes" in err and err.count("\n") == 1


@pytest.mark.parametrize("args,message", [
    (["--config", "deepseek-v3", "--ep", "3", "--gpus", "3"], "does not divide the 256 experts"),
    (["--config", "llama-3-8b", "--tp", "3", "--gpus", "3"], "does not divide the 32 heads"),
    (["--config", "llama-3-8b", "--tp", "16", "--gpus", "16"], "does not divide the 8 KV heads"),
    (["--config", "llama-3-8b", "--pp", "64", "--gpus", "64"], "exceeds the 32 layers"),
    (["--config", "llama-3-8b", "--micro-batch", "0"], "--micro-batch must be an integer >= 1"),
    (["--config", "llama-3-8b", "--tp", "2", "--gpus", "3"], "cannot fill it"),
    (["--config", "llama-3-8b", "--ep", "2", "--gpus", "2"], "needs an MoE model"),
    (["--config", "llama-3-8b", "--gpus", "many"], "--gpus must be a positive integer or 'auto'"),
    (["--config", "llama-3-8b", "--gpu", "nosuch"], "unknown hardware"),
])
def test_cli_bad_input_one_line_exit_2(capsys, args, message):
    argv = list(args)
    if "--micro-batch" not in argv:
        argv += ["--micro-batch", "1"]
    code, _, err = run_cli(capsys, "--seq-len", "1024", *argv)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_bad_layout_is_a_layout_error():
    with pytest.raises(LayoutError, match="does not divide the data-parallel size"):
        plan(V3, V3_TRAINED, Layout(gpus=32, pp=16, ep=4))


def test_cost_gpus_prints_wall_clock_days(capsys):
    """DeepSeek-V3's pretraining: 2.664M H800-hours on 2048 GPUs is 54.2 days; priced at the MFU that those
    hours imply (about 0.39 of the bf16 peak) the command gives the same within 1%."""
    code = main(["cost", "--config", "deepseek-v3", "--tokens", "14.8T", "--seq-len", "4096", "--gpu", "h800",
                 "--mfu", "0.39", "--gpus", "2048", "--format", "json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0
    assert d["wall_clock_days"] == pytest.approx(d["gpu_hours"] / 2048 / 24)
    assert d["wall_clock_days"] == pytest.approx(2.664e6 / 2048 / 24, rel=0.01)
    assert main(["cost", "--config", "deepseek-v3", "--tokens", "1T", "--seq-len", "4096", "--gpus", "0"]) == 2


def test_shipped_h800_spec_file_equals_the_preset():
    from pathlib import Path

    from accounting.hardware import resolve_gpu
    spec = resolve_gpu(str(Path(__file__).resolve().parents[1] / "accounting" / "gpus" / "h800.yaml"))
    preset = get_hardware("h800")
    for f in ("peak_bf16_flops_per_s", "peak_fp8_flops_per_s", "memory_bytes", "memory_bandwidth_bytes_per_s",
              "nvlink_bytes_per_s", "network_bytes_per_s", "gpus_per_node", "usd_per_hour"):
        assert getattr(spec, f) == getattr(preset, f), f
