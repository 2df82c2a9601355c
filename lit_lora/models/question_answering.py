"""Extractive question answering (SQuAD v2) with a PEFT adapter."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from peft import TaskType
from torch import nn
from torchmetrics import MeanMetric
from transformers import AutoModelForQuestionAnswering

from lit_lora.core.ranges import FiniteFloat, PositiveInt, Range
from lit_lora.metrics.gathered import GatheredObjects
from lit_lora.metrics.span import SpanAccuracy
from lit_lora.metrics.squad_v2 import threshold_scores
from lit_lora.models.base import PeftModule
from lit_lora.models.qa.answerability import HEAD_NAME, attach_head, check_saved_adapter, null_logits
from lit_lora.models.qa.decode import FeatureResult, decide, gold_by_question, to_char_spans, top_token_spans
from lit_lora.models.qa.ensemble import Member, ensemble_members, ensemble_outputs, load_members

Batch = dict[str, Any]
CLS_INDEX = 0  # the null answer's position; the datamodule labels unanswerable windows with it
POSITIONS = ("start_positions", "end_positions")


class QuestionAnswering(PeftModule):
    """``AutoModelForQuestionAnswering`` + adapter; the span head (``qa_outputs``) is trained in full.

    Validation and test decode every question from all its windows at epoch end (n-best spans inside
    the context, null answer when its score beats the best span's by the threshold) and log, per
    stage, ``exact`` and ``f1`` overall and for ``HasAns_`` / ``NoAns_`` questions (percentages, by the
    official SQuAD v2 rules), ``best_exact`` / ``best_f1`` and the null thresholds that reach them
    (``best_*_thresh``: choose ``null_score_diff_threshold`` by them on held-out questions),
    ``start_acc`` / ``end_acc`` (fraction of windows whose start / end token is right, CLS included)
    and ``loss``. ``predict`` returns one answer per question with its
    confidence; the empty answer means unanswerable.
    """

    auto_model_class = AutoModelForQuestionAnswering
    task_type = TaskType.QUESTION_ANS

    def __init__(
        self,
        *args: Any,
        n_best: PositiveInt = 20,
        max_answer_length: PositiveInt = 30,
        null_score_diff_threshold: FiniteFloat = 0.0,
        null_window_weight: Annotated[float, Range(gt=0, le=1)] = 1.0,
        answerability_head: bool = False,
        ensemble_adapter_paths: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            n_best: Spans kept per question (highest start + end logit) when decoding.
            max_answer_length: Longest answer span, in tokens.
            null_score_diff_threshold: Answer "unanswerable" when the null (CLS) score exceeds the best
                span's score by more than this; raise it to answer more often.
            null_window_weight: Weight, in the training loss, of windows whose target is the null
                answer (unanswerable questions, and windows that miss the answer). They are most of
                SQuAD v2's windows, and at weight 1 a small encoder first learns to point at CLS
                everywhere; a lower weight lets it learn spans sooner. The null threshold, chosen on
                held-out questions, absorbs the shifted prior. Evaluation losses stay unweighted.
            answerability_head: Add a separate head on the last hidden state at CLS (trained in full
                with binary cross-entropy: does this window miss the answer?) whose logit is added to
                the null (CLS) score. The threshold and metrics work as before, on the summed margin.
            ensemble_adapter_paths: More saved adapters (same base, task and LoRA method) evaluated
                together with ``adapter_path`` as one model: validate, test and predict average the
                members' start and end logits (and answerability logits, 0 for a member without the
                head) before decoding. One forward per member; choose the threshold on the ensemble.
        """
        super().__init__(*args, **kwargs)
        self.n_best = n_best
        self.max_answer_length = max_answer_length
        self.null_score_diff_threshold = null_score_diff_threshold
        self.null_window_weight = null_window_weight
        self.answerability_head = answerability_head
        self.ensemble_adapter_paths = ensemble_adapter_paths or []
        # Read from the members' configs now, so that a bad one is refused before the model loads.
        self._members: list[Member] = (
            ensemble_members(self.adapter_path, self.ensemble_adapter_paths, answerability_head)
            if self.ensemble_adapter_paths
            else []
        )
        self._has_head = answerability_head or any(member.has_head for member in self._members)

    def _add_task_modules(self, base: nn.Module) -> list[str]:
        if self.adapter_path is not None:
            check_saved_adapter(self.adapter_path, self.answerability_head)
        if self._has_head:  # a member's saved head loads into this module
            attach_head(base)
        return [HEAD_NAME] if self.answerability_head else []

    def configure_model(self) -> None:
        if self.model is not None:
            return
        super().configure_model()
        if self._members:
            load_members(self.peft_model, self._members)
            self.peft_model.train()  # as the base class leaves it; evaluation switches to eval mode

    def _new_metrics(self, stage: str) -> dict[str, nn.Module]:
        windows: GatheredObjects[FeatureResult] = GatheredObjects()  # decoded per question at epoch end
        metrics: dict[str, nn.Module] = {"loss": MeanMetric(), "span_acc": SpanAccuracy(), "windows": windows}
        if self._has_head:
            metrics["answerability_loss"] = MeanMetric()
        return metrics

    def forward(self, batch: Batch) -> Any:
        inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        # PeftModelForQuestionAnswering.forward (peft 0.21) drops token_type_ids, which BERT needs to
        # tell question from context; the tuner model below it passes every input through.
        return self.peft_model.base_model(**inputs, output_hidden_states=self.answerability_head)

    def _null_logits(self, outputs: Any) -> torch.Tensor | None:
        """The answerability head's "no answer here" logit per window; None without the head."""
        if not self.answerability_head:
            return None
        return null_logits(self.peft_model.get_base_model(), outputs.hidden_states)

    @staticmethod
    def _answerability_loss(null_logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        is_null = (batch["start_positions"] == CLS_INDEX).float()
        return F.binary_cross_entropy_with_logits(null_logits, is_null)

    @staticmethod
    def _span_loss(outputs: Any, batch: Batch, null_window_weight: float = 1.0) -> torch.Tensor:
        """Mean over windows of the start and end cross-entropies, null windows weighted."""
        start = F.cross_entropy(outputs.start_logits.float(), batch["start_positions"], reduction="none")
        end = F.cross_entropy(outputs.end_logits.float(), batch["end_positions"], reduction="none")
        if null_window_weight == 1.0:
            return (start.mean() + end.mean()) / 2
        weights = torch.where(batch["start_positions"] == CLS_INDEX, null_window_weight, 1.0)
        return ((start + end) * weights).sum() / (2 * weights.sum())

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        outputs = self(batch)
        task_loss = self._span_loss(outputs, batch, self.null_window_weight)
        size = batch["input_ids"].shape[0]
        null = self._null_logits(outputs)
        if null is not None:
            answerability_loss = self._answerability_loss(null, batch)
            self.log("train/answerability_loss", answerability_loss, batch_size=size)
            task_loss = task_loss + answerability_loss
        self.log("train/loss", task_loss, prog_bar=True, batch_size=size)
        if outputs.loss is None:
            return task_loss
        # The model's own loss (positions go in) is the unweighted span loss, plus the method's
        # regulariser where PEFT adds one (AdaLoRA's orthogonality term).
        plain = null is None and self.null_window_weight == 1.0  # then task_loss is the model's span loss
        regulariser = outputs.loss - (task_loss if plain else self._span_loss(outputs, batch))
        extra = self.method_hooks.extra_loss_name
        if extra:
            self.log(f"train/{extra}", regulariser.detach(), batch_size=size)
        return outputs.loss if plain else task_loss + regulariser

    # ---- evaluation -------------------------------------------------------------------------------

    def _feature_results(
        self, batch: Batch, start: torch.Tensor, end: torch.Tensor, null_logits: torch.Tensor | None = None
    ) -> list[FeatureResult]:
        offsets = batch["offset_mapping"]
        width = start.shape[1]
        context_mask = torch.tensor(
            [[o is not None for o in row] + [False] * (width - len(row)) for row in offsets],
            device=start.device,
        )
        spans = top_token_spans(start, end, context_mask, self.n_best, self.max_answer_length)
        null_scores = start[:, CLS_INDEX] + end[:, CLS_INDEX]
        if null_logits is not None:  # the head's log-odds against an answer (see _answerability.py)
            null_scores = null_scores + null_logits
        null = null_scores.tolist()
        return [
            FeatureResult(
                batch["example_id"][i],
                null[i],
                to_char_spans(spans[i], offsets[i]),
                batch["context"][i],
                batch["answer_texts"][i] if "answer_texts" in batch else None,
            )
            for i in range(len(offsets))
        ]

    def _evaluated_outputs(self, batch: Batch) -> tuple[Any, torch.Tensor | None]:
        """Span logits and null logits of what is evaluated: the adapter, or the ensemble's averages."""
        inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor) and k not in POSITIONS}
        if self._members:
            return ensemble_outputs(self.peft_model, self._members, inputs)
        outputs = self(inputs)
        return outputs, self._null_logits(outputs)

    def _eval_step(self, batch: Batch, stage: str) -> None:
        outputs, null = self._evaluated_outputs(batch)
        start, end = outputs.start_logits.float(), outputs.end_logits.float()
        metrics = self.stage_metrics[stage]
        metrics["loss"].update(self._span_loss(outputs, batch), weight=start.shape[0])
        if null is not None:
            metrics["answerability_loss"].update(self._answerability_loss(null, batch), weight=start.shape[0])
        positions = batch["start_positions"], batch["end_positions"]
        metrics["span_acc"].update(start, end, batch["attention_mask"], *positions)
        if "offset_mapping" in batch:
            metrics["windows"].update(self._feature_results(batch, start, end, null))

    def _eval_epoch_end(self, stage: str) -> None:
        # Every rank computes each metric in the same order: each compute is a collective.
        metrics = self.stage_metrics[stage]
        self.log(f"{stage}/loss", metrics["loss"].compute())  # row-weighted over all ranks (MeanMetric syncs)
        if "answerability_loss" in metrics:
            self.log(f"{stage}/answerability_loss", metrics["answerability_loss"].compute())
        for name, value in metrics["span_acc"].compute().items():
            self.log(f"{stage}/{name}", value)
        windows = metrics["windows"].compute()
        if windows:
            for name, value in self._answer_scores(windows).items():
                if not name.endswith("total"):
                    self.log(f"{stage}/{name}", value, prog_bar=name in ("exact", "f1"))

    def _answer_scores(self, results: list[FeatureResult]) -> dict[str, float]:
        """Official scores at this threshold, plus the best threshold for these questions."""
        spans = decide(results, self.n_best, threshold=math.inf)  # every question's best span
        margins = {
            qid: a.null_score - a.best_span_score if a.best_span_score is not None else math.inf
            for qid, a in spans.items()
        }
        span_texts = {qid: a.text for qid, a in spans.items()}
        gold = gold_by_question(results)
        return threshold_scores(span_texts, margins, gold, self.null_score_diff_threshold)

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Any]]:
        """One answer per question in the batch (the datamodule keeps a question's windows together)."""
        outputs, null = self._evaluated_outputs(batch)
        start, end = outputs.start_logits.float(), outputs.end_logits.float()
        results = self._feature_results(batch, start, end, null)
        answers = decide(results, self.n_best, self.null_score_diff_threshold)
        return [
            {"id": qid, "answer": a.text, "confidence": a.confidence, "no_answer": a.text == ""}
            for qid, a in answers.items()
        ]
