"""LoRA and AdaLoRA across the task modules (each newer method's own test runs the same checks)."""

from __future__ import annotations

import pytest

from lit_lora.methods import AdaLoraSpec, LoraSpec
from tests.helpers import method_grid as grid

R, INIT_R = 4, 6
METHODS = {
    "lora": (lambda task: LoraSpec(r=R, dropout=0.0, target_modules=grid.TARGETS[task]), "LoRA"),
    "adalora": (
        lambda task: AdaLoraSpec(
            init_r=INIT_R, target_r=3, tinit=1, tfinal=1, dropout=0.0, target_modules=grid.TARGETS[task]
        ),
        "AdaLoRA",
    ),
}
COUNTS = {
    "lora": lambda shapes: sum(R * (d_in + d_out) for d_in, d_out in shapes),  # A: r x in, B: out x r
    "adalora": lambda shapes: sum(INIT_R * (d_in + d_out + 1) for d_in, d_out in shapes),  # P, Q and E
}


@pytest.mark.parametrize("task", grid.TASKS)
@pytest.mark.parametrize("method", METHODS)
def test_method_on_task(method, task, tiny_models, tmp_path):
    spec, label = METHODS[method]
    grid.check_method_on_task(task, spec, tiny_models, tmp_path / "adapter", COUNTS[method], (method, label))
