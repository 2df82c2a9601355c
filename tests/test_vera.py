"""VeRA on every task module: the method-grid checks, an exact resume, a 4-bit base."""

from __future__ import annotations

import pytest

from lit_lora.adapters import Quantization
from lit_lora.methods.vera import VeraSpec
from tests import method_grid as grid

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
