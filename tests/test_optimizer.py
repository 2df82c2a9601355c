"""The optimizer and LR schedule: AdamW with linear warm-up/decay unless a config injects others."""

from __future__ import annotations

import pytest
import torch
import yaml

from lit_lora.cli import build_cli
from lit_lora.methods import LoraPlusSpec
from tests.helpers import REPO, classifier, sst2, trainer


def configured(module, tiny_bert, tiny_sst2, tmp_path):
    fit = trainer(tmp_path, max_steps=1)
    fit.fit(module, sst2(tiny_bert, tiny_sst2))
    return fit.optimizers[0], fit.lr_scheduler_configs[0].scheduler


def test_default_is_fused_adamw_with_linear_warmup_and_decay(tiny_bert, tiny_sst2, tmp_path):
    module = classifier(tiny_bert, num_labels=2, learning_rate=1e-3, weight_decay=0.01, warmup_ratio=0.5)
    optimizer, scheduler = configured(module, tiny_bert, tiny_sst2, tmp_path)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (1e-3, 0.01)
    assert [f(0) for f in scheduler.lr_lambdas] == [0.0]  # warm-up starts from zero


def test_a_yaml_injects_optimizer_and_schedule(tiny_bert, tiny_sst2, tmp_path):
    extra = tmp_path / "sgd.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "init_args": {
                        "optimizer": {
                            "class_path": "torch.optim.SGD",
                            "init_args": {"lr": 0.05, "momentum": 0.9},
                        },
                        "lr_scheduler": {
                            "class_path": "torch.optim.lr_scheduler.ConstantLR",
                            "init_args": {"factor": 0.5},
                        },
                    }
                }
            }
        )
    )
    cli = build_cli(["--config", str(REPO / "configs" / "sst2_lora.yaml"), "--config", str(extra)], run=False)
    module = classifier(
        tiny_bert, num_labels=2, optimizer=cli.model.optimizer, lr_scheduler=cli.model.lr_scheduler
    )
    optimizer, scheduler = configured(module, tiny_bert, tiny_sst2, tmp_path)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    assert isinstance(scheduler, torch.optim.lr_scheduler.ConstantLR)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5)


def test_method_parameter_groups_reach_an_injected_optimizer(tiny_bert, tiny_sst2, tmp_path):
    spec = LoraPlusSpec(r=4, dropout=0.0, lr_ratio=4.0)
    module = classifier(tiny_bert, spec, num_labels=2, learning_rate=0.01, optimizer=torch.optim.SGD)
    optimizer, _ = configured(module, tiny_bert, tiny_sst2, tmp_path)
    assert isinstance(optimizer, torch.optim.SGD)
    assert sorted({group["initial_lr"] for group in optimizer.param_groups}) == pytest.approx([0.01, 0.04])
