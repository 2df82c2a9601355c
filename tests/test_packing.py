"""Packed training batches (data.packing) learn exactly what padded batches learn, and nothing leaks.

Each claim is checked against the unpacked truth: every sequence run alone, without padding.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lit_lora.callbacks.results import _batch_size
from lit_lora.data import (
    AGNewsGenerationDataModule,
    ChatSFTDataModule,
    ChatSource,
    GSM8KDataModule,
    WikiTextDataModule,
)
from lit_lora.errors import LitLoraError
from lit_lora.methods import LoraSpec
from lit_lora.metrics.language_model import IGNORE, token_nll
from lit_lora.models import CausalLM
from lit_lora.models.lm.packing import (
    PACKED_MODEL_TYPES,
    check_packing_support,
    is_packed,
    packed_inputs,
    packs_each_sequence_alone,
)
from lit_lora.models.lm.varlen_attention import VARLEN_SDPA, sequence_bounds
from tests.helpers import trainer

# Answers of 1 to ~40 tokens, so that padded batches really pad and sequences differ in length.
ROWS = [
    {"question": "Two?", "answer": "#### 2"},
    {"question": "Count on.", "answer": " ".join(str(i) for i in range(1, 30)) + "\n#### 29"},
    {"question": "Half of 10?", "answer": "10 / 2 = 5\n#### 5"},
    {"question": "A long sum.", "answer": " + ".join(["1"] * 12) + " = 12\n#### 12"},
    {"question": "Tom has 3 apples and buys 5 more. How many?", "answer": "3 + 5 = 8\n#### 8"},
    {"question": "A hat costs $7.50. What do 2 cost?", "answer": "2 * 7.50 = $15.00\n#### 15"},
]
TINY = {  # small enough for any family's config: used where tiny_decoder has no such architecture
    "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "n_embd": 32, "n_layer": 2,
    "n_head": 4, "ffn_dim": 64, "word_embed_proj_dim": 32, "pad_token_id": 0, "bos_token_id": 1,
    "eos_token_id": 2,
}  # fmt: skip


@pytest.fixture(scope="module")
def gsm8k_rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gsm8k_packing")
    for split in ("train", "dev", "test"):
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return directory


def gsm8k(model: Path, data: Path, **kwargs) -> GSM8KDataModule:
    return GSM8KDataModule(tokenizer_name=str(model), data_dir=str(data), **kwargs)


def first_train_batch(data: L.LightningDataModule) -> dict:
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def tiny_model(model_type: str, attention: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **TINY)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


def lora_model(model: Path) -> torch.nn.Module:
    """The tiny decoder with LoRA on every projection, B randomised so that A gets gradients too."""
    peft_model = CausalLM(str(model), adapter=LoraSpec(r=4, alpha=8, dropout=0.0)).peft_model
    torch.manual_seed(1)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    return peft_model


def lora_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return grads


# ---- the batches --------------------------------------------------------------------------------


def chat_data(model: Path, directory: Path, packing: bool) -> ChatSFTDataModule:
    rows = [{"question": r["question"], "answer": r["answer"]} for r in ROWS * 2]
    (directory / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = ChatSource("qa", str(directory / "qa.jsonl"), user="question", assistant="answer")
    return ChatSFTDataModule([source], tokenizer_name=str(model), batch_size=4, packing=packing)


def ag_news_data(model: Path, directory: Path, packing: bool) -> AGNewsGenerationDataModule:
    labels = ["World", "Sports", "Business"] * 2
    lines = "".join(f"{row['question']}\t{label}\n" for row, label in zip(ROWS, labels, strict=True))
    (directory / "train.tsv").write_text("text\tlabel\n" + lines)
    return AGNewsGenerationDataModule(
        tokenizer_name=str(model), data_dir=str(directory), batch_size=4, packing=packing
    )


@pytest.mark.parametrize("task", ["gsm8k", "chat_sft", "label_generation"])
def test_a_packed_batch_is_the_padded_batch_without_padding_each_sequence_at_position_0(
    task, tiny_llama, gsm8k_rows, tmp_path
):
    def build(packing: bool) -> L.LightningDataModule:
        if task == "chat_sft":
            return chat_data(tiny_llama, tmp_path, packing)
        if task == "label_generation":
            return ag_news_data(tiny_llama, tmp_path, packing)
        return gsm8k(tiny_llama, gsm8k_rows, batch_size=4, packing=packing)

    padded, packed = (first_train_batch(build(packing)) for packing in (False, True))
    assert set(packed) == {"input_ids", "labels", "position_ids"} and packed["input_ids"].shape[0] == 1
    rows = [int(mask.sum()) for mask in padded["attention_mask"]]
    ids = [row[:n] for row, n in zip(padded["input_ids"], rows, strict=True)]
    # The first token of every sequence is predicted by no one: -100, whatever its label was.
    labels = [
        torch.cat([torch.tensor([IGNORE]), row[1:n]]) for row, n in zip(padded["labels"], rows, strict=True)
    ]
    assert torch.equal(packed["input_ids"][0], torch.cat(ids))
    assert torch.equal(packed["labels"][0], torch.cat(labels))
    assert torch.equal(packed["position_ids"][0], torch.cat([torch.arange(n) for n in rows]))
    assert _batch_size(packed) == _batch_size(padded) == len(rows)  # samples/s counts sequences
    # The same loss tokens, so the window normalisation (counted from the rows) holds for both.
    assert (packed["labels"][:, 1:] != IGNORE).sum() == (padded["labels"][:, 1:] != IGNORE).sum()


def test_no_sequence_is_trained_to_predict_the_next_ones_first_token(tiny_llama, gsm8k_rows):
    # Rows whose every token is labelled (as in plain language modelling): only the boundary can leak.
    data = gsm8k(tiny_llama, gsm8k_rows, batch_size=3, packing=True)
    data.setup("fit")
    rows = [{"input_ids": ids, "labels": ids} for ids in data.splits["train"]["input_ids"][:3]]
    packed = data.train_dataloader().collate_fn(rows)
    predicted = packed["labels"][0, 1:]  # what each position is trained to predict
    assert (predicted != IGNORE).sum() == sum(len(row["labels"]) - 1 for row in rows)
    for start in (packed["position_ids"][0] == 0).nonzero().flatten().tolist()[1:]:
        assert predicted[start - 1] == IGNORE


def test_wikitext_refuses_packing_in_one_line(tiny_llama):
    with pytest.raises(LitLoraError, match=r"^data\.packing=true: WikiText rows are max_length-token blocks"):
        WikiTextDataModule(tokenizer_name=str(tiny_llama), packing=True)


# ---- what the model computes --------------------------------------------------------------------


@pytest.mark.parametrize("decoder", ["tiny_llama", "tiny_gpt2"])
def test_packed_losses_and_lora_gradients_equal_each_sequence_run_alone(decoder, gsm8k_rows, request):
    path = request.getfixturevalue(decoder)
    packed = first_train_batch(gsm8k(path, gsm8k_rows, batch_size=len(ROWS), packing=True))
    model = lora_model(path)
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    spans = list(zip(starts, [*starts[1:], packed["input_ids"].shape[1]], strict=True))
    assert len(spans) == len(ROWS)

    logits = model(**packed_inputs(packed)).logits
    total, tokens = token_nll(logits, packed["labels"])
    total.backward()
    packed_grads = lora_grads(model)
    alone_total, alone_tokens = torch.tensor(0.0), 0
    for start, end in spans:
        ids, labels = packed["input_ids"][:, start:end], packed["labels"][:, start:end]
        nll, count = token_nll(model(input_ids=ids).logits, labels)
        # The packed logits of this span score it exactly as running it alone does.
        torch.testing.assert_close(token_nll(logits[:, start:end], labels)[0], nll, atol=1e-5, rtol=1e-5)
        nll.backward()
        alone_total, alone_tokens = alone_total + nll.detach(), alone_tokens + count
    torch.testing.assert_close(total.detach(), alone_total, atol=1e-4, rtol=1e-5)
    assert tokens == alone_tokens
    alone_grads = lora_grads(model)
    assert packed_grads.keys() == alone_grads.keys() and all("lora_" in n for n in packed_grads)
    assert len(packed_grads) == 2 * sum("lora_A" in n for n, _ in model.named_parameters())
    for name, expected in alone_grads.items():
        torch.testing.assert_close(packed_grads[name], expected, atol=1e-5, rtol=1e-4, msg=name)


def two_packs(vocab: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Sequence A (7 tokens) then B (5): twice, with A's tokens changed in the second, B's the same."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(5, vocab, (2, 7), generator=generator)
    b = torch.randint(5, vocab, (5,), generator=generator)
    positions = torch.cat([torch.arange(7), torch.arange(5)])[None]
    return tuple({"input_ids": torch.cat([row, b])[None], "position_ids": positions} for row in a)  # type: ignore[return-value]


@pytest.mark.parametrize("attention", ["sdpa", "eager", VARLEN_SDPA])
@pytest.mark.parametrize("model_type", PACKED_MODEL_TYPES)
def test_sequences_in_a_pack_cannot_see_each_other(model_type, attention):
    model = tiny_model(model_type, attention)
    check_packing_support(model.config)
    first, second = two_packs(TINY["vocab_size"])
    with torch.no_grad():
        logits = [model(**packed_inputs(pack)).logits[0] for pack in (first, second)]
        alone = model(input_ids=first["input_ids"][:, 7:]).logits[0]
    assert (logits[0][:7] - logits[1][:7]).abs().max() > 1e-2  # A's change is visible where it may be
    torch.testing.assert_close(logits[0][7:], logits[1][7:], atol=1e-6, rtol=0)  # ... and nowhere else
    torch.testing.assert_close(logits[0][7:], alone, atol=1e-5, rtol=1e-5)


FUSED_ATTENTION = torch.nn.functional.scaled_dot_product_attention  # before any test patches it


def sdpa_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Records how torch's fused attention kernel is called: the length it sees, mask or causal flag."""
    calls: list[dict] = []

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append({"length": query.shape[2], "mask": attn_mask is not None, **kwargs})
        return FUSED_ATTENTION(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_varlen_attention_runs_the_causal_kernel_per_sequence_with_sdpas_numbers(model_type, monkeypatch):
    pack = two_packs(TINY["vocab_size"])[0]
    results = {}
    for attention in ("sdpa", VARLEN_SDPA):
        model = tiny_model(model_type, attention).train()
        calls = sdpa_calls(monkeypatch)
        logits = model(**packed_inputs(pack)).logits
        logits.float().pow(2).mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results[attention] = logits.detach(), grads, calls
    logits, grads, calls = results[VARLEN_SDPA]
    # Once per sequence and layer, unmasked and causal: no [12 x 12] mask, no scores across sequences.
    per_layer = [(7, False, True), (5, False, True)]
    assert [(c["length"], c["mask"], c["is_causal"]) for c in calls] == per_layer * 2
    assert all(c["mask"] and c["length"] == 12 for c in results["sdpa"][2])
    torch.testing.assert_close(logits, results["sdpa"][0], atol=1e-5, rtol=1e-5)
    assert grads.keys() == results["sdpa"][1].keys() and grads
    for name, expected in results["sdpa"][1].items():
        torch.testing.assert_close(grads[name], expected, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    ("positions", "bounds"),
    [([0, 1, 2, 0, 1, 0], [0, 3, 5, 6]), ([3, 4, 0, 1], [0, 2, 4]), ([0, 1, 2], [0, 3])],
    ids=["three sequences", "a row starting mid-sequence", "one sequence"],
)
def test_sequence_bounds_cover_every_token_of_the_row(positions, bounds):
    assert sequence_bounds(torch.tensor([positions])).tolist() == bounds


@pytest.mark.parametrize("case", ["padded batch", "sliding window shorter than a sequence"])
def test_varlen_attention_is_sdpa_where_it_cannot_split_by_sequence(case, monkeypatch):
    first = two_packs(TINY["vocab_size"])[0]
    if case == "padded batch":
        model_type, config = "llama", {}
        ids = first["input_ids"].view(2, 6)
        inputs = {"input_ids": ids, "attention_mask": torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])}
    else:  # the 7-token sequence outgrows a 4-token window: the window's mask must apply
        model_type, config = "mistral", {"sliding_window": 4}
        inputs = packed_inputs(first)
    outputs, masked = {}, {}
    for attention in ("sdpa", VARLEN_SDPA):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(
            AutoConfig.for_model(model_type, **TINY, **config), attn_implementation=attention
        ).eval()
        calls = sdpa_calls(monkeypatch)
        with torch.no_grad():
            outputs[attention] = model(**{"use_cache": False, **inputs}).logits
        masked[attention] = [c["mask"] for c in calls]
    assert masked[VARLEN_SDPA] == masked["sdpa"] == [True, True]
    torch.testing.assert_close(outputs[VARLEN_SDPA], outputs["sdpa"], atol=0, rtol=0)


