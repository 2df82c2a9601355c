"""Training behaviour on a tiny seeded BERT: what changes, pinned losses, checkpoints, AdaLoRA."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from peft import PeftModel
from peft.tuners.adalora.model import AdaLoraModel
from transformers import AutoModelForSequenceClassification

from lit_lora import AdaLoraSpec, LitLoraError, LoraSpec, Quantization
from lit_lora.callbacks import NonFiniteLossGuard, ResultsRecorder
from lit_lora.models import SequenceClassifier
from tests.helpers import classifier, sst2, trainer
from tests.helpers.training import StopAfterFirstEpoch, changed_keys, fit, snapshot, trainable_keys


def test_only_adapter_and_head_weights_change(tiny_bert, tiny_sst2, tmp_path):
    module = classifier(tiny_bert, num_labels=2)
    before = snapshot(module)
    fit(module, sst2(tiny_bert, tiny_sst2), tmp_path, max_steps=3)
    trainable = trainable_keys(module)
    assert changed_keys(before, module) == trainable
    assert trainable and all(".lora_" in k or ".modules_to_save." in k for k in trainable)


def test_pinned_losses(tiny_bert, tiny_sst2, tmp_path):
    trace = fit(classifier(tiny_bert, num_labels=2), sst2(tiny_bert, tiny_sst2), tmp_path, max_steps=4)
    # Pinned on torch 2.13 CPU; a change here means the model, adapter, data order or optimiser changed.
    assert trace.losses == pytest.approx([0.69932, 0.67079, 0.60057, 1.01468], abs=1e-4)


def test_qlora_changes_adapters_only_and_keeps_4bit_weights(tiny_bert, tiny_sst2, tmp_path):
    torch.manual_seed(0)  # the adapter is initialised here, by the snapshot, before fit seeds
    module = classifier(tiny_bert, num_labels=2, quantization=Quantization(mode="nf4"))
    before = snapshot(module)
    trace = fit(module, sst2(tiny_bert, tiny_sst2), tmp_path, max_steps=3, limit_val_batches=1)
    # Pinned on torch 2.13 CPU: the first batches of test_pinned_losses, through 4-bit base weights.
    assert trace.losses == pytest.approx([0.68869, 0.66496, 0.58519], abs=1e-4)
    assert changed_keys(before, module) == trainable_keys(module)


def test_saved_adapter_reloads_with_identical_logits(tiny_bert, tiny_sst2, tmp_path):
    datamodule = sst2(tiny_bert, tiny_sst2)
    module = classifier(tiny_bert, num_labels=2)
    fit(module, datamodule, tmp_path, max_steps=3)
    module.save_adapter(tmp_path / "adapter")
    batch = next(iter(datamodule.val_dataloader()))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    module.eval()
    with torch.no_grad():
        expected = module.peft_model(**inputs).logits

        reloaded = classifier(tiny_bert, num_labels=2, adapter_path=str(tmp_path / "adapter")).eval()
        assert torch.equal(reloaded.peft_model(**inputs).logits, expected)

        base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
        plain_peft = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        assert torch.equal(plain_peft(**inputs).logits, expected)


def test_resume_continues_step_count_and_loss_curve(tiny_bert, tiny_sst2, tmp_path):
    straight = fit(
        classifier(tiny_bert, num_labels=2), sst2(tiny_bert, tiny_sst2), tmp_path / "a", max_epochs=2
    )
    steps_per_epoch = len(straight.losses) // 2

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = classifier(tiny_bert, num_labels=2)
    interrupted = fit(
        first,
        sst2(tiny_bert, tiny_sst2),
        tmp_path / "b",
        max_epochs=2,
        callbacks=[StopAfterFirstEpoch(), checkpoint],
        enable_checkpointing=True,
    )
    assert interrupted.losses == straight.losses[:steps_per_epoch]
    ckpt = tmp_path / "ckpt" / "last.ckpt"

    resumed = classifier(tiny_bert, num_labels=2)
    trace = fit(
        resumed,
        sst2(tiny_bert, tiny_sst2),
        tmp_path / "c",
        max_epochs=2,
        enable_checkpointing=True,
        ckpt_path=str(ckpt),
    )
    assert resumed.trainer.global_step == 2 * steps_per_epoch
    assert trace.losses == pytest.approx(straight.losses[steps_per_epoch:], abs=1e-5)

    state = torch.load(ckpt, weights_only=False)
    assert set(state["state_dict"]) == {f"model.{k}" for k in trainable_keys(first)}
    base_bytes = (tiny_bert / "model.safetensors").stat().st_size
    assert ckpt.stat().st_size < 0.1 * base_bytes


def test_adalora_reallocates_ranks_to_target_budget(tiny_bert, tiny_sst2, tmp_path, monkeypatch):
    steps: list[int] = []
    original = AdaLoraModel.update_and_allocate

    def record(self, global_step):
        steps.append(global_step)
        return original(self, global_step)

    monkeypatch.setattr(AdaLoraModel, "update_and_allocate", record)
    spec = AdaLoraSpec(init_r=6, target_r=3, tinit=0.1, tfinal=0.2, delta_t=2, dropout=0.0)
    module = classifier(tiny_bert, spec, num_labels=2)
    datamodule = sst2(tiny_bert, tiny_sst2, batch_size=2)
    fit(module, datamodule, tmp_path, max_epochs=2, accumulate_grad_batches=2)

    optimizer_steps = module.trainer.global_step
    assert optimizer_steps == 48  # 96 rows / batch 2 / accumulation 2 x 2 epochs
    assert steps == list(range(optimizer_steps))  # once per real optimizer step

    module.save_adapter(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    ranks = {name: sum(mask) for name, mask in saved["rank_pattern"].items()}
    assert len(ranks) == 4  # query and value in two layers
    assert sum(ranks.values()) == 3 * len(ranks)  # the target budget
    # Reallocated, not uniform: pinned per module (seeded data order and weights).
    assert list(ranks.values()) == [2, 3, 3, 4]
    assert max(ranks.values()) <= 6


def test_bf16_mixed_precision_with_gradient_clipping_trains(tiny_bert, tiny_sst2, tmp_path):
    trace = fit(
        classifier(tiny_bert, num_labels=2),
        sst2(tiny_bert, tiny_sst2),
        tmp_path,
        max_steps=2,
        precision="bf16-mixed",
        gradient_clip_val=1.0,
    )
    # Pinned on torch 2.13 CPU: bf16 autocast stays within 1e-4 of the fp32 run's first losses.
    assert trace.losses == pytest.approx([0.69935, 0.67078], abs=1e-4)


def test_lora_defaults_target_peft_architecture_modules(tiny_bert):
    module = classifier(tiny_bert, LoraSpec(r=2), num_labels=2)
    assert sorted(module.peft_model.peft_config["default"].target_modules) == ["query", "value"]


@pytest.mark.parametrize("drop", ["head", "adapter"])
def test_checkpoint_missing_a_trained_key_is_refused(tiny_bert, tiny_sst2, tmp_path, drop):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit(classifier(tiny_bert, num_labels=2), sst2(tiny_bert, tiny_sst2), tmp_path, max_steps=1,
        callbacks=[checkpoint], enable_checkpointing=True)  # fmt: skip
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    marker = ".modules_to_save." if drop == "head" else ".lora_A."
    removed = sorted(k for k in state["state_dict"] if marker in k)[0]
    del state["state_dict"][removed]
    torch.save(state, tmp_path / "partial.ckpt")
    # Loaded without complaint, a missing head would be evaluated with its random initialisation.
    with pytest.raises(LitLoraError, match=f"missing key {re.escape(removed)}"):
        fit(classifier(tiny_bert, num_labels=2), sst2(tiny_bert, tiny_sst2), tmp_path, max_steps=2,
            ckpt_path=str(tmp_path / "partial.ckpt"))  # fmt: skip


class BlowsUpAtBatch3(SequenceClassifier):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if batch_idx == 3 else loss


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_bert, tiny_sst2, tmp_path):
    module = BlowsUpAtBatch3(str(tiny_bert), adapter=LoraSpec(r=4, alpha=8, dropout=0.0), num_labels=2)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    logger = CSVLogger(tmp_path)
    run = trainer(tmp_path, max_steps=8, callbacks=[NonFiniteLossGuard(), ResultsRecorder(), checkpoint],
                  enable_checkpointing=True, logger=logger)  # fmt: skip
    with pytest.raises(LitLoraError, match=r"training loss is nan at optimizer step 4 \(epoch 0, batch 3\)"):
        run.fit(module, sst2(tiny_bert, tiny_sst2))
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 3  # the step before the loss went wrong, nothing after it
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    record = json.loads((Path(logger.log_dir) / "results.json").read_text())
    assert record["status"] == "failed" and "optimizer step 4" in record["failure"]


def test_adalora_schedule_follows_the_fit_even_when_the_model_was_built_before(
    tiny_bert, tiny_sst2, tmp_path
):
    spec = AdaLoraSpec(init_r=6, target_r=3, tinit=0.1, tfinal=0.2, dropout=0.0)
    module = classifier(tiny_bert, spec, num_labels=2)
    trainable_at_init_r = module.parameter_counts()["trainable"]  # builds the model outside fit
    assert module.peft_model.peft_config["default"].total_step == 2  # a placeholder until fit starts
    fit(module, sst2(tiny_bert, tiny_sst2, batch_size=4), tmp_path, max_epochs=1)  # 24 optimizer steps
    config = module.peft_model.peft_config["default"]
    assert (config.total_step, config.tinit, config.tfinal) == (24, 2, 5)
    assert sum(sum(mask) for mask in config.rank_pattern.values()) == 3 * 4  # budget reached at step 19
    parameters = module.describe()["parameters"]
    # 4 modules x 3 pruned ranks x (32 in + 32 out + 1 singular value) fewer than at init_r.
    assert parameters["trainable"] == trainable_at_init_r
    assert parameters["trainable_at_final_budget"] == trainable_at_init_r - 4 * 3 * 65


def test_adalora_allocator_skips_and_counts_steps_with_non_finite_gradients(tiny_bert):
    module = classifier(tiny_bert, AdaLoraSpec(init_r=6, target_r=3, tinit=1, tfinal=1), num_labels=2)
    allocator = module.peft_model.base_model.rankallocator  # builds the model
    allocation = module.method_hooks
    allocation.reschedule(10)
    lora = [p for n, p in module.peft_model.named_parameters() if ".lora_" in n]
    for p in lora:
        p.grad = torch.ones_like(p)
    lora[0].grad[0, 0] = float("inf")  # what the 16-mixed grad scaler leaves on an overflowing step
    assert allocation.step(3) is False and allocation.skipped_steps == 1
    assert allocator.exp_avg_ipt == {}  # the importance averages stayed clean
    lora[0].grad[0, 0] = 1.0
    assert allocation.step(4) is True
    assert allocator.exp_avg_ipt and all(torch.isfinite(v).all() for v in allocator.exp_avg_ipt.values())
