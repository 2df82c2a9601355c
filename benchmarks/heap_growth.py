"""Where a CPU run's peak RSS goes: process RSS after each decoder layer of one checkpointed forward.

    python benchmarks/heap_growth.py                                    # glibc's default allocator
    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/heap_growth.py      # RSS follows live tensors
    python benchmarks/heap_growth.py --trim   # model.trim_host_memory: malloc_trim after each layer

A random-weight decoder of SmolLM2-135M's shape with LoRA r 16 (dropout 0.05) on every projection,
non-reentrant gradient checkpointing, one padding-free row of 8 sequences (2,084 tokens) attending
per sequence, as ``configs/extras/low_memory.yaml`` with ``data.packing=true`` trains it. Each layer of a
checkpointed forward keeps only its input alive (tokens x hidden x 4 bytes); any more RSS per layer is
memory the allocator holds but no tensor uses. ``--no-grad`` runs the same forward without autograd,
for comparison.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's lit_lora and benchmarks

from benchmarks.memory_scaling import SHAPES, current_rss  # noqa: E402
from lit_lora.models.engine.host_memory import trim_after_each_layer  # noqa: E402
from lit_lora.models.lm.packing import packed_inputs  # noqa: E402
from lit_lora.models.lm.varlen_attention import VARLEN_SDPA  # noqa: E402

SHAPE = SHAPES["smollm2-135m"]
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-grad", action="store_true", help="the forward without autograd")
    parser.add_argument("--trim", action="store_true", help="as model.trim_host_memory=true trains")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        SHAPE.family, hidden_size=SHAPE.hidden, intermediate_size=SHAPE.intermediate,
        num_hidden_layers=SHAPE.layers, num_attention_heads=SHAPE.heads, num_key_value_heads=SHAPE.kv_heads,
        vocab_size=SHAPE.vocab, tie_word_embeddings=SHAPE.tied,
    )  # fmt: skip
    base = AutoModelForCausalLM.from_config(config, attn_implementation=VARLEN_SDPA)
    adapter = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=PROJECTIONS)
    model = get_peft_model(base, adapter)
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    if args.trim:  # registered first, so that each layer's RSS below is read after its trim
        trim_after_each_layer(model)
    after_layer: list[float] = []
    for layer in base.model.layers:
        layer.register_forward_hook(lambda *_: after_layer.append(current_rss() / 2**20))
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(150, 400, (8,), generator=generator).tolist()
    batch = {
        "input_ids": torch.randint(0, SHAPE.vocab, (1, sum(lengths)), generator=generator),
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
    }
    inputs = packed_inputs(batch)
    before = current_rss() / 2**20
    with torch.set_grad_enabled(not args.no_grad):
        base.model(**inputs)
    per_layer = (after_layer[-1] - after_layer[0]) / (len(after_layer) - 1)
    live = sum(lengths) * SHAPE.hidden * 4 / 2**20
    mode = ("no grad" if args.no_grad else "grad") + (", trimmed after each layer" if args.trim else "")
    print(f"{sum(lengths)} tokens, {len(after_layer)} layers, {mode}")
    print(f"RSS before the forward {before:.0f} MB, after it {after_layer[-1]:.0f} MB")
    print(f"growth per layer {per_layer:.1f} MB (a checkpointed layer's input: {live:.1f} MB)")


if __name__ == "__main__":
    main()