@pytest.mark.parametrize("leak", ["all-ones attention mask", "default use_cache"])
def test_the_isolation_check_catches_a_mask_that_transformers_silently_drops(leak):
    # Either input turns transformers' packed-sequence detection off: B then attends to A.
    model = tiny_model("llama", "sdpa")
    first, second = two_packs(TINY["vocab_size"])
    with torch.no_grad():
        outputs = []
        for pack in (first, second):
            inputs = packed_inputs(pack)
            if leak == "default use_cache":
                del inputs["use_cache"]
            else:
                inputs["attention_mask"] = torch.ones_like(pack["input_ids"])
            outputs.append(model(**inputs).logits[0, 7:])
    assert (outputs[0] - outputs[1]).abs().max() > 1e-2


# ---- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "attention"), [("opt", "sdpa"), ("bloom", "eager"), ("llama", "flash_attention_2")]
)
def test_models_that_could_attend_across_sequences_are_refused_in_one_line(model_type, attention):
    config = AutoConfig.for_model(model_type)
    config._attn_implementation = attention
    refusal = rf"^data\.packing=true: model type '{model_type}' with {attention} attention"
    with pytest.raises(LitLoraError, match=refusal):
        check_packing_support(config)


@pytest.fixture(scope="module")
def tiny_opt(tiny_llama, tmp_path_factory) -> Path:
    """A decoder whose attention packing cannot trust (OPT), with the tiny llama's tokenizer."""
    path = tmp_path_factory.mktemp("tiny_opt")
    torch.manual_seed(0)
    config = AutoConfig.for_model("opt", **{**TINY, "vocab_size": 1100, "max_position_embeddings": 1024})
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    for tokenizer_file in tiny_llama.glob("tokenizer*"):
        (path / tokenizer_file.name).write_bytes(tokenizer_file.read_bytes())
    return path


