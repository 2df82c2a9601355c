"""FSDP2 (``configs/extras/fsdp.yaml``) on two CPU processes through the CLI, against DDP and one process.

One pair of ranks (started by hand, so the start-up is paid once) runs, in turn: an FSDP2 fit with a
checkpoint per epoch, its resume from the first epoch, the same fit and resume under DDP, a validate and
a predict of the FSDP2 export, and a decoder's validation with generation. This process then runs the
evaluations alone.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lit_lora.cli import build_cli, main
from lit_lora.errors import LitLoraError
from lit_lora.methods import METHODS
from lit_lora.runtime.fsdp import LitLoraFSDP2
from tests.helpers import REPO
from tests.helpers.launch import run_ranks_by_hand

CONFIGS = REPO / "configs"
FSDP = ["--config", str(CONFIGS / "extras" / "fsdp.yaml")]
# 96 training rows over 2 ranks in batches of 16, 3 per epoch, 2 per accumulation window: a full window
# and a partial one per epoch, 4 optimizer steps in all. Clipping at 0.05 (gradient norms are about
# 0.01-0.1): the norm must be the whole gradient's, not a shard's. LoRA dropout on: DDP draws the masks
# FSDP2 draws, and a run resumed from the end of epoch 0 the masks its uninterrupted run draws.
STEPS = 4
# 32 dev rows (21 to predict) in batches of 5: one rank runs a padding batch, in step with the other.
PREDICTED = 21
SHARDS = "--trainer.callbacks+=tests.helpers.dist_probe.ShardProbe"


def _args(command: str, model: Path, data: Path, root: Path, *extra: str, devices: int = 2) -> list[str]:
    return [
        command, "--config", str(CONFIGS / "sst2_lora.yaml"), *extra,
        "--trainer.devices", str(devices), "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2",
        "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--model.model_name_or_path", str(model), "--model.learning_rate", "0.01",
        "--model.adapter.dropout", "0.1", "--data.data_dir", str(data), "--data.batch_size", "16",
        "--data.eval_batch_size", "5", "--trainer.accumulate_grad_batches", "2",
        "--trainer.gradient_clip_val", "0.05", "--trainer.default_root_dir", str(root),
    ]  # fmt: skip


def _labels_as_generation(model: Path, data: Path, root: Path, *extra: str, devices: int = 2) -> list[str]:
    """SST-2 as a decoder's reply, validated with generation: 32 dev rows in batches of 5, so one rank
    generates for a padding batch while the other still runs a real one (both gather every block)."""
    return [
        "validate", "--config", str(CONFIGS / "sst2_smollm2.yaml"), *extra,
        "--model.model_name_or_path", str(model), "--data.data_dir", str(data), "--data.eval_batch_size", "5",
        "--model.generate_in_eval", "true", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
    ]  # fmt: skip


def _run_dir(root: Path) -> Path:
    (record,) = (root / "lightning_logs").glob("version_*/results.json")
    return record.parent


def _metrics(root: Path) -> dict[str, float]:
    return json.loads((_run_dir(root) / "results.json").read_text())["metrics"]


def _train_losses(root: Path) -> list[float]:
    rows = csv.DictReader((_run_dir(root) / "metrics.csv").open())
    return [float(row["train/loss"]) for row in rows if row.get("train/loss")]


def _predictions(root: Path) -> list[dict]:
    (path,) = (root / "lightning_logs").glob("version_*/predictions.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _max_abs_diff(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    return max((got[k] - expected[k]).abs().max().item() for k in expected)


@pytest.mark.slow  # six two-process runs in one pair of ranks
def test_fsdp2_fit_resume_validate_predict_match_ddp_and_one_process(
    tiny_bert, tiny_llama, tiny_sst2, tmp_path
):
    names = ("fsdp", "resumed", "ddp", "ddp_resumed", "validated", "predicted", "decoder")
    roots = {name: tmp_path / name for name in names}
    first_epoch = roots["fsdp"] / "lightning_logs" / "version_0" / "checkpoints" / "epoch=0-step=2.ckpt"
    ddp_first_epoch = roots["ddp"] / first_epoch.relative_to(roots["fsdp"])
    adapter = roots["fsdp"] / "lightning_logs" / "version_0" / "adapter"
    every_epoch = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.save_top_k=-1"]
    predict = ["--data.test_split", "validation", "--data.max_eval_samples", str(PREDICTED)]
    trained = ["--model.adapter_path", str(adapter)]
    codes = run_ranks_by_hand(
        [
            _args("fit", tiny_bert, tiny_sst2, roots["fsdp"], *FSDP, *every_epoch, SHARDS),
            [*_args("fit", tiny_bert, tiny_sst2, roots["resumed"], *FSDP), "--ckpt_path", str(first_epoch)],
            _args("fit", tiny_bert, tiny_sst2, roots["ddp"], "--trainer.strategy", "ddp", *every_epoch),
            [
                *_args("fit", tiny_bert, tiny_sst2, roots["ddp_resumed"], "--trainer.strategy", "ddp"),
                "--ckpt_path", str(ddp_first_epoch),
            ],
            _args("validate", tiny_bert, tiny_sst2, roots["validated"], *FSDP, *trained),
            _args("predict", tiny_bert, tiny_sst2, roots["predicted"], *FSDP, *predict, *trained),
            _labels_as_generation(tiny_llama, tiny_sst2, roots["decoder"], *FSDP),
        ],
        tmp_path / "ranks",
    )  # fmt: skip
    assert codes == [0, 0], (tmp_path / "ranks" / "rank0.log").read_text()[-3000:]

    # Sharded: each rank holds about half of every weight, frozen base included.
    shards = [json.loads((tmp_path / "ranks" / f"shards{rank}.json").read_text()) for rank in (0, 1)]
    assert shards[0]["numel"] == shards[1]["numel"] == shards[0]["local"] + shards[1]["local"]
    assert all(s["local"] < 0.51 * s["numel"] for s in shards), shards

    # Trains as DDP does on the same batches (gradients reduce-scattered instead of all-reduced).
    record = json.loads((_run_dir(roots["fsdp"]) / "results.json").read_text())
    assert record["num_devices"] == 2 and record["global_steps"] == STEPS
    exported = load_file(adapter / "adapter_model.safetensors")
    ddp = load_file(_run_dir(roots["ddp"]) / "adapter" / "adapter_model.safetensors")
    # Complete: gathered whole from the shards (2 layers x query/value x A/B, head and pooler).
    assert exported.keys() == ddp.keys() and len(exported) == 12
    assert all(exported[k].shape == ddp[k].shape for k in ddp)
    assert all(t.abs().sum() > 0 for k, t in exported.items() if "lora_B" in k)  # trained, not zeros
    assert _max_abs_diff(exported, ddp) <= 1e-6
    assert _train_losses(roots["fsdp"]) == pytest.approx(_train_losses(roots["ddp"]), abs=1e-6)

    # Adapter-only checkpoints, one file, that resume exactly.
    checkpoint = torch.load(first_epoch, weights_only=False)
    keys = set(checkpoint["state_dict"])
    assert keys and all(".lora_" in k or ".modules_to_save." in k for k in keys), sorted(keys)[:3]
    assert first_epoch.stat().st_size < 0.2 * (tiny_bert / "model.safetensors").stat().st_size
    resumed = load_file(_run_dir(roots["resumed"]) / "adapter" / "adapter_model.safetensors")
    assert _max_abs_diff(resumed, exported) == 0.0  # the same path, the same sums and dropout masks
    assert _train_losses(roots["resumed"]) == _train_losses(roots["fsdp"])[STEPS // 2 :]
    ddp_resumed = load_file(_run_dir(roots["ddp_resumed"]) / "adapter" / "adapter_model.safetensors")
    assert _max_abs_diff(ddp_resumed, ddp) == 0.0

    # The export scored in one process: every row counted once, under FSDP2 and at the end of its fit.
    single = tmp_path / "single"
    main(_args("validate", tiny_bert, tiny_sst2, single, *trained, devices=1))
    expected = _metrics(single)
    for got in (_metrics(roots["validated"]), _metrics(roots["fsdp"])):
        assert got["val/acc"] == expected["val/acc"]
        assert got["val/loss"] == pytest.approx(expected["val/loss"], abs=1e-6)

    # A decoder's evaluation with generation: the ranks stay in step and count each row once.
    main(_labels_as_generation(tiny_llama, tiny_sst2, tmp_path / "decoder_one", devices=1))
    expected, got = _metrics(tmp_path / "decoder_one"), _metrics(roots["decoder"])
    assert {"val/acc", "val/exact_match", "val/loss"} <= expected.keys()
    assert got["val/acc"] == expected["val/acc"] and got["val/exact_match"] == expected["val/exact_match"]
    assert got["val/loss"] == pytest.approx(expected["val/loss"], abs=1e-5)

    # Predictions complete and in input order, equal to one process's.
    main(_args("predict", tiny_bert, tiny_sst2, tmp_path / "one", *predict, *trained, devices=1))
    got, one = _predictions(roots["predicted"]), _predictions(tmp_path / "one")
    assert len(got) == PREDICTED and [r["label"] for r in got] == [r["label"] for r in one]
    assert [r["confidence"] for r in got] == pytest.approx([r["confidence"] for r in one], abs=1e-6)


def test_fsdp_extra_stacks_on_a_run_config():
    cli = build_cli(["--config", str(CONFIGS / "sst2_lora.yaml"), *FSDP], run=False)
    assert isinstance(cli.trainer.strategy, LitLoraFSDP2)


REFUSED = [m for m in METHODS if not m.supports_fsdp]


@pytest.mark.parametrize("method", REFUSED, ids=lambda m: m.__name__)
def test_methods_that_cannot_train_under_fsdp2_are_refused_in_one_line(method):
    assert {m.__name__ for m in REFUSED} == {"AdaLoraSpec", "PissaSpec", "OloraSpec"}
    cli = build_cli(["--config", str(CONFIGS / "sst2_lora.yaml"), *FSDP], run=False)
    cli.model.adapter = method()
    allowed = "DoraSpec, LoraSpec, LoraPlusSpec, VeraSpec"
    message = f"model.adapter={method.__name__} with trainer.strategy=FSDP2 .* \\(allowed: {allowed}\\)"
    with pytest.raises(LitLoraError, match=message):
        cli.trainer.strategy.check_supported(cli.model)


@pytest.mark.parametrize("mode", ["nf4", "fp4", "int8"])
def test_quantised_bases_under_fsdp2_on_cpu_are_refused_in_one_line(mode):
    args = ["--config", str(CONFIGS / "sst2_qlora.yaml"), *FSDP, "--model.quantization.mode", mode]
    cli = build_cli(args, run=False)
    with pytest.raises(
        LitLoraError, match=f"model.quantization.mode={mode} with trainer.strategy=FSDP2 .* on CPU"
    ):
        cli.trainer.strategy.check_supported(cli.model)
