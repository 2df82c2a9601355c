"""Classification as generation: a chat prompt whose reply is the label word, for decoder adapters.

Adapters for different classification tasks then share one base model and one architecture (no task
head), so they can be merged with each other and with generation adapters.
"""

from __future__ import annotations

from typing import Any, ClassVar

import datasets
import torch

from lit_lora.core.ranges import PositiveInt
from lit_lora.data._chat_render import resolve_template
from lit_lora.data.causal import IGNORE, CausalCollator, CausalTextDataModule
from lit_lora.data.classification import AGNewsDataModule, ClassificationDataModule, SST2DataModule
from lit_lora.errors import LitLoraError

FIT_ATTEMPTS = 4  # re-tokenising a cut text can merge pieces differently: a few passes always fit


class LabelCollator(CausalCollator):
    """:class:`CausalCollator` plus the gold ``label`` index (a tensor) and ``label_choices`` (lists)."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(features)
        if "label" in features[0]:
            batch["label"] = torch.tensor([f["label"] for f in features])
            batch["label_choices"] = [f["label_choices"] for f in features]
        return batch


class LabelGenerationDataModule(CausalTextDataModule):
    """A classification task as a chat: the user turn is ``instruction`` + the text, the reply its label word.

    Rows are read and checked by the classification preset in ``task`` (its columns, label ids or names),
    then rendered with the tokenizer's chat template (or ``chat_template``). Labels are -100 except on
    the label word's tokens and the EOS token, so the loss is on the answer only. Every row also carries
    the rendered prompt (``prompt_input_ids``, ``prompt``), the gold label word (``reference``), its index
    (``label``) and each label word's tokens as the reply would tokenise them (``label_choices``), which
    :class:`~lit_lora.models.CausalLM` scores into ``exact_match`` and ``acc``. Texts too long for
    ``max_length`` lose their end; the instruction and the answer are always kept.
    """

    task: ClassVar[type[ClassificationDataModule]]
    default_label_words: ClassVar[tuple[str, ...]]
    default_instruction: ClassVar[str]

    def __init__(
        self,
        *args: Any,
        label_words: list[str] | None = None,
        instruction: str | None = None,
        chat_template: str | None = None,
        max_length: PositiveInt = 256,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            label_words: The reply for each class, in label-id order; None uses the preset's.
            instruction: Text put before the input in the user turn; None uses the preset's.
            chat_template: Jinja template (or a file holding one, or 'plain') for tokenizers without one,
                or to replace theirs; None uses the tokenizer's.
            max_length: Longest prompt + reply in tokens; longer inputs lose the end of their text.
        """
        super().__init__(*args, max_length=max_length, **kwargs)
        self.checker = self.task()  # the classification preset: columns, label names and ids
        self.label_words = tuple(label_words) if label_words is not None else self.default_label_words
        if len(self.label_words) != self.checker.num_labels or len(set(self.label_words)) != len(
            self.label_words
        ):
            raise LitLoraError(
                f"data.label_words={list(self.label_words)}: give {self.checker.num_labels} distinct words, "
                f"one per class of {list(self.checker.label_names)}"
            )
        self.instruction = instruction if instruction is not None else self.default_instruction
        self.chat_template = chat_template

    @property
    def template(self) -> str:
        return resolve_template(self.tokenizer, self.chat_template, self.tokenizer_name)

    def _encoding_settings(self) -> dict[str, Any]:
        words = {"label_words": self.label_words, "instruction": self.instruction, "template": self.template}
        return super()._encoding_settings() | words

    # ---- rendering --------------------------------------------------------------------------------

    def _render(self, text: str, reply: str | None = None) -> str:
        messages = [{"role": "user", "content": f"{self.instruction}\n\n{text.strip()}"}]
        if reply is not None:
            messages.append({"role": "assistant", "content": reply})
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=reply is None
        )

    def _format_prompt(self, text: str) -> str:
        return self._render(text)

    def _prompt_row(self, prompt: str) -> dict[str, Any]:
        # The rendered template already holds any BOS.
        return {"prompt_input_ids": self._tokens(prompt)[-self.max_length :], "prompt": prompt}

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _reply_tokens(self, word: str) -> list[int]:
        """The label word's tokens as the template's reply holds them (e.g. ' World' after 'Assistant:')."""
        prompt, full = self._render("x"), self._render("x", word)
        tail = full[len(prompt) :]
        if not full.startswith(prompt) or word not in tail:
            raise LitLoraError(
                f"the chat template of {self.tokenizer_name} does not render the reply after the generation "
                "prompt; set data.chat_template (e.g. 'plain')"
            )
        return self._tokens(tail[: tail.index(word) + len(word)])

    def _fitted_prompt(self, text: str, budget: int) -> list[int]:
        """The rendered prompt's tokens, the text cut from its end until they fit within ``budget``."""
        for _ in range(FIT_ATTEMPTS):
            ids = self._tokens(self._render(text))
            excess = len(ids) - budget
            if excess <= 0:
                return ids
            text_ids = self._tokens(text)
            if excess >= len(text_ids):
                break
            text = self.tokenizer.decode(text_ids[: len(text_ids) - excess])
        raise LitLoraError(f"data.max_length={self.max_length} leaves no room for the instruction and a text")

    # ---- task hooks -------------------------------------------------------------------------------

    def _prepare(self, raw: datasets.Dataset, source: str) -> datasets.Dataset:
        prepared = self.checker._prepare(raw, source)
        return prepared.select_columns([*self.checker.text_columns, self.checker.label_column])

    def _encode(self, rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise LitLoraError(f"tokenizer {self.tokenizer_name} has no eos token: the reply must end")
        choices = [self._reply_tokens(word) for word in self.label_words]
        keys = ("input_ids", "labels", "prompt_input_ids", "prompt", "reference", "label", "label_choices")
        out: dict[str, list[Any]] = {k: [] for k in keys}
        texts = zip(*(rows[c] for c in self.checker.text_columns), strict=True)
        for parts, label in zip(texts, rows[self.checker.label_column], strict=True):
            answer = [*choices[label], eos]
            # Prompt and reply are tokenised apart so that the prompt's tokens are exactly those that
            # generation and choice scoring start from.
            prompt_ids = self._fitted_prompt("\n".join(parts), self.max_length - len(answer))
            out["input_ids"].append(prompt_ids + answer)
            out["labels"].append([IGNORE] * len(prompt_ids) + answer)
            out["prompt_input_ids"].append(prompt_ids)
            out["prompt"].append(self.tokenizer.decode(prompt_ids))
            out["reference"].append(self.label_words[label])
            out["label"].append(label)
            out["label_choices"].append(choices)
        return out

    def _collate(self) -> LabelCollator:
        return LabelCollator(super()._collate().pad_token_id)


class AGNewsGenerationDataModule(LabelGenerationDataModule):
    """AG News topics as generation (hub ``fancyzhx/ag_news`` or files with ``text`` and ``label``).

    Labels may be ids or AG News' names (Sci/Tech included); the reply is World, Sports, Business or
    Technology. There is no validation split: validation is held out from train (``validation_holdout``).
    """

    task = AGNewsDataModule
    hub_path = AGNewsDataModule.hub_path
    hub_config = AGNewsDataModule.hub_config
    hub_splits = AGNewsDataModule.hub_splits
    default_label_words = ("World", "Sports", "Business", "Technology")
    default_instruction = (
        "Classify the topic of this news article as one of: World, Sports, Business, Technology."
    )


class SST2GenerationDataModule(LabelGenerationDataModule):
    """GLUE SST-2 sentiment as generation (hub ``glue``/``sst2`` or files with ``sentence`` and ``label``)."""

    task = SST2DataModule
    hub_path = SST2DataModule.hub_path
    hub_config = SST2DataModule.hub_config
    hub_splits = SST2DataModule.hub_splits
    default_label_words = ("negative", "positive")
    default_instruction = "Classify the sentiment of this movie review as one of: negative, positive."
