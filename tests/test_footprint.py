"""The weight footprint in results.json: stored bytes of the weights, quantisation constants included."""

from __future__ import annotations

import math

import bitsandbytes as bnb
import torch

from lit_lora.core.quantization import Quantization
from lit_lora.models.engine.footprint import weight_footprint_bytes
from tests.helpers import classifier

BLOCK = 64  # bitsandbytes' 4-bit block size: one fp32 scale per 64 weights


def _quantised_layers(module) -> list:
    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return [m for m in module.peft_model.modules() if isinstance(m, kinds)]


def _quantised_weights(module) -> int:
    return sum(m.in_features * m.out_features for m in _quantised_layers(module))


def test_fp32_footprint_is_what_transformers_counts(tiny_bert):
    module = classifier(tiny_bert, num_labels=2)
    # PEFT injects its adapters into the base model, so transformers' own count includes them.
    expected = module.peft_model.get_base_model().get_memory_footprint()
    assert weight_footprint_bytes(module.peft_model) == expected
    assert module.describe()["weight_memory_mb"] == round(expected / 2**20, 2)


def test_nf4_counts_packed_weights_and_their_block_scales(tiny_bert):
    full = weight_footprint_bytes(classifier(tiny_bert, num_labels=2).peft_model)
    module = classifier(tiny_bert, num_labels=2, quantization=Quantization(mode="nf4", double_quant=False))
    quantised = _quantised_weights(module)
    assert quantised > 0
    # Each quantised fp32 weight (4 bytes) becomes half a byte, plus an fp32 scale per block, plus each
    # layer's 16-value fp32 NF4 code book.
    code_books = 16 * 4 * len(_quantised_layers(module))
    expected = full - 4 * quantised + quantised // 2 + 4 * (quantised // BLOCK) + code_books
    assert weight_footprint_bytes(module.peft_model) == expected


def test_double_quant_stores_block_scales_in_8_bit_with_scales_of_their_own(tiny_bert):
    full = weight_footprint_bytes(classifier(tiny_bert, num_labels=2).peft_model)
    module = classifier(tiny_bert, num_labels=2, quantization=Quantization(mode="nf4", double_quant=True))
    expected = full
    for layer in _quantised_layers(module):
        n = layer.in_features * layer.out_features
        blocks = n // BLOCK
        # packed weights, 8-bit block scales, an fp32 scale per 256 of those, the 256-value fp32 code
        # book of that second quantisation, its fp32 offset, and the NF4 code book
        expected += -4 * n + n // 2 + blocks + 4 * math.ceil(blocks / 256) + 256 * 4 + 4 + 16 * 4
    assert weight_footprint_bytes(module.peft_model) == expected


def test_int8_sits_between_fp32_and_nf4(tiny_bert):
    def footprint(**quantization) -> int:
        module = classifier(tiny_bert, num_labels=2, quantization=Quantization(**quantization))
        return weight_footprint_bytes(module.peft_model)

    assert footprint(mode="nf4", double_quant=False) < footprint(mode="int8") < footprint()


def test_zero3_partitioned_parameters_count_whole_and_once(tiny_bert):
    """ZeRO-3 empties each partitioned parameter on every rank (one shared empty storage) and records its
    size as ds_numel: the footprint is still the whole model's, each parameter counted once."""
    module = classifier(tiny_bert, num_labels=2)
    whole = weight_footprint_bytes(module.peft_model)
    empty = torch.empty(0)
    for ds_id, param in enumerate(module.peft_model.parameters()):
        param.ds_id, param.ds_numel = ds_id, param.numel()
        param.data = empty
    assert weight_footprint_bytes(module.peft_model) == whole