def test_a_refused_model_stops_the_fit_before_any_step(tiny_opt, gsm8k_rows, tmp_path):
    model = CausalLM(str(tiny_opt), adapter=LoraSpec(r=4, alpha=8, dropout=0.0))
    fit = trainer(tmp_path / "run", max_steps=1)
    with pytest.raises(LitLoraError, match="model type 'opt'"):
        fit.fit(model, gsm8k(tiny_opt, gsm8k_rows, batch_size=2, packing=True))
    assert fit.global_step == 0


# ---- data.packing auto (the default) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "attention", "alone"),
    [
        ("llama", "sdpa", True),
        ("qwen2", "sdpa", True),
        ("gpt2", "sdpa", True),
        ("llama", VARLEN_SDPA, True),
        ("llama", "eager", False),  # would score every pair of tokens in the row
        ("llama", "flash_attention_2", False),  # not allowed until tested
        ("opt", "sdpa", False),  # builds its own mask: sequences would see each other
    ],
)
def test_auto_packs_only_models_that_run_each_sequence_alone(model_type, attention, alone):
    config = AutoConfig.for_model(model_type)
    config._attn_implementation = attention
    assert packs_each_sequence_alone(config) is alone
    if alone:
        check_packing_support(config)  # what auto packs, packing true allows


