"""The causal LM loss chunk by chunk over the labelled positions: never ``[tokens x vocab]`` float32 logits.

Projecting the labelled positions alone (``_labelled_logits.py``) still builds their whole
``[n_labelled, vocab]`` float32 logits, their log-softmax and its gradient at once: for SmolLM2's
49,152 words and 1,000 labelled tokens, three 200 MB buffers. Here the decoder runs once to its final
hidden states, and the output layer, log-softmax and NLL run on ``chunk_size`` positions at a time. In
training each chunk is checkpointed (non-reentrant ``torch.utils.checkpoint``): its logits are freed
after the forward and recomputed in backward, so one chunk's logits live at a time. The output layer is
called as a module, so an adapter on ``lm_head`` (LoRA with ``target_modules`` naming it) stays exact.

Only families whose causal-LM forward is ``lm_head(backbone(...).last_hidden_state)`` with nothing in
between (no logit soft-capping or scaling) are chunked; others keep the one-go projection.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel

from lit_lora.models.lm.labelled_logits import labelled_positions

# Checked against transformers' own forward by tests/test_chunked_loss.py (llama, qwen2) and by reading
# the others' forward: logits = lm_head(hidden_states), no soft-capping (gemma2/3), no scaling (granite).
CHUNKED_MODEL_TYPES = ("gemma", "gpt2", "llama", "mistral", "phi3", "qwen2", "qwen3", "smollm3")


def takes_chunked_loss(model: PreTrainedModel) -> bool:
    """Whether ``model`` (the transformers model under the adapter) is a family known to chunk exactly."""
    return (
        model.config.model_type in CHUNKED_MODEL_TYPES
        and model.base_model is not model
        and model.get_output_embeddings() is not None
    )


def _chunk_nll(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def chunked_nll(
    hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module, chunk_size: int
) -> torch.Tensor:
    """Summed NLL of ``targets`` [n] from ``hidden`` [n, d] through ``head``, ``chunk_size`` rows at a time.

    With gradients on, each chunk is recomputed in backward instead of keeping its logits.
    """
    total = hidden.new_zeros((), dtype=torch.float32)
    chunk_loss = partial(_chunk_nll, head)
    for part, part_targets in zip(hidden.split(chunk_size), targets.split(chunk_size), strict=True):
        if torch.is_grad_enabled():
            total = total + checkpoint(chunk_loss, part, part_targets, use_reentrant=False)
        else:
            total = total + chunk_loss(part, part_targets)
    return total


def chunked_labelled_nll(
    model: PreTrainedModel, inputs: dict[str, Any], labels: torch.Tensor, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL and token count of a batch, as ``token_nll`` gives from full logits.

    ``model`` is the transformers causal LM (adapter layers injected); ``inputs`` its forward inputs
    (input_ids with attention_mask or packed position_ids). The backbone runs once; only the labelled
    positions' hidden states reach the output layer, chunk by chunk.
    """
    hidden = model.base_model(**inputs).last_hidden_state
    keep = labelled_positions(labels)
    targets = labels[:, 1:][keep[:, :-1]]
    nll = chunked_nll(hidden[keep], targets, model.get_output_embeddings(), chunk_size)
    return nll, torch.tensor(targets.numel(), device=labels.device)
