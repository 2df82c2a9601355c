"""Causal LM on a tiny seeded decoder: loss masking, split-level perplexity, training, QLoRA, reloads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from peft import PeftModel
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_lora.data import GSM8KDataModule, WikiTextDataModule
from lit_lora.methods import AdaLoraSpec, LoraSpec
from lit_lora.metrics.language_model import token_nll
from lit_lora.tiny_decoder import BUILTIN_TEXT
from tests.helpers import GSM8K_ROWS, SHARED_DATA, causal_lm, quantized, trainer
from tests.helpers.training import LossTrace


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WikiText-shaped local files: valid.txt and test.txt only, as in the shared copy."""
    directory = tmp_path_factory.mktemp("wikitext")
    (directory / "valid.txt").write_text(BUILTIN_TEXT * 3)
    (directory / "test.txt").write_text(BUILTIN_TEXT)
    return directory


def test_gsm8k_labels_are_exactly_the_answer_and_eos(tiny_llama, gsm8k_dir):
    data = GSM8KDataModule(tokenizer_name=str(tiny_llama), data_dir=str(gsm8k_dir), batch_size=3)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    tokenizer = data.tokenizer
    answers = {row["question"]: row["answer"] for row in GSM8K_ROWS}
    for ids, labels, prompt_ids, prompt, reference in zip(
        batch["input_ids"], batch["labels"], batch["prompt_input_ids"], batch["prompt"], batch["reference"],
        strict=True,
    ):  # fmt: skip
        answer = answers[prompt.removeprefix("Question: ").removesuffix("\nAnswer:")]
        trained = ids[labels != -100]
        assert torch.equal(trained, labels[labels != -100])
        assert tokenizer.decode(trained) == f" {answer}<|endoftext|>"
        assert tokenizer.decode(prompt_ids, skip_special_tokens=True) == prompt
        assert prompt_ids[-1] != tokenizer.pad_token_id  # left padding: every prompt ends the row
        assert reference == {"8": "8", "15": "15", "1,000": "1000"}[answer.split("#### ")[1]]


def test_perplexity_is_over_all_tokens_of_the_split_not_a_mean_of_batches(tiny_llama, tmp_path):
    torch.manual_seed(0)
    batches = []
    for rows, width in [(1, 40), (3, 9), (2, 23)]:  # unequal sizes, so the two averages differ
        ids = torch.randint(5, 500, (rows, width))
        labels = ids.clone()
        labels[:, :3] = -100  # a prompt
        labels[-1, width // 2 :] = -100  # padding in one row
        mask = (labels != -100).long()
        mask[:, :3] = 1
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    model = causal_lm(tiny_llama)
    results = trainer(tmp_path).test(model, DataLoader(batches, batch_size=None), verbose=False)[0]

    # Independently: the plain base model (LoRA starts as the identity), one token at a time.
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    nll, count, batch_ppls = 0.0, 0, []
    with torch.no_grad():
        for batch in batches:
            log_probs = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            log_probs = log_probs.double().log_softmax(-1)
            batch_nll, batch_count = 0.0, 0
            for row, labels in zip(log_probs, batch["labels"], strict=True):
                for t in range(1, len(labels)):
                    if labels[t] != -100:
                        batch_nll -= float(row[t - 1, labels[t]])
                        batch_count += 1
            nll, count = nll + batch_nll, count + batch_count
            batch_ppls.append(math.exp(batch_nll / batch_count))
    assert results["test/ppl"] == pytest.approx(math.exp(nll / count), rel=1e-5)
    assert results["test/loss"] == pytest.approx(nll / count, rel=1e-5)
    assert results["test/ppl"] != pytest.approx(sum(batch_ppls) / len(batch_ppls), rel=1e-3)


def wikitext(model: Path, data: Path, **kwargs) -> WikiTextDataModule:
    kwargs = {"train_on": "validation", "max_length": 64, "batch_size": 8, **kwargs}
    return WikiTextDataModule(tokenizer_name=str(model), data_dir=str(data), **kwargs)


def test_wikitext_perplexity_falls_after_a_few_steps(tiny_llama, text_dir, tmp_path):
    shared = SHARED_DATA / "wikitext2"
    data_dir, limits = (shared, {"max_train_samples": 100, "max_eval_samples": 30}) if shared.is_dir() else (
        text_dir, {}
    )  # fmt: skip
    data, model = wikitext(tiny_llama, data_dir, **limits), causal_lm(tiny_llama)
    before = trainer(tmp_path).test(model, data, verbose=False)[0]["test/ppl"]
    trainer(tmp_path, max_steps=10).fit(model, data)
    after = trainer(tmp_path).test(model, data, verbose=False)[0]["test/ppl"]
    assert after < 0.9 * before


def test_pinned_losses_for_three_steps_on_a_seeded_tiny_llama(tiny_llama, text_dir, tmp_path):
    L.seed_everything(0)
    losses = LossTrace()
    model = causal_lm(tiny_llama, adapter=LoraSpec(r=4, alpha=8, dropout=0.0))
    trainer(tmp_path, max_steps=3, callbacks=[losses]).fit(model, wikitext(tiny_llama, text_dir))
    assert losses.losses == pytest.approx([6.4085, 6.3784, 6.3342], abs=2e-3)


def test_default_targets_are_every_projection_and_lm_head_is_frozen(tiny_llama, tiny_gpt2):
    llama, gpt2 = causal_lm(tiny_llama), causal_lm(tiny_gpt2)
    assert llama.describe()["target_modules"] == [
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"
    ]  # fmt: skip
    assert gpt2.describe()["target_modules"] == ["c_attn", "c_fc", "c_proj"]
    # r (in + out) per projection: q, o 64x64; k, v 64x32; gate, up 64x128; down 128x64; two layers.
    assert llama.parameter_counts()["trainable"] == 2 * 4 * (2 * 128 + 2 * 96 + 3 * 192)
    trainable = [n for n, p in llama.peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_llama):
    batch = {
        "input_ids": torch.randint(5, 500, (2, 12)),
        "attention_mask": torch.ones(2, 12, dtype=torch.long),
    }
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = causal_lm(
            tiny_llama, adapter=LoraSpec(r=4, dropout=0.0), gradient_checkpointing=checkpointing
        )
        assert model.peft_model.base_model.model.model.gradient_checkpointing is checkpointing
        nll, count = token_nll(model(batch).logits, batch["input_ids"])
        (nll / count).backward()
        gradients.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys()
    for name, grad in gradients[0].items():
        torch.testing.assert_close(grad, gradients[1][name], msg=name)
    assert any(g.abs().sum() > 0 for g in gradients[1].values())


def test_qlora_nf4_trains_the_adapter_and_keeps_lm_head_in_full_precision(tiny_llama, text_dir, tmp_path):
    model = causal_lm(tiny_llama, quantization=quantized("nf4"))
    assert type(model.peft_model.base_model.model.lm_head) is torch.nn.Linear
    assert (
        type(model.peft_model.base_model.model.model.layers[0].mlp.up_proj.base_layer).__name__
        == "Linear4bit"
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer(tmp_path, max_steps=2).fit(model, wikitext(tiny_llama, text_dir))
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved and all("lora_" in n for n in moved)


def test_adalora_on_a_decoder_trains_with_its_regulariser(tiny_llama, text_dir, tmp_path):
    L.seed_everything(0)
    model = causal_lm(tiny_llama, adapter=AdaLoraSpec(init_r=4, target_r=2, tinit=1, tfinal=1))
    fit = trainer(tmp_path, max_steps=4)
    fit.fit(model, wikitext(tiny_llama, text_dir))
    assert model.describe()["method"] == "adalora"
    # Pinned on torch 2.13 CPU: P and Q drift from orthogonality and the regulariser measures it.
    assert float(fit.callback_metrics["train/orth_reg"]) == pytest.approx(0.17742, abs=1e-4)


def test_saved_adapter_reloads_to_identical_logits(tiny_llama, text_dir, tmp_path):
    model = causal_lm(tiny_llama)
    trainer(tmp_path, max_steps=3).fit(model, wikitext(tiny_llama, text_dir))
    model.save_adapter(tmp_path / "adapter")
    reloaded = causal_lm(tiny_llama, adapter_path=str(tmp_path / "adapter"))
    assert isinstance(reloaded.peft_model, PeftModel)
    batch = {
        "input_ids": torch.randint(5, 500, (2, 10)),
        "attention_mask": torch.ones(2, 10, dtype=torch.long),
    }
    model.eval(), reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch).logits, reloaded(batch).logits, rtol=0, atol=0)


