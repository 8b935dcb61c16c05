"""The two family tables, pricing (``accounting.hf_config``) and checkpoint layout (``moe.hf_layout``), name
the same transformers ``model_type``s: adding a family means one function in each."""
from accounting.hf_config import FAMILIES as PRICED
from accounting.hf_config import MODEL_TYPES
from moe.hf_layout import FAMILIES as LAYOUTS


def test_pricing_and_layout_tables_have_the_same_families():
    assert set(PRICED) == set(LAYOUTS)
    assert MODEL_TYPES == tuple(PRICED)


def test_a_layout_maps_layers_or_names_what_is_missing():
    for model_type, family in LAYOUTS.items():
        assert (family.layer is None) == bool(family.missing), model_type
