"""Chat SFT data: labels are exactly the assistant tokens, seeded splits, caps, mixing, one-line errors."""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lit_lora.data import ChatSFTDataModule, ChatSource
from lit_lora.data._mixing import quotas
from lit_lora.errors import LitLoraError
from lit_lora.methods import LoraSpec
from lit_lora.models import CausalLM
from tests.helpers import REPO, trainer

# ChatML without generation tags: assistant spans are found by rendering prefixes.
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The same rendering with {% generation %} tags: assistant spans come from the template itself.
CHATML_TAGGED = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}{% if m['role'] == 'assistant' %}"
    "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Qwen2.5's template without its tool branches: a default system prompt appears when there is none.
QWEN25 = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.'"
    " + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}{%- if message.role != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
REPLY = re.compile(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", re.DOTALL)


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE (decoding is exact) with ChatML control tokens and a ChatML template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["what is the sum of two numbers", "the answer is", "hello there"] * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    directory = tmp_path_factory.mktemp("chat_tokenizer")
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """60 single-turn Q/A rows (jsonl), 40 instruction rows (csv), 30 two-turn chats (ShareGPT jsonl)."""
    d = tmp_path_factory.mktemp("chat_data")
    qa = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."} for i in range(60)]
    (d / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    with (d / "code.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["instruction", "input", "output"])
        writer.writerows(
            [f"Double the number {i}", "" if i % 2 else f"x = {i}", f"{2 * i}"] for i in range(40)
        )
    chats = [
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": f"Hello number {i}"},
                {"from": "gpt", "value": f"Hello to you, {i}!"},
                {"from": "human", "value": "And the square?"},
                {"from": "gpt", "value": f"The square is {i * i}.\nDone."},
            ]
        }
        for i in range(30)
    ]
    (d / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chats))
    return {"qa": d / "qa.jsonl", "code": d / "code.csv", "chat": d / "chat.jsonl"}


def sources(files: dict[str, Path], **caps: int) -> list[ChatSource]:
    return [
        ChatSource("qa", str(files["qa"]), user="question", assistant="answer", max_samples=caps.get("qa")),
        ChatSource(
            "code",
            str(files["code"]),
            system="You write code.",
            user=["instruction", "input"],
            assistant="output",
            max_samples=caps.get("code"),
        ),
        ChatSource("chat", str(files["chat"]), messages="conversations", max_samples=caps.get("chat")),
    ]


def datamodule(tokenizer: Path, srcs: list[ChatSource], **kwargs) -> ChatSFTDataModule:
    kwargs.setdefault("max_length", 256)
    kwargs.setdefault("batch_size", 8)
    dm = ChatSFTDataModule(srcs, tokenizer_name=str(tokenizer), **kwargs)
    dm.setup("fit")
    return dm


def decode(dm: ChatSFTDataModule, ids: list[int]) -> str:
    return dm.tokenizer.decode(ids)


def label_runs(labels: list[int]) -> list[list[int]]:
    """Contiguous runs of trained (non -100) label ids."""
    runs: list[list[int]] = []
    for i, label in enumerate(labels):
        if label != -100:
            if i == 0 or labels[i - 1] == -100:
                runs.append([])
            runs[-1].append(label)
    return runs


@pytest.mark.parametrize(
    "template", [None, CHATML_TAGGED, QWEN25], ids=["prefix-rendering", "generation-tags", "qwen2.5-template"]
)
def test_labels_decode_to_exactly_the_assistant_replies(chat_tokenizer, files, template):
    dm = datamodule(chat_tokenizer, sources(files), chat_template=template, group_by_length=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["labels"].shape == batch["input_ids"].shape
    turns = Counter()
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True):
        ids, labels = ids[mask.bool()].tolist(), labels.tolist()
        assert all(label == -100 for label in labels[len(ids) :])  # padding is never trained
        assert all(label in (-100, token) for label, token in zip(labels, ids, strict=False))  # unshifted
        text = decode(dm, ids)
        expected = REPLY.findall(text)  # every reply with its end-of-turn token, nothing else
        assert [decode(dm, run) for run in label_runs(labels)] == expected
        turns[len(expected)] += 1
    assert set(turns) <= {1, 2}
    # Multi-turn rows are in the whole training set, so check them all, not just one batch.
    for row in dm.splits["train"]:
        replies = REPLY.findall(decode(dm, row["input_ids"]))
        assert [decode(dm, run) for run in label_runs(row["labels"])] == replies
        assert len(replies) == (2 if row["source"] == 2 else 1)


