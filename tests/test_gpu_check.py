"""`make gpu-check` (benchmarks/gpu_check.py) without a GPU: its dry run's plan, and its refusal to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from tests.helpers.paths import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
STEPS = {  # name: timeout in seconds
    "nvidia_smi": 10,
    "pytest_gpu": 80,
    "sft_model": 40,
    "qlora_sft": 65,
    "memory_qwen2.5-1.5b": 60,
    "memory_llama-3.1-8b": 140,
    "sft_vs_trl": 110,
}


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_dry_run_plans_every_step_within_its_budget_and_checks_its_files_and_flags(tmp_path):
    gsm8k = tmp_path / "data" / "gsm8k"
    gsm8k.mkdir(parents=True)
    for split in ("train", "test"):
        (gsm8k / f"{split}.jsonl").write_text(json.dumps({"question": "1 + 1?", "answer": "#### 2"}) + "\n")
    plan_file = tmp_path / "plan.json"
    done = gpu_check(
        "--dry-run",
        "--sft-model",
        "random",
        "--data-root",
        str(tmp_path / "data"),
        "--plan-json",
        str(plan_file),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("plan ok")
    plan = json.loads(plan_file.read_text())
    steps = {step["name"]: step for step in plan["steps"]}
    assert {name: step["timeout_s"] for name, step in steps.items()} == STEPS
    assert list(steps) == list(STEPS)  # in this order: the SFT's base before the SFT
    assert plan["total_timeout_s"] == sum(STEPS.values()) == plan["budget_s"] == 505
    assert plan["problems"] == []

    for step in plan["steps"][2:]:  # every script and config a command names is in the repository
        named = [arg for arg in step["command"][1:] if arg.endswith((".py", ".yaml"))]
        assert named and all((REPO / path).is_file() for path in named), step["command"]
    assert steps["pytest_gpu"]["command"][1:6] == ["-m", "pytest", "-m", "gpu", "-q"]
    assert steps["qlora_sft"]["after"] == ["sft_model"] and steps["sft_vs_trl"]["after"] == []
    fit = steps["qlora_sft"]["command"]
    assert fit[1:5] == ["-m", "lit_lora", "fit", "--config"]
    qlora = ["--model.quantization.mode=nf4", "--model.quantization.double_quant=true"]
    assert {*qlora, "--trainer.precision=bf16-mixed", "--trainer.accelerator=cuda"} <= set(fit)
    assert "--trainer.max_steps=40" in fit
    assert fit[fit.index("--config") + 1] == "configs/multidomain_sft_smollm2.yaml"
    memory = [" ".join(steps[name]["command"][2:6]) for name in STEPS if name.startswith("memory_")]
    assert memory == ["--device cuda --shapes qwen2.5-1.5b", "--device cuda --shapes --shape"]
    speed = " ".join(steps["sft_vs_trl"]["command"][2:12])
    assert speed == "--accelerator cuda --precision bf16 --rows 32 --eval-rows 16 --seeds 1"
    assert str(gsm8k) in steps["sft_vs_trl"]["command"]
    contenders = steps["sft_vs_trl"]["command"]
    assert contenders[contenders.index("--contenders") + 1 :][:3] == ["lit_lora", "lit_lora_padded", "trl"]


def test_without_a_cuda_device_it_says_so_in_one_line_and_exits_2(tmp_path):
    done = gpu_check("--out", str(tmp_path / "out"))
    if torch.version.cuda is None:
        why = f"torch {torch.__version__} in {sys.executable} is a CPU build"
    else:  # CUDA_VISIBLE_DEVICES="" hides the GPUs from a CUDA build
        why = f"torch {torch.__version__} sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?)"
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"gpu_check: error: {why}: the venv needs a CUDA torch (rm -rf .venv && make gpu-check "
        'TORCH="torch --index-url https://download.pytorch.org/whl/cu128"), or name a python that has one '
        "(make gpu-check PY=python3)\n"
    )
    assert not (tmp_path / "out").exists()  # nothing written, nothing installed
