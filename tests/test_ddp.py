"""Two CPU processes over gloo, through the command line: the numbers equal a one-process run's.

Each test launches ``python -m lit_lora ... --trainer.devices 2`` (Lightning re-executes the command for
the second rank) with a free port and a timeout, then checks the ranks against each other and against
an evaluation in this process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_lora import AdaLoraSpec
from lit_lora.models.lm.varlen_attention import VARLEN_SDPA
from tests.helpers import REPO, classifier, sst2, trainer
from tests.helpers.launch import free_port, rank_env

DDP = ["--config", "configs/extras/ddp.yaml", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
PROBE = ["--trainer.callbacks+=tests.helpers.dist_probe.RankDump", "--trainer.enable_progress_bar", "false"]


def run_two_ranks(*args: str, dump: Path, kill_at: int | None = None) -> subprocess.CompletedProcess:
    kill = {"LIT_LORA_KILL_AT_STEP": str(kill_at)} if kill_at is not None else {}
    env = rank_env(dump, free_port(), **kill)
    command = [sys.executable, "-m", "lit_lora", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def rank_dumps(directory: Path) -> list[dict]:
    return [torch.load(directory / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def assert_ranks_hold_the_same_weights(dumps: list[dict]) -> None:
    first, second = (d["trained"] for d in dumps)
    assert first and first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)


@pytest.mark.slow  # two processes, MiniLM on real SST-2 rows
def test_ddp_fit_validate_and_predict_match_one_process(minilm, tmp_path):
    shared = REPO.parent / "shared" / "data" / "sst2"
    if not shared.is_dir():
        pytest.skip(f"{shared} is absent")
    common = [
        "--model.model_name_or_path", str(minilm), "--data.data_dir", str(shared),
        "--data.max_length", "64", "--data.max_eval_samples", "150", "--data.batch_size", "16",
    ]  # fmt: skip
    fit = run_two_ranks(
        "fit", "--config", "configs/sst2_lora.yaml", *DDP, *PROBE, *common,
        "--data.max_train_samples", "192", "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", str(tmp_path / "fit"), dump=tmp_path / "ranks",
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert_ranks_hold_the_same_weights(rank_dumps(tmp_path / "ranks"))
    run = tmp_path / "fit" / "lightning_logs" / "version_0"
    record = json.loads((run / "results.json").read_text())
    assert record["num_devices"] == 2 and record["train_samples"] == 192

    # The same adapter scored in one process: every validation row counted once, so equal exactly.
    model = classifier(minilm, adapter_path=str(run / "adapter"))
    data = sst2(minilm, shared, max_length=64, max_eval_samples=150, batch_size=16)
    one = trainer(tmp_path / "one", limit_val_batches=None).validate(model, data, verbose=False)[0]
    assert record["metrics"]["val/acc"] == one["val/acc"]
    assert record["metrics"]["val/loss"] == pytest.approx(one["val/loss"], rel=1e-5)

    predict = run_two_ranks(
        "predict", "--config", "configs/sst2_lora.yaml", *DDP, *common, "--data.test_split", "validation",
        "--data.max_eval_samples", "37",  # an odd count: the ranks hold different numbers of rows
        "--model.adapter_path", str(run / "adapter"), "--trainer.default_root_dir", str(tmp_path / "predict"),
        dump=tmp_path / "unused",
    )  # fmt: skip
    assert predict.returncode == 0, predict.stderr[-3000:]
    lines = (
        (tmp_path / "predict" / "lightning_logs" / "version_0" / "predictions.jsonl").read_text().splitlines()
    )
    ddp_rows = [json.loads(line) for line in lines]
    data = sst2(minilm, shared, max_length=64, max_eval_samples=37, batch_size=16)
    expected = [row for batch in trainer(tmp_path / "p").predict(model, data) for row in batch]
    assert [r["label"] for r in ddp_rows] == [r["label"] for r in expected]
    assert [r["confidence"] for r in ddp_rows] == pytest.approx([r["confidence"] for r in expected], abs=1e-5)


@pytest.mark.slow  # two processes
def test_adalora_under_ddp_allocates_the_same_ranks_on_every_rank(tiny_bert, tiny_sst2, tmp_path):
    fit = run_two_ranks(
        "fit", "--config", "configs/sst2_adalora.yaml", *DDP, *PROBE,
        "--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2),
        "--data.batch_size", "8", "--data.max_length", "32", "--trainer.max_epochs", "3",
        "--trainer.limit_val_batches", "0", "--trainer.default_root_dir", str(tmp_path / "fit"),
        dump=tmp_path / "ranks",
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    dumps = rank_dumps(tmp_path / "ranks")
    assert_ranks_hold_the_same_weights(dumps)
    patterns = [d["rank_pattern"] for d in dumps]
    assert patterns[0] == patterns[1] and patterns[0]
    spec = AdaLoraSpec()
    budget = sum(sum(mask) for mask in patterns[0].values())
    assert budget == spec.target_r * len(patterns[0])  # 8 x adapted modules, reached on both ranks
    assert {len(mask) for mask in patterns[0].values()} == {spec.init_r}


@pytest.mark.slow  # three two-process fits
def test_ddp_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(tiny_bert, tiny_sst2, tmp_path):
    # 36 rows in length-grouped batches of 8: 5 batches an epoch, so rank 0 trains 8, 8 and 4 rows and
    # rank 1 8, 8 and a repeat of batch 0 that evens out the ranks. Their batches differ in shape, so
    # LoRA dropout leaves their RNGs in different states. 3 steps an epoch, a checkpoint every 2; killed
    # after step 5, the run leaves step 4's (mid epoch 1), where the ranks' counts differ (28 and 32 rows).
    common = [
        "fit", "--config", "configs/sst2_lora.yaml", *DDP, *PROBE,
        "--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2),
        "--data.max_train_samples", "36", "--data.batch_size", "8", "--data.max_length", "32",
        "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps", "2", "--trainer.callbacks.save_last", "true",
    ]  # fmt: skip

    def fit(name: str, *extra: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
        return run_two_ranks(
            *common, "--trainer.callbacks.dirpath", str(tmp_path / name / "checkpoints"),
            "--trainer.default_root_dir", str(tmp_path / name), *extra, dump=tmp_path / name / "ranks",
            kill_at=kill_at,
        )  # fmt: skip

    killed = fit("a", "--trainer.callbacks+=tests.helpers.dist_probe.KillAtStep", kill_at=5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    resumed = fit("a", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = fit("b")
    assert straight.returncode == 0, straight.stderr[-3000:]

    expected, got = rank_dumps(tmp_path / "b" / "ranks"), rank_dumps(tmp_path / "a" / "ranks")
    assert_ranks_hold_the_same_weights(got)
    for name, tensor in expected[0]["trained"].items():
        torch.testing.assert_close(got[0]["trained"][name], tensor, rtol=0, atol=1e-6, msg=name)
    records = [
        json.loads(next((tmp_path / run / "lightning_logs").glob("version_*/results.json")).read_text())
        for run in ("a", "b")
    ]
    for record in records:  # 2 epochs of 36 rows, and of 8 repeated ones
        assert (record["global_steps"], record["train_samples"], record["train_padding_samples"]) == (
            6,
            72,
            16,
        )


@pytest.mark.slow  # two two-process fits
def test_ddp_packed_low_memory_fit_trains_as_padded(tiny_llama, tmp_path):
    """Padding-free batches (data.packing auto) under DDP, with low_memory.yaml's checkpointing, chunked
    loss and host-memory trimming: each sequence attends alone on both ranks, and the epoch's loss is the
    padded run's."""
    shared = REPO.parent / "shared" / "data" / "gsm8k"
    if not shared.is_dir():
        pytest.skip(f"{shared} is absent")
    common = [
        "fit", "--config", "configs/gsm8k_smollm2.yaml", "--config", "configs/extras/low_memory.yaml",
        *DDP, *PROBE, "--model.model_name_or_path", str(tiny_llama), "--data.tokenizer_name", str(tiny_llama),
        "--data.data_dir", str(shared), "--data.max_train_samples", "16", "--data.batch_size", "4",
        "--model.adapter.dropout", "0", "--model.generate_in_eval", "false",
        "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
    ]  # fmt: skip
    losses, attention = {}, {}
    for name, packing in (("packed", "auto"), ("padded", "false")):  # auto, the default, packs a llama
        run = run_two_ranks(
            *common, f"--data.packing={packing}", "--trainer.default_root_dir", str(tmp_path / name),
            dump=tmp_path / name / "ranks",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        assert "trim_host_memory=true has no effect" not in run.stderr
        dumps = rank_dumps(tmp_path / name / "ranks")
        assert_ranks_hold_the_same_weights(dumps)
        attention[name] = {d["attention"] for d in dumps}
        record = json.loads((tmp_path / name / "lightning_logs" / "version_0" / "results.json").read_text())
        assert record["num_devices"] == 2 and record["train_samples"] == 16
        assert record["train_batches"] == name
        losses[name] = record["metrics"]["train/loss"]
    assert attention == {"packed": {VARLEN_SDPA}, "padded": {"sdpa"}}
    assert losses["packed"] == pytest.approx(losses["padded"], rel=1e-5)
