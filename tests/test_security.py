"""Security defaults: no hub code runs unless asked, checkpoints load with weights_only."""

from __future__ import annotations

import json

import pytest

from lit_lora import LitLoraError
from tests.helpers import classifier


def test_model_code_shipped_with_a_checkpoint_is_not_run_unless_asked(tiny_bert, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (model / name).symlink_to(tiny_bert / name)
    config = json.loads((tiny_bert / "config.json").read_text())
    config.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig"})
    (model / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (model / "configuration_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(LitLoraError, match=r"ships its own Python code.*model.trust_remote_code: true"):
        classifier(model, num_labels=2).configure_model()
    assert not marker.exists()
