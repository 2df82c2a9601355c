"""Greedy decoding that drops finished rows gives Hugging Face's greedy tokens, on tiny seeded decoders."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_lora.models import causal_lm
from lit_lora.models.causal_lm import projection_names
from lit_lora.models.lm import greedy as _greedy
from lit_lora.models.lm.greedy import greedy_generate
from tests.helpers import causal_lm as build_causal_lm

PROMPT_LENGTHS, NEW_TOKENS, PAD = (6, 2, 9, 4, 7), 16, 1


def decoder(path: Path, lora: bool) -> Any:
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    model.generation_config.eos_token_id = None  # each test names its own stop tokens
    if not lora:
        return model
    torch.manual_seed(0)  # init_lora_weights=False: B is random, so the adapter changes the logits
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=projection_names(str(path)), init_lora_weights=False
    )
    return get_peft_model(model, config).eval()


def left_padded_prompts(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    width = max(PROMPT_LENGTHS)
    ids = torch.full((len(PROMPT_LENGTHS), width), PAD)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(PROMPT_LENGTHS):
        ids[row, width - length :] = torch.randint(4, vocab_size, (length,), generator=generator)
        mask[row, width - length :] = 1
    return ids, mask


def hf_greedy(model: Any, ids: torch.Tensor, mask: torch.Tensor, new: int, stop: set[int]) -> list[list[int]]:
    """``generate(do_sample=False)``'s new tokens per row, cut after the first stop token (then padding)."""
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
        eos_token_id=sorted(stop) or None, pad_token_id=PAD,
    )  # fmt: skip
    return [row[: stop_length(row, stop)] for row in out[:, ids.shape[1] :].tolist()]


def stop_length(row: list[int], stop: set[int]) -> int:
    return next((i + 1 for i, token in enumerate(row) if token in stop), len(row))


def stops_splitting_rows(free: list[list[int]]) -> set[int]:
    """Two tokens the model emits after which the rows stop at as many different lengths as possible."""
    tokens = sorted({token for row in free for token in row})
    pairs = combinations(tokens, 2)
    return set(max(pairs, key=lambda pair: len({stop_length(row, set(pair)) for row in free})))


@pytest.mark.parametrize("lora", [False, True], ids=["base", "lora"])
@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_gpt2"])
def test_rows_stopping_at_different_steps_get_hugging_faces_greedy_tokens(arch, lora, request):
    model = decoder(request.getfixturevalue(arch), lora)
    ids, mask = left_padded_prompts(model.config.vocab_size)
    stop = stops_splitting_rows(hf_greedy(model, ids, mask, NEW_TOKENS, set()))
    expected = hf_greedy(model, ids, mask, NEW_TOKENS, stop)
    lengths = [len(row) for row in expected]
    # Not vacuous: some rows stop early, at different steps, while others run on.
    assert len(set(lengths)) >= 3 and min(lengths) < NEW_TOKENS
    assert greedy_generate(model, ids, mask, NEW_TOKENS, stop, PAD) == expected


@pytest.mark.parametrize("new_tokens", [1, 5])
def test_max_new_tokens_is_respected(tiny_llama, new_tokens):
    model = decoder(tiny_llama, lora=False)
    ids, mask = left_padded_prompts(model.config.vocab_size)
    replies = greedy_generate(model, ids, mask, new_tokens, set(), PAD)
    assert [len(row) for row in replies] == [new_tokens] * len(PROMPT_LENGTHS)
    assert replies == hf_greedy(model, ids, mask, new_tokens, set())


def test_a_rank_that_is_done_keeps_stepping_until_no_rank_generates(tiny_llama):
    model = decoder(tiny_llama, lora=False)
    ids, mask = left_padded_prompts(model.config.vocab_size)
    stop = stops_splitting_rows(hf_greedy(model, ids, mask, NEW_TOKENS, set()))
    replies = hf_greedy(model, ids, mask, NEW_TOKENS, stop)
    early = [i for i, row in enumerate(replies) if len(row) < NEW_TOKENS]
    ids, mask = ids[early], mask[early]  # this rank's rows all stop early; the other rank's run on
    expected = hf_greedy(model, ids, mask, NEW_TOKENS, stop)
    longest = max(len(row) for row in expected)
    assert len(early) >= 2 and longest < NEW_TOKENS
    reported: list[bool] = []

    def any_rank_running(running: bool) -> bool:  # the other rank runs until its last step
        reported.append(running)
        return len(reported) < NEW_TOKENS

    forwards = []
    hook = model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        replies = greedy_generate(model, ids, mask, NEW_TOKENS, stop, PAD, any_rank_running)
    finally:
        hook.remove()
    assert replies == expected
    # The other rank's forwards (prompt, then NEW_TOKENS - 1 steps) and one report per step from each.
    assert len(forwards) == NEW_TOKENS
    assert reported == [True] * (longest - 1) + [False] * (NEW_TOKENS - longest + 1)


def test_a_cache_that_cannot_drop_rows_keeps_them_and_the_tokens(tiny_llama, monkeypatch):
    model = decoder(tiny_llama, lora=True)
    ids, mask = left_padded_prompts(model.config.vocab_size)
    stop = stops_splitting_rows(hf_greedy(model, ids, mask, NEW_TOKENS, set()))
    monkeypatch.setattr(_greedy, "_can_drop_rows", lambda cache: False)
    replies = greedy_generate(model, ids, mask, NEW_TOKENS, stop, PAD)
    assert replies == hf_greedy(model, ids, mask, NEW_TOKENS, stop)


def test_causal_lm_generates_with_it_unless_the_generation_config_edits_logits(tiny_llama, monkeypatch):
    module = build_causal_lm(tiny_llama, max_new_tokens=12)
    module.configure_model()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama, padding_side="left")
    batch = tokenizer(
        ["Tom has 3 apples and", "The", "She sells the remainder at the"], return_tensors="pt", padding=True
    )
    calls = []
    monkeypatch.setattr(causal_lm, "greedy_generate", lambda *a: calls.append(a) or greedy_generate(*a))

    def hugging_face() -> list[str]:
        out = module.peft_model.generate(**batch, max_new_tokens=12, do_sample=False)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    assert module.generate(batch["input_ids"], batch["attention_mask"]) == hugging_face()
    assert len(calls) == 1
    module.peft_model.generation_config.repetition_penalty = 3.0  # greedy_generate has no penalty: HF's
    assert module.generate(batch["input_ids"], batch["attention_mask"]) == hugging_face()
    assert len(calls) == 1
