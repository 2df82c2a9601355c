"""Ensembles of saved SQuAD adapters: averaged logits, heads only where trained, and clear refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lit_lora.cli import build_cli
from lit_lora.errors import LitLoraError
from tests.helpers import REPO, trainer
from tests.helpers.squad import datamodule, first_val_batch, qa_model


@pytest.fixture(scope="module")
def two_adapters(tiny_bert, tiny_squad, tmp_path_factory):
    """Two different trained adapters of the tiny BERT: one with the answerability head, one without."""
    root = tmp_path_factory.mktemp("ensemble")
    adapters = {}
    for name, seed, head in (("with_head", 1, True), ("plain", 2, False)):
        torch.manual_seed(seed)
        module = qa_model(tiny_bert, answerability_head=head)
        trainer(root / name, max_steps=3).fit(module, datamodule(tiny_bert, tiny_squad))
        adapters[name] = str(module.save_adapter(root / name / "adapter"))
    return adapters


def evaluated(module, batch):
    module.peft_model.eval()
    with torch.no_grad():
        return module._evaluated_outputs(batch)


def test_an_ensemble_averages_its_members_logits_and_heads_in_any_order(tiny_bert, tiny_squad, two_adapters):
    batch = first_val_batch(tiny_bert, tiny_squad)
    headed, head_null = evaluated(
        qa_model(tiny_bert, answerability_head=True, adapter_path=two_adapters["with_head"]), batch
    )
    plain, no_null = evaluated(qa_model(tiny_bert, adapter_path=two_adapters["plain"]), batch)
    assert no_null is None and not torch.allclose(headed.start_logits, plain.start_logits)
    orders = (
        qa_model(
            tiny_bert,
            answerability_head=True,
            adapter_path=two_adapters["with_head"],
            ensemble_adapter_paths=[two_adapters["plain"]],
        ),
        qa_model(
            tiny_bert, adapter_path=two_adapters["plain"], ensemble_adapter_paths=[two_adapters["with_head"]]
        ),
    )
    for ensemble in orders:
        averaged, null = evaluated(ensemble, batch)
        torch.testing.assert_close(averaged.start_logits, (headed.start_logits + plain.start_logits) / 2)
        torch.testing.assert_close(averaged.end_logits, (headed.end_logits + plain.end_logits) / 2)
        torch.testing.assert_close(null, head_null / 2)  # the member without a head adds 0
        assert ensemble.peft_model.active_adapter == "default"  # switched back after every batch
        assert ensemble.parameter_counts()["trainable"] == 0


def test_an_ensemble_validates_from_the_command_line_and_records_its_members(
    tiny_bert, tiny_squad, two_adapters, tmp_path
):
    build_cli(
        [
            "validate", "--config", str(REPO / "configs" / "squad_v2_lora.yaml"),
            "--model.model_name_or_path", str(tiny_bert), "--model.adapter_path", two_adapters["plain"],
            "--model.ensemble_adapter_paths", json.dumps([two_adapters["with_head"]]),
            "--data.train_file", str(tiny_squad), "--data.validation_file", str(tiny_squad),
            "--data.max_length", "64", "--data.doc_stride", "24", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
        ]
    )  # fmt: skip
    record = json.loads((tmp_path / "lightning_logs" / "version_0" / "results.json").read_text())
    assert record["config"]["model"]["init_args"]["ensemble_adapter_paths"] == [two_adapters["with_head"]]
    assert {"val/f1", "val/best_f1_thresh", "val/answerability_loss"} <= set(record["metrics"])


def test_bad_ensembles_are_refused_in_one_line_naming_the_member(tiny_bert, two_adapters, tmp_path):
    plain = two_adapters["plain"]
    with pytest.raises(LitLoraError, match=r"ensemble_adapter_paths needs model\.adapter_path"):
        qa_model(tiny_bert, ensemble_adapter_paths=[plain])
    with pytest.raises(LitLoraError, match=rf"ensemble_adapter_paths: {tmp_path}/missing: no adapter_config"):
        qa_model(tiny_bert, adapter_path=plain, ensemble_adapter_paths=[str(tmp_path / "missing")])
    other_task = tmp_path / "other_task"
    shutil.copytree(plain, other_task)
    config = json.loads((other_task / "adapter_config.json").read_text())
    (other_task / "adapter_config.json").write_text(json.dumps({**config, "task_type": "SEQ_CLS"}))
    with pytest.raises(
        LitLoraError, match=rf"{other_task} has task_type SEQ_CLS, model\.adapter_path {plain} has"
    ):
        qa_model(tiny_bert, adapter_path=plain, ensemble_adapter_paths=[str(other_task)])
