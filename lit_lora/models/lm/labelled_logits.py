"""Logits only where a loss is taken: the vocabulary projection for labelled positions alone.

A causal LM's output layer maps every position onto the whole vocabulary (49,152 words for SmolLM2),
although prompts, system turns and padding carry no loss. transformers 5 lets a model project only the
positions of a boolean ``logits_to_keep`` mask (``modeling_utils.slice_logits_to_keep``), which gives the
same loss from fewer FLOPs and without the ``[batch, length, vocab]`` float32 logits, their softmax and
their gradient. Models that do not take such a mask get the whole projection, as before.
"""

from __future__ import annotations

import inspect
import sys

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from lit_lora.metrics.language_model import IGNORE, token_nll


def takes_position_mask(model: PreTrainedModel) -> bool:
    """Whether ``model.forward`` projects only the positions of a boolean ``logits_to_keep`` mask.

    True for the models whose forward slices with transformers' ``slice_logits_to_keep``, the function
    that understands a 2-D boolean mask; older slicing (``hidden[:, -k:]``) would misread it.
    """
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return False
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "slice_logits_to_keep", None) is not None


def labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean ``[batch, length]``: position t predicts ``labels[:, t + 1]``, a token that carries loss."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep


def labelled_nll(
    logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL and token count, as ``token_nll``, from all logits or the kept ones.

    ``keep`` is the mask the logits were sliced with (``None``: logits for every position).
    """
    if keep is None:
        return token_nll(logits, labels)
    targets = labels[:, 1:][keep[:, :-1]]
    if logits.dim() != 2 or logits.shape[0] != targets.shape[0]:  # shapes only: no extra device sync
        raise RuntimeError(
            f"the model returned logits of shape {tuple(logits.shape)} for a logits_to_keep mask of "
            f"{targets.shape[0]} positions; it does not slice as transformers' slice_logits_to_keep does"
        )
    nll = F.cross_entropy(logits.float(), targets, reduction="sum")
    return nll, torch.tensor(targets.numel(), device=labels.device)