@pytest.mark.parametrize("packing", ["auto", True, False])
@pytest.mark.parametrize("model_packs_alone", [True, False])
def test_the_packing_setting_and_the_model_decide_the_training_batches(
    tiny_llama, gsm8k_rows, packing, model_packs_alone
):
    data = gsm8k(tiny_llama, gsm8k_rows, batch_size=3, packing=packing)
    data.setup("fit")
    loader = data.train_dataloader()  # before the decision, as Lightning builds it to count steps
    expected = model_packs_alone if packing == "auto" else packing
    assert data.resolve_packing(model_packs_alone) is expected
    assert is_packed(next(iter(loader))) is expected
    assert is_packed(next(iter(data.train_dataloader()))) is expected


def test_an_unsettled_auto_and_wikitext_stay_padded(tiny_llama, gsm8k_rows):
    assert not is_packed(first_train_batch(gsm8k(tiny_llama, gsm8k_rows, batch_size=3)))  # no model yet
    wikitext = WikiTextDataModule(tokenizer_name=str(tiny_llama))
    assert wikitext.packing == "auto" and wikitext.resolve_packing(True) is False


@pytest.mark.parametrize(("decoder", "packed"), [("tiny_llama", True), ("tiny_opt", False)])
def test_a_default_fit_packs_an_sdpa_llama_and_pads_a_model_packing_would_leak_in(
    decoder, packed, gsm8k_rows, request, tmp_path
):
    path = request.getfixturevalue(decoder)
    data = gsm8k(path, gsm8k_rows, batch_size=2)
    model = CausalLM(str(path), adapter=LoraSpec(r=4, alpha=8, dropout=0.0))
    seen: list[bool] = []
    model.on_train_batch_start = lambda batch, batch_idx: seen.append(is_packed(batch))
    # An epoch and a warm-up ratio, as the configs have: Lightning builds the training loader to count
    # the schedule's steps before on_fit_start, where auto is settled.
    fit = trainer(tmp_path / "run", max_epochs=1)
    fit.fit(model, data)
    assert model.warmup_ratio > 0 and fit.estimated_stepping_batches == len(seen) == 3
    assert data.packing == "auto" and data.packed is packed and seen == [packed] * 3
    attention = model.peft_model.get_base_model().config._attn_implementation
    assert (attention == VARLEN_SDPA) is packed


