"""Classification by likelihood: each label word's summed log-probability after the prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def choice_scores(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    choices: Sequence[Sequence[Sequence[int]]],
    pad_token_id: int,
) -> torch.Tensor:
    """(rows, choices) summed log-likelihoods of ``choices[row][k]``'s tokens following the row's prompt.

    Prompts are left-padded, so all end at the same column; one forward per choice appends that choice's
    tokens (right-padded where rows' choices differ in length) and reads the log-probabilities at the
    prompt's end onwards. Positions come from the mask, so padding does not shift a row's positions.
    """
    width = prompt_ids.shape[1]
    scores = []
    for k in range(len(choices[0])):
        rows = [list(row[k]) for row in choices]
        longest = max(len(r) for r in rows)
        tokens = torch.tensor(
            [r + [pad_token_id] * (longest - len(r)) for r in rows], device=prompt_ids.device
        )
        kept = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows], device=prompt_ids.device)
        mask = torch.cat([prompt_mask, kept], dim=1)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        logits = model(
            input_ids=torch.cat([prompt_ids, tokens], dim=1), attention_mask=mask, position_ids=positions
        ).logits
        # Position t predicts token t + 1: the prompt's last position predicts the choice's first token.
        log_probs = F.log_softmax(logits[:, width - 1 : width - 1 + longest].float(), dim=-1)
        picked = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        scores.append((picked * kept).sum(dim=1))
    return torch.stack(scores, dim=1)
