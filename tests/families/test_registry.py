"""Every family, tower and decoder topv declares has parity tests: reference == transformers ``generate()`` and
export == reference. A declaration without both fails here; drop what is declared but untested."""

import pytest

from topv.families import FAMILIES, family_for_config
from topv.errors import UnsupportedModelError


def _covered(configs, family):
    """(kind, model type) pairs a parity module's CONFIGS/MODELS cover for ``family``."""
    out = set()
    for shape in configs.values():
        if getattr(shape, "family", "llava") == family:
            out |= {("text", shape.text_model_type), ("vision", shape.vision_model_type)}
    return out


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_declared_tower_and_decoder_has_parity_tests(name):
    from tests.export import test_export_matches_reference, test_qwen_export
    from tests.reference import test_parity_with_transformers, test_qwen_parity

    reference = {**test_parity_with_transformers.CONFIGS, **test_qwen_parity.CONFIGS}
    export = {**test_export_matches_reference.MODELS, **test_qwen_export.MODELS}
    family = FAMILIES[name]
    declared = {("text", t) for t in family.text_models} | {("vision", v) for v in family.vision_models}
    assert declared, f"{name} declares no towers or decoders"
    for what, configs in (("reference vs generate()", reference), ("export vs reference", export)):
        missing = declared - _covered(configs, name)
        assert not missing, f"{name}: no {what} parity test for {sorted(missing)}"


def test_unknown_architectures_name_the_supported_ones():
    with pytest.raises(UnsupportedModelError, match="LlavaForConditionalGeneration"):
        family_for_config({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
