"""SQuAD v2's answerability head: what trains, the loss, the null margin, and saved adapters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_lora.errors import LitLoraError
from lit_lora.models.qa.decode import decide
from tests.helpers import trainer
from tests.helpers.squad import datamodule, first_val_batch, qa_model
from tests.helpers.training import changed_keys, snapshot, trainable_keys


def test_the_head_trains_with_adapter_and_span_head_and_nothing_else(tiny_bert, tiny_squad, tmp_path):
    plain, module = qa_model(tiny_bert), qa_model(tiny_bert, answerability_head=True)
    hidden = module.peft_model.get_base_model().config.hidden_size
    assert module.parameter_counts()["trainable"] == plain.parameter_counts()["trainable"] + hidden + 1
    before = snapshot(module)
    run, data = trainer(tmp_path, max_steps=3, limit_val_batches=1.0), datamodule(tiny_bert, tiny_squad)
    run.fit(module, data)
    trainable = trainable_keys(module)
    assert changed_keys(before, module) == trainable
    assert any("answerability_head.modules_to_save" in k for k in trainable)
    assert all(".lora_" in k or ".modules_to_save." in k for k in trainable)
    (metrics,) = run.validate(module, data)
    assert 0.0 < metrics["val/answerability_loss"] < 2.0


def test_training_loss_is_the_weighted_span_loss_plus_the_heads_cross_entropy(tiny_bert, tiny_squad):
    batch = first_val_batch(tiny_bert, tiny_squad)
    is_null = (batch["start_positions"] == 0).float()
    assert 0 < is_null.sum() < len(is_null)  # both kinds of window
    module = qa_model(tiny_bert, answerability_head=True, null_window_weight=0.25)
    module.peft_model.eval()  # built, then no dropout: the two forward passes below must agree
    with torch.no_grad():
        outputs = module(batch)
        null = module._null_logits(outputs)
        expected = module._span_loss(outputs, batch, 0.25) + F.binary_cross_entropy_with_logits(null, is_null)
        assert float(module.training_step(batch, 0)) == pytest.approx(float(expected), rel=1e-6)


def test_the_heads_logit_adds_to_a_questions_null_margin(tiny_bert, tiny_squad):
    batch = first_val_batch(tiny_bert, tiny_squad)
    module = qa_model(tiny_bert, answerability_head=True)
    rows, width = batch["input_ids"].shape
    start, end = torch.randn(rows, width), torch.randn(rows, width)
    head = torch.linspace(-3.0, 3.0, rows)
    without = decide(module._feature_results(batch, start, end), module.n_best, threshold=0.0)
    answers = decide(module._feature_results(batch, start, end, head), module.n_best, threshold=0.0)
    windows: dict[str, list[int]] = {}
    for i, qid in enumerate(batch["example_id"]):
        windows.setdefault(qid, []).append(i)
    singles = {qid: rows[0] for qid, rows in windows.items() if len(rows) == 1}
    assert singles
    for qid, row in singles.items():
        margin = answers[qid].null_score - answers[qid].best_span_score
        span_margin = without[qid].null_score - without[qid].best_span_score
        assert margin == pytest.approx(span_margin + float(head[row]), abs=1e-5)
        assert (answers[qid].text == "") == (margin > 0)  # threshold 0


def test_a_saved_head_reloads_with_identical_outputs_and_a_mismatched_flag_is_refused(
    tiny_bert, tiny_squad, tmp_path
):
    module = qa_model(tiny_bert, answerability_head=True)
    trainer(tmp_path, max_steps=2).fit(module, datamodule(tiny_bert, tiny_squad))
    adapter = module.save_adapter(tmp_path / "adapter")
    batch = first_val_batch(tiny_bert, tiny_squad)
    reloaded = qa_model(tiny_bert, answerability_head=True, adapter_path=str(adapter))
    module.peft_model.eval()  # built first: building leaves the model in training mode
    reloaded.peft_model.eval()
    with torch.no_grad():
        trained, again = module(batch), reloaded(batch)
        assert torch.equal(module._null_logits(trained), reloaded._null_logits(again))
        assert torch.equal(trained.start_logits, again.start_logits)
    with pytest.raises(
        LitLoraError, match=r"trained with an answerability head; set model\.answerability_head=true"
    ):
        qa_model(tiny_bert, adapter_path=str(adapter)).peft_model  # noqa: B018 - building checks the flag
    plain = qa_model(tiny_bert)
    plain_adapter = plain.save_adapter(tmp_path / "plain")
    with pytest.raises(
        LitLoraError, match=r"without an answerability head; set model\.answerability_head=false"
    ):
        qa_model(tiny_bert, answerability_head=True, adapter_path=str(plain_adapter)).peft_model  # noqa: B018
