"""Chat SFT sources: where a dataset lives and how its fields become system/user/assistant messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from lit_lora.core.ranges import OptionalPositiveInt, PositiveFloat
from lit_lora.data.files import FORMATS, load_split_file
from lit_lora.errors import LitLoraError

MESSAGE_FEATURES = datasets.Features(
    {"messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})}
)
# ShareGPT-style role names, mapped to the roles chat templates expect; other roles pass through.
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant"}
ROLES |= {"model": "assistant", "system": "system"}


@dataclass
class ChatSource:
    """One dataset of a chat SFT mixture and the mapping from its fields to chat messages.

    Either ``messages`` names a column already in chat format, or ``user`` and ``assistant`` name the
    columns of a single exchange (with an optional system prompt).
    """

    name: str
    """Short unique label for logs and errors; it also seeds this source's sample and split."""
    path: str
    """Hub dataset name (e.g. databricks/databricks-dolly-15k) or a local jsonl/json/csv/tsv/parquet file."""
    config: str | None = None
    """Hub dataset configuration (e.g. main for openai/gsm8k); unused for local files."""
    split: str = "train"
    """Hub split to read (e.g. train_sft for HuggingFaceH4/ultrachat_200k); unused for local files."""
    messages: str | None = None
    """Column holding a list of {role, content} dicts (ShareGPT {from, value} dicts are accepted too)."""
    system: str | None = None
    """Constant system prompt put first in every conversation of this source that has none."""
    system_column: str | None = None
    """Column with a per-row system prompt; where it is empty, ``system`` applies."""
    user: str | list[str] | None = None
    """Column of the user turn; a list of columns is joined with blank lines, empty values skipped."""
    assistant: str | None = None
    """Column of the assistant reply: the only text that is trained on."""
    max_samples: OptionalPositiveInt = None
    """Rows taken from this source (a seeded random sample); None uses data.max_samples_per_source."""
    weight: PositiveFloat = 1.0
    """Share of this source under mixing: proportional (normalised over all sources); concat ignores it."""

    def user_columns(self) -> list[str]:
        if self.user is None:
            return []
        return [self.user] if isinstance(self.user, str) else list(self.user)

    def mapped_columns(self) -> dict[str, str]:
        """Each mapped column, keyed by the field that names it."""
        pairs = [("messages", self.messages), ("system_column", self.system_column)]
        pairs += [("user", c) for c in self.user_columns()] + [("assistant", self.assistant)]
        return {f"{key}={column!r}": column for key, column in pairs if column is not None}


def check_source(source: ChatSource, index: int) -> None:
    """Reject a source whose fields contradict each other, naming the YAML key."""
    key = f"data.sources[{index}]"
    if not source.name:
        raise LitLoraError(f"{key}.name: must be a non-empty label")
    if source.messages is not None and (source.user_columns() or source.assistant is not None):
        raise LitLoraError(f"{key} ({source.name}): give either messages or user/assistant columns, not both")
    if source.messages is None and not (source.user_columns() and source.assistant):
        raise LitLoraError(
            f"{key} ({source.name}): map the fields to messages: set messages, or both user and assistant"
        )


def load_source(source: ChatSource, index: int) -> tuple[datasets.Dataset, str]:
    """The raw rows of a source and a description of where they came from (for errors)."""
    path = Path(source.path).expanduser()
    if path.suffix in FORMATS or path.is_file():
        if not path.is_file():
            raise LitLoraError(f"data.sources[{index}].path={source.path} ({source.name}): no such file")
        if path.suffix not in FORMATS:
            raise LitLoraError(
                f"data.sources[{index}].path={source.path} ({source.name}): unsupported file type; "
                f"expected one of {', '.join(FORMATS)}"
            )
        return load_split_file(path), str(path)
    where = f"{source.path}" + (f"/{source.config}" if source.config else "") + f"[{source.split}]"
    try:
        return datasets.load_dataset(source.path, source.config, split=source.split), where
    except Exception as err:  # offline, unknown name, bad config or split: many exception types
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise LitLoraError(
            f"data.sources[{index}].path={source.path} ({source.name}): cannot load {where} "
            f"({type(err).__name__}: {first_line})"
        ) from err


def check_columns(source: ChatSource, columns: list[str], where: str) -> None:
    for field_name, column in source.mapped_columns().items():
        if column not in columns:
            raise LitLoraError(
                f"{where}: source '{source.name}' maps {field_name} to a missing column; "
                f"columns are {columns}"
            )


class MessageMapper:
    """Batched ``datasets.map`` function: rows of a source -> one ``messages`` column."""

    def __init__(self, source: ChatSource) -> None:
        self.source = source

    def __call__(self, rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        n_rows = len(next(iter(rows.values())))
        return {"messages": [self._conversation(rows, i) for i in range(n_rows)]}

    def _conversation(self, rows: dict[str, list[Any]], i: int) -> list[dict[str, str]]:
        s = self.source
        system = _text(rows[s.system_column][i]) if s.system_column else ""
        system = system or s.system or ""
        if s.messages is not None:
            turns = [_message(m) for m in rows[s.messages][i] or []]
        else:
            user = "\n\n".join(t for c in s.user_columns() if (t := _text(rows[c][i]).strip()))
            turns = [
                {"role": "user", "content": user},
                {"role": "assistant", "content": _text(rows[s.assistant][i])},
            ]
        if system and not (turns and turns[0]["role"] == "system"):
            turns.insert(0, {"role": "system", "content": system})
        return turns


def _message(message: dict[str, Any]) -> dict[str, str]:
    role = message.get("role", message.get("from"))
    content = message.get("content", message.get("value"))
    return {"role": ROLES.get(str(role).lower(), str(role)), "content": _text(content)}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # multimodal-style content parts: keep the text ones
        return "".join(part.get("text") or "" if isinstance(part, dict) else str(part) for part in value)
    return str(value)
