"""Two nodes of one CPU process each, simulated on localhost: the same run as one node with two processes.

Each node is its own ``python -m lit_lora fit --trainer.num_nodes 2 --trainer.devices 1`` with its
``NODE_RANK`` and one master address and port, as a launcher on two machines would start them
(Lightning's ``LightningEnvironment`` reads these variables). Each node gets its own output folder, as
machines without a shared filesystem would: rank 0 writes every file, so node 1's folder stays empty.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_lora.report.checks import device_label
from tests.helpers import REPO
from tests.helpers.launch import free_port, rank_env

PROBE = ["--trainer.callbacks+=tests.helpers.dist_probe.RankDump", "--trainer.enable_progress_bar", "false"]


def fit_args(tiny_bert: Path, tiny_sst2: Path, root: Path, *topology: str) -> list[str]:
    # 96 rows in batches of 8: 6 steps per rank, then 32 validation rows split over the ranks.
    return [
        sys.executable, "-m", "lit_lora", "fit", "--config", "configs/sst2_lora.yaml",
        "--config", "configs/extras/ddp.yaml", "--trainer.accelerator", "cpu", *topology, *PROBE,
        "--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2),
        "--data.batch_size", "8", "--data.max_length", "32", "--trainer.max_epochs", "1",
        "--trainer.default_root_dir", str(root),
    ]  # fmt: skip


def one_node_two_processes(tiny_bert: Path, tiny_sst2: Path, out: Path) -> subprocess.CompletedProcess:
    args = fit_args(tiny_bert, tiny_sst2, out / "fit", "--trainer.devices", "2")
    env = rank_env(out / "ranks", free_port())
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def two_nodes_one_process(tiny_bert: Path, tiny_sst2: Path, out: Path) -> list[tuple[int, str]]:
    """(exit status, stderr) of node 0 and node 1, started together against one master port."""
    port, topology = free_port(), ["--trainer.num_nodes", "2", "--trainer.devices", "1"]
    out.mkdir(parents=True, exist_ok=True)
    # stderr to files, not pipes: a node blocked on a full pipe nobody reads would stall the other's
    # collectives, and the test would wait on a hang of its own making.
    logs = [out / f"node{node}.stderr" for node in (0, 1)]
    with logs[0].open("w") as err0, logs[1].open("w") as err1:
        nodes = [
            subprocess.Popen(
                fit_args(tiny_bert, tiny_sst2, out / f"node{node}", *topology),
                cwd=REPO,
                env=rank_env(out / "ranks", port, NODE_RANK=str(node)),
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
            for node, err in ((0, err0), (1, err1))
        ]
        try:
            statuses = [node.wait(timeout=300) for node in nodes]
        finally:
            for node in nodes:
                node.kill()
    return [(status, log.read_text()) for status, log in zip(statuses, logs, strict=True)]


def rank_dumps(directory: Path) -> list[dict]:
    return [torch.load(directory / f"rank{r}.pt", weights_only=True)["trained"] for r in (0, 1)]


def results(root: Path) -> dict:
    return json.loads((root / "lightning_logs" / "version_0" / "results.json").read_text())


@pytest.mark.slow  # two two-process fits
def test_two_nodes_of_one_process_train_and_score_as_one_node_of_two(tiny_bert, tiny_sst2, tmp_path):
    single = one_node_two_processes(tiny_bert, tiny_sst2, tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    for status, stderr in two_nodes_one_process(tiny_bert, tiny_sst2, tmp_path / "multi"):
        assert status == 0, stderr[-3000:]

    expected, got = rank_dumps(tmp_path / "single" / "ranks"), rank_dumps(tmp_path / "multi" / "ranks")
    assert expected[0].keys() == got[0].keys() == got[1].keys() and expected[0]
    for name, tensor in expected[0].items():  # the same all-reduces in the same order: bit for bit
        torch.testing.assert_close(got[0][name], tensor, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(got[1][name], tensor, rtol=0, atol=0, msg=name)

    one, two = results(tmp_path / "single" / "fit"), results(tmp_path / "multi" / "node0")
    assert (two["num_devices"], two["num_nodes"], two["global_steps"], two["train_samples"]) == (2, 2, 6, 96)
    assert (one["num_devices"], one["num_nodes"]) == (2, 1)
    assert two["metrics"] == one["metrics"] and "val/acc" in two["metrics"]
    adapter = tmp_path / "multi" / "node0" / "lightning_logs" / "version_0" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "multi" / "node1").rglob("*"))  # rank 0 writes: nothing from rank 1


def test_report_never_groups_a_multi_node_run_with_one_machine_of_as_many_devices():
    one_machine = {"device_name": "NVIDIA H100", "num_devices": 8, "num_nodes": 1}
    assert device_label(one_machine) == "NVIDIA H100 x8"
    assert device_label({**one_machine, "num_nodes": 2}) == "NVIDIA H100 x8 on 2 nodes"
    assert device_label({"device": "cpu", "num_devices": 2}) == "cpu x2"  # records from before num_nodes
