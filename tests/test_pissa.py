"""PiSSA on every task module: the method-grid checks, the export to plain LoRA, a resume, no 4-bit base."""

from __future__ import annotations

import json

import pytest
import torch

from lit_lora import LitLoraError
from lit_lora.adapters import Quantization
from lit_lora.methods import PissaSpec
from tests.helpers import method_grid as grid

R = 4


def spec(task: str) -> PissaSpec:
    return PissaSpec(r=R, alpha=R, dropout=0.0, target_modules=grid.TARGETS[task])


def count(shapes: list[tuple[int, int]]) -> int:
    return sum(R * (d_in + d_out) for d_in, d_out in shapes)  # LoRA's shapes; only the start differs


@pytest.mark.parametrize("task", grid.TASKS)
def test_pissa_on_task(task, tiny_models, tmp_path):
    # The export is converted to plain LoRA on the unchanged base: equal up to float rounding.
    names = ("pissa", "PiSSA")
    grid.check_method_on_task(task, spec, tiny_models, tmp_path / "adapter", count, names, atol=1e-5)


def test_pissa_starts_from_the_principal_singular_vectors(tiny_models, tmp_path):
    module = grid.build("classification", spec("classification"), tiny_models)
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


def test_pissa_resumes_exactly(tiny_bert, tiny_sst2, tmp_path):
    grid.check_resume(spec("classification"), tiny_bert, tiny_sst2, tmp_path)


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_pissa_refuses_a_quantised_base_in_one_line(tiny_bert, mode):
    with pytest.raises(
        LitLoraError, match=f"PissaSpec cannot start from a model.quantization.mode={mode} base"
    ):
        module = grid.build(
            "classification", spec("classification"), {"bert": tiny_bert}, quantization=Quantization(mode)
        )
        module.configure_model()  # the check comes before the base model loads
