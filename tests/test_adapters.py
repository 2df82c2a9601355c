"""Adapter construction: exact trainable-parameter counts, heads kept trainable, quantisation real."""

from __future__ import annotations

import pytest
import torch
import yaml
from peft.tuners.lora import Linear as LoraLinear

from lit_lora import AdaLoraSpec, LitLoraError, LoraSpec, Quantization
from tests.helpers import REPO, TINY, classifier

H, FFN, LAYERS = TINY["hidden_size"], TINY["intermediate_size"], TINY["num_hidden_layers"]
HEAD = H * 2 + 2  # classifier: Linear(H, 2)
POOLER = H * H + H  # pooler.dense: Linear(H, H)


def lora_params(d_in: int, d_out: int, r: int) -> int:
    return r * (d_in + d_out)


def test_lora_trainable_count_is_exact(tiny_bert):
    module = classifier(tiny_bert, LoraSpec(r=4, target_modules=["query", "value"]), num_labels=2)
    expected = LAYERS * 2 * lora_params(H, H, 4) + HEAD + POOLER
    assert module.parameter_counts()["trainable"] == expected
    trainable = [n for n, p in module.peft_model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("pooler" in n for n in trainable) and any("classifier" in n for n in trainable)


def test_manual_ranks_config_gives_exact_count(tiny_bert):
    config = yaml.safe_load((REPO / "configs" / "sst2_manual_ranks.yaml").read_text())
    spec = LoraSpec(**config["model"]["init_args"]["adapter"]["init_args"])
    module = classifier(tiny_bert, spec, num_labels=2)
    attention = 4 * lora_params(H, H, 6)  # query, key, value, attention.output.dense
    ffn = lora_params(H, FFN, 10) + lora_params(FFN, H, 10)  # intermediate.dense, output.dense
    assert module.parameter_counts()["trainable"] == LAYERS * (attention + ffn) + HEAD + POOLER
    ranks = {n: m.r["default"] for n, m in module.peft_model.named_modules() if isinstance(m, LoraLinear)}
    assert ranks["base_model.model.bert.encoder.layer.0.attention.output.dense"] == 6
    assert ranks["base_model.model.bert.encoder.layer.0.output.dense"] == 10
    assert ranks["base_model.model.bert.encoder.layer.1.intermediate.dense"] == 10


def test_rslora_changes_scaling(tiny_bert):
    plain = classifier(tiny_bert, LoraSpec(r=4, alpha=8), num_labels=2).peft_model
    stable = classifier(tiny_bert, LoraSpec(r=4, alpha=8, use_rslora=True), num_labels=2).peft_model
    layer = "base_model.model.bert.encoder.layer.0.attention.self.query"
    assert plain.get_submodule(layer).scaling["default"] == pytest.approx(2.0)
    assert stable.get_submodule(layer).scaling["default"] == pytest.approx(4.0)


@pytest.mark.parametrize("mode", ["nf4", "fp4"])
def test_4bit_quantises_backbone_but_not_heads(tiny_bert, mode):
    import bitsandbytes as bnb

    module = classifier(tiny_bert, LoraSpec(r=4), num_labels=2, quantization=Quantization(mode=mode))
    model = module.peft_model
    query = model.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.query").base_layer
    assert isinstance(query, bnb.nn.Linear4bit)
    assert query.weight.dtype == torch.uint8 and query.weight.quant_type == mode
    assert query.weight.numel() == H * H // 2  # two 4-bit values per byte
    for head in ("classifier", "bert.pooler.dense"):
        wrapped = model.get_submodule(f"base_model.model.{head}")
        assert not any(isinstance(m, bnb.nn.Linear4bit) for m in wrapped.modules()), head


def test_int8_quantises_backbone(tiny_bert):
    import bitsandbytes as bnb

    module = classifier(tiny_bert, LoraSpec(r=4), num_labels=2, quantization=Quantization(mode="int8"))
    key = module.peft_model.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.key")
    assert isinstance(key, bnb.nn.Linear8bitLt) and key.weight.dtype == torch.int8


def test_device_without_kernel_is_one_clear_error(monkeypatch):
    import bitsandbytes.functional

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("no kernel")

    monkeypatch.setattr(bitsandbytes.functional, "quantize_4bit", no_kernel)
    with pytest.raises(LitLoraError, match="mode=fp4 is not supported on device 'cpu' by bitsandbytes"):
        Quantization(mode="fp4").check_supported(torch.device("cpu"))


def test_missing_bitsandbytes_is_one_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else real(name)
    )
    with pytest.raises(LitLoraError, match=r"mode=int8 needs bitsandbytes: pip install 'lit_lora\[quant\]'"):
        Quantization(mode="int8").check_supported(torch.device("cpu"))


def test_adalora_rejects_impossible_budget(tiny_bert):
    with pytest.raises(LitLoraError, match="target_r=16 exceeds model.adapter.init_r=8"):
        AdaLoraSpec(init_r=8, target_r=16).to_peft_config("SEQ_CLS", [], 100)
    with pytest.raises(LitLoraError, match="leaves no budgeting phase in 10 optimizer steps"):
        AdaLoraSpec(tinit=5, tfinal=5).to_peft_config("SEQ_CLS", [], 10)


def test_adalora_phases_scale_with_steps():
    config = AdaLoraSpec(tinit=0.1, tfinal=0.2).to_peft_config("SEQ_CLS", [], 200)
    assert (config.tinit, config.tfinal, config.total_step) == (20, 40, 200)
