"""VeRA's shared projections, however the model is built (grid checks: test_method_grid.py)."""

from __future__ import annotations

import torch

from lit_lora.methods.vera import VeraSpec

R = 16


def spec() -> VeraSpec:
    return VeraSpec(r=R, target_modules=["query", "value"])


def test_vera_builds_inside_a_default_device_context(tiny_bert):
    # Lightning builds the model under torch.device(<accelerator>); PEFT draws VeRA's shared projections
    # from a CPU generator, which a CUDA (here: meta) default device refused. The same seeded projections
    # must come out wherever the model is built.
    from peft import TaskType
    from transformers import AutoModelForSequenceClassification

    from lit_lora.models.engine.build import wrap_with_adapter

    def projections(default_device: str) -> torch.Tensor:
        base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
        with torch.device(default_device):
            model = wrap_with_adapter(base, spec(), TaskType.SEQ_CLS, ["classifier"], None)
        return model.base_model.vera_A["default"]

    on_cpu, under_meta = projections("cpu"), projections("meta")
    assert under_meta.device.type == "cpu"
    assert torch.equal(on_cpu, under_meta)
