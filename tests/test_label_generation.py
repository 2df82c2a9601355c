"""Classification as generation on the tiny decoder: label-word rows, choice scoring, metrics in a fit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from lit_lora.data import AGNewsGenerationDataModule, SST2GenerationDataModule
from lit_lora.errors import LitLoraError
from lit_lora.metrics.language_model import label_matches, token_nll
from lit_lora.models.causal_lm import label_replies
from lit_lora.models.lm.choice_scores import choice_scores
from tests.helpers import causal_lm, trainer

AG_ROWS = [
    ("Stocks rallied on Wall Street as oil prices fell.", "Business"),
    ("The team won the cup after a late goal.", "Sports"),
    ("A new chip doubles battery life of phones, the company said.", "Sci/Tech"),
    ("Leaders met in Geneva to discuss the ceasefire.", "World"),
] * 3
SST2_ROWS = [("a warm , funny film", 1), ("dull and far too long", 0), ("the cast is great", 1)] * 3


def write_tsv(directory: Path, header: str, rows: list[tuple[str, object]], splits: tuple[str, ...]) -> Path:
    directory.mkdir()
    for split in splits:
        lines = [header, *(f"{text}\t{label}" for text, label in rows)]
        (directory / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="module")
def ag_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """AG News-shaped files with label names, as the shared copy has them (Sci/Tech included)."""
    return write_tsv(tmp_path_factory.mktemp("ag") / "ag_news", "text\tlabel", AG_ROWS, ("train", "test"))


@pytest.fixture(scope="module")
def sst2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SST-2-shaped files with label ids."""
    return write_tsv(tmp_path_factory.mktemp("sst") / "sst2", "sentence\tlabel", SST2_ROWS, ("train", "dev"))


def ag_news(model: Path, data: Path, **kwargs) -> AGNewsGenerationDataModule:
    kwargs.setdefault("batch_size", 4)
    return AGNewsGenerationDataModule(
        tokenizer_name=str(model), data_dir=str(data), test_split="test", **kwargs
    )


def test_only_the_label_word_and_eos_are_trained_and_choices_are_the_label_words(tiny_llama, ag_dir):
    data = ag_news(tiny_llama, ag_dir)
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    tokenizer, words = data.tokenizer, ("World", "Sports", "Business", "Technology")
    gold = {text: label.replace("Sci/Tech", "Technology") for text, label in AG_ROWS}
    for ids, labels, prompt_ids, prompt, reference, label, choices in zip(
        batch["input_ids"], batch["labels"], batch["prompt_input_ids"], batch["prompt"], batch["reference"],
        batch["label"], batch["label_choices"], strict=True,
    ):  # fmt: skip
        text = next(t for t in gold if t in prompt)
        assert reference == gold[text] == words[label]
        trained = labels != -100
        assert tokenizer.decode(ids[trained]) == f"{reference}<|endoftext|>"
        assert torch.equal(ids[trained], labels[trained])
        # The trained tokens are the row's last real ones, right after the prompt.
        assert trained.nonzero().min() == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert prompt.startswith("<|im_start|>user\nClassify the topic") and prompt.endswith("assistant\n")
        assert prompt_ids[-1] != tokenizer.pad_token_id  # left padding: prompts end together
        assert [tokenizer.decode(c) for c in choices] == list(words)


def test_id_labels_with_the_plain_template_reply_after_a_space(tiny_llama, sst2_dir):
    data = SST2GenerationDataModule(
        tokenizer_name=str(tiny_llama), data_dir=str(sst2_dir), chat_template="plain"
    )
    data.setup("validate")
    row = data.splits["validation"][0]
    tokenizer = data.tokenizer
    assert row["reference"] == "positive" and row["label"] == 1
    assert [tokenizer.decode(c) for c in row["label_choices"]] == [" negative", " positive"]
    trained = [t for t in row["labels"] if t != -100]
    assert tokenizer.decode(trained) == " positive<|endoftext|>"
    assert row["prompt"].startswith("User: Classify the sentiment") and row["prompt"].endswith("Assistant:")


def test_an_unknown_label_name_is_a_one_line_error(tiny_llama, tmp_path):
    data_dir = write_tsv(tmp_path / "bad", "text\tlabel", [("Some news.", "Weather")], ("train", "test"))
    with pytest.raises(
        LitLoraError, match=r"unknown label 'Weather' in column 'label'; allowed: \["
    ) as error:
        ag_news(tiny_llama, data_dir).setup("test")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("decoder", ["tiny_llama", "tiny_gpt2"])
