"""Exact resume: a run killed mid-epoch and resumed from its last checkpoint ends where an
uninterrupted run ends (same batches, same dropout masks, same optimizer and allocator state)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch

from lit_lora import LitLoraError
from lit_lora.callbacks.results import ResultsRecorder
from lit_lora.models import SequenceClassifier
from lit_lora.models.engine.checkpoint import take_own_rank_state
from tests.helpers import REPO
from tests.helpers.resume_probe import fit_case


def trained(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.peft_model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def straight_fit(tiny_bert, tiny_sst2, tmp_path_factory) -> Callable[[str], SequenceClassifier]:
    """The uninterrupted fit of a method, run once per module: both of LoRA's kill points compare to it."""
    fits: dict[str, SequenceClassifier] = {}

    def straight(method: str) -> SequenceClassifier:
        if method not in fits:
            root = tmp_path_factory.mktemp(f"straight_{method}")
            fits[method] = fit_case(method, tiny_bert, tiny_sst2, root)
        return fits[method]

    return straight


@pytest.mark.parametrize(
    ("method", "kill_at", "every_epoch"),
    [("lora", 3, False), ("adalora", 3, False), ("qlora", 3, False), ("lora", 7, False), ("lora", 7, True)],
    ids=str,
)
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    method, kill_at, every_epoch, tiny_bert, tiny_sst2, tmp_path, straight_fit
):
    # 96 rows in batches of 8, 2 batches per optimizer step: 6 steps an epoch, a checkpoint every 2.
    # Killed after step 3 (batch 6 of 12), the run leaves its step-2 checkpoint; resuming must start at
    # batch 5 of epoch 0. Killed after step 7, it leaves step 6's, saved after epoch 0's last batch
    # (every 2 steps) or at its end (once an epoch, as ModelCheckpoint saves by default); resuming must
    # train all of epoch 1 with the dropout masks of the uninterrupted run.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tests.helpers.resume_probe", method, str(tiny_bert), str(tiny_sst2)]
    killed = subprocess.run(
        [*command, str(tmp_path / "a"), str(kill_at), *(["every_epoch"] if every_epoch else [])],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    saved_step = kill_at - 1
    saved = torch.load(last, weights_only=True)  # plain tensors and containers
    assert saved["global_step"] == saved_step
    # Saved in on_train_epoch_end: epoch 0 processed, not yet completed (Lightning resumes it apart).
    epochs = saved["loops"]["fit_loop"]["epoch_progress"]["total"]
    assert (epochs["processed"], epochs["completed"]) == ((1, 0) if every_epoch else (0, 0))

    resumed = fit_case(
        method, tiny_bert, tiny_sst2, tmp_path / "a", ckpt_path=str(last), every_epoch=every_epoch
    )
    straight = straight_fit(method)
    assert resumed.trainer.global_step == straight.trainer.global_step == 12
    expected, got = trained(straight), trained(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    if method == "adalora":
        config = straight.peft_model.peft_config["default"]
        assert resumed.peft_model.peft_config["default"].rank_pattern == config.rank_pattern


def checkpoint_of_ranks(*ranks: str) -> dict:
    """A checkpoint as rank zero writes it: its own loader position where Lightning reads it."""
    states = [{"rng_states": {"torch": f"rng{r}"}, "train_loader": [{"at": r}]} for r in ranks]
    return {"rank_states": states, "loops": {"fit_loop": {"state_dict": {"combined_loader": [{"at": "0"}]}}}}


def on_rank(monkeypatch, world: int, rank: int) -> None:
    monkeypatch.setattr("lit_lora.runtime.ranks.world", lambda: (world, rank))


def test_each_rank_resumes_its_own_rng_loader_position_and_sample_counts(monkeypatch):
    on_rank(monkeypatch, 2, 1)
    checkpoint = checkpoint_of_ranks("0", "1")
    assert take_own_rank_state(checkpoint) == {"torch": "rng1"}
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"at": "1"}]
    recorder = ResultsRecorder()
    recorder.load_state_dict({"train_seconds": 1.0, "samples": [(28, 0), (24, 8)]})
    recorder.on_train_start(None, None)
    assert (recorder._samples, recorder._padding_samples) == (24, 8)


def test_resuming_with_another_number_of_ranks_is_refused(monkeypatch):
    on_rank(monkeypatch, 1, 0)
    with pytest.raises(LitLoraError, match=r"state for 2 rank\(s\).*this run has 1: resume with the same"):
        take_own_rank_state(checkpoint_of_ranks("0", "1"))
    recorder = ResultsRecorder()
    recorder.load_state_dict({"train_seconds": 1.0, "samples": [(28, 0), (24, 8)]})
    with pytest.raises(LitLoraError, match=r"training-sample counts for 2 rank\(s\)"):
        recorder.on_train_start(None, None)


def test_a_checkpoint_from_before_per_rank_state_resumes_in_one_process_only(monkeypatch):
    legacy = {"rng_states": {"torch": "rng0"}, "loops": {"fit_loop": {"state_dict": {"combined_loader": []}}}}
    on_rank(monkeypatch, 1, 0)
    assert take_own_rank_state(dict(legacy)) == {"torch": "rng0"}
    recorder = ResultsRecorder()
    recorder.load_state_dict({"train_seconds": 1.0, "samples": 40})
    recorder.on_train_start(None, None)
    assert (recorder._samples, recorder._padding_samples) == (40, 0)
    on_rank(monkeypatch, 2, 0)  # rank zero's RNG and count only: not every rank's
    with pytest.raises(LitLoraError, match=r"for 1 rank\(s\) \(one if saved before"):
        take_own_rank_state(dict(legacy))


@pytest.mark.slow  # three CLI fits in subprocesses
def test_ckpt_path_last_resumes_the_newest_last_checkpoint_of_an_earlier_version(
    tiny_bert, tiny_sst2, tmp_path
):
    # Each CLI run claims a new version_N; Lightning looked for "last" only in that new, empty folder's
    # checkpoints/ and trained from scratch. Killed after step 4 (checkpoints every 3 steps), resumed
    # with --ckpt_path last, the run must end where 12 straight steps end.
    from safetensors.torch import load_file

    def fit(root: str, *extra: str, env: dict[str, str] | None = None) -> None:
        command = [
            sys.executable, "-m", "lit_lora", "fit", "--config", "configs/sst2_lora.yaml",
            "--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2),
            "--data.batch_size", "16", "--trainer.limit_val_batches", "0", "--trainer.max_epochs", "2",
            "--trainer.default_root_dir", str(tmp_path / root),
            "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.save_last", "true", "--trainer.callbacks.every_n_train_steps", "3", *extra,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == (-signal.SIGKILL if "LIT_LORA_KILL_AT_STEP" in env else 0), done.stderr
        if "--ckpt_path" in extra:
            assert "Restoring states from the checkpoint path" in done.stderr + done.stdout

    fit("a", "--trainer.callbacks+=tests.helpers.dist_probe.KillAtStep", env={"LIT_LORA_KILL_AT_STEP": "4"})
    fit("a", "--ckpt_path", "last")
    fit("b")
    adapter = "lightning_logs/{}/adapter/adapter_model.safetensors"
    resumed = load_file(tmp_path / "a" / adapter.format("version_1"))
    straight = load_file(tmp_path / "b" / adapter.format("version_0"))
    assert resumed.keys() == straight.keys()
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    record = json.loads((tmp_path / "a/lightning_logs/version_1/results.json").read_text())
    assert record["train_samples"] == 2 * 96  # the checkpoint carries the killed run's first 3 steps
