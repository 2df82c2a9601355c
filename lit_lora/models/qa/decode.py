"""Extractive QA post-processing: best spans per feature, merged per question, null answer or span.

A question whose context is longer than the model's window has several features (windows); each
feature proposes its n best spans and a null (CLS) score, and the question's answer is decided once
all of them are in, in whatever order they came.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch

CharSpan = tuple[float, int, int]  # score, start character, end character (exclusive)


class FeatureResult(NamedTuple):
    """What one feature (window) contributes to its question's answer."""

    example_id: str
    null_score: float
    spans: list[CharSpan]
    context: str
    gold: list[str] | None


class Answer(NamedTuple):
    text: str
    confidence: float
    null_score: float
    best_span_score: float | None


def top_token_spans(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    context_mask: torch.Tensor,
    n_best: int,
    max_answer_length: int,
) -> list[list[tuple[float, int, int]]]:
    """The ``n_best`` highest-scoring (start + end logit) spans per row, as (score, start, end) tokens.

    Spans lie inside the context (``context_mask``), end at or after their start and are at most
    ``max_answer_length`` tokens long. Scoring every valid pair is exact (no start/end pre-cut).
    """
    batch, length = start_logits.shape
    scores = start_logits.float()[:, :, None] + end_logits.float()[:, None, :]
    positions = torch.arange(length, device=scores.device)
    span_length = positions[None, :] - positions[:, None]
    valid = (span_length >= 0) & (span_length < max_answer_length)
    valid = valid[None] & context_mask[:, :, None] & context_mask[:, None, :]
    scores = scores.masked_fill(~valid, -math.inf).flatten(1)
    top, index = scores.topk(min(n_best, length * length), dim=1)
    spans: list[list[tuple[float, int, int]]] = []
    for row_scores, row_index in zip(top.tolist(), index.tolist(), strict=True):
        spans.append(
            [
                (s, i // length, i % length)
                for s, i in zip(row_scores, row_index, strict=True)
                if s > -math.inf
            ]
        )
    return spans


def to_char_spans(
    token_spans: Sequence[tuple[float, int, int]], offsets: Sequence[Sequence[int] | None]
) -> list[CharSpan]:
    """Token spans to character spans of the context, using the feature's offset mapping."""
    chars = []
    for score, start, end in token_spans:
        first, last = offsets[start], offsets[end]
        if first is not None and last is not None:
            chars.append((score, int(first[0]), int(last[1])))
    return chars


def choose(null_score: float, spans: Sequence[tuple[float, str]], threshold: float) -> Answer:
    """The null answer when its score beats the best span's by more than ``threshold``, else the span.

    Confidence is the softmax probability of the choice among the null answer and the n-best spans.
    """
    logits = torch.tensor([null_score, *(score for score, _ in spans)], dtype=torch.float64)
    probs = logits.softmax(dim=0).tolist()
    if not spans:
        return Answer("", probs[0], null_score, None)
    best_score, best_text = max(spans, key=lambda span: span[0])
    if null_score - best_score > threshold:
        return Answer("", probs[0], null_score, best_score)
    return Answer(best_text, probs[1 + [s for s, _ in spans].index(best_score)], null_score, best_score)


def decide(results: Iterable[FeatureResult], n_best: int, threshold: float) -> dict[str, Answer]:
    """One answer per question from all its features' results (any order, duplicates harmless).

    The null score is the lowest over the question's features (the window most sure an answer
    exists), as in the reference BERT/Hugging Face post-processing; identical character spans from
    overlapping windows count once, with their best score.
    """
    null: dict[str, float] = {}
    spans: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
    contexts: dict[str, str] = {}
    for result in results:
        qid = result.example_id
        null[qid] = min(null.get(qid, math.inf), result.null_score)
        contexts[qid] = result.context
        for score, start, end in result.spans:
            key = (start, end)
            spans[qid][key] = max(score, spans[qid].get(key, -math.inf))
    answers = {}
    for qid, null_score in null.items():
        ranked = sorted(spans[qid].items(), key=lambda item: item[1], reverse=True)[:n_best]
        candidates = [(score, contexts[qid][start:end]) for (start, end), score in ranked]
        answers[qid] = choose(null_score, candidates, threshold)
    return answers


def gold_by_question(results: Iterable[FeatureResult]) -> dict[str, list[str]]:
    return {r.example_id: r.gold for r in results if r.gold is not None}
