"""DeepSpeed ZeRO-2/3 on two CPU processes: equal losses, a complete ZeRO-3 export, exact resume, AdaLoRA.

Multi-process runs are subprocesses (Lightning re-executes the command for the other rank). To pay the
start-up once, one pair of ranks is started by hand and runs several CLI invocations in turn; the
AdaLoRA run goes through ``python -m lit_lora`` and Lightning's own relaunch.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("deepspeed")

from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

from lit_lora.cli import build_cli, main  # noqa: E402
from lit_lora.errors import LitLoraError  # noqa: E402
from lit_lora.runtime.strategies import LitLoraDeepSpeed  # noqa: E402
from tests.helpers import REPO  # noqa: E402

CONFIGS = REPO / "configs"
EXTRAS = CONFIGS / "extras"
TIMEOUT = 300
# 96 training rows over 2 ranks in batches of 16: 3 optimizer steps per epoch, 6 in all.
STEPS = 6
# With 2 batches per window: a full window and a partial one per epoch, 4 steps in all. The clipping
# threshold lies between the runs' gradient norms (0.117 ... 0.011): some steps are clipped, some not.
ACCUMULATED_STEPS, CLIP = 4, 0.06


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "MASTER_PORT": _free_port(),
        **extra,
    }


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _common(model: Path, data: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--trainer.max_epochs", "2",
        "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--model.model_name_or_path", str(model), "--data.data_dir", str(data), "--data.batch_size", "16",
        "--trainer.default_root_dir", str(root), *extra,
    ]  # fmt: skip


def _lora(model: Path, data: Path, root: Path, *extra: str, command: str = "fit") -> list[str]:
    lora = ["--model.learning_rate", "0.01", "--model.adapter.dropout", "0"]
    return [command, "--config", str(CONFIGS / "sst2_lora.yaml"), *extra, *_common(model, data, root, *lora)]


def _adalora(model: Path, data: Path, root: Path, *extra: str) -> list[str]:
    # 12 optimizer steps: tinit 1, budgeting to step 10, tfinal 2. Clipping at 0.1 acts on most steps
    # (gradient norms 0.009 ... 0.46): the allocator must score the clipped gradients, as under DDP.
    adalora = [
        "--model.adapter.init_r", "6", "--model.adapter.target_r", "3", "--model.adapter.delta_t", "2",
        "--data.batch_size", "4", "--trainer.max_epochs", "1", "--trainer.gradient_clip_val", "0.1",
        "--trainer.callbacks+=tests.helpers.ds_probe.DumpRankPattern",
    ]  # fmt: skip
    return [
        "fit",
        "--config",
        str(CONFIGS / "sst2_adalora.yaml"),
        *extra,
        *_common(model, data, root, *adalora),
    ]


def _accumulating(model: Path, data: Path, root: Path, *extra: str) -> list[str]:
    """k=2 over 3 batches per epoch (an odd count: a partial window ends each epoch), 2 epochs; SGD,
    where a gradient scaled twice shows in every update, and clipping that acts."""
    accumulation = [
        "--trainer.accumulate_grad_batches", "2", "--trainer.gradient_clip_val", str(CLIP),
        "--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.5", "--model.warmup_ratio", "0",
        "--trainer.limit_val_batches", "0", "--trainer.callbacks+=tests.helpers.ds_probe.DumpSteps",
    ]  # fmt: skip
    return _lora(model, data, root, *extra, *accumulation)


def _run_ranks_by_hand(runs: list[list[str]], log: Path) -> None:
    """Both ranks started here (Lightning sees LOCAL_RANK and relaunches nothing), each running every
    CLI invocation in turn."""
    script = "import json, sys\nfrom lit_lora.cli import main\nfor a in json.loads(sys.argv[1]):\n    main(a)"
    env = _env(MASTER_ADDR="127.0.0.1", WORLD_SIZE="2", NODE_RANK="0")
    procs = []
    for rank in (0, 1):
        with open(log.with_suffix(f".{rank}.log"), "w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", script, json.dumps(runs)],
                    cwd=REPO,
                    env={**env, "LOCAL_RANK": str(rank)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            )
    try:
        codes = [proc.wait(timeout=TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert codes == [0, 0], log.with_suffix(".0.log").read_text()[-3000:]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lit_lora", *args],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip


def _run_dir(root: Path) -> Path:
    (run,) = (root / "lightning_logs").glob("version_*/results.json")
    return run.parent


def _record(root: Path) -> dict[str, Any]:
    return json.loads((_run_dir(root) / "results.json").read_text())


def _metrics(root: Path) -> dict[str, float]:
    return _record(root)["metrics"]


def _train_losses(root: Path) -> list[float]:
    rows = csv.DictReader((_run_dir(root) / "metrics.csv").open())
    return [float(row["train/loss"]) for row in rows if row.get("train/loss")]


def _decoder_fit(model: Path, data: Path, root: Path, *extra: str) -> list[str]:
    """SST-2 as a decoder's chat reply, trained: 96 rows in batches of 8 on two ranks, 6 steps."""
    fit = [
        "--data.batch_size", "8", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0",
        "--model.learning_rate", "0.01", "--model.adapter.dropout", "0",
    ]  # fmt: skip
    return ["fit", "--config", str(CONFIGS / "sst2_smollm2.yaml"), *extra, *_common(model, data, root, *fit)]


