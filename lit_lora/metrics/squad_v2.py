"""SQuAD v2 exact match and F1, as defined by the official evaluation script (``evaluate-v2.0.py``).

Scores are percentages, as the official script prints them. An unanswerable question has the empty
string as its only gold answer, so only an empty (or article/punctuation-only) prediction scores on it.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact(gold: str, prediction: str) -> int:
    """1 when the normalised strings are equal, else 0."""
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1(gold: str, prediction: str) -> float:
    """Bag-of-tokens F1 of the normalised strings; when either is empty, 1 if both are, else 0."""
    gold_tokens, pred_tokens = _tokens(gold), _tokens(prediction)
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Sequence[str]) -> list[str]:
    """The official script's gold set: answers that normalise to something, else the empty answer."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def score(answers: Sequence[str], prediction: str) -> tuple[int, float]:
    """(exact, f1) of one prediction: the maximum over the gold answers."""
    golds = gold_answers(answers)
    return max(exact(g, prediction) for g in golds), max(f1(g, prediction) for g in golds)


def aggregate(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Official totals over the questions in ``answers`` (a missing prediction counts as wrong).

    Returns ``exact``, ``f1`` and ``total``, and ``HasAns_*`` / ``NoAns_*`` for the questions with /
    without gold answers when there are any (as the official script does). Scores are percentages.
    """
    per_question = {
        qid: score(golds, predictions[qid]) if qid in predictions else (0, 0.0)
        for qid, golds in answers.items()
    }
    # Like the official script: a question is answerable when it lists any answer at all.
    groups = {
        "": list(answers),
        "HasAns_": [qid for qid, golds in answers.items() if golds],
        "NoAns_": [qid for qid, golds in answers.items() if not golds],
    }
    result: dict[str, float] = {}
    for prefix, ids in groups.items():
        if not ids and prefix:
            continue
        total = len(ids)
        result[f"{prefix}exact"] = 100.0 * sum(per_question[q][0] for q in ids) / total if total else 0.0
        result[f"{prefix}f1"] = 100.0 * sum(per_question[q][1] for q in ids) / total if total else 0.0
        result[f"{prefix}total"] = float(total)
    return result


def best_threshold(
    span_answers: Mapping[str, str],
    null_margins: Mapping[str, float],
    answers: Mapping[str, Sequence[str]],
) -> dict[str, float]:
    """The official script's ``best_exact`` / ``best_f1`` and the thresholds that reach them.

    ``span_answers`` holds each question's best span (what it answers when it answers), and
    ``null_margins`` its null score minus that span's score; with threshold ``t`` a question answers its
    span when its margin is at most ``t`` and "no answer" otherwise. Sweeping ``t`` over the margins
    gives every distinct decision, so the best one is exact for these questions; the threshold
    returned lies midway between the last margin answered and the next. Pick the threshold on
    held-out training questions and pass it to the test run: chosen on the test questions themselves,
    ``best_*`` overstate what the model would score.
    """
    ids = [qid for qid in answers if qid in span_answers and qid in null_margins]
    start = {"exact": 0.0, "f1": 0.0}
    gains: dict[str, list[tuple[float, float]]] = {"exact": [], "f1": []}
    for qid in ids:
        null_exact, null_f1 = score(answers[qid], "")
        span_exact, span_f1 = score(answers[qid], span_answers[qid])
        start["exact"] += null_exact
        start["f1"] += null_f1
        gains["exact"].append((null_margins[qid], span_exact - null_exact))
        gains["f1"].append((null_margins[qid], span_f1 - null_f1))
    total = max(len(answers), 1)  # questions missing from the predictions count as wrong
    result: dict[str, float] = {}
    for name, changes in gains.items():
        changes.sort()
        best, current = start[name], start[name]
        # Answering nothing: any threshold below the smallest margin.
        threshold = changes[0][0] - 1.0 if changes else 0.0
        for i, (margin, gain) in enumerate(changes):
            current += gain
            following = changes[i + 1][0] if i + 1 < len(changes) else margin + 2.0
            if following != margin and current > best:
                # Midway to the next margin, not the margin itself: logged as float32, a threshold equal
                # to a margin can round below it and stop answering that question.
                best, threshold = current, (margin + following) / 2
        result[f"best_{name}"] = 100.0 * best / total
        result[f"best_{name}_thresh"] = threshold
    return result


def threshold_scores(
    span_answers: Mapping[str, str],
    null_margins: Mapping[str, float],
    answers: Mapping[str, Sequence[str]],
    threshold: float,
) -> dict[str, float]:
    """:func:`aggregate` of the answers chosen at ``threshold``, with :func:`best_threshold`'s best scores.

    A question answers its best span (``span_answers``) when its null margin is at most ``threshold``,
    and "no answer" otherwise, as in :func:`best_threshold`.
    """
    chosen = {qid: "" if null_margins[qid] > threshold else text for qid, text in span_answers.items()}
    return {**aggregate(chosen, answers), **best_threshold(span_answers, null_margins, answers)}
