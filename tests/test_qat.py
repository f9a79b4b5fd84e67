"""quant.qat_epochs: quantization-aware fine-tuning of the student (PT2E QAT on the exported graph), then
each target's own int8 path on the adapted weights; gated like any int8 artifact."""
from __future__ import annotations

import json

import pytest

from helpers import tiny_recipe_dict


@pytest.fixture(scope="module")
def qat_build(tiny_model_dir, tmp_path_factory):
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import build

    out = tmp_path_factory.mktemp("qat") / "out"
    r = recipe_mod.build(tiny_recipe_dict(tiny_model_dir, out, quant={"qat_epochs": 1.0, "qat_samples": 64},
                                          export={"targets": ["onnx"], "precisions": ["fp32", "int8"], "max_batch": 16}))
    return out, build(r)


def test_qat_stage_trains_the_fake_quantized_graph_and_ships_its_weights(qat_build):
    out, summary = qat_build
    rows = summary["compression"]["stages"]
    stages = [r["stage"] for r in rows]
    assert stages.index("qat") == stages.index("distil") + 1  # after the student is trained, before vocabulary
    facts = rows[stages.index("qat")]["qat"]
    assert facts["rows"] == 64 and facts["steps"] == 4 and facts["distilled"]  # 64 rows, batch 16, one epoch
    assert facts["tensors_updated"] > 0  # the adapted linears went back into the student
    assert 0.0 <= facts["fake_quant_val_accuracy_after"] <= 1.0 and "is_qat=True" in facts["scheme"]
    arts = {a["artifact"]: a for a in summary["artifacts"]}
    assert arts["onnx-int8"]["passed"] and arts["onnx-fp32"]["passed"]  # the usual int8 gates hold on QAT weights
    rec = (out / "bundle" / "recipe.toml").read_text()
    assert "qat_epochs = 1.0" in rec


@pytest.mark.parametrize("quant,msg", [({"qat_epochs": -1.0}, "quant.qat_epochs must be >= 0"),
                                       ({"qat_learning_rate": 0.0}, "quant.qat_learning_rate must be > 0")])
def test_recipe_refuses_bad_qat(tiny_model_dir, tmp_path, quant, msg):
    from toolchain import recipe as recipe_mod
    from toolchain.errors import RecipeError

    with pytest.raises(RecipeError, match=msg):
        recipe_mod.build(tiny_recipe_dict(tiny_model_dir, tmp_path / "out", quant=quant))
