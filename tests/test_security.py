"""Security defaults: no hub code runs unless asked, checkpoints load with weights_only, and no output
folder replaces (deletes) anything lit_lora did not write."""

from __future__ import annotations

import json
import shutil

import pytest

from lit_lora import LitLoraError
from lit_lora.__main__ import main
from lit_lora.core.io import ADAPTER_EXPORT, OUTPUT_MARKER, atomic_directory
from tests.helpers import REPO, classifier

SWEEP = REPO / "sweeps" / "sst2_rank.yaml"


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


def test_an_adapter_export_replaces_only_an_earlier_export(tiny_bert, tmp_path, monkeypatch):
    module = classifier(tiny_bert, num_labels=2)
    module.configure_model()
    out = module.save_adapter(tmp_path / "run" / "adapter")
    assert json.loads((out / OUTPUT_MARKER).read_text())["kind"] == "adapter"
    module.save_adapter(out)  # exported again (the end of a resumed fit without a version folder)
    legacy = tmp_path / "legacy"  # exported before the marker existed: PEFT's files alone
    shutil.copytree(out, legacy)
    (legacy / OUTPUT_MARKER).unlink()
    module.save_adapter(legacy)
    assert (legacy / OUTPUT_MARKER).is_file()

    (tmp_path / "run" / "notes.txt").write_text("keep me")
    (legacy / "eval.txt").write_text("keep me too")
    for target, message in [
        (tmp_path / "run", "exists and is not a previous adapter written by lit_lora"),
        (legacy, "exists and is not a previous adapter"),  # a file the export did not write
        (tmp_path / "run" / "notes.txt", "exists and is not a folder"),
    ]:
        with pytest.raises(LitLoraError, match=message):
            module.save_adapter(target)
    monkeypatch.chdir(out)
    with pytest.raises(LitLoraError, match=r"^\.\.: is the working directory or a folder above it"):
        module.save_adapter("..")
    assert (tmp_path / "run" / "notes.txt").read_text() == "keep me" and (
        out / "adapter_config.json"
    ).is_file()
    assert (legacy / "eval.txt").read_text() == "keep me too"


def test_a_failed_export_leaves_the_earlier_one_in_place(tmp_path):
    out = tmp_path / "adapter"
    with atomic_directory(out, ADAPTER_EXPORT) as scratch:
        (scratch / "adapter_config.json").write_text("{}")
    with pytest.raises(RuntimeError), atomic_directory(out, ADAPTER_EXPORT) as scratch:
        (scratch / "adapter_config.json").write_text('{"half": ')
        raise RuntimeError("disk full")
    assert (out / "adapter_config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no scratch left behind


@pytest.mark.parametrize("command", ["report", "matrix", "sweep"])
def test_an_out_that_is_a_file_is_refused_in_one_line(command, tmp_path, capsys):
    (tmp_path / "spec.yaml").write_text("x")
    (tmp_path / "a_file").write_text("keep me")
    first = {"report": str(tmp_path), "matrix": str(tmp_path / "spec.yaml"), "sweep": str(SWEEP)}[command]
    with pytest.raises(SystemExit) as exit_info:
        main([command, first, "--out", str(tmp_path / "a_file"), *(["--dry-run"] * (command == "sweep"))])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err == f"lit_lora: error: --out {tmp_path / 'a_file'}: exists and is not a folder; choose a folder\n"
    )
    assert (tmp_path / "a_file").read_text() == "keep me"
