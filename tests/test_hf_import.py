"""transformers as an offline oracle: parameter totals, and (below) checkpoints loaded with ``moe.from_hf``.

Nothing is fetched from a hub: full-size models are built on the meta device from the shipped config.json
files; tiny random models are built from config objects and saved with ``save_pretrained`` into temporary
folders. Skipped when transformers is not installed (it is in the ``dev`` extra).
"""
import json

import pytest

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from accounting.hf_config import CONFIG_DIR, load_shipped, shipped_configs  # noqa: E402
from accounting.params import count_parameters  # noqa: E402


def hf_config_object(cfg: dict):
    """A transformers config object from a parsed config.json (DBRX wants a float p-norm)."""
    cfg = json.loads(json.dumps(cfg))
    ffn = cfg.get("ffn_config")
    if isinstance(ffn, dict) and ffn.get("moe_normalize_expert_weights") is not None:
        ffn["moe_normalize_expert_weights"] = float(ffn["moe_normalize_expert_weights"])
    return tf.AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})


@pytest.mark.parametrize("name", shipped_configs())
def test_totals_equal_transformers_meta_device_count(name):
    """Every shipped full-size config: our total == sum of numel of transformers' modules (meta device)."""
    cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    with torch.device("meta"):
        model = tf.AutoModelForCausalLM.from_config(hf_config_object(cfg))
    hf_total = sum(p.numel() for p in model.parameters())
    ours = count_parameters(load_shipped(name)).total
    print(f"{name}: transformers {hf_total:,} ours {ours:,}")
    assert ours == hf_total