def test_choice_scores_equal_a_direct_log_likelihood_on_unpadded_rows(decoder, ag_dir, request):
    model_dir = request.getfixturevalue(decoder)
    data = ag_news(model_dir, ag_dir)
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    assert (batch["prompt_attention_mask"] == 0).any()  # the batch has left padding to get right
    lengths = {len(choice) for row in batch["label_choices"] for choice in row}
    assert max(lengths) > 1 and len(lengths) > 1  # multi-token choices of different lengths share the cache
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        scores = choice_scores(
            model, batch["prompt_input_ids"], batch["prompt_attention_mask"], batch["label_choices"], 0
        )
        for row in range(scores.shape[0]):
            prompt = batch["prompt_input_ids"][row][batch["prompt_attention_mask"][row].bool()].tolist()
            direct = []
            for choice in batch["label_choices"][row]:
                logits = model(torch.tensor([prompt + choice])).logits[0]
                log_probs = F.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
                direct.append(log_probs.gather(-1, torch.tensor(choice)[:, None]).sum())
            assert torch.allclose(scores[row], torch.stack(direct), atol=1e-4)
            assert scores[row].argmax() == torch.stack(direct).argmax()


def test_one_pass_over_the_prompts_gives_the_loss_and_accuracy_of_separate_passes(tiny_llama, ag_dir):
    """Label batches are scored from one shared prompt pass; the reply's loss must equal a full forward's."""
    data = ag_news(tiny_llama, ag_dir, batch_size=6)
    data.setup("test")
    batch = next(iter(data.test_dataloader()))
    model = causal_lm(tiny_llama)
    model.configure_model()
    torch.manual_seed(0)
    for name, parameter in model.peft_model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter, not the identity it starts as
            parameter.data.normal_(0.0, 0.1)
    model.eval()
    assert label_replies(batch["labels"], batch["label"], batch["label_choices"]) is not None
    with torch.no_grad():
        model._eval_step(batch, "test")
        nll, tokens = token_nll(model(batch).logits, batch["labels"])
        prompt_ids, prompt_mask = batch["prompt_input_ids"], batch["prompt_attention_mask"]
        scores = choice_scores(model.peft_model, prompt_ids, prompt_mask, batch["label_choices"], 0)
    metrics = model.stage_metrics["test"]
    assert int(metrics["nll"].tokens) == int(tokens)
    assert torch.allclose(metrics["nll"].nll, nll, rtol=1e-5)
    expected = (scores.argmax(dim=1) == batch["label"]).float().mean()
    assert torch.isclose(metrics["acc"].compute(), expected)
    # A gold reply that is not a choice + EOS is scored by its own forward instead.
    mangled = batch["labels"].clone()
    first_reply_token = (mangled[0] != -100).nonzero()[0, 0]
    mangled[0, first_reply_token] += 1
    assert label_replies(mangled, batch["label"], batch["label_choices"]) is None


def test_generated_labels_match_on_their_first_line_or_word():
    assert label_matches(" Sports.\nThe team won.", "Sports")
    assert label_matches("technology is the topic", "Technology")
    assert not label_matches("The topic is Sports", "Sports")
    assert not label_matches("", "World")


def test_fit_then_validate_and_test_log_accuracy_and_exact_match(tiny_llama, ag_dir, tmp_path):
    L.seed_everything(0)
    data = ag_news(tiny_llama, ag_dir, max_eval_samples=6)
    model = causal_lm(tiny_llama, max_new_tokens=64)
    run = trainer(tmp_path, max_steps=2, limit_val_batches=None)
    run.fit(model, data)
    # Pinned on torch 2.13 CPU: accuracy scores the likeliest label word, exact match the generated text.
    expected = {"val": {"acc": 0.0, "ppl": 491.393}, "test": {"acc": pytest.approx(1 / 3), "ppl": 530.717}}
    for stage, results in (("val", run.validate(model, data)[0]), ("test", run.test(model, data)[0])):
        assert results[f"{stage}/acc"] == expected[stage]["acc"]
        assert results[f"{stage}/exact_match"] == 0.0  # two steps do not teach it to generate the label
        assert results[f"{stage}/ppl"] == pytest.approx(expected[stage]["ppl"], rel=1e-4)
