"""Peak resident memory of one real training step (forward, backward, AdamW step) in a fresh process, beside
the training-memory planner's total for the same model (fp32 weights, gradients and AdamW moments; fp32
activations; one process). A helper of tests/test_accounting_training_memory_peak.py, run as a script:
``python tests/_peak_rss.py dense|moe BATCH SEQ_LEN`` prints one JSON line.

Measured: the process's peak resident set (``ru_maxrss``) minus its resident set just before the model is
built. On the CPU the profiler records no usable memory events, so the operating system's count is used; it
includes memory the allocator has freed but kept, the model's Python objects and the step's transient buffers
(the logits' softmax and its gradient, the backward's products)."""
import json
import resource
import sys

import torch
torch.set_num_threads(1)
from accounting.shapes import ModelShape
from accounting.training_memory import plan
from accounting.training_settings import Layout, Settings
import moe



def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()



kind, b, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
base = dict(vocab_size=8192, d_model=512, n_layers=4, n_heads=8, seq_len=n, ffn_kind="swiglu", norm_kind="rmsnorm")
shape = ModelShape(**base, d_ff=1408) if kind == "dense" else ModelShape(**base, n_experts=8, top_k=2, d_expert=704, d_ff=1408)
torch.manual_seed(0)
idx, tgt = torch.randint(0, 8192, (b, n)), torch.randint(0, 8192, (b, n))
before = rss_bytes()
model = moe.build_model(shape, backend="loop")
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
model(idx, tgt).loss.backward()
opt.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
s = Settings(seq_len=n, micro_batch=b, precision="fp32", weights="fp32", backend="loop", router_z_loss=False)
r = plan(shape, s, Layout(1, 1, 1, 1, 0))
print(json.dumps({"kind": kind, "peak_minus_before": peak - before, "planner_total": r.per_gpu_bytes["total"],
                  "planner": r.per_gpu_bytes, "ratio": (peak - before) / r.per_gpu_bytes["total"]}))
