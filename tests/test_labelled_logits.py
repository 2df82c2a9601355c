"""Logits only at labelled positions give the loss and gradients of the whole projection, and are used."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM

from lit_lora.data import GSM8KDataModule
from lit_lora.methods import LoraSpec
from lit_lora.metrics.language_model import IGNORE, token_nll
from lit_lora.models import CausalLM
from lit_lora.models.lm.labelled_logits import labelled_nll, labelled_positions, takes_position_mask
from tests.helpers import trainer


def prompt_reply_batch(vocab: int) -> dict[str, torch.Tensor]:
    """Three rows of unequal prompts, replies and right padding: the kept positions differ per row."""
    torch.manual_seed(0)
    ids = torch.randint(5, vocab, (3, 12))
    labels = ids.clone()
    mask = torch.ones_like(ids)
    for row, (prompt, length) in enumerate([(2, 12), (5, 9), (8, 10)]):
        labels[row, :prompt] = IGNORE
        labels[row, length:] = IGNORE
        mask[row, length:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gpt2"])
def test_kept_logits_give_the_full_projections_loss_and_gradients(family, request):
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(family))
    assert takes_position_mask(model)
    batch = prompt_reply_batch(model.config.vocab_size)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}

    def loss_and_grads(keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits = model(**inputs, **({} if keep is None else {"logits_to_keep": keep})).logits
        nll, tokens = labelled_nll(logits, batch["labels"], keep)
        nll.backward()
        return nll.detach(), tokens, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    keep = labelled_positions(batch["labels"])
    assert int(keep.sum()) == 10 + 4 + 2  # each row's labelled tokens: length - prompt
    full_nll, full_tokens, full_grads = loss_and_grads(None)
    kept_nll, kept_tokens, kept_grads = loss_and_grads(keep)

    assert full_nll == pytest.approx(float(token_nll(model(**inputs).logits.detach(), batch["labels"])[0]))
    assert kept_tokens == full_tokens == int(keep.sum())
    torch.testing.assert_close(kept_nll, full_nll, rtol=1e-5, atol=1e-5)
    assert len(kept_grads) == len(full_grads)
    for kept, full in zip(kept_grads, full_grads, strict=True):
        torch.testing.assert_close(kept, full, rtol=1e-4, atol=1e-6)


def test_training_projects_only_the_labelled_positions(tiny_llama, gsm8k_dir, tmp_path):
    module = CausalLM(str(tiny_llama), adapter=LoraSpec(r=4, alpha=8, dropout=0.0), generate_in_eval=False)
    data = GSM8KDataModule(tokenizer_name=str(tiny_llama), data_dir=str(gsm8k_dir), batch_size=3)
    projected: list[tuple[int, int]] = []  # (positions projected, positions in the batch)

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            head = pl_module.peft_model.get_base_model().get_output_embeddings()
            total = batch["input_ids"].numel()
            head.register_forward_hook(
                lambda _m, args, _o: projected.append((args[0].shape[:-1].numel(), total))
            )

    trainer(tmp_path, max_steps=1, callbacks=[Watch()]).fit(module, data)

    (kept, total), *_ = projected
    assert 0 < kept < total  # the prompt tokens are not projected
    labels = next(iter(data.train_dataloader()))["labels"]
    assert kept == int(labelled_positions(labels).sum())