# ---- a whole fit --------------------------------------------------------------------------------


def fitted_adapter(path: Path, data_dir: Path, root: Path, packing: bool, **model_kwargs) -> dict:
    L.seed_everything(0)
    data = gsm8k(path, data_dir, batch_size=2, packing=packing)
    model = CausalLM(
        str(path), adapter=LoraSpec(r=4, alpha=8, dropout=0.0), learning_rate=1e-2, **model_kwargs
    )
    trainer(root, max_steps=3, accumulate_grad_batches=2).fit(model, data)
    attention = model.peft_model.get_base_model().config._attn_implementation
    assert attention == (VARLEN_SDPA if packing else "sdpa")  # a packed fit attends per sequence
    named = model.peft_model.named_parameters()
    return {name: p.detach().clone() for name, p in named if p.requires_grad}


@pytest.mark.parametrize(
    ("decoder", "model_kwargs"),
    [("tiny_llama", {}), ("tiny_gpt2", {}), ("tiny_llama", {"gradient_checkpointing": True})],
    ids=["llama", "gpt2", "llama-gradient-checkpointing"],
)
def test_a_fit_with_packing_learns_the_adapter_a_padded_fit_learns(
    decoder, model_kwargs, gsm8k_rows, request, tmp_path
):
    path = request.getfixturevalue(decoder)
    padded = fitted_adapter(path, gsm8k_rows, tmp_path / "padded", packing=False)
    packed = fitted_adapter(path, gsm8k_rows, tmp_path / "packed", packing=True, **model_kwargs)
    assert padded.keys() == packed.keys() and padded
    moved = [name for name, value in padded.items() if "lora_B" in name and value.abs().max() > 1e-3]
    assert moved  # B starts at zero: the fit really trained
    for name, expected in padded.items():
        torch.testing.assert_close(packed[name], expected, atol=1e-5, rtol=1e-4, msg=name)
