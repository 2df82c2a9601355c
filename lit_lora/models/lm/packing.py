"""Packed (padding-free) training batches, and the models whose attention keeps packed sequences apart.

A packed batch is one row holding several sequences back to back, its ``position_ids`` restarting at 0
for each (transformers' ``DataCollatorWithFlattening``). transformers 5 builds a block-diagonal causal
mask from such position ids (``masking_utils.find_packed_sequence_indices``) only when the model gets
no 2-D attention mask and no cache. An all-ones mask, or the empty cache that ``use_cache=True`` (the
config default, training included) creates, silently turns that off: every sequence then attends to the
ones before it. Families that build their mask elsewhere leak whatever is passed (OPT; BLOOM's ALiBi).
Only the families and attention implementations that tests/test_packing.py proves are allowed. A fit
with packing switches ``sdpa`` models to ``VARLEN_SDPA`` (``varlen_attention.py``), which reads the
sequence bounds that ``packed_inputs`` passes and never attends across them.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PretrainedConfig

from lit_lora.errors import LitLoraError
from lit_lora.models.lm.varlen_attention import VARLEN_SDPA, sequence_bounds

PACKED_MODEL_TYPES = ("gemma", "gpt2", "llama", "mistral", "phi3", "qwen2", "qwen3", "smollm3")
# flash_attention_2 reads packed position ids too, but cannot be tested on CPU: not allowed until it is.
PACKED_ATTENTION = ("eager", "sdpa", VARLEN_SDPA)


def is_packed(batch: dict[str, Any]) -> bool:
    return "position_ids" in batch


def packed_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor | bool]:
    """Model inputs of a packed batch: no attention mask and no cache, so that the mask follows positions.

    ``cu_seq_lens_q`` (the sequences' bounds) is read by ``VARLEN_SDPA`` and ignored by eager and sdpa.
    """
    return {
        "input_ids": batch["input_ids"],
        "position_ids": batch["position_ids"],
        "cu_seq_lens_q": sequence_bounds(batch["position_ids"]),
        "use_cache": False,
    }


def packs_each_sequence_alone(config: PretrainedConfig) -> bool:
    """Whether packed sequences run one at a time (``VARLEN_SDPA``), not under a row-wide mask.

    What ``data.packing: auto`` packs for: eager attention would score every pair of tokens in the row.
    """
    attention = config._attn_implementation
    return config.model_type in PACKED_MODEL_TYPES and attention in ("sdpa", VARLEN_SDPA)


def check_packing_support(config: PretrainedConfig) -> None:
    """Refuse packing, in one line, for a model whose attention might cross sequence boundaries."""
    model_type, attention = config.model_type, config._attn_implementation
    if model_type in PACKED_MODEL_TYPES and attention in PACKED_ATTENTION:
        return
    raise LitLoraError(
        f"data.packing=true: model type {model_type!r} with {attention} attention is not known to keep "
        f"packed sequences apart; packing is allowed for model types {', '.join(PACKED_MODEL_TYPES)} "
        f"with {' or '.join(PACKED_ATTENTION)} attention; set data.packing=false"
    )
