"""Reproductions: the note (W. H. Press 2025) and DeepSeek's disclosures, recomputed with the generic model.

* `accounting.reproduce.note`: the note's Table 1 formulas, Table 2 use cases, Table 3 beside its printed
  values, its inference check, and case D priced again with the serving roofline.
* `accounting.reproduce.note_section6`: the note's section 6 (DeepSeek-V3) as the note computes it.
* `accounting.reproduce.deepseek`: DeepSeek-V3's pretraining compute by six methods against its technical
  report, and its serving throughput in DeepSeek's disclosed layouts.

The generic model they use (`accounting.params`, `flops`, `cost`, `serving`, ...) never imports them.
"""
