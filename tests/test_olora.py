"""OLoRA's start: an orthonormal basis of the weight, saved as plain LoRA (grid: test_method_grid.py)."""

from __future__ import annotations

import json

import torch

from lit_lora.methods import OloraSpec
from tests.helpers import method_grid as grid

R = 4


def spec() -> OloraSpec:
    return OloraSpec(r=R, alpha=R, dropout=0.0, target_modules=["query", "value"])


def test_olora_starts_from_an_orthonormal_basis_of_the_weight(tiny_models, tmp_path):
    module = grid.build("classification", spec(), tiny_models)
    layer = module.peft_model.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.query")
    original = module.auto_model_class.from_pretrained(tiny_models["bert"], num_labels=2)
    weight = original.bert.encoder.layer[0].attention.self.query.weight.detach()
    basis = layer.lora_B["default"].weight  # out x r: the first r columns of Q in W = QR
    torch.testing.assert_close(basis.T @ basis, torch.eye(R), rtol=0, atol=1e-5)
    adapter = basis @ layer.lora_A["default"].weight  # alpha = r: scaling 1
    torch.testing.assert_close(layer.base_layer.weight + adapter, weight, rtol=0, atol=1e-5)
    module.save_adapter(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (saved["r"], saved["init_lora_weights"]) == (2 * R, True)  # plain LoRA for the unchanged base
