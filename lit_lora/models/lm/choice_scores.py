"""Classification by likelihood: each label word's summed log-probability after the prompt."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def cache_keyword(model: Any) -> str:
    """The forward's key/value cache argument, also its output's attribute name."""
    # Recent transformers 5 releases call it ``cache`` (``past_key_values`` goes in 5.40); 4.x, the old name.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def prefill(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """One cached forward over left-padded prompts, logits for the last position only, and the positions
    used (from the mask, so padding does not shift a row)."""
    positions = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,  # only the last position predicts what comes next
    )
    return out, positions


def choice_scores(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    choices: Sequence[Sequence[Sequence[int]]],
    pad_token_id: int,
) -> torch.Tensor:
    """(rows, choices) summed log-likelihoods of ``choices[row][k]``'s tokens following the row's prompt."""
    return choice_token_log_probs(model, prompt_ids, prompt_mask, choices, pad_token_id).sum(dim=-1)


def choice_token_log_probs(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    choices: Sequence[Sequence[Sequence[int]]],
    pad_token_id: int,
) -> torch.Tensor:
    """(rows, choices, longest choice) log-probability of each token of ``choices[row][k]``; 0 past its end.

    The prompt is run once and its key/value cache is shared by every choice: the cache is repeated per
    choice and all choices' remaining tokens go through one small forward. (A forward per choice over the
    whole prompt cost a label set's worth of prompt passes.) Prompts are left-padded, so all end at the
    same column; positions come from the mask, so padding does not shift a row's positions.
    """
    rows, n_choices = prompt_ids.shape[0], len(choices[0])
    prompt_out, positions = prefill(model, prompt_ids, prompt_mask)
    first_log_probs = F.log_softmax(prompt_out.logits[:, -1].float(), dim=-1)

    flat = [list(row[k]) for row in choices for k in range(n_choices)]  # row-major: row * n_choices + k
    longest = max(len(tokens) for tokens in flat)
    tokens = torch.tensor([t + [pad_token_id] * (longest - len(t)) for t in flat], device=prompt_ids.device)
    kept = torch.tensor([[1] * len(t) + [0] * (longest - len(t)) for t in flat], device=prompt_ids.device)
    picked = first_log_probs.repeat_interleave(n_choices, dim=0).gather(-1, tokens[:, :1])
    if longest > 1:
        # Token t of a choice is predicted by the forward over its token t - 1, after the shared prompt.
        keyword = cache_keyword(model)
        cache = getattr(prompt_out, keyword)
        cache.batch_repeat_interleave(n_choices)
        mask = torch.cat([prompt_mask.repeat_interleave(n_choices, dim=0), kept[:, :-1]], dim=1)
        start = positions[:, -1:].repeat_interleave(n_choices, dim=0) + 1
        steps = torch.arange(longest - 1, device=prompt_ids.device)
        logits = model(
            input_ids=tokens[:, :-1],
            attention_mask=mask,
            position_ids=start + steps,
            **{keyword: cache},
            use_cache=True,
        ).logits
        rest = F.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
        picked = torch.cat([picked, rest], dim=1)
    return (picked * kept).view(rows, n_choices, longest)
