"""Chat rendering for SFT: template text, assistant character spans, token labels.

How assistant tokens are found
------------------------------
1. The template marks assistant turns with ``{% generation %} ... {% endgeneration %}``: the character
   spans come from transformers' renderer (the same ones ``return_assistant_tokens_mask`` uses).
2. Otherwise, per assistant message i: render messages[:i] with the generation prompt and
   messages[:i+1] without it; the assistant span is the text between the two (trailing whitespace
   dropped), i.e. the reply plus the template's end-of-turn marker (``<|im_end|>``, ``<|eot_id|>``), so
   the model learns to stop. Each partial rendering must be a prefix of the full one; a template that
   rewrites earlier turns (e.g. moves the system prompt) is refused with a hint to use (1).

The full text is then tokenised once with offsets; a token is trained on when its characters overlap
an assistant span, so a token that merges template and reply characters (" Hello") is never lost.
Conversations are cut at ``max_length`` tokens from the end; one whose first assistant token lies
beyond that (or that has no non-empty assistant reply) trains on nothing and is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from lit_lora.errors import LitLoraError

IGNORE = -100
GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
# For base-model tokenizers without a template: role-prefixed lines, the reply ended by the EOS token.
BUILTIN_TEMPLATES = {
    "plain": (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'Assistant:' }}"
        "{% generation %}{{ ' ' + m['content'] + (eos_token or '') }}{% endgeneration %}{{ '\\n' }}"
        "{% else %}{{ m['role'] | capitalize + ': ' + m['content'] + '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    )
}

Span = tuple[int, int]


def resolve_template(tokenizer: PreTrainedTokenizerBase, chat_template: str | None, name: str) -> str:
    """The Jinja template to use: a builtin name, a file, a template string, or the tokenizer's own."""
    if chat_template in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[chat_template]
    if chat_template is not None and "{" not in chat_template:
        path = Path(chat_template).expanduser()
        if not path.is_file():
            raise LitLoraError(
                f"data.chat_template={chat_template}: neither a file, a Jinja template nor one of "
                f"{sorted(BUILTIN_TEMPLATES)}"
            )
        return path.read_text()
    if chat_template is None and not tokenizer.chat_template:
        raise LitLoraError(
            f"tokenizer {name} has no chat template: set data.chat_template to a Jinja template, "
            f"a file holding one, or one of {sorted(BUILTIN_TEMPLATES)}"
        )
    return chat_template or tokenizer.get_chat_template()


class ChatEncoder:
    """Batched ``datasets.map``: ``messages`` -> input_ids, attention_mask, labels; rows may drop."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int) -> None:
        if not tokenizer.is_fast:
            raise LitLoraError(
                f"tokenizer {tokenizer.name_or_path}: chat SFT needs a fast tokenizer (character offsets)"
            )
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.tagged = bool(GENERATION_TAG.search(template))

    def __call__(self, rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "attention_mask": [], "labels": [], "source": []}
        for messages, source in zip(rows["messages"], rows["source"], strict=True):
            encoded = self.encode(messages)
            if encoded is not None:
                out["input_ids"].append(encoded[0])
                out["attention_mask"].append([1] * len(encoded[0]))
                out["labels"].append(encoded[1])
                out["source"].append(source)
        return out

    def encode(self, messages: list[dict[str, str]]) -> tuple[list[int], list[int]] | None:
        """Token ids and labels (-100 outside assistant spans), or None when nothing would be trained."""
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            return None
        text, spans = self.render(messages)
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoding["input_ids"][: self.max_length]
        labels = [
            token if any(start < b and end > a for a, b in spans) else IGNORE
            for token, (start, end) in zip(ids, encoding["offset_mapping"], strict=False)
        ]
        return (ids, labels) if any(label != IGNORE for label in labels) else None

    def render(self, messages: list[dict[str, str]]) -> tuple[str, list[Span]]:
        """The rendered conversation and the character spans of its assistant turns."""
        if self.tagged:
            return self._generation_spans(messages)
        text = self._apply(messages, add_generation_prompt=False)
        spans: list[Span] = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i == 0:  # a reply with no prompt before it is context
                continue
            before = self._apply(messages[:i], add_generation_prompt=True)
            through = self._apply(messages[: i + 1], add_generation_prompt=False)
            if not (text.startswith(through) and through.startswith(before)):
                raise LitLoraError(
                    f"the chat template of {self.tokenizer.name_or_path} renders earlier turns differently "
                    "as a conversation grows, so assistant tokens cannot be located; set data.chat_template "
                    "to a template that wraps assistant replies in {% generation %}...{% endgeneration %}"
                )
            spans.append((len(before), len(through.rstrip())))
        return text, spans

    def _apply(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _generation_spans(self, messages: list[dict[str, str]]) -> tuple[str, list[Span]]:
        # The renderer behind apply_chat_template(return_assistant_tokens_mask=True); calling it directly
        # gives character spans, which the offset overlap above turns into labels without losing turns.
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, indices = render_jinja_template(
            conversations=[messages],
            chat_template=self.template,
            return_assistant_tokens_mask=True,
            **self.tokenizer.special_tokens_map,
        )
        return rendered[0], [tuple(span) for span in indices[0]]  # type: ignore[misc]
