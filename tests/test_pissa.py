"""PiSSA's start: the principal singular vectors, saved as plain LoRA (grid: test_method_grid.py)."""

from __future__ import annotations

import json

import torch

from lit_lora.methods import PissaSpec
from tests.helpers import method_grid as grid

R = 4


def spec() -> PissaSpec:
    return PissaSpec(r=R, alpha=R, dropout=0.0, target_modules=["query", "value"])


def test_pissa_starts_from_the_principal_singular_vectors(tiny_models, tmp_path):
    module = grid.build("classification", spec(), tiny_models)
    layer = module.peft_model.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.query")
    original = module.auto_model_class.from_pretrained(tiny_models["bert"], num_labels=2)
    weight = original.bert.encoder.layer[0].attention.self.query.weight.detach()
    adapter = layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    top = torch.linalg.svdvals(weight)[:R]
    torch.testing.assert_close(torch.linalg.svdvals(adapter)[:R], top, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.base_layer.weight + adapter, weight, rtol=0, atol=1e-5)
    module.save_adapter(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (saved["r"], saved["init_lora_weights"]) == (2 * R, True)  # plain LoRA for the unchanged base
