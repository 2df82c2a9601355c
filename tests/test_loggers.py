"""Loggers: CSV always on in a claimed folder; W&B goes offline by itself, starts by itself under a sweep
agent and receives the config and results; no secret from the environment is written."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightning.pytorch.utilities import rank_zero_only

from lit_lora.cli import build_cli
from lit_lora.runtime.loggers import ClaimedCSVLogger, claim_version, wandb_reachable
from lit_lora.sweep.spec import param_args
from tests.helpers import REPO
from tests.helpers.cli import run_cli
from tests.helpers.trackers import csv_series


def test_wandb_is_unreachable_without_key_or_server(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    monkeypatch.setenv("HOME", "/nonexistent")
    assert not wandb_reachable()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    assert not wandb_reachable(timeout_s=0.5)


def test_fit_with_wandb_and_no_key_leaves_an_offline_run(tiny_bert, tiny_sst2, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc key either
    extras = yaml.safe_load((REPO / "configs" / "extras" / "wandb.yaml").read_text())
    extras["trainer"]["logger"][0]["init_args"]["save_dir"] = str(tmp_path / "wb")
    (tmp_path / "wandb.yaml").write_text(yaml.safe_dump(extras))
    result = run_cli(
        "fit", "--config", "configs/sst2_lora.yaml", "--config", str(tmp_path / "wandb.yaml"),
        "--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2),
        "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "out" / "lightning_logs" / "version_0"
    assert (run / "metrics.csv").is_file() and json.loads((run / "results.json").read_text())[
        "stage"
    ] == "fit"
    (offline,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    (log,) = offline.glob("*.wandb")
    content = log.read_bytes()
    for key in (b"metrics/val/acc", b"parameters/trainable", b"peak_memory_mb", b"model_name_or_path"):
        assert key in content, key  # summary and config reached the W&B run


def test_concurrent_claims_get_distinct_version_folders(tmp_path):
    barrier = threading.Barrier(8)
    versions: list[int] = []

    def claim() -> None:
        barrier.wait()  # all eight list the (empty) folder at the same moment
        versions.append(claim_version(tmp_path / "lightning_logs"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == list(range(8))
    assert sorted(p.name for p in (tmp_path / "lightning_logs").iterdir()) == [
        f"version_{v}" for v in range(8)
    ]


def test_two_cli_runs_on_one_root_get_different_run_directories(tmp_path):
    args = ["--config", "configs/sst2_lora.yaml", "--trainer.default_root_dir", str(tmp_path)]
    # Both runs pick their directory before either writes to it, as two processes started together do.
    first, second = (build_cli(args, run=False).trainer for _ in range(2))
    assert isinstance(first.loggers[0], ClaimedCSVLogger)
    assert (first.log_dir, second.log_dir) == tuple(
        str(tmp_path / "lightning_logs" / f"version_{v}") for v in (0, 1)
    )


def test_other_ranks_claim_no_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    assert ClaimedCSVLogger(save_dir=tmp_path).version == 0  # a placeholder; Trainer.log_dir uses rank 0's
    assert not (tmp_path / "lightning_logs").exists()


# ---- runs started by `wandb agent` ----------------------------------------------------------------

SECRETS = {
    "WANDB_API_KEY": "fakewandbkey" + "0" * 28,
    "HF_TOKEN": "hf_fakeTokenFromTheEnvironment01",
    "HUGGING_FACE_HUB_TOKEN": "hf_fakeLegacyTokenFromTheEnv02",
}
SWEEP_PARAMS = {"model.adapter": "{r: 4, alpha: 8}", "seed_everything": 3}


@pytest.fixture(scope="module")
def agent_run(tiny_bert, tiny_sst2, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A tiny fit started the way `wandb agent` starts a sweep's command, with secrets in the environment."""
    from wandb.sdk.lib import config_util

    tmp = tmp_path_factory.mktemp("agent")
    params_file = tmp / "wandb" / "sweep-fakesweep" / "config-fakerun1.yaml"  # what the agent writes
    config_util.save_config_file_from_dict(
        str(params_file), {k: {"value": v} for k, v in SWEEP_PARAMS.items()}
    )
    env = {
        **os.environ,
        **SECRETS,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp),
        "WANDB_MODE": "offline",
        "WANDB_SWEEP_ID": "fakesweep",
        "WANDB_RUN_ID": "fakerun1",
        "WANDB_SWEEP_PARAM_PATH": str(params_file),
    }
    env.pop("WANDB_DIR", None)
    command = [
        sys.executable, "-m", "lit_lora", "fit", "--config", "configs/sst2_lora.yaml",
        *param_args(SWEEP_PARAMS),  # ${args}, as the agent writes them
        "--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.default_root_dir", str(tmp / "out"),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "out", result


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline ``run-*.wandb`` file (a LevelDB-style log: 32 KiB blocks of
    chunks, each with a 7-byte header: crc, length, type 1=full, 2=first, 3=middle, 4=last)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, pending, records = path.read_bytes(), 7, b"", []  # 7: the ':W&B' file header
    while pos + 7 <= len(data):
        if (left := 32768 - pos % 32768) < 7:
            pos += left  # block trailer padding
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def test_a_sweep_agent_run_logs_to_wandb_by_itself(agent_run):
    out, _ = agent_run
    (offline,) = (out / "wandb").glob("offline-run-*-fakerun1")
    records = wandb_records(next(offline.glob("run-fakerun1.wandb")))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.sweep_id == "fakesweep"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert {k: config[k] for k in SWEEP_PARAMS} == SWEEP_PARAMS  # the sweep's parameters
    updates = [r.config for r in records if r.WhichOneof("record_type") == "config"]
    full = {item.key: json.loads(item.value_json) for update in updates for item in update.update}
    assert full["model"]["init_args"]["adapter"]["init_args"]["r"] == 4  # the whole run config too
    summary = {
        "/".join([item.key] if item.key else item.nested_key): json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for item in r.summary.update
    }
    record = json.loads((out / "lightning_logs" / "version_0" / "results.json").read_text())
    assert summary["val/acc"] == pytest.approx(record["metrics"]["val/acc"])  # the sweep's metric
    assert summary["metrics/val/acc"] == pytest.approx(record["metrics"]["val/acc"])


def test_a_sweep_agent_run_logs_every_metric_of_the_csv_logger_to_wandb(agent_run):
    out, _ = agent_run
    (offline,) = (out / "wandb").glob("offline-run-*-fakerun1")
    history: dict[str, list[tuple[int, float]]] = {}
    for r in wandb_records(next(offline.glob("run-fakerun1.wandb"))):
        if r.WhichOneof("record_type") == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item
            }
            for key, value in row.items():
                if not key.startswith("_") and key != "trainer/global_step":  # W&B's own and the step
                    history.setdefault(key, []).append((row["trainer/global_step"], value))
    expected = csv_series(out / "lightning_logs" / "version_0")
    assert {"params/trainable", "val/acc", "train/acc", "epoch"} <= set(expected)
    assert {k: sorted(v) for k, v in history.items()} == {k: sorted(v) for k, v in expected.items()}


def test_a_sweep_agent_run_keeps_the_adapter_as_a_wandb_artifact(agent_run):
    out, _ = agent_run
    (offline,) = (out / "wandb").glob("offline-run-*-fakerun1")
    records = wandb_records(next(offline.glob("run-fakerun1.wandb")))
    (artifact,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert (artifact.name, artifact.type) == ("adapter-fakerun1", "model")
    adapter = out / "lightning_logs" / "version_0" / "adapter"
    digests = {entry.path: entry.digest for entry in artifact.manifest.contents}
    assert digests == {  # every file of the saved PEFT folder, by content
        p.name: base64.b64encode(hashlib.md5(p.read_bytes()).digest()).decode() for p in adapter.iterdir()
    }
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(digests)


def test_no_secret_from_the_environment_is_written(agent_run):
    out, result = agent_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"config.yaml", "results.json", "metrics.csv"} <= {p.name for p in files}
    assert any(p.suffix == ".wandb" for p in files) and any(p.name.startswith("debug") for p in files)
    for name, secret in SECRETS.items():
        assert secret not in result.stdout + result.stderr, name
        for path in files:
            assert secret.encode() not in path.read_bytes(), (name, path)
