"""Exact resume: a run killed mid-epoch and resumed from its last checkpoint ends where an
uninterrupted run ends (same batches, same dropout masks, same optimizer and allocator state)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO
from tests.resume_probe import fit_case


def trained(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.peft_model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    ("method", "kill_at"), [("lora", 3), ("adalora", 3), ("qlora", 3), ("lora", 7)], ids=str
)
def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    method, kill_at, tiny_bert, tiny_sst2, tmp_path
):
    # 96 rows in batches of 8, 2 batches per optimizer step: 6 steps an epoch, a checkpoint every 2.
    # Killed after step 3 (batch 6 of 12), the run leaves its step-2 checkpoint; resuming must start at
    # batch 5 of epoch 0. Killed after step 7, it leaves step 6's, saved after epoch 0's last batch;
    # resuming must train all of epoch 1.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tests.resume_probe", method, str(tiny_bert), str(tiny_sst2)]
    killed = subprocess.run(
        [*command, str(tmp_path / "a"), str(kill_at)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    saved_step = kill_at - 1
    assert torch.load(last, weights_only=True)["global_step"] == saved_step  # plain tensors and containers

    resumed = fit_case(method, tiny_bert, tiny_sst2, tmp_path / "a", ckpt_path=str(last))
    straight = fit_case(method, tiny_bert, tiny_sst2, tmp_path / "b")
    assert resumed.trainer.global_step == straight.trainer.global_step == 12
    expected, got = trained(straight), trained(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    if method == "adalora":
        config = straight.peft_model.peft_config["default"]
        assert resumed.peft_model.peft_config["default"].rank_pattern == config.rank_pattern