def _labels_as_generation(model: Path, data: Path, root: Path, *extra: str) -> list[str]:
    """SST-2 as a decoder's chat reply, validated with generation. 32 dev rows in batches of 5 on two
    ranks: one rank's last batch is padding, which must run the real batch's forwards under ZeRO-3."""
    return [
        "validate", "--config", str(CONFIGS / "sst2_smollm2.yaml"), *extra,
        "--model.model_name_or_path", str(model), "--data.data_dir", str(data), "--data.eval_batch_size", "5",
        "--model.generate_in_eval", "true", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(
    tiny_bert: Path, tiny_llama: Path, tiny_sst2: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """LoRA under ZeRO-2 and ZeRO-3, with and without offload, a ZeRO-3 resume, AdaLoRA under DDP, a
    decoder's evaluation with generation under ZeRO-3, and gradient accumulation under ZeRO-2, ZeRO-3, DDP."""
    tmp = tmp_path_factory.mktemp("deepspeed")
    names = (
        "z2", "z2_offload", "z3", "z3_validated", "z3_offload", "z3_resumed", "ada_ddp", "z3_decoder",
        "acc_z2", "acc_z3", "acc_ddp", "z3_decoder_fit", "ddp_decoder_fit_padded",
    )  # fmt: skip
    roots = {name: tmp / name for name in names}
    zero2 = ["--config", str(EXTRAS / "deepspeed_zero2.yaml")]
    offload2 = ["--config", str(EXTRAS / "deepspeed_zero2_offload.yaml")]
    # Threshold 0: every adapter tensor is partitioned, so an export that does not gather writes (0,).
    zero3 = [
        "--config",
        str(EXTRAS / "deepspeed_zero3.yaml"),
        "--trainer.strategy.param_persistence_threshold=0",
    ]
    offload3 = ["--trainer.strategy.offload_optimizer=true", "--trainer.strategy.offload_parameters=true"]
    every_epoch = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.save_top_k=-1"]
    z3_run = roots["z3"] / "lightning_logs" / "version_0"
    first_epoch, adapter = z3_run / "checkpoints" / "epoch=0-step=3.ckpt", z3_run / "adapter"
    _run_ranks_by_hand(
        [
            _lora(tiny_bert, tiny_sst2, roots["z2"], *zero2),
            _lora(tiny_bert, tiny_sst2, roots["z2_offload"], *offload2),
            _lora(
                tiny_bert, tiny_sst2, roots["z3"], *zero3, *every_epoch,
                "--trainer.callbacks+=tests.helpers.ds_probe.DumpLogits",
            ),
            _lora(
                tiny_bert, tiny_sst2, roots["z3_validated"], *zero3, "--model.adapter_path", str(adapter),
                command="validate",
            ),
            _lora(tiny_bert, tiny_sst2, roots["z3_offload"], *zero3, *offload3),
            [*_lora(tiny_bert, tiny_sst2, roots["z3_resumed"], *zero3), "--ckpt_path", str(first_epoch)],
            _adalora(tiny_bert, tiny_sst2, roots["ada_ddp"], "--trainer.strategy", "ddp"),
            _labels_as_generation(
                tiny_llama, tiny_sst2, roots["z3_decoder"], *zero3, "--trainer.devices", "2"
            ),
            _accumulating(tiny_bert, tiny_sst2, roots["acc_z2"], *zero2),
            _accumulating(tiny_bert, tiny_sst2, roots["acc_z3"], *zero3),
            _accumulating(tiny_bert, tiny_sst2, roots["acc_ddp"], "--trainer.strategy", "ddp"),
            _decoder_fit(tiny_llama, tiny_sst2, roots["z3_decoder_fit"], *zero3),
            _decoder_fit(
                tiny_llama, tiny_sst2, roots["ddp_decoder_fit_padded"], "--trainer.strategy", "ddp",
                "--data.packing", "false",
            ),
        ],
        tmp / "ranks",
    )  # fmt: skip
    return roots


@pytest.mark.slow  # the `runs` fixture: thirteen two-process runs
def test_zero2_and_zero3_with_and_without_offload_give_the_same_losses(runs):
    reference = _train_losses(runs["z2"])
    assert len(reference) == STEPS
    for name in ("z2_offload", "z3", "z3_offload"):
        assert _train_losses(runs[name]) == pytest.approx(reference, abs=1e-6), name


@pytest.mark.slow  # the `runs` fixture
def test_a_decoder_fit_under_zero3_is_padding_free_by_default_and_trains_as_padded_ddp(runs):
    """data.packing auto under ZeRO-3: packed rows of other lengths on each rank, one forward each."""
    packed, padded = _record(runs["z3_decoder_fit"]), _record(runs["ddp_decoder_fit_padded"])
    assert (packed["train_batches"], padded["train_batches"]) == ("packed", "padded")
    losses = _train_losses(runs["z3_decoder_fit"])
    assert len(losses) == 6 and len(set(losses)) > 1
    assert losses == pytest.approx(_train_losses(runs["ddp_decoder_fit_padded"]), abs=1e-5)


@pytest.mark.slow  # the `runs` fixture
def test_zero3_records_the_whole_models_weight_footprint(runs):
    """ZeRO-3 leaves each rank an empty tensor per partitioned parameter; results.json still records the
    weights of the model, as ZeRO-2 (whole on every rank) does."""
    names = ("z2", "z2_offload", "z3", "z3_offload", "acc_z3")
    footprints = {name: _record(runs[name])["weight_memory_mb"] for name in names}
    assert len(set(footprints.values())) == 1 and footprints["z2"] > 1, footprints


@pytest.mark.slow  # the `runs` fixture: thirteen two-process runs
def test_accumulation_under_zero2_and_zero3_steps_and_trains_as_ddp(runs):
    # Lightning's rule everywhere: a window ends every 2 batches and at an epoch's last batch.
    ddp = json.loads((runs["acc_ddp"] / "steps.0.json").read_text())
    assert ddp["global_step"] == ddp["estimated_stepping_batches"] == ACCUMULATED_STEPS
    assert ddp["last_lr"] == 0.0  # the linear schedule ran to its end
    assert max(ddp["grad_norms"]) > CLIP > min(ddp["grad_norms"])
    expected = load_file(_run_dir(runs["acc_ddp"]) / "adapter" / "adapter_model.safetensors")
    for name in ("acc_z2", "acc_z3"):
        record = json.loads((runs[name] / "steps.0.json").read_text())
        steps = (record["global_step"], record["estimated_stepping_batches"], record["engine_steps"])
        assert steps == (ACCUMULATED_STEPS,) * 3, name
        assert record["last_lr"] == 0.0, name
        # Scaled once for accumulation, as DDP's: what DeepSpeed clipped equals what Lightning clipped.
        assert record["grad_norms"] == pytest.approx(ddp["grad_norms"], rel=1e-6), name
        adapter = load_file(_run_dir(runs[name]) / "adapter" / "adapter_model.safetensors")
        assert adapter.keys() == expected.keys(), name
        for key, tensor in adapter.items():
            torch.testing.assert_close(tensor, expected[key], atol=1e-6, rtol=0, msg=f"{name} {key}")


@pytest.mark.slow  # the `runs` fixture: thirteen two-process runs
def test_zero3_export_is_complete_and_reloads_with_the_in_memory_logits(runs, tiny_bert):
    # Every LoRA tensor is partitioned (persistence threshold 0), so an ungathered save writes (0,) shapes.
    zero3, zero2 = (
        load_file(_run_dir(runs[n]) / "adapter" / "adapter_model.safetensors") for n in ("z3", "z2")
    )
    assert set(zero3) == set(zero2) and len(zero3) == 12  # 2 layers x query/value x A/B, head and pooler
    for key, tensor in zero3.items():
        assert tensor.shape == zero2[key].shape and tensor.numel() > 0, key
        torch.testing.assert_close(tensor, zero2[key], atol=1e-6, rtol=0)

    probe = torch.load(runs["z3"] / "logits.pt")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    reloaded = PeftModel.from_pretrained(base, _run_dir(runs["z3"]) / "adapter").eval()
    with torch.no_grad():
        logits = reloaded(**probe["inputs"]).logits
    torch.testing.assert_close(logits, probe["logits"], atol=1e-6, rtol=0)
    assert all(t.abs().sum() > 0 for k, t in zero3.items() if "lora_B" in k)  # trained, not initial zeros

    # Evaluated again under ZeRO-3 from the export: what the in-memory model scored at the end of fit.
    fitted, validated = _metrics(runs["z3"]), _metrics(runs["z3_validated"])
    assert validated["val/loss"] == pytest.approx(fitted["val/loss"], abs=1e-6)
    assert validated["val/acc"] == fitted["val/acc"]


@pytest.mark.slow  # the `runs` fixture: thirteen two-process runs
def test_zero3_checkpoints_hold_no_frozen_weights_and_resume_exactly(runs, tiny_bert):
    checkpoint = _run_dir(runs["z3"]) / "checkpoints" / "epoch=0-step=3.ckpt"
    shards = sorted(checkpoint.glob("checkpoint/*model_states.pt"))
    assert len(shards) == 2  # one per rank
    keys = set(torch.load(shards[0], weights_only=False)["module"])
    assert keys and all(".lora_" in k or ".modules_to_save." in k for k in keys), sorted(keys)[:3]
    size = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
    assert size < 0.2 * (tiny_bert / "model.safetensors").stat().st_size

    resumed = _train_losses(runs["z3_resumed"])
    assert len(resumed) == STEPS // 2  # the second epoch only
    assert resumed == pytest.approx(_train_losses(runs["z3"])[STEPS // 2 :], abs=1e-6)


@pytest.mark.slow  # the `runs` fixture: thirteen two-process runs
def test_a_decoders_evaluation_with_generation_under_zero3_scores_what_one_device_does(
    runs, tiny_llama, tiny_sst2, tmp_path
):
    # Ranks stop generating at different steps and one evaluates a padding batch, while every ZeRO-3
    # forward needs both: they must stay in step (or hang) and count each row once.
    single = tmp_path / "single"
    main(_labels_as_generation(tiny_llama, tiny_sst2, single, "--trainer.devices", "1"))
    expected, got = _metrics(single), _metrics(runs["z3_decoder"])
    assert {"val/acc", "val/exact_match", "val/loss"} <= expected.keys()
    assert got["val/acc"] == expected["val/acc"] and got["val/exact_match"] == expected["val/exact_match"]
    assert got["val/loss"] == pytest.approx(expected["val/loss"], abs=1e-5)


@pytest.mark.slow  # the `runs` fixture: thirteen two-process runs
def test_adalora_under_zero2_allocates_as_ddp_on_every_rank(runs, tiny_bert, tiny_sst2, tmp_path):
    root = tmp_path / "ada_zero2"
    result = _run_cli(*_adalora(tiny_bert, tiny_sst2, root, "--config", str(EXTRAS / "deepspeed_zero2.yaml")))
    assert result.returncode == 0, result.stderr[-3000:]

    records = [json.loads((root / f"rank_pattern.{rank}.json").read_text()) for rank in (0, 1)]
    pattern = records[0]["pattern"]
    assert records[1]["pattern"] == pattern  # the same allocation on both ranks
    ranks = [sum(mask) for mask in pattern.values()]
    assert len(ranks) == 4 and sum(ranks) == 3 * 4  # target_r x adapted modules: the budget is reached
    assert len(set(ranks)) > 1  # reallocated, not uniform
    # The masked singular values are masked in DeepSpeed's fp32 master copy too.
    assert records[0]["master_gap"] == 0.0 and records[1]["master_gap"] == 0.0
    # What DDP (averaged .grad, one optimizer copy) gives, step for step.
    ddp = json.loads((runs["ada_ddp"] / "rank_pattern.0.json").read_text())
    assert pattern == ddp["pattern"]
    # Scored from the gradients the optimizer stepped on, clipped as DDP's are.
    assert records[0]["importance"] == pytest.approx(ddp["importance"], rel=1e-5)
    assert sum(v > 0 for v in ddp["importance"]) >= 8  # scored on the steps of the budgeting phase
    assert _train_losses(root) == pytest.approx(_train_losses(runs["ada_ddp"]), abs=1e-6)
    exported = json.loads((_run_dir(root) / "adapter" / "adapter_config.json").read_text())
    assert sum(sum(mask) for mask in exported["rank_pattern"].values()) == 3 * 4


def test_qlora_with_deepspeed_on_cpu_is_refused_before_any_rank_starts(tiny_bert, tiny_sst2, tmp_path):
    result = _run_cli(
        "fit", "--config", str(CONFIGS / "sst2_qlora.yaml"), "--config", str(EXTRAS / "deepspeed_zero2.yaml"),
        *_common(tiny_bert, tiny_sst2, tmp_path),
    )  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("lit_lora: error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1 and "model.quantization.mode=nf4 with DeepSpeed ZeRO-2 on CPU" in errors[0]
    assert "trainer.strategy=ddp" in errors[0]


@pytest.mark.parametrize(
    ("extra", "stage", "offload"),
    [
        ("deepspeed_zero2.yaml", 2, False),
        ("deepspeed_zero2_offload.yaml", 2, True),
        ("deepspeed_zero3.yaml", 3, False),
    ],
)
def test_deepspeed_extras_stack_on_a_run_config(extra, stage, offload):
    cli = build_cli(["--config", str(CONFIGS / "sst2_lora.yaml"), "--config", str(EXTRAS / extra)], run=False)
    strategy = cli.trainer.strategy
    assert isinstance(strategy, LitLoraDeepSpeed) and strategy.zero_stage == stage
    assert strategy.exclude_frozen_parameters
    assert ("offload_optimizer" in strategy.config["zero_optimization"]) == offload


def test_unsupported_combinations_are_refused_in_one_line():
    with pytest.raises(LitLoraError, match="offload_parameters=true needs stage 3, not 2"):
        LitLoraDeepSpeed(stage=2, offload_parameters=True)
    cli = build_cli(
        ["--config", str(CONFIGS / "sst2_adalora.yaml"), "--config", str(EXTRAS / "deepspeed_zero3.yaml")],
        run=False,
    )
    with pytest.raises(LitLoraError, match="AdaLoraSpec with DeepSpeed ZeRO-3 is not supported; use ZeRO-2"):
        cli.trainer.strategy.check_supported(cli.model)


@pytest.mark.parametrize(
    ("accelerator", "stage", "partitioned"), [("cpu", 3, False), ("cuda", 3, True), ("cuda", 2, False)]
)
def test_zero3_partitions_the_base_at_load_on_cuda_only(accelerator, stage, partitioned):
    # What tests/test_gpu.py measures on two GPUs, checked here without one: transformers' ZeRO-3 loading
    # is on while the base loads on CUDA, and only then (the CPU path loads it whole, as tested above).
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
    from transformers.integrations import is_deepspeed_zero3_enabled

    strategy = LitLoraDeepSpeed(stage=stage)
    strategy.accelerator = CUDAAccelerator() if accelerator == "cuda" else CPUAccelerator()
    strategy._config_initialized = True  # formatted from the trainer's batch size in a real run
    with strategy.partitioned_loading():
        assert is_deepspeed_zero3_enabled() == partitioned
    assert not is_deepspeed_zero3_enabled()