def test_predict_generates_greedily_from_a_file_of_prompts_as_if_each_were_alone(tiny_llama, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("How many legs has a cat?\nWhat is 2 + 2?\n")
    data = GSM8KDataModule(tokenizer_name=str(tiny_llama), predict_file=str(prompts), batch_size=2)
    rows = trainer(tmp_path).predict(causal_lm(tiny_llama, max_new_tokens=5), data)[0]
    expected = ["Question: How many legs has a cat?\nAnswer:", "Question: What is 2 + 2?\nAnswer:"]
    assert [r["prompt"] for r in rows] == expected
    # The shorter prompt was left-padded in the batch; alone, the base model (LoRA starts as the
    # identity) must continue it the same way.
    tokenizer, base = (
        AutoTokenizer.from_pretrained(tiny_llama),
        AutoModelForCausalLM.from_pretrained(tiny_llama),
    )
    for row in rows:
        ids = tokenizer(row["prompt"], return_tensors="pt")["input_ids"]
        alone = base.generate(ids, max_new_tokens=5, do_sample=False)[0, ids.shape[1] :]
        assert row["generation"] == tokenizer.decode(alone, skip_special_tokens=True)


class FirstStepGradients(L.Callback):
    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self.grads:
            named = pl_module.peft_model.named_parameters()
            self.grads = {n: p.grad.detach().clone() for n, p in named if p.grad is not None}


def test_accumulated_micro_batches_weigh_every_token_alike(tiny_llama, tmp_path):
    # Answers of 1 to ~60 tokens: a per-micro-batch mean would give the short one the weight of the long one.
    rows = [
        {"question": "Two?", "answer": "#### 2"},
        {"question": "Count on.", "answer": " ".join(str(i) for i in range(1, 40)) + "\n#### 39"},
        {"question": "Half of 10?", "answer": "10 / 2 = 5\n#### 5"},
        {"question": "A long sum.", "answer": " + ".join(["1"] * 20) + " = 20\n#### 20"},
    ]
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gradients = {}
    for batch_size, accumulate in ((4, 1), (1, 4)):
        L.seed_everything(0)
        probe = FirstStepGradients()
        data = GSM8KDataModule(tokenizer_name=str(tiny_llama), data_dir=str(tmp_path), batch_size=batch_size)
        model = causal_lm(tiny_llama)
        run = trainer(
            tmp_path / str(batch_size), max_steps=1, accumulate_grad_batches=accumulate, callbacks=[probe]
        )
        run.fit(model, data)
        gradients[batch_size] = probe.grads
    assert gradients[4].keys() == gradients[1].keys() and gradients[4]
    for name, expected in gradients[4].items():
        torch.testing.assert_close(gradients[1][name], expected, rtol=1e-4, atol=1e-7, msg=name)
