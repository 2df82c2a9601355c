"""The chunked loss equals the full projection's loss and gradients; training holds one chunk at a time."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from lit_lora.cli import build_cli
from lit_lora.data import GSM8KDataModule
from lit_lora.methods import LoraSpec
from lit_lora.metrics.language_model import IGNORE, token_nll
from lit_lora.models import CausalLM
from lit_lora.models.engine.offload import offload_context
from lit_lora.models.lm.chunked_loss import chunked_labelled_nll, takes_chunked_loss
from lit_lora.models.lm.labelled_logits import labelled_positions
from tests.helpers import trainer

REPO = Path(__file__).resolve().parents[1]
VOCAB = 32_768  # a real vocabulary's size: the logits dominate the loss's memory
TINY = {
    "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "pad_token_id": 0,
    "tie_word_embeddings": False,
}  # fmt: skip
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_decoder(model_type: str, targets: list[str]) -> torch.nn.Module:
    """A tiny seeded decoder with LoRA on ``targets``, B randomised so that every adapter weight learns."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **TINY))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    return model


def padded_batch() -> dict[str, torch.Tensor]:
    """Three rows of unequal prompts, replies and right padding: 25 labelled positions in all."""
    torch.manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 16))
    labels, mask = ids.clone(), torch.ones_like(ids)
    for row, (prompt, length) in enumerate([(2, 16), (5, 11), (9, 14)]):
        labels[row, :prompt] = IGNORE
        labels[row, length:] = IGNORE
        mask[row, length:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loss_and_grads(model: torch.nn.Module, batch: dict, chunk: int | None) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    if chunk is None:
        nll, _ = token_nll(model(**inputs).logits, batch["labels"])
    else:
        nll, tokens = chunked_labelled_nll(model.get_base_model(), inputs, batch["labels"], chunk)
        assert int(tokens) == 25
    nll.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return nll.detach(), grads


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("targets", [PROJECTIONS, [*PROJECTIONS, "lm_head"]], ids=["blocks", "with_lm_head"])
def test_chunked_loss_and_gradients_equal_the_full_projections(model_type, targets):
    model = lora_decoder(model_type, targets)
    assert takes_chunked_loss(model.get_base_model())
    batch = padded_batch()
    full_nll, full_grads = loss_and_grads(model, batch, None)
    chunked_nll, chunked_grads = loss_and_grads(model, batch, 7)  # 25 positions: 7, 7, 7 and 4

    torch.testing.assert_close(chunked_nll, full_nll, rtol=1e-5, atol=1e-5)
    assert chunked_grads.keys() == full_grads.keys()
    assert any("lm_head" in name for name in full_grads) == ("lm_head" in targets)
    for name, full in full_grads.items():
        assert full.abs().sum() > 0, name
        # summation order differs: equal to 1e-5 of each gradient's largest entry
        scale = float(full.abs().max())
        torch.testing.assert_close(chunked_grads[name], full, rtol=0, atol=1e-5 * scale, msg=name)


def test_no_grad_evaluation_gives_the_same_sum():
    model = lora_decoder("qwen2", PROJECTIONS).eval()
    batch = padded_batch()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    with torch.no_grad():
        full, tokens = token_nll(model(**inputs).logits, batch["labels"])
        chunked, chunked_tokens = chunked_labelled_nll(model.get_base_model(), inputs, batch["labels"], 4)
    assert int(chunked_tokens) == int(tokens) == 25
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-5)


def test_training_and_validation_project_one_chunk_at_a_time(tiny_llama, gsm8k_dir, tmp_path):
    module = CausalLM(
        str(tiny_llama),
        adapter=LoraSpec(r=4, alpha=8, dropout=0.0),
        generate_in_eval=False,
        loss_chunk_size=8,
    )
    data = GSM8KDataModule(tokenizer_name=str(tiny_llama), data_dir=str(gsm8k_dir), batch_size=3)
    module.configure_model()
    projected: list[int] = []  # rows of every output-layer call, recomputations in backward included
    head = module.peft_model.get_base_model().get_output_embeddings()
    head.register_forward_hook(lambda _m, args, _o: projected.append(args[0].shape[:-1].numel()))

    trainer(tmp_path, max_steps=1).fit(module, data)
    fitted = len(projected)
    trainer(tmp_path, limit_val_batches=1.0).validate(module, data)

    data.setup("fit")
    train_labels = next(iter(data.train_dataloader()))["labels"]
    labelled = int(labelled_positions(train_labels).sum())
    assert labelled > 8
    assert max(projected) == 8
    assert len(projected) > fitted and max(projected[fitted:]) <= 8  # the validation loss is chunked too
    # the training forward and its recomputation in backward each cover every labelled position once
    assert sum(projected[: 2 * -(-labelled // 8)]) == 2 * labelled


DECODER_CONFIGS = sorted(
    path
    for path in (REPO / "configs").glob("*.yaml")
    if "lit_lora.models.CausalLM" in path.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("config", DECODER_CONFIGS, ids=lambda path: path.stem)
def test_low_memory_extras_stack_on_every_decoder_config(config):
    cli = build_cli(
        ["--config", str(config), "--config", str(REPO / "configs/extras/low_memory.yaml")], run=False
    )
    model = cli.model
    assert isinstance(model, CausalLM)
    stacked = (model.gradient_checkpointing, model.activation_offloading, model.trim_host_memory)
    assert stacked == (True, True, True)
    assert model.loss_chunk_size == 256


def test_activation_offloading_saves_on_cpu_from_cuda_only():
    assert isinstance(offload_context(True, torch.device("cuda", 0)), torch.autograd.graph.save_on_cpu)
    assert not isinstance(offload_context(False, torch.device("cuda", 0)), torch.autograd.graph.save_on_cpu)
    assert not isinstance(offload_context(True, torch.device("cpu")), torch.autograd.graph.save_on_cpu)


def test_activation_offloading_on_cpu_warns_that_it_does_nothing(tiny_llama, gsm8k_dir, tmp_path):
    module = CausalLM(str(tiny_llama), generate_in_eval=False, activation_offloading=True)
    data = GSM8KDataModule(tokenizer_name=str(tiny_llama), data_dir=str(gsm8k_dir), batch_size=3)
    with pytest.warns(UserWarning, match="activation_offloading=true has no effect on cpu"):
        trainer(tmp_path, max_steps=1).fit(module, data)


def test_zero3_on_several_ranks_projects_in_one_call(tiny_llama):
    """Under ZeRO-3 each lm_head call is collective: every rank must make as many, whatever its tokens."""
    module = CausalLM(str(tiny_llama), adapter=LoraSpec(r=4, alpha=8, dropout=0.0), loss_chunk_size=2)
    module.configure_model()
    calls: list[int] = []
    head = module.peft_model.get_base_model().get_output_embeddings()
    head.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[:-1].numel()))
    ids = torch.arange(3, 15).reshape(2, 6)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}
    with torch.no_grad():
        chunked, _ = module._labelled_nll(inputs, ids)
        module._trainer = SimpleNamespace(strategy=SimpleNamespace(zero_stage_3=True), world_size=2)
        whole, _ = module._labelled_nll(inputs, ids)
    assert calls == [2] * 5 + [10]  # 10 labelled positions: five chunks, then one call
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-5)