def test_truncation_keeps_leading_assistant_tokens_or_drops_the_row(chat_tokenizer, files, tmp_path):
    rows = [{"q": "short", "a": "kept reply"}, {"q": "long " * 80, "a": "lost reply"}] * 5
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    chat = ChatSource("chat", str(files["chat"]), messages="conversations")
    cut = ChatSource("cut", str(tmp_path / "t.jsonl"), user="q", assistant="a")
    dm = datamodule(chat_tokenizer, [chat, cut], max_length=60)
    assert dm.source_stats["cut"] == {"rows": 10, "dropped": 5, "train": 4, "validation": 1}
    assert dm.source_stats["chat"]["dropped"] == 0
    for row in dm.splits["train"]:
        assert len(row["input_ids"]) <= 60
        assert any(label != -100 for label in row["labels"])
        if row["source"] == 0:  # the second reply is cut: only the first is (partly) trained
            assert len(label_runs(row["labels"])) == 1


def test_validation_is_ten_percent_disjoint_and_seeded(chat_tokenizer, files):
    def split_texts(seed: int) -> tuple[set[str], set[str]]:
        dm = datamodule(chat_tokenizer, sources(files)[:1], seed=seed)
        return tuple({decode(dm, r["input_ids"]) for r in dm.splits[s]} for s in ("train", "validation"))

    train, val = split_texts(1)
    assert (len(train), len(val)) == (54, 6) and not train & val
    assert split_texts(1) == (train, val)
    assert split_texts(2)[1] != val


def test_per_source_caps_and_concat_is_the_sum_of_capped_sizes(chat_tokenizer, files):
    dm = datamodule(chat_tokenizer, sources(files, qa=20), max_samples_per_source=15)
    counts = Counter(dm.splits["train"]["source"]) + Counter(dm.splits["validation"]["source"])
    assert counts == {0: 20, 1: 15, 2: 15}
    assert len(dm.splits["train"]) == 18 + 13 + 13 and len(dm.splits["validation"]) == 2 + 2 + 2
    uncapped = datamodule(chat_tokenizer, sources(files))
    assert len(uncapped.splits["train"]) + len(uncapped.splits["validation"]) == 60 + 40 + 30


def test_proportional_mixing_holds_over_a_large_draw(chat_tokenizer, files):
    srcs = sources(files)
    for src, weight in zip(srcs, (0.5, 0.3, 0.2), strict=True):
        src.weight = weight
    dm = datamodule(chat_tokenizer, srcs, mixing="proportional", num_train_samples=10_000, seed=3)
    train = dm.splits["train"]
    shares = Counter(train["source"])
    assert len(train) == 10_000
    for index, weight in enumerate((0.5, 0.3, 0.2)):
        assert abs(shares[index] / 10_000 - weight) <= 0.02
    # Oversampled rows repeat evenly (27 chat training rows, 2,000 draws: 74 or 75 times each).
    chat_rows = Counter(tuple(r["input_ids"]) for r in train if r["source"] == 2)
    assert set(chat_rows.values()) <= {74, 75} and len(chat_rows) == 27
    assert len(dm.splits["validation"]) == 6 + 4 + 3  # validation is never resampled
    again = datamodule(chat_tokenizer, srcs, mixing="proportional", num_train_samples=10_000, seed=3)
    assert again.splits["train"]["input_ids"][:50] == train["input_ids"][:50]


def test_quotas_are_exact_and_sum_to_the_total():
    assert quotas([0.5, 0.3, 0.2], 10_000) == [5000, 3000, 2000]
    assert quotas([1, 1, 1], 10) in ([4, 3, 3], [3, 4, 3], [3, 3, 4])
    assert sum(quotas([0.7, 0.2, 0.1], 7)) == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"path": "/no/such/file.jsonl"}, "data.sources[0].path=/no/such/file.jsonl (qa): no such file"),
        (
            {"assistant": "reply"},
            "qa.jsonl: source 'qa' maps assistant='reply' to a missing column; columns are",
        ),
        ({"weight": 0.0}, "data.sources[0].weight=0.0 must be a number > 0"),
        ({"weight": -1.0}, "data.sources[0].weight=-1.0 must be a number > 0"),
        ({"messages": "conversations"}, "give either messages or user/assistant columns, not both"),
    ],
)
def test_bad_sources_fail_with_one_line(chat_tokenizer, files, change, message):
    src = sources(files)[0]
    for key, value in change.items():
        setattr(src, key, value)
    with pytest.raises(LitLoraError) as err:
        datamodule(chat_tokenizer, [src])
    assert message in str(err.value) and "\n" not in str(err.value)
    if "missing column" in message:
        assert "['question', 'answer']" in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mixing": "interleave"}, "data.mixing='interleave' must be one of 'concat', 'proportional'"),
        ({"val_fraction": 0.0}, "data.val_fraction=0.0 must be a number in (0, 1)"),
        ({"num_train_samples": 10}, "data.num_train_samples: applies to mixing: proportional only"),
        ({"chat_template": "no_such_template"}, "data.chat_template=no_such_template: neither a file"),
    ],
)
def test_bad_options_fail_with_one_line(chat_tokenizer, files, kwargs, message):
    with pytest.raises(LitLoraError, match=re.escape(message)):
        datamodule(chat_tokenizer, sources(files), **kwargs)


