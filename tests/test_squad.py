"""SQuAD v2: official EM/F1, windows and their labels, null-answer decoding, training and evaluation."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from lit_lora.data import SquadV2DataModule
from lit_lora.errors import LitLoraError
from lit_lora.metrics.squad_v2 import (
    aggregate,
    best_threshold,
    exact,
    f1,
    normalize_answer,
    score,
    threshold_scores,
)
from lit_lora.models import QuestionAnswering
from lit_lora.models.qa.decode import FeatureResult, decide, top_token_spans
from tests.helpers import trainer
from tests.helpers.squad import FACTS, datamodule, qa_model, squad_json
from tests.helpers.training import changed_keys, snapshot, trainable_keys

# ---- metrics: the official evaluate-v2.0.py definitions ---------------------------------------------


def test_normalisation_drops_case_punctuation_articles_and_extra_space():
    assert normalize_answer("  The Normans,  an  ANCIENT people!") == "normans ancient people"
    assert normalize_answer("Anthem of the Andes") == "anthem of andes"  # articles only as whole words
    assert normalize_answer("theatre a-n") == "theatre"  # punctuation goes first, leaving the article "an"


def test_exact_and_f1_of_single_answers():
    assert exact("Normans", "the Normans.") == 1
    assert f1("in the 10th and 11th centuries", "10th century") == pytest.approx(2 / 7)
    assert f1("Denmark, Iceland and Norway", "Norway Iceland Denmark and") == 1.0  # bag of tokens
    assert f1("France", "Paris") == 0.0


def test_scores_take_the_best_gold_answer_and_treat_unanswerable_strictly():
    assert score(["France", "in France"], "France, Europe") == (0, pytest.approx(2 / 3))
    assert score(["France", "the Kingdom of France"], "kingdom of france") == (1, 1.0)
    assert score(["France"], "") == (0, 0.0)  # no answer for an answerable question
    assert score([], "France") == (0, 0.0)  # an answer for an unanswerable question
    assert score([], "") == (1, 1.0)
    assert score([], "The.") == (1, 1.0)  # normalises to nothing: the official script agrees


def test_aggregate_splits_answerable_and_unanswerable_and_counts_missing_as_wrong():
    gold = {"a": ["France"], "b": [], "c": [], "d": ["1066"]}
    result = aggregate({"a": "France", "b": "", "c": "Paris", "d": "1066 AD"}, gold)
    assert result["exact"] == pytest.approx(50.0) and result["f1"] == pytest.approx(100 * (8 / 3) / 4)
    assert result["HasAns_exact"] == pytest.approx(50.0) and result["HasAns_f1"] == pytest.approx(250 / 3)
    assert result["NoAns_exact"] == result["NoAns_f1"] == pytest.approx(50.0)
    assert result["HasAns_total"] == 2 and result["NoAns_total"] == 2
    assert aggregate({"a": "France"}, gold)["exact"] == pytest.approx(25.0)  # b, c, d missing
    assert "NoAns_exact" not in aggregate({"a": "France"}, {"a": ["France"]})


def _scores_at(threshold, spans, margins, gold):
    chosen = {q: "" if margins[q] > threshold else spans[q] for q in spans}
    return aggregate(chosen, gold)


def test_best_threshold_answers_exactly_the_questions_whose_null_margin_is_small_enough():
    gold = {"a": ["Paris"], "b": [], "c": ["Rome"]}
    spans = {"a": "Paris", "b": "Lyon", "c": "Milan"}
    margins = {"a": 0.5, "b": 1.0, "c": -1.0}
    best = best_threshold(spans, margins, gold)
    # Answering a (and c, whose margin is lower) but not b: 2 of 3, where threshold 0 gets 1 of 3.
    assert best["best_exact"] == pytest.approx(200 / 3) and best["best_exact_thresh"] == 0.75
    assert _scores_at(0.0, spans, margins, gold)["exact"] == pytest.approx(100 / 3)
    assert _scores_at(best["best_exact_thresh"], spans, margins, gold)["exact"] == best["best_exact"]
    assert threshold_scores(spans, margins, gold, 0.0) == {**_scores_at(0.0, spans, margins, gold), **best}
    # When every answer is wrong, answering nothing is best and the threshold says so.
    wrong = best_threshold({"a": "Lyon", "b": "Lyon"}, {"a": 0.2, "b": 0.1}, {"a": ["Paris"], "b": []})
    assert wrong["best_exact"] == 50.0 and wrong["best_exact_thresh"] < 0.1


def test_best_threshold_matches_a_brute_force_sweep():
    rng = random.Random(0)
    words = ["Paris", "Rome", "the Rome", "Lyon", "Rome and Paris"]
    gold = {str(i): rng.choice([[], [rng.choice(words)]]) for i in range(40)}
    spans = {q: rng.choice(words) for q in gold}
    margins = {q: round(rng.uniform(-3, 3), 1) for q in gold}  # rounded: ties must be handled
    best = best_threshold(spans, margins, gold)
    candidates = [min(margins.values()) - 1, *margins.values()]
    for name in ("exact", "f1"):
        swept = max(_scores_at(t, spans, margins, gold)[name] for t in candidates)
        assert best[f"best_{name}"] == pytest.approx(swept)
        at_threshold = _scores_at(best[f"best_{name}_thresh"], spans, margins, gold)[name]
        assert at_threshold == pytest.approx(swept)


# ---- features ---------------------------------------------------------------------------------------


def test_long_context_windows_label_the_answer_only_where_it_lies(tiny_bert, tiny_squad):
    data = datamodule(tiny_bert, tiny_squad)
    data.setup("validate")
    features = [f for f in data.splits["validation"] if f["example_id"] == "Freedonia-0"]
    assert len(features) >= 3  # one context, several overlapping windows
    answer_start = squad_json()["data"][0]["paragraphs"][0]["context"].index("Zembla")
    labelled = 0
    for feature in features:
        spans = [o for o in feature["offset_mapping"] if o is not None]
        contains = spans[0][0] <= answer_start and answer_start + len("Zembla") <= spans[-1][1]
        start, end = feature["start_positions"], feature["end_positions"]
        if contains:
            labelled += 1
            offsets = feature["offset_mapping"]
            assert feature["context"][offsets[start][0] : offsets[end][1]] == "Zembla"
        else:
            assert start == end == 0  # CLS
        assert len(feature["offset_mapping"]) == len(feature["input_ids"])
    assert labelled >= 1
    unanswerable = [f for f in data.splits["validation"] if f["example_id"] == "Freedonia-2"]
    assert all(f["start_positions"] == f["end_positions"] == 0 for f in unanswerable)


def test_predict_batches_keep_each_question_in_one_batch(tiny_bert, tiny_squad):
    data = datamodule(tiny_bert, tiny_squad, eval_batch_size=5)
    data.setup("predict")
    ids = [qid for batch in data.predict_dataloader() for qid in dict.fromkeys(batch["example_id"])]
    assert len(ids) == len(set(ids)) == 16  # no question split across batches, input order kept


def test_flat_rows_load_like_the_official_format_and_need_no_answers_to_predict(tiny_bert, tmp_path):
    rows = [
        {"id": "x", "context": "Zembla is the capital.", "question": "What is the capital?"},
        {"id": "y", "context": "Lorvik is a port.", "question": "Who founded Lorvik?"},
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows[0]["answers"] = {"text": ["Zembla"], "answer_start": [0]}
    rows[1]["answers"] = {"text": [], "answer_start": []}
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = SquadV2DataModule(tokenizer_name=str(tiny_bert), data_dir=str(tmp_path), test_split="test")
    data.setup("validate")
    labelled = data.splits["validation"]
    assert labelled["answer_texts"] == [["Zembla"], []] and labelled["end_positions"][1] == 0
    assert labelled["start_positions"][0] > 0
    data.setup("predict")
    (batch,) = data.predict_dataloader()
    assert batch["example_id"] == ["x", "y"] and batch["start_positions"].tolist() == [0, 0]


# ---- decoding ---------------------------------------------------------------------------------------


def test_span_search_stays_inside_the_context_and_the_length_limit():
    start = torch.tensor([[10.0, 1.0, 5.0, 0.0]])
    end = torch.tensor([[10.0, 0.0, 1.0, 6.0]])
    context = torch.tensor([[False, True, True, True]])  # CLS is never a span
    spans = top_token_spans(start, end, context, n_best=3, max_answer_length=2)[0]
    assert spans[0] == (11.0, 2, 3) and [s for s, _, _ in spans] == [11.0, 6.0, 6.0]
    assert all((i, j) != (1, 3) for _, i, j in spans)  # 1..3 (score 7) is 3 tokens long


@pytest.mark.parametrize(("threshold", "expected"), [(1.9, ""), (2.0, "Zembla"), (2.1, "Zembla")])
def test_null_answer_wins_when_it_beats_the_best_span_by_the_threshold(threshold, expected):
    context = "Zembla is the capital."
    windows = [
        FeatureResult("q", 5.0, [(3.0, 0, 6), (1.0, 14, 21)], context, ["Zembla"]),
        FeatureResult("q", 7.0, [(3.0, 0, 6)], context, ["Zembla"]),  # overlapping window, same span
    ]
    for order in (windows, windows[::-1]):
        answer = decide(order, n_best=20, threshold=threshold)["q"]
        assert answer.text == expected
        probs = torch.tensor([5.0, 3.0, 1.0]).softmax(0)  # null is the lowest over windows; span once
        assert answer.confidence == pytest.approx(float(probs[0] if expected == "" else probs[1]))


# ---- training and evaluation ------------------------------------------------------------------------


def test_inputs_reach_the_model_whole_and_only_adapter_and_head_train(tiny_bert, tiny_squad, tmp_path):
    module, data = qa_model(tiny_bert), datamodule(tiny_bert, tiny_squad)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():  # a fresh LoRA adds zero: the module must equal the plain model, segments included
        plain = module.peft_model.get_base_model()(**inputs).start_logits
        assert torch.equal(module(batch).start_logits, plain)
    before = snapshot(module)
    trainer(tmp_path, max_steps=3).fit(module, data)
    trainable = trainable_keys(module)
    assert changed_keys(before, module) == trainable
    assert any("qa_outputs.modules_to_save" in k for k in trainable)
    assert all(".lora_" in k or ".modules_to_save." in k for k in trainable)


def test_null_windows_weigh_what_null_window_weight_says_in_training_only(tiny_bert, tiny_squad):
    data = datamodule(tiny_bert, tiny_squad)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    null = batch["start_positions"] == 0
    assert null.any() and not null.all()  # the check needs both kinds of window
    module = qa_model(tiny_bert, null_window_weight=0.25)
    with torch.no_grad():
        outputs = module(batch)
    per_window = (
        sum(
            torch.nn.functional.cross_entropy(logits, batch[key], reduction="none")
            for logits, key in (
                (outputs.start_logits, "start_positions"),
                (outputs.end_logits, "end_positions"),
            )
        )
        / 2
    )
    weights = torch.where(null, 0.25, 1.0)
    expected = (per_window * weights).sum() / weights.sum()
    assert module._span_loss(outputs, batch, 0.25) == pytest.approx(float(expected), rel=1e-6)
    # Unweighted, it is the loss the model computes itself.
    assert module._span_loss(outputs, batch) == pytest.approx(float(outputs.loss), rel=1e-6)
    assert not torch.isclose(expected, outputs.loss)  # the weight changes the loss that trains
    assert float(module.training_step(batch, 0)) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("weight", [0.0, -0.5, 1.5])
def test_null_window_weight_outside_zero_to_one_is_refused_by_name(tiny_bert, weight):
    with pytest.raises(LitLoraError, match=r"model\.null_window_weight=.* must be a number in \(0, 1\]"):
        qa_model(tiny_bert, null_window_weight=weight)


def test_fit_then_test_reports_official_metrics_that_predict_reproduces(tiny_bert, tiny_squad, tmp_path):
    L.seed_everything(0)
    module, data = qa_model(tiny_bert), datamodule(tiny_bert, tiny_squad)
    run = trainer(tmp_path, max_epochs=2, limit_val_batches=1.0)
    run.fit(module, data)
    assert {"val/exact", "val/f1", "val/start_acc", "val/end_acc"} <= set(run.callback_metrics)
    (metrics,) = run.test(module, data)
    names = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "start_acc", "end_acc")
    assert {f"test/{n}" for n in names} <= set(metrics)
    # Pinned on torch 2.13 CPU: two epochs learn to answer no question (every unanswerable one right).
    assert metrics["test/loss"] == pytest.approx(2.29112, abs=1e-4)
    assert {n: metrics[f"test/{n}"] for n in names[:6]} == {
        "exact": 50.0, "f1": 50.0, "HasAns_exact": 0.0, "HasAns_f1": 0.0,
        "NoAns_exact": 100.0, "NoAns_f1": 100.0,
    }  # fmt: skip
    assert metrics["test/start_acc"] == metrics["test/end_acc"] == pytest.approx(17 / 23)  # windows
    # The reported best threshold, used as the threshold, scores the reported best F1.
    assert metrics["test/best_f1"] >= metrics["test/f1"]
    module.null_score_diff_threshold = metrics["test/best_f1_thresh"]
    (rescored,) = run.test(module, data)
    assert rescored["test/f1"] == pytest.approx(metrics["test/best_f1"])

    # predict decodes in input order, test in length order: the same answers must come out
    predictions = [row for batch in run.predict(module, data) for row in batch]
    assert [row["id"] for row in predictions] == [f"{c}-{n}" for _, c, _ in FACTS for n in range(4)]
    assert all(
        0.0 < row["confidence"] <= 1.0 and row["no_answer"] == (row["answer"] == "") for row in predictions
    )
    gold = {f"{c}-{n}": [a, f][n] if n < 2 else [] for a, c, f in FACTS for n in range(4)}
    rescored = aggregate({row["id"]: row["answer"] for row in predictions}, gold)
    assert rescored["exact"] == pytest.approx(metrics["test/exact"])
    assert rescored["f1"] == pytest.approx(metrics["test/f1"])


class WindowCounts(L.Callback):
    """What the window metrics hold as each evaluation epoch ends (callbacks run before the module's hook)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def _record(self, module: QuestionAnswering, stage: str) -> None:
        metrics = module.stage_metrics[stage]
        self.seen.append((stage, int(metrics["span_acc"].windows), len(metrics["windows"].items)))

    def on_validation_epoch_end(self, trainer: L.Trainer, module: QuestionAnswering) -> None:
        self._record(module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, module: QuestionAnswering) -> None:
        self._record(module, "test")


def test_window_metrics_hold_one_epoch_of_one_stage(tiny_bert, tiny_squad, tmp_path):
    module, counts = qa_model(tiny_bert), WindowCounts()
    full, part = datamodule(tiny_bert, tiny_squad), datamodule(tiny_bert, tiny_squad, max_eval_samples=5)
    run = trainer(tmp_path, max_epochs=2, limit_val_batches=1.0, callbacks=[counts])
    run.fit(module, full)  # two validation epochs
    run.validate(module, full)
    run.test(module, part)
    run.validate(module, part)
    n_full, n_part = len(full.splits["validation"]), len(part.splits["validation"])
    assert n_part < n_full
    assert counts.seen == [("val", n_full, n_full)] * 3 + [("test", n_part, n_part), ("val", n_part, n_part)]
    for stage in ("val", "test"):  # emptied once logged
        metrics = module.stage_metrics[stage]
        assert int(metrics["span_acc"].windows) == 0 and metrics["windows"].items == []


def test_decisions_do_not_depend_on_window_order():
    rng = random.Random(0)
    windows = [
        FeatureResult(f"q{i % 3}", rng.uniform(-2, 2), [(rng.uniform(-3, 3), 0, 4)], "abcdefgh", [])
        for i in range(12)
    ]
    expected = decide(windows, n_best=5, threshold=0.0)
    rng.shuffle(windows)
    assert decide(windows, n_best=5, threshold=0.0) == expected


def test_predict_on_two_ranks_keeps_each_question_on_one_rank(tiny_bert, tiny_squad):
    data = datamodule(tiny_bert, tiny_squad, eval_batch_size=5)
    data.setup("predict")
    seen: list[list[str]] = []
    for rank in (0, 1):
        data.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # what the loaders read
        loader = data.predict_dataloader()
        real = loader.batch_sampler.real_batches
        seen.append(
            [qid for b, batch in enumerate(loader) if b < real for qid in dict.fromkeys(batch["example_id"])]
        )
    assert not set(seen[0]) & set(seen[1])  # every window of a question on the same rank
    assert sorted(seen[0] + seen[1]) == sorted(set(seen[0] + seen[1])) and len(seen[0] + seen[1]) == 16
