"""Causal language modelling (WikiText-2, GSM8K, chat SFT, label generation) with a PEFT adapter."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from peft import TaskType
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from lit_lora.core.hub import load_config, resolve_model_path
from lit_lora.core.ranges import OptionalPositiveInt, PositiveInt
from lit_lora.data.sampler import LengthGroupedSampler
from lit_lora.metrics.gsm8k import flexible_answer, flexible_match, strict_answer, strict_match
from lit_lora.metrics.language_model import (
    IGNORE,
    ChoiceAccuracy,
    FlexibleNumberMatch,
    LabelExactMatch,
    StrictNumberMatch,
    TokenNLL,
    label_matches,
)
from lit_lora.models.base import PeftModule
from lit_lora.models.engine.offload import offload_context, warn_if_no_effect
from lit_lora.models.lm.choice_scores import choice_scores, choice_token_log_probs
from lit_lora.models.lm.chunked_loss import chunked_labelled_nll, takes_chunked_loss
from lit_lora.models.lm.greedy import greedy_generate, is_plain_greedy
from lit_lora.models.lm.labelled_logits import labelled_nll, labelled_positions, takes_position_mask
from lit_lora.models.lm.packing import (
    check_packing_support,
    is_packed,
    packed_inputs,
    packs_each_sequence_alone,
)
from lit_lora.models.lm.token_window import WindowTokens, loss_tokens_per_row
from lit_lora.models.lm.varlen_attention import use_varlen_attention

Batch = dict[str, Any]


def projection_names(model_name_or_path: str, trust_remote_code: bool = False) -> list[str]:
    """Names of the linear layers in the decoder blocks, the output layer excluded.

    q/k/v/o_proj and gate/up/down_proj for Llama and Qwen2, c_attn/c_proj/c_fc for GPT-2. Found on a
    weightless (meta-device) copy of the architecture, so any decoder works unconfigured.
    """
    with torch.device("meta"):
        config = load_config(model_name_or_path, trust_remote_code=trust_remote_code)
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    output = skeleton.get_output_embeddings()
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in skeleton.named_modules()
            if isinstance(module, torch.nn.Linear | Conv1D) and module is not output
        }
    )


class CausalLM(PeftModule):
    """``AutoModelForCausalLM`` + adapter; nothing but the adapter trains (``lm_head`` stays frozen).

    Batches hold ``input_ids``, ``attention_mask`` and ``labels`` (-100 where no loss is taken: prompt,
    padding). Validation and test log ``loss`` (mean NLL per predicted token) and ``ppl`` (its exp), both
    over the whole split. Batches that also carry left-padded ``prompt_input_ids`` /
    ``prompt_attention_mask`` and ``reference`` answers are answered by greedy generation and scored
    as lm-evaluation-harness scores GSM8K: ``exact_match`` (strict: the first ``#### <number>``) and
    ``exact_match_flexible`` (the last number; ``lit_lora.metrics.gsm8k``). Batches that carry
    ``label_choices`` (token ids of each label word as the reply) and the gold ``label`` index are
    classification as generation: ``acc`` takes the label word of highest summed log-likelihood after the
    prompt, and ``exact_match`` compares the generated reply's first line or word to the gold label word.
    ``predict`` generates from the prompts.

    Packed training batches (``data.packing``) hold ``input_ids``, ``labels`` and ``position_ids`` instead:
    one row of sequences whose positions restart at 0, trained as if each ran alone (``_packing.py``).
    """

    auto_model_class = AutoModelForCausalLM
    task_type = TaskType.CAUSAL_LM

    def __init__(
        self,
        *args: Any,
        max_new_tokens: PositiveInt = 256,
        generate_in_eval: bool = True,
        loss_chunk_size: OptionalPositiveInt = 256,
        activation_offloading: bool = False,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            max_new_tokens: Longest greedy generation, in tokens, for predict and exact match.
            generate_in_eval: Generate answers for evaluation batches that carry references (GSM8K) and
                log exact_match (GSM8K: also exact_match_flexible); false skips generation and logs
                loss and perplexity only.
            loss_chunk_size: Labelled positions whose vocabulary logits are computed at a time, for the
                training loss and the evaluation loss: only one chunk's [chunk x vocab] float32 logits
                live at a time (recomputed in backward); same loss and gradients. None projects every
                labelled position at once. Families other than those in
                lit_lora/models/lm/chunked_loss.py, AdaLoRA and ZeRO-3 on several ranks always project
                at once.
            activation_offloading: On CUDA, keep the tensors saved for backward in pinned CPU memory
                instead of on the GPU (torch.autograd.graph.save_on_cpu); slower, same numbers. Stacks
                with gradient_checkpointing. No effect (and a warning) on other devices.
        """
        super().__init__(*args, **kwargs)
        self.loss_chunk_size = loss_chunk_size
        self.activation_offloading = activation_offloading
        self.max_new_tokens = max_new_tokens
        self.generate_in_eval = generate_in_eval
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._window_tokens: WindowTokens | None = None
        self._takes_position_mask: bool | None = None
        self._takes_chunked_loss: bool | None = None

    def _trained_heads(self, config: Any) -> list[str]:
        return []

    def configure_model(self) -> None:
        if self.model is None and self.adapter_path is None and self.adapter.target_modules is None:
            # PEFT's decoder default adapts q and v only; the seed adapts every projection.
            names = projection_names(self.model_name_or_path, self.trust_remote_code)
            self.adapter = dataclasses.replace(self.adapter, target_modules=names)
        super().configure_model()

    def _new_metrics(self, stage: str) -> dict[str, nn.Module]:
        return {
            "nll": TokenNLL(),
            "exact_match": StrictNumberMatch(),
            "exact_match_flexible": FlexibleNumberMatch(),
            "label_match": LabelExactMatch(),
            "acc": ChoiceAccuracy(),
        }

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            path = resolve_model_path(self.model_name_or_path)
            self._tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def forward(self, batch: Batch) -> Any:
        return self.peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    # ---- training and evaluation ------------------------------------------------------------------

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._settle_packing()
        warn_if_no_effect(self.activation_offloading, self.device)

    def _settle_packing(self) -> None:
        """Decide data.packing auto, and refuse packing a model cannot take, before the first batch.

        Lightning builds the training loader after ``on_fit_start``, so the decision reaches its collator.
        """
        resolve = getattr(self.trainer.datamodule, "resolve_packing", None)
        if resolve is None:
            return
        base = self.peft_model.get_base_model()
        if resolve(packs_each_sequence_alone(base.config)):
            check_packing_support(base.config)
            use_varlen_attention(base)  # each sequence attends alone, not under a [tokens x tokens] mask

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if is_packed(batch):
            check_packing_support(self.peft_model.get_base_model().config)  # packed batches from any loader
            inputs: dict[str, Any] = packed_inputs(batch)
        else:
            # No cache: training never reads one back, and filling it copies every layer's keys and values.
            inputs = {
                "input_ids": batch["input_ids"],
                "attention_mask": batch["attention_mask"],
                "use_cache": False,
            }
        extra = self.method_hooks.extra_loss_name
        with offload_context(self.activation_offloading, self.device):
            if extra:  # PEFT adds the method's regulariser (AdaLoRA's orthogonality term) only with labels
                inputs["labels"] = batch["labels"]
                outputs = self.peft_model(**inputs)  # PEFT's loss needs every logit
                nll, tokens = labelled_nll(outputs.logits, batch["labels"], None)
            else:
                outputs, (nll, tokens) = None, self._labelled_nll(inputs, batch["labels"])
        mean_nll = nll / tokens.clamp(min=1)
        weight = max(int(tokens), 1)  # the epoch's train/loss is a mean over tokens, as in evaluation
        self.log("train/loss", mean_nll, prog_bar=True, batch_size=weight)
        loss = self._window_normalised(nll, tokens, batch_idx)
        if outputs is not None and outputs.loss is not None:
            # PEFT's loss is the same token-mean NLL plus the regulariser, once per micro-batch.
            orth_reg = outputs.loss - mean_nll
            self.log(f"train/{extra}", orth_reg.detach(), batch_size=weight)
            loss = loss + orth_reg
        return loss

    def _labelled_nll(
        self, inputs: dict[str, Any], labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed NLL and token count from the cheapest exact path: chunked, labelled logits, or all."""
        base = self.peft_model.get_base_model()
        if self._takes_chunked_loss is None:
            self._takes_chunked_loss = takes_chunked_loss(base)
        # Under ZeRO-3 each lm_head call gathers its weight on every rank; ranks with other numbers of
        # labelled tokens would make other numbers of calls and wait on each other: one call per forward.
        chunked = self._takes_chunked_loss and not self._gathers_weights_in_every_forward
        if self.loss_chunk_size is not None and chunked:
            return chunked_labelled_nll(base, inputs, labels, self.loss_chunk_size)
        keep = self._loss_positions(labels)
        outputs = self.peft_model(**inputs, **({} if keep is None else {"logits_to_keep": keep}))
        return labelled_nll(outputs.logits, labels, keep)

    def _loss_positions(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The positions whose logits a loss needs, for models that can project those alone; else None."""
        if self._takes_position_mask is None:
            self._takes_position_mask = takes_position_mask(self.peft_model.get_base_model())
        return labelled_positions(labels) if self._takes_position_mask else None

    def _window_normalised(self, nll: torch.Tensor, tokens: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """Summed NLL over the tokens of the whole accumulation window, on all ranks.

        Lightning divides every micro-batch loss by the accumulation count and DDP averages over ranks;
        scaling by both leaves the window's gradient equal to sum(token losses) / tokens of the window.
        """
        trainer = self.trainer
        if self._window_tokens is None:
            self._window_tokens = self._build_window_tokens()
        if self._window_tokens is None:  # not lit_lora's sampler: a mean over this micro-batch
            return nll / tokens.clamp(min=1)
        window = self._window_tokens(trainer.current_epoch, batch_idx)
        return nll * (trainer.accumulate_grad_batches * trainer.world_size / max(window, 1))

    def _build_window_tokens(self) -> WindowTokens | None:
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, LengthGroupedSampler):
            return None
        row_tokens = loss_tokens_per_row(loader.dataset["labels"])
        return WindowTokens(sampler, row_tokens, self.trainer.accumulate_grad_batches)

    def on_train_start(self) -> None:
        super().on_train_start()
        self._window_tokens = None  # a new fit may bring new data or another accumulation count

    def _eval_step(self, batch: Batch, stage: str) -> None:
        metrics = self.stage_metrics[stage]
        choices = batch.get("label_choices")
        # Under ZeRO-3 every rank must run the same forwards; the shared-prompt path is taken only when
        # the batch allows it, which may differ between ranks.
        shared = choices is not None and not self._gathers_weights_in_every_forward
        replies = label_replies(batch["labels"], batch["label"], choices) if shared else None
        if replies is not None:
            self._score_label_replies(batch, choices, replies, stage)
        else:
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            nll, tokens = self._labelled_nll({**inputs, "use_cache": False}, batch["labels"])
            metrics["nll"].update(nll, tokens)
            if choices is not None:
                prompt_ids, prompt_mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]
                scores = choice_scores(self.peft_model, prompt_ids, prompt_mask, choices, self._pad_id)
                metrics["acc"].update(scores, batch["label"])
        if self.generate_in_eval and "reference" in batch:
            # A label word needs a few tokens, not a worked answer's budget: stop one past the longest.
            limit = None if choices is None else max(len(c) for row in choices for c in row) + 1
            generations = self.generate(batch["prompt_input_ids"], batch["prompt_attention_mask"], limit)
            names = ["exact_match", "exact_match_flexible"] if choices is None else ["label_match"]
            for name in names:
                metrics[name].update(generations, batch["reference"])

    def _score_label_replies(
        self, batch: Batch, choices: list[list[list[int]]], replies: list[list[list[int]]], stage: str
    ) -> None:
        """One pass scores every label word (``acc``) and gives the gold reply's loss (``loss``, ``ppl``).

        Each choice is scored followed by EOS, so the gold choice's tokens are exactly the reply that a
        forward over prompt + reply would score: the same loss from one shared prompt pass, not two.
        """
        log_probs = choice_token_log_probs(
            self.peft_model, batch["prompt_input_ids"], batch["prompt_attention_mask"], replies, self._pad_id
        )
        word_lengths = torch.tensor([[len(c) for c in row] for row in choices], device=log_probs.device)
        in_word = torch.arange(log_probs.shape[-1], device=log_probs.device) < word_lengths[..., None]
        metrics = self.stage_metrics[stage]
        metrics["acc"].update((log_probs * in_word).sum(dim=-1), batch["label"])
        gold = log_probs[torch.arange(len(replies), device=log_probs.device), batch["label"]]
        tokens = torch.tensor(sum(len(row[int(k)]) for row, k in zip(replies, batch["label"], strict=True)))
        metrics["nll"].update(-gold.sum(), tokens.to(log_probs.device))

    def _eval_epoch_end(self, stage: str) -> None:
        metrics = self.stage_metrics[stage]
        mean_nll = metrics["nll"].compute()
        self.log(f"{stage}/loss", mean_nll)
        self.log(f"{stage}/ppl", mean_nll.exp(), prog_bar=True)
        # Only data with references (GSM8K, labels) is scored; every rank takes part in each sum, so
        # none waits. A split holds one kind of reference, so only its exact-match metrics have rows.
        logged_as = {
            "exact_match": "exact_match",
            "exact_match_flexible": "exact_match_flexible",
            "label_match": "exact_match",
            "acc": "acc",
        }
        for name, key in logged_as.items():
            metric = metrics[name]
            scored = self.trainer.strategy.reduce(metric.total.float(), reduce_op="sum")
            if scored > 0:
                self.log(f"{stage}/{key}", metric.compute(), prog_bar=True)

    # ---- generation -------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int | None = None
    ) -> list[str]:
        """Greedy continuations of left-padded prompts, decoded without special tokens.

        ``max_new_tokens`` lowers ``self.max_new_tokens`` for this call (never raises it).
        """
        tokenizer = self.tokenizer
        generation_config = self.peft_model.generation_config
        stop = generation_config.eos_token_id
        stop = {*(stop if isinstance(stop, list) else [stop]), tokenizer.eos_token_id} - {None}
        limit = min(self.max_new_tokens, max_new_tokens or self.max_new_tokens)
        if is_plain_greedy(generation_config):
            # Finished rows leave the batch: a batch costs its replies' lengths, not rows x the longest.
            sync = self._any_rank_running()
            replies = greedy_generate(
                self.peft_model, input_ids, attention_mask, limit, stop, self._pad_id, sync
            )
            return tokenizer.batch_decode(replies, skip_special_tokens=True)
        # The model's generation config edits the logits (a repetition penalty, ...) or searches beams:
        # Hugging Face applies it, so that answers stay what they were with this model.
        output = self.peft_model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=limit,
            do_sample=False,
            eos_token_id=sorted(stop),
            pad_token_id=self._pad_id,
            use_cache=True,  # gradient checkpointing turns the cache off for training only
            synced_gpus=self._any_rank_running() is not None,
        )
        return tokenizer.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)

    def _any_rank_running(self) -> Callable[[bool], bool] | None:
        """Under ZeRO-3 on several ranks, the collective that keeps generating ranks in step, else None."""
        if not self._gathers_weights_in_every_forward:
            return None
        strategy = self.trainer.strategy
        return lambda running: strategy.reduce_boolean_decision(running, all=False)

    @property
    def _pad_id(self) -> int:
        tokenizer = self.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Any]]:
        key = "prompt_input_ids" if "prompt_input_ids" in batch else "input_ids"
        mask = batch["prompt_attention_mask" if key == "prompt_input_ids" else "attention_mask"]
        generations = self.generate(batch[key], mask)
        prompts = batch.get("prompt") or self.tokenizer.batch_decode(batch[key], skip_special_tokens=True)
        rows = [{"prompt": p, "generation": g} for p, g in zip(prompts, generations, strict=True)]
        for row, reference in zip(rows, batch.get("reference") or [], strict=False):
            if "label_choices" in batch:
                row.update(reference=reference, correct=label_matches(row["generation"], reference))
                continue
            generation = row["generation"]
            row.update(
                answer=strict_answer(generation),
                reference=reference,
                correct=strict_match(generation, reference),
                answer_flexible=flexible_answer(generation),
                correct_flexible=flexible_match(generation, reference),
            )
        return rows


def label_replies(
    labels: torch.Tensor, gold: torch.Tensor, choices: list[list[list[int]]]
) -> list[list[list[int]]] | None:
    """Each row's choices as whole replies (label word, then the EOS its gold reply ends with), or None
    when some gold reply is not its choice + EOS (then the reply is scored by its own forward)."""
    replies = []
    for row_labels, label, row_choices in zip(labels, gold.tolist(), choices, strict=True):
        reply = row_labels[row_labels != IGNORE].tolist()
        if not reply or reply[:-1] != list(row_choices[label]):
            return None
        replies.append([[*choice, reply[-1]] for choice in row_choices])
    return replies
