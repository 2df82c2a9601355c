"""Trimming the host heap after every layer on CPU: every forward and backward of every layer, nothing else
changes, and a clear warning where it cannot act."""

from __future__ import annotations

import platform
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from lit_lora.data import GSM8KDataModule
from lit_lora.models import CausalLM
from lit_lora.models.engine import host_memory
from lit_lora.models.engine.host_memory import (
    malloc_trim,
    transformer_layers,
    trim_after_each_layer,
    warn_if_trim_has_no_effect,
)
from tests.helpers import trainer

LAYERS = 3
TINY_LLAMA = {
    "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": LAYERS,
    "num_attention_heads": 2, "num_key_value_heads": 1, "pad_token_id": 0,
}  # fmt: skip
TINY_BERT = {
    "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": LAYERS,
    "num_attention_heads": 2, "num_labels": 2,
}  # fmt: skip


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls to malloc_trim instead of making them."""
    calls: list[int] = []
    monkeypatch.setattr(host_memory, "malloc_trim", lambda: calls.append)
    return calls


def lora_model(kind: str, checkpointing: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "llama":
        base = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **TINY_LLAMA))
        targets = ["q_proj", "v_proj"]
    else:
        base = AutoModelForSequenceClassification.from_config(AutoConfig.for_model("bert", **TINY_BERT))
        targets = ["query", "value"]
    if checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=targets))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    return model.train()


def loss_of(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(1, 25).reshape(2, 12) % 64
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return logits.float().pow(2).mean()


@pytest.mark.parametrize("checkpointing", [True, False], ids=["checkpointed", "plain"])
@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_trims_after_every_layer_forward_and_backward(trims, kind, checkpointing):
    model = lora_model(kind, checkpointing)
    assert len(transformer_layers(model)) == LAYERS
    handles = trim_after_each_layer(model)
    loss = loss_of(model)
    assert len(trims) == LAYERS  # one per layer's forward
    loss.backward()
    # One more per layer's backward; a checkpointed recompute stops before the forward hooks.
    assert len(trims) == 2 * LAYERS
    for handle in handles:
        handle.remove()
    loss_of(model).backward()
    assert len(trims) == 2 * LAYERS


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_trimming_changes_no_loss_or_gradient(trims, kind):
    def loss_and_grads(trim: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = lora_model(kind, checkpointing=True)
        if trim:
            trim_after_each_layer(model)
        loss = loss_of(model)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), grads

    (plain_loss, plain_grads), (trimmed_loss, trimmed_grads) = loss_and_grads(False), loss_and_grads(True)
    assert trims  # the hooks ran
    assert torch.equal(plain_loss, trimmed_loss)
    assert plain_grads.keys() == trimmed_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        assert torch.equal(grad, trimmed_grads[name]), name


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_malloc_trim_is_found_and_runs():
    trim = malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release


def test_no_warning_where_it_acts():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_trim_has_no_effect(True, lora_model("llama", False), torch.device("cpu"))
        warn_if_trim_has_no_effect(False, torch.nn.Linear(2, 2), torch.device("cuda", 0))


def test_warns_on_other_devices_without_malloc_trim_and_without_layers(monkeypatch):
    model = lora_model("llama", False)
    with pytest.warns(UserWarning, match="trim_host_memory=true has no effect: on cuda"):
        warn_if_trim_has_no_effect(True, model, torch.device("cuda", 0))
    with pytest.warns(UserWarning, match="no effect: .*Linear has no transformers layers"):
        warn_if_trim_has_no_effect(True, torch.nn.Linear(2, 2), torch.device("cpu"))
    monkeypatch.setattr(host_memory, "malloc_trim", lambda: None)
    with pytest.warns(UserWarning, match="no effect: this C library has no malloc_trim"):
        warn_if_trim_has_no_effect(True, model, torch.device("cpu"))


def test_fit_with_trim_host_memory_trims_every_layer_of_every_step(trims, tiny_llama, gsm8k_dir, tmp_path):
    module = CausalLM(
        str(tiny_llama), generate_in_eval=False, gradient_checkpointing=True, trim_host_memory=True
    )
    data = GSM8KDataModule(tokenizer_name=str(tiny_llama), data_dir=str(gsm8k_dir), batch_size=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*trim_host_memory")
        trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(module, data)
    layers = len(transformer_layers(module.peft_model))
    assert layers > 0 and len(trims) == 2 * 2 * layers  # two steps, each a forward and a backward
