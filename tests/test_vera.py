"""VeRA on every task module: the method-grid checks, an exact resume, a 4-bit base."""

from __future__ import annotations

import pytest
import torch

from lit_lora.adapters import Quantization
from lit_lora.methods.vera import VeraSpec
from tests.helpers import method_grid as grid

R = 16


def spec(task: str) -> VeraSpec:
    return VeraSpec(r=R, target_modules=grid.TARGETS[task])


def count(shapes: list[tuple[int, int]]) -> int:
    # Per layer: lambda_d (r) and lambda_b (out); the shared projections A and B are frozen buffers.
    return sum(R + d_out for _, d_out in shapes)


@pytest.mark.parametrize("task", grid.TASKS)
def test_vera_on_task(task, tiny_models, tmp_path):
    module = grid.check_method_on_task(task, spec, tiny_models, tmp_path / "adapter", count, ("vera", "VeRA"))
    assert module.describe()["ranks"] == {"r": R}  # VeRA's config has no rank_pattern


def test_vera_resumes_exactly(tiny_bert, tiny_sst2, tmp_path):
    grid.check_resume(spec("classification"), tiny_bert, tiny_sst2, tmp_path)


def test_vera_trains_on_a_4bit_base(tiny_models):
    module = grid.build(
        "classification", spec("classification"), tiny_models, quantization=Quantization("nf4")
    )
    grid.check_only_adapter_and_head_get_gradients(module, "classification")
    assert grid.approach({**module.describe(), "precision": "32-true"}) == f"VeRA + nf4 base, r={R}"


def test_vera_builds_inside_a_default_device_context(tiny_bert):
    # Lightning builds the model under torch.device(<accelerator>); PEFT draws VeRA's shared projections
    # from a CPU generator, which a CUDA (here: meta) default device refused. The same seeded projections
    # must come out wherever the model is built.
    from peft import TaskType
    from transformers import AutoModelForSequenceClassification

    from lit_lora.models._build import wrap_with_adapter

    def projections(default_device: str) -> torch.Tensor:
        base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
        with torch.device(default_device):
            model = wrap_with_adapter(base, spec("classification"), TaskType.SEQ_CLS, ["classifier"], None)
        return model.base_model.vera_A["default"]

    on_cpu, under_meta = projections("cpu"), projections("meta")
    assert under_meta.device.type == "cpu"
    assert torch.equal(on_cpu, under_meta)
