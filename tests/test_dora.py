"""DoRA on every task module: the method-grid checks, an exact resume, and a 4-bit base."""

from __future__ import annotations

import pytest

from lit_lora.adapters import Quantization
from lit_lora.methods import DoraSpec
from tests.helpers import method_grid as grid

R = 4


def spec(task: str) -> DoraSpec:
    return DoraSpec(r=R, dropout=0.0, target_modules=grid.TARGETS[task])


def count(shapes: list[tuple[int, int]]) -> int:
    # LoRA's A (r x in) and B (out x r), plus one magnitude per output feature.
    return sum(R * (d_in + d_out) + d_out for d_in, d_out in shapes)


@pytest.mark.parametrize("task", grid.TASKS)
def test_dora_on_task(task, tiny_models, tmp_path):
    grid.check_method_on_task(task, spec, tiny_models, tmp_path / "adapter", count, ("dora", "DoRA"))


def test_dora_resumes_exactly(tiny_bert, tiny_sst2, tmp_path):
    grid.check_resume(spec("classification"), tiny_bert, tiny_sst2, tmp_path)


def test_dora_trains_on_a_4bit_base(tiny_models):
    module = grid.build(
        "classification", spec("classification"), tiny_models, quantization=Quantization("nf4")
    )
    grid.check_only_adapter_and_head_get_gradients(module, "classification")
    assert grid.approach({**module.describe(), "precision": "32-true"}) == "DoRA + nf4 base, r=4"
