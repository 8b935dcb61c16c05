"""Benchmarks, one module per measurement, all timed with ``timing``:

* ``grid``: layer / model / decode micro-benchmarks over a grid -> CSV (``python -m experiments.bench``);
* ``moe_layer``: one MoE layer against a dense FFN, GEMM floors and peer implementations -> CSV;
* ``paired``: dense and MoE training steps interleaved -> MoE/dense cost per FLOP with an interval;
* ``decode_vs_recompute``: one token with a KV cache vs recomputing the window;
* ``decode_vs_roofline``: measured cached decode vs ``accounting.serving``'s roofline -> CSV;
* ``expert_parallel``: an expert-parallel MoE layer's dispatch / compute / combine on several ranks.
"""
