"""The tiny decoder: seeded, loadable by name, a tokenizer that round-trips and marks assistant replies."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_lora.tiny_decoder import build_tiny_decoder, build_tokenizer


def test_same_seed_same_weights_and_vocabulary(tiny_llama, tmp_path):
    again = build_tiny_decoder(tmp_path / "again", "llama", seed=0)
    first, second = (AutoModelForCausalLM.from_pretrained(d) for d in (tiny_llama, again))
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    vocabularies = [AutoTokenizer.from_pretrained(d).get_vocab() for d in (tiny_llama, again)]
    assert vocabularies[0] == vocabularies[1]


def test_tokenizer_round_trips_and_keeps_pad_apart_from_eos(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    text = "Question: Ünïcode costs $1,234.50?\nAnswer: 42 \t ok"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token == tokenizer.bos_token == "<|endoftext|>"


def test_chat_template_marks_exactly_the_assistant_reply(tiny_llama):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello there."},
    ]
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    reply = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(reply) == "Hello there.<|im_end|>"


def test_models_of_each_shape_generate(tmp_path):
    tokenizer = build_tokenizer()
    for arch, projection in [("qwen2", "gate_proj"), ("gpt2", "c_fc")]:
        model = AutoModelForCausalLM.from_pretrained(build_tiny_decoder(tmp_path / arch, arch))
        assert any(name.endswith(projection) for name, _ in model.named_modules())
        prompt = torch.tensor([tokenizer("Question: 1 + 1?")["input_ids"]])
        out = model.generate(prompt, max_new_tokens=3, do_sample=False)
        assert torch.equal(out[0, : prompt.shape[1]], prompt[0]) and out.shape[1] > prompt.shape[1]
