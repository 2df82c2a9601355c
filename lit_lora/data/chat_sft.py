"""Multi-domain chat SFT: several sources, each capped and split 90/10, mixed by concatenation or weight."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import datasets
from lightning.pytorch.utilities import rank_zero_info

from lit_lora.core.ranges import NonNegativeInt, OptionalPositiveInt, PositiveInt, Range, Seed
from lit_lora.data._chat_render import ChatEncoder, resolve_template
from lit_lora.data._chat_sources import (
    MESSAGE_FEATURES,
    ChatSource,
    MessageMapper,
    check_columns,
    check_source,
    load_source,
)
from lit_lora.data._mixing import capped_order, draw, quotas, source_rng, validation_count
from lit_lora.data.causal import CausalTextDataModule, Packing
from lit_lora.errors import LitLoraError


class ChatSFTDataModule(CausalTextDataModule):
    """Supervised fine-tuning on chat conversations from several sources, loss on assistant tokens only.

    Per source: a seeded random sample of at most ``max_samples`` rows, rendered with the tokenizer's
    chat template, then a seeded train/validation split (``val_fraction``). Training rows are mixed by
    ``mixing``; validation rows are every source's held-out rows, never resampled. `test` reads the
    validation rows too, and so does `predict` unless ``predict_file`` gives prompts (each becomes a user
    turn rendered with the template's generation prompt). ``lit_lora/data/_chat_render.py`` says how
    assistant tokens are located and how ``max_length`` truncation treats them.
    """

    def __init__(
        self,
        sources: list[ChatSource],
        tokenizer_name: str = "",
        mixing: Literal["concat", "proportional"] = "concat",
        num_train_samples: OptionalPositiveInt = None,
        max_samples_per_source: OptionalPositiveInt = None,
        val_fraction: Annotated[float, Range(gt=0, lt=1)] = 0.1,
        chat_template: str | None = None,
        max_length: Annotated[int, Range(ge=2)] = 2048,
        batch_size: PositiveInt = 1,
        eval_batch_size: OptionalPositiveInt = None,
        group_by_length: bool = True,
        num_workers: NonNegativeInt = 0,
        seed: Seed = 42,
        predict_file: str | None = None,
        packing: Packing = "auto",
        trust_remote_code: bool = False,
    ) -> None:
        """
        Args:
            sources: The datasets to train on, each with its field mapping, cap and weight.
            tokenizer_name: Tokenizer hub name or directory; linked to model.model_name_or_path by the CLI.
            mixing: concat: every source's capped training rows, once. proportional: num_train_samples
                rows with exactly the sources' weight shares (rounded), sampled without replacement while
                a source has rows left, then repeating its rows evenly.
            num_train_samples: Training rows under proportional mixing; None keeps the total of concat.
            max_samples_per_source: Cap for sources that set no max_samples (the seed used 1,500); None: all.
            val_fraction: Share of each source's sampled rows held out for validation (seeded).
            chat_template: Jinja template (or a file holding one, or 'plain') for tokenizers without one,
                or to replace theirs; None uses the tokenizer's.
            max_length: Longest conversation in tokens; longer ones are cut from the end, and dropped when
                no assistant token is left.
            batch_size: Training batch size.
            eval_batch_size: Evaluation batch size; None uses twice batch_size.
            group_by_length: Batch training rows of similar length together (less padding).
            num_workers: DataLoader worker processes.
            seed: Seed of sampling, splits and mixing (linked to seed_everything), and of the training order.
            predict_file: Prompts for `predict` (.txt, one per line, or .jsonl with a prompt, question or text
                field), each sent as a user turn; None predicts on the validation rows.
            packing: Padding-free training batches: each batch becomes one row of its conversations back
                to back, positions restarting at 0 for each; same rows, loss and gradients per step as
                padded batches, evaluation stays padded. auto: packed where each conversation attends
                alone (sdpa models of the families lit_lora/models/lm/packing.py allows), padded
                elsewhere; true: packed, refused at fit start where attention could cross conversations
                (eager attention runs over the whole row under a block-diagonal mask); false: padded.
            trust_remote_code: Run tokenizer code shipped with a hub repository; linked to
                model.trust_remote_code by the CLI.
        """
        super().__init__(
            tokenizer_name=tokenizer_name,
            max_length=max_length,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            test_split="validation",
            group_by_length=group_by_length,
            num_workers=num_workers,
            seed=seed,
            predict_file=predict_file,
            packing=packing,
            trust_remote_code=trust_remote_code,
        )
        self.sources = list(sources)
        self.mixing = mixing
        self.num_train_samples = num_train_samples
        self.max_samples_per_source = max_samples_per_source
        self.val_fraction = val_fraction
        self.chat_template = chat_template
        self.source_stats: dict[str, dict[str, int]] = {}
        self._check()

    def _check(self) -> None:
        if not self.sources:
            raise LitLoraError("data.sources: give at least one source")
        for index, source in enumerate(self.sources):
            check_source(source, index)
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise LitLoraError(f"data.sources: names must be unique (they seed the splits); got {names}")
        if self.num_train_samples is not None and self.mixing != "proportional":
            raise LitLoraError("data.num_train_samples: applies to mixing: proportional only")

    # ---- building the splits ----------------------------------------------------------------------

    @property
    def template(self) -> str:
        return resolve_template(self.tokenizer, self.chat_template, self.tokenizer_name)

    def setup(self, stage: str) -> None:
        if stage == "predict" and self.predict_file is not None:
            return super().setup(stage)  # prompt rows, built by the hooks below
        if "train" in self.splits:  # train and validation are built together: the split needs every row
            return
        encoder = ChatEncoder(self.tokenizer, self.template, self.max_length)
        train_parts, val_parts = [], []
        for index, source in enumerate(self.sources):
            encoded = self._encode_source(index, source, encoder)
            n_val = validation_count(len(encoded), self.val_fraction)
            val_parts.append(encoded.select(range(n_val)))
            train_parts.append(encoded.select(range(n_val, len(encoded))))
            self.source_stats[source.name] |= {"train": len(encoded) - n_val, "validation": n_val}
        self.splits["train"] = self._mix(train_parts)
        self.splits["validation"] = datasets.concatenate_datasets(val_parts)
        for name, stats in self.source_stats.items():
            rank_zero_info(f"chat source {name}: {stats}")

    def _encode_source(self, index: int, source: ChatSource, encoder: ChatEncoder) -> datasets.Dataset:
        """Sampled, rendered and tokenised rows of one source, in its seeded order, plus a source index."""
        raw, where = load_source(source, index)
        check_columns(source, raw.column_names, where)
        cap = source.max_samples if source.max_samples is not None else self.max_samples_per_source
        raw = raw.select(capped_order(len(raw), cap, source_rng(self.seed, source.name)))
        chats = raw.map(
            MessageMapper(source),
            batched=True,
            remove_columns=raw.column_names,
            features=MESSAGE_FEATURES,
            desc=f"Mapping {source.name}",
        )
        chats = chats.add_column("source", [index] * len(chats))
        encoded = chats.map(
            encoder, batched=True, remove_columns=chats.column_names, desc=f"Tokenising {source.name}"
        )
        self.source_stats[source.name] = {"rows": len(raw), "dropped": len(raw) - len(encoded)}
        if len(encoded) < 2:
            raise LitLoraError(
                f"{where}: source '{source.name}' keeps {len(encoded)} of {len(raw)} rows; a row needs a "
                f"non-empty assistant reply starting within data.max_length={self.max_length} tokens"
            )
        return encoded

    def _mix(self, parts: list[datasets.Dataset]) -> datasets.Dataset:
        if self.mixing == "concat":
            return datasets.concatenate_datasets(parts)
        total = self.num_train_samples or sum(len(p) for p in parts)
        counts = quotas([s.weight for s in self.sources], total)
        rng = source_rng(self.seed, "mixing")
        picked = [part.select(draw(len(part), n, rng)) for part, n in zip(parts, counts, strict=True) if n]
        return datasets.concatenate_datasets(picked)

    # ---- prompts for predict ---------------------------------------------------------------------

    def _format_prompt(self, text: str) -> str:
        chat = [{"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(
            chat, chat_template=self.template, tokenize=False, add_generation_prompt=True
        )

    def _prompt_row(self, prompt: str) -> dict[str, Any]:
        # The rendered template already holds any BOS; long prompts keep their end, where the reply starts.
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"][-self.max_length :]
        return {"prompt_input_ids": ids, "prompt": prompt}
