"""Padding-free attention without a [tokens x tokens] mask: each packed sequence attends on its own.

transformers' ``sdpa`` turns a packed row into one long sequence under a block-diagonal mask: the kernel
then scores every token against every other token of the row ((sum of lengths)^2 work, nearly all of it
masked), takes the masked kernels (no flash kernel on CUDA, no grouped-query attention: keys and values are
copied per query head) and the mask itself grows with the row squared. ``flash_attention_2`` reads the
boundaries instead (``cu_seq_lens_q``) but needs CUDA and the flash-attn package.

``VARLEN_SDPA`` is that varlen attention for every device: the fused causal kernel (``is_causal``) once per
sequence, from the boundaries ``packed_inputs`` passes. Calls without boundaries (padded batches,
generation with a cache) are exactly transformers' ``sdpa``, mask included, so a model switched to it
stays what it was everywhere else.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

VARLEN_SDPA = "lit_lora_varlen_sdpa"


def sequence_bounds(position_ids: torch.Tensor) -> torch.Tensor:
    """Cumulative sequence lengths of a packed row ([0, end of 1st, ..., total]), on the CPU.

    One device sync per step here, rather than one per layer in the attention.
    """
    positions = position_ids[0].cpu()
    later_starts = (positions[1:] == 0).nonzero().flatten() + 1  # the row's first token always starts one
    return torch.cat([torch.tensor([0]), later_starts, torch.tensor([positions.numel()])])


def varlen_sdpa_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function: [batch, heads, tokens, dim] in, [batch, tokens, heads, dim] out."""
    bounds = None if cu_seq_lens_q is None else cu_seq_lens_q.tolist()
    window = kwargs.get("sliding_window")
    if bounds is None or query.shape[0] != 1 or not _within_window(bounds, window):
        # Not packed, or a sliding window shorter than a sequence: the mask transformers built says it all.
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    outputs = [
        sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            None,
            dropout=dropout,
            scaling=scaling,
            is_causal=True,
        )[0]
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return torch.cat(outputs, dim=1), None


def _within_window(bounds: list[int], window: int | None) -> bool:
    if window is None:
        return True
    return max(end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)) <= window


AttentionInterface.register(VARLEN_SDPA, varlen_sdpa_forward)
# Same masks as sdpa: the fallback above needs them; a packed step builds one and does not read it.
AttentionMaskInterface.register(VARLEN_SDPA, sdpa_mask)


def use_varlen_attention(model: PreTrainedModel) -> None:
    """Switch a model on ``sdpa`` to ``VARLEN_SDPA``; other attention implementations stay as they are."""
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(VARLEN_SDPA)
