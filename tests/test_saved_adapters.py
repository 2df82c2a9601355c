"""Every method's saved adapter scores, through validate, test and predict, what its training run logged."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from lit_lora import AdaLoraSpec, LoraSpec, Quantization
from lit_lora.callbacks import AdapterExport
from tests.helpers import classifier, sst2, trainer

NF4 = Quantization(mode="nf4")
METHODS = {
    "lora": (LoraSpec(r=4, alpha=8, dropout=0.0), None),
    "qlora": (LoraSpec(r=4, alpha=8, dropout=0.0), NF4),
    "adalora": (AdaLoraSpec(init_r=6, target_r=3, tinit=1, tfinal=1, dropout=0.0), None),
    "qlora_adalora": (AdaLoraSpec(init_r=6, target_r=3, tinit=1, tfinal=1, dropout=0.0), NF4),
    "manual_ranks": (LoraSpec(r=4, alpha=8, dropout=0.0, rank_pattern={"attention.self.query": 2}), None),
}


@pytest.mark.parametrize("method", METHODS)
def test_saved_adapter_evaluates_like_the_training_run(method, tiny_bert, tiny_sst2, tmp_path):
    adapter, quantization = METHODS[method]
    L.seed_everything(0)
    module = classifier(tiny_bert, adapter=adapter, quantization=quantization, num_labels=2)
    run = trainer(tmp_path / "fit", max_steps=6, limit_val_batches=None, val_check_interval=6,
                  callbacks=[AdapterExport()])  # fmt: skip
    run.fit(module, sst2(tiny_bert, tiny_sst2))
    logged = {k: float(v) for k, v in run.callback_metrics.items() if k.startswith("val/")}
    assert {"val/acc", "val/f1", "val/loss"} <= logged.keys()

    saved = classifier(tiny_bert, quantization=quantization, adapter_path=str(tmp_path / "fit" / "adapter"))
    data = sst2(tiny_bert, tiny_sst2)  # test_split defaults to validation: the same rows
    validated = trainer(tmp_path / "v", limit_val_batches=None).validate(saved, data, verbose=False)[0]
    tested = trainer(tmp_path / "t").test(saved, data, verbose=False)[0]
    for name, value in logged.items():
        assert validated[name] == pytest.approx(value, abs=1e-6), name
        assert tested[name.replace("val/", "test/")] == pytest.approx(value, abs=1e-6), name
    rows = [row for batch in trainer(tmp_path / "p").predict(saved, data) for row in batch]
    labels = torch.tensor([row["label"] for row in rows])
    truth = torch.tensor(data.splits["validation"]["labels"])
    assert len(rows) == 32 and (labels == truth).float().mean().item() == pytest.approx(logged["val/acc"])


def test_a_saved_adapter_names_the_base_as_given_not_the_offline_copy(tmp_path):
    """A hub name resolved offline to the packaged MiniLM must not leave this machine's path behind."""
    from tests.helpers import minilm_path

    minilm_path()  # skips without the package
    module = classifier("sentence-transformers/all-MiniLM-L6-v2", num_labels=2)
    module.configure_model()
    module.method_hooks.save(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    # and it loads again from that name, offline
    adapter_path = str(tmp_path / "adapter")
    reloaded = classifier("sentence-transformers/all-MiniLM-L6-v2", adapter_path=adapter_path, num_labels=2)
    reloaded.configure_model()
    loaded_config = reloaded.peft_model.peft_config["default"]
    assert loaded_config.base_model_name_or_path == saved["base_model_name_or_path"]
