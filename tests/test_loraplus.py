"""LoRA+'s optimizer: two learning rates (grid checks: test_method_grid.py)."""

from __future__ import annotations

import pytest

from lit_lora.methods import LoraPlusSpec
from tests.helpers import method_grid as grid
from tests.helpers import sst2, trainer

R, RATIO, LR = 4, 8.0, 1e-3


def spec() -> LoraPlusSpec:
    return LoraPlusSpec(r=R, dropout=0.0, lr_ratio=RATIO, target_modules=["query", "value"])


def test_the_optimizer_trains_b_faster_than_a(tiny_models, tiny_sst2, tmp_path):
    module = grid.build("classification", spec(), tiny_models, learning_rate=LR)
    fit = trainer(tmp_path, max_steps=1)
    fit.fit(module, sst2(tiny_models["bert"], tiny_sst2))
    # The schedule scales each group's lr from the "initial_lr" it found there.
    lr_of = {id(p): group["initial_lr"] for group in fit.optimizers[0].param_groups for p in group["params"]}
    names = {n: p for n, p in module.peft_model.named_parameters() if p.requires_grad}
    assert len(lr_of) == len(names)  # every trained parameter, once
    for name, param in names.items():
        faster = "lora_B" in name or param.ndim == 1  # PEFT's rule: B matrices and 1-D parameters
        assert lr_of[id(param)] == pytest.approx(LR * (RATIO if faster else 1.0)), name
