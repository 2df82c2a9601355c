"""The run record's training time and samples survive a resume: they cover every process of the fit."""

from __future__ import annotations

import json
import time

import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_lora.callbacks.results import ResultsRecorder
from tests.helpers import classifier, sst2
from tests.helpers.training import fit


def fit_recorded(root, model, data, max_epochs, ckpt_path=None, callbacks=()):
    module = classifier(model, num_labels=2)
    fit(module, sst2(model, data), root, max_epochs=max_epochs, ckpt_path=ckpt_path,
        callbacks=[ResultsRecorder(), *callbacks], enable_checkpointing=True)  # fmt: skip
    return module.trainer, json.loads((root / "results.json").read_text())


@pytest.mark.slow  # a fit checkpointing every step, then a resumed fit
def test_a_fit_resumed_at_an_epochs_last_batch_records_both_processes(tiny_bert, tiny_sst2, tmp_path):
    # Saved at the last batch, the resumed run goes straight to that epoch's end without an epoch start.
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_top_k=-1)
    first_run, first = fit_recorded(tmp_path / "a", tiny_bert, tiny_sst2, 1, callbacks=[saver])
    steps = first_run.global_step
    checkpoint = tmp_path / "ckpt" / f"epoch=0-step={steps}.ckpt"  # saved after the last batch

    began = time.perf_counter()
    run, record = fit_recorded(tmp_path / "b", tiny_bert, tiny_sst2, 2, ckpt_path=str(checkpoint))
    elapsed = time.perf_counter() - began
    assert run.global_step == 2 * steps
    assert record["train_samples"] == 2 * first["train_samples"]
    assert first["train_time_s"] < record["train_time_s"] < first["train_time_s"] + elapsed
