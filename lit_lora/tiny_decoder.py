"""A seeded tiny decoder (Llama, Qwen2 or GPT-2 shapes) with a locally trained tokenizer, for offline runs.

    python -m lit_lora.tiny_decoder runs/tiny_decoder --arch llama [--seed 0] [--corpus FILE ...]

The directory it writes loads with ``AutoModelForCausalLM`` / ``AutoTokenizer`` like any hub model, so
``--model.model_name_or_path runs/tiny_decoder`` works everywhere. The tokenizer is a byte-level BPE
(every string round-trips) trained on the given files or a built-in text, with ``<|endoftext|>`` as
BOS/EOS, a separate ``<|pad|>`` (padding never hides the EOS a model must learn) and a ChatML template
whose assistant replies sit inside ``{% generation %}`` markers. (transformers loads a qwen2 directory
with its Qwen2 tokenizer class, which splits digits one by one, as Qwen does.)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

Arch = Literal["llama", "qwen2", "gpt2"]
ARCHS: tuple[Arch, ...] = ("llama", "qwen2", "gpt2")
EOS, PAD, IM_START, IM_END = "<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"
MAX_POSITIONS = 1024
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}{% else %}{{ m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Enough text that BPE learns common English pieces, digits and the prompt words lit_lora's tasks use.
BUILTIN_TEXT = """\
 = Tiny Decoder =
The tiny decoder is a small language model with random weights. It is used to test training code
without downloading anything. Question: Tom has 3 apples and buys 5 more. How many apples does he have?
Answer: Tom has 3 + 5 = 8 apples.
#### 8
Question: A shirt costs $12.50 and a hat costs $7.50. What do they cost together?
Answer: Together they cost 12.50 + 7.50 = $20.00.
#### 20
The European lobster is a species of lobster from the eastern Atlantic Ocean , Mediterranean Sea and
parts of the Black Sea . It may grow to a length of 60 cm ( 24 in ) and a mass of 6 kilograms .
In 1945 , the city had a population of 1,234,567 people ; by 2010 the number had grown to 2,000,000 .
The system said hello . The user asked a question and the assistant gave an answer .
She sells the remainder at the market every day for $2 per egg , so she makes 9 * 2 = 18 dollars .
"""


def _training_lines(corpus: Iterable[Path]) -> Iterator[str]:
    files = list(corpus)
    if not files:
        yield from BUILTIN_TEXT.splitlines() * 4
        return
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if path.suffix == ".jsonl" and line.strip():  # e.g. GSM8K rows: train on every string field
                yield from (v for v in json.loads(line).values() if isinstance(v, str))
            else:
                yield line


def build_tokenizer(corpus: Iterable[Path] = (), vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE with EOS/BOS, PAD and ChatML control tokens, trained deterministically."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_lines(corpus), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, pad_token=PAD)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = MAX_POSITIONS
    return tokenizer


def model_config(arch: Arch, tokenizer: PreTrainedTokenizerFast, hidden_size: int = 64) -> PretrainedConfig:
    """Two layers, four heads; dropout off so that losses are reproducible."""
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vocab = len(tokenizer)
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab, n_embd=hidden_size, n_layer=2, n_head=4, n_positions=MAX_POSITIONS,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids,
        )  # fmt: skip
    shape = {
        "vocab_size": vocab,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": MAX_POSITIONS,
        "tie_word_embeddings": False,
    }
    return (LlamaConfig if arch == "llama" else Qwen2Config)(**shape, **ids)


def build_tiny_decoder(
    out: str | Path, arch: Arch = "llama", seed: int = 0, corpus: Iterable[Path] = (), vocab_size: int = 1024
) -> Path:
    """Write a seeded tiny ``arch`` decoder and its tokenizer to ``out``; return the directory."""
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}: expected one of {ARCHS}")
    directory = Path(out)
    tokenizer = build_tokenizer(corpus, vocab_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(arch, tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Chat replies end with <|im_end|>, plain text with <|endoftext|>: generation stops at either.
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)]
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lit_lora.tiny_decoder", description="Write a seeded tiny decoder and its tokenizer."
    )
    parser.add_argument("out", help="directory to write the model and tokenizer to")
    parser.add_argument("--arch", choices=ARCHS, default="llama", help="layer names and shapes to copy")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--corpus", type=Path, nargs="*", default=[], help="text/jsonl files to train BPE on")
    parser.add_argument("--vocab-size", type=int, default=1024, help="largest BPE vocabulary")
    args = parser.parse_args(argv)
    path = build_tiny_decoder(args.out, args.arch, args.seed, args.corpus, args.vocab_size)
    print(f"tiny {args.arch} decoder written to {path}")


if __name__ == "__main__":
    main()
