"""Split-level language-model metrics: token NLL sums (loss, perplexity), exact match, choice accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from lit_lora.metrics.gsm8k import flexible_match, strict_match

IGNORE = -100


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token negative log-likelihood and the number of predicted tokens (labels != -100).

    Position t predicts token t + 1, so the first label of each row is never predicted.
    """
    predicted = labels[:, 1:]
    nll = F.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), predicted.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return nll, (predicted != IGNORE).sum()


class TokenNLL(Metric):
    """Mean NLL per predicted token over everything seen since the last reset (exp of it: perplexity).

    Sums, not per-batch means, are accumulated, so batches with more tokens weigh more, as they must.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        # float32, not float64: MPS has no float64; the relative error of a float32 sum stays ~1e-6 here.
        self.add_state("nll", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("tokens", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, nll: torch.Tensor, tokens: torch.Tensor) -> None:
        # Out of place: states reset under inference mode (validate, test) are inference tensors, and
        # an in-place update of one during a later fit fails.
        self.nll = self.nll + nll.detach().float()
        self.tokens = self.tokens + tokens.detach()

    def compute(self) -> torch.Tensor:
        return self.nll / self.tokens.clamp(min=1)


class _GenerationMatch(Metric):
    """Fraction of generations that ``matches`` their reference; counts summed over ranks."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    @staticmethod
    def matches(generation: str, reference: str) -> bool:
        raise NotImplementedError

    def update(self, generations: Sequence[str], references: Sequence[str]) -> None:
        pairs = zip(generations, references, strict=True)
        self.correct = self.correct + sum(self.matches(g, r) for g, r in pairs)
        self.total = self.total + len(references)

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp(min=1)


class StrictNumberMatch(_GenerationMatch):
    """GSM8K: fraction whose first ``#### <number>`` equals the reference (lm-eval's strict-match)."""

    matches = staticmethod(strict_match)


class FlexibleNumberMatch(_GenerationMatch):
    """GSM8K: fraction whose last number equals the reference (lm-eval's flexible-extract)."""

    matches = staticmethod(flexible_match)


def label_matches(generation: str, reference: str) -> bool:
    """Whether a generated reply names the gold label: its first line, or that line's first word, equals it.

    Case-folded and stripped, trailing full stops and the like dropped, so that "Sports." and "sports\\n..."
    both count; a reply that merely mentions the label later does not.
    """
    lines = [line for line in generation.strip().splitlines() if line.strip()]
    if not lines:
        return False
    line, gold = lines[0].strip().rstrip(".!,;:").casefold(), reference.strip().casefold()
    return line == gold or line.split()[0].rstrip(".!,;:") == gold


class LabelExactMatch(_GenerationMatch):
    """Fraction of generations that name the gold label word (:func:`label_matches`)."""

    matches = staticmethod(label_matches)


class ChoiceAccuracy(Metric):
    """Fraction of rows whose highest-scoring choice is the gold one; counts summed over ranks."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct = self.correct + (scores.argmax(dim=-1) == labels).sum().detach()
        self.total = self.total + labels.numel()

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp(min=1)