def test_a_template_that_rewrites_earlier_turns_is_refused(chat_tokenizer, files):
    counting = "{{ '<|im_start|>system\\n' + (messages | length | string) + '<|im_end|>\\n' }}" + CHATML
    with pytest.raises(LitLoraError, match="renders earlier turns differently"):
        datamodule(chat_tokenizer, sources(files)[:1], chat_template=counting)
    assert datamodule(
        chat_tokenizer, sources(files)[:1], chat_template=CHATML_TAGGED
    )  # tags need no prefixes


def test_a_tokenizer_without_template_needs_one(chat_tokenizer, files, tmp_path):
    tok = PreTrainedTokenizerFast.from_pretrained(chat_tokenizer)
    tok.chat_template = None
    tok.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(LitLoraError, match="has no chat template: set data.chat_template"):
        datamodule(tmp_path, sources(files)[:1])
    dm = datamodule(tmp_path, sources(files)[:1], chat_template="plain")
    row = dm.splits["train"][0]
    text = decode(dm, [t for t in row["labels"] if t != -100])
    assert re.fullmatch(r" It is \d+\.<\|im_end\|>", text)


def test_the_tiny_config_data_builds_with_the_tiny_decoder_tokenizer(tiny_llama):
    """The tiny config's sources (the shipped example files) under the tiny decoder's template."""
    init = yaml.safe_load((REPO / "configs" / "multidomain_sft_tiny.yaml").read_text())["data"]["init_args"]
    srcs = [ChatSource(**{**s, "path": str(REPO / s["path"])}) for s in init.pop("sources")]
    dm = datamodule(tiny_llama, srcs, **init)
    assert len(dm.splits["train"]) == init["num_train_samples"]
    assert Counter(dm.splits["train"]["source"]) == {0: 80, 1: 40, 2: 40, 3: 40}
    assert {name: s["dropped"] for name, s in dm.source_stats.items()} == dict.fromkeys(dm.source_stats, 0)
    for row in dm.splits["validation"]:
        replies = REPLY.findall(decode(dm, row["input_ids"]))
        assert [decode(dm, run) for run in label_runs(row["labels"])] == replies and replies


def test_predict_prompts_become_user_turns_with_the_generation_prompt(chat_tokenizer, files, tmp_path):
    (tmp_path / "prompts.txt").write_text("What is 2 plus 2?\nSay hello.\n")
    dm = ChatSFTDataModule(
        sources(files), tokenizer_name=str(chat_tokenizer), predict_file=str(tmp_path / "prompts.txt")
    )
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["prompt"][1] == "<|im_start|>user\nSay hello.<|im_end|>\n<|im_start|>assistant\n"
    ids = batch["prompt_input_ids"][1][batch["prompt_attention_mask"][1].bool()].tolist()
    assert decode(dm, ids) == batch["prompt"][1]  # no extra BOS, left-padded for generation
    assert batch["prompt_attention_mask"][1, 0] == 0 and batch["prompt_attention_mask"][1, -1] == 1


def test_lora_sft_on_the_tiny_decoder_lowers_the_assistant_loss(tiny_llama, files, tmp_path):
    data = ChatSFTDataModule(sources(files), tokenizer_name=str(tiny_llama), max_length=128, batch_size=8)
    model = CausalLM(str(tiny_llama), adapter=LoraSpec(r=4, alpha=8, dropout=0.0), learning_rate=1e-2)
    # validate, then fit, with the same module: metric states reset under inference mode must not break fit.
    fit = trainer(tmp_path, max_steps=8, limit_val_batches=1.0, val_check_interval=4)
    before = fit.validate(model, data, verbose=False)[0]["val/loss"]
    fit.fit(model, data)
    after = fit.validate(model, data, verbose=False)[0]["val/loss"]
    assert math.isfinite(before) and after < before - 0.05
