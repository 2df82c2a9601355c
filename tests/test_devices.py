"""Apple MPS rules on a machine without MPS: availability and the macOS version are patched."""

from __future__ import annotations

import json
import platform
from types import SimpleNamespace

import pytest
import torch
from lightning.fabric.accelerators.mps import MPSAccelerator as FabricMPS
from lightning.pytorch.accelerators import MPSAccelerator
from packaging.version import Version

from lit_lora.callbacks.meter import memory_details, peak_memory
from lit_lora.callbacks.results import ResultsRecorder
from lit_lora.cli import build_cli, main
from lit_lora.core.quantization import Quantization
from lit_lora.errors import LitLoraError
from lit_lora.runtime import devices
from lit_lora.runtime.devices import check_device_support, check_single_device
from tests.helpers import REPO, classifier, sst2, trainer

MPS = torch.device("mps", 0)
SST2 = str(REPO / "configs" / "sst2_lora.yaml")
MPS_EXTRA = str(REPO / "configs" / "extras" / "mps.yaml")


@pytest.fixture
def fake_mps(monkeypatch):
    """MPS available (Apple silicon) on macOS ``macos`` (14.0 unless a test changes it)."""
    state = SimpleNamespace(macos=(14, 0))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)

    def macos_or_newer(major: int, minor: int) -> bool:
        return (major, minor) <= state.macos

    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", macos_or_newer)
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    FabricMPS.is_available.cache_clear()  # Lightning caches the answer
    yield state
    FabricMPS.is_available.cache_clear()


def refusal(*args) -> str:
    with pytest.raises(LitLoraError) as info:
        check_device_support(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- precision -------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["16-mixed", "16-true", "32-true"])
def test_fp16_and_fp32_are_accepted_on_mps(fake_mps, precision):
    fake_mps.macos = (13, 0)
    check_device_support(MPS, precision, Quantization())


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_needs_macos_14(fake_mps, precision):
    fake_mps.macos = (13, 6)
    assert refusal(MPS, precision, None) == (
        f"trainer.precision={precision}: bfloat16 on MPS needs macOS 14 or newer; use 16-mixed or 32-true"
    )
    fake_mps.macos = (14, 0)
    check_device_support(MPS, precision, None)


def test_float64_is_refused_on_mps(fake_mps):
    assert refusal(MPS, "64-true", None) == (
        "trainer.precision=64-true: MPS has no float64; use 32-true or 16-mixed"
    )


def test_other_devices_are_left_alone(fake_mps):
    fake_mps.macos = (13, 0)
    for device in (torch.device("cpu"), torch.device("cuda", 0)):
        check_device_support(device, "64-true", Quantization(mode="nf4", compute_dtype="bfloat16"))


# ---- quantisation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["nf4", "fp4", "int8"])
def test_installed_bitsandbytes_quantises_on_mps(fake_mps, mode):
    assert devices.installed_version("bitsandbytes") >= Version("0.50")
    check_device_support(MPS, "16-mixed", Quantization(mode=mode, double_quant=True))


def test_bitsandbytes_without_mps_backend_is_refused(fake_mps, monkeypatch):
    real = devices.installed_version
    monkeypatch.setattr(
        devices, "installed_version", lambda name: Version("0.45.5") if name == "bitsandbytes" else real(name)
    )
    assert refusal(MPS, "32-true", Quantization(mode="nf4")) == (
        "model.quantization.mode=nf4 on MPS needs bitsandbytes>=0.50 (its MPS backend), found 0.45.5: "
        "pip install -U bitsandbytes, or use model.quantization.mode=none"
    )


def test_missing_bitsandbytes_is_refused(fake_mps, monkeypatch):
    monkeypatch.setattr(devices, "installed_version", lambda name: None)
    assert refusal(MPS, "32-true", Quantization(mode="int8")) == (
        "model.quantization.mode=int8 needs bitsandbytes: pip install 'lit_lora[quant]'"
    )


def test_old_torch_is_refused_for_quantisation(fake_mps, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.8.0")
    assert refusal(MPS, "32-true", Quantization(mode="nf4")) == (
        "model.quantization.mode=nf4 on MPS needs torch>=2.9 (bitsandbytes' MPS backend), found 2.8.0; "
        "upgrade torch, or use model.quantization.mode=none"
    )
    check_device_support(MPS, "32-true", Quantization())  # no quantisation: nothing to refuse


def test_bf16_compute_dtype_needs_macos_14(fake_mps):
    fake_mps.macos = (13, 0)
    assert refusal(MPS, "16-mixed", Quantization(mode="nf4", compute_dtype="bfloat16")) == (
        "model.quantization.compute_dtype=bfloat16: bfloat16 on MPS needs macOS 14 or newer; "
        "use float16 or float32"
    )
    check_device_support(MPS, "16-mixed", Quantization(mode="nf4", compute_dtype="float16"))


# ---- single device ---------------------------------------------------------------------------------


@pytest.mark.parametrize("accelerator", ["mps", "auto", "gpu"])
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "deepspeed_stage_2_offload", "fsdp"])
def test_distributed_strategies_are_refused_on_mps(fake_mps, accelerator, strategy):
    with pytest.raises(LitLoraError) as info:
        check_single_device(accelerator, strategy, 1)
    assert str(info.value) == (
        f"trainer.strategy={strategy}: MPS is a single device; use trainer.strategy auto, "
        "or trainer.accelerator cpu/cuda for a distributed strategy"
    )
    check_single_device("cpu", strategy, 2)  # an explicit CPU run is not MPS


def test_several_mps_devices_are_refused(fake_mps):
    with pytest.raises(LitLoraError) as info:
        check_single_device("mps", "auto", 2)
    assert str(info.value) == "trainer.devices=2: MPS is a single device; use trainer.devices 1"
    for one in (1, "1", "auto", -1, [0]):
        check_single_device("mps", "auto", one)


# ---- from the command line -------------------------------------------------------------------------


def test_mps_extra_stacks_on_sst2_lora(fake_mps):
    cli = build_cli(["--config", SST2, "--config", MPS_EXTRA], run=False)
    assert isinstance(cli.trainer.accelerator, MPSAccelerator)
    assert cli.trainer.strategy.root_device == MPS and cli.trainer.num_devices == 1
    assert cli.trainer.precision == "16-mixed"
    plain = build_cli(["--config", SST2], run=False)  # everything else is sst2_lora's
    assert (cli.model.adapter, cli.model.learning_rate) == (plain.model.adapter, plain.model.learning_rate)
    assert cli.trainer.max_epochs == plain.trainer.max_epochs == 3
    assert cli.trainer.gradient_clip_val == 1.0
    assert "--config configs/sst2_lora.yaml --config configs/extras/mps.yaml" in open(MPS_EXTRA).read()


def cli_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", SST2, *args, "--trainer.enable_progress_bar", "false"])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("lit_lora: error:")]
    assert len(errors) == 1, lines[-5:]
    return errors[0]


def test_cli_refuses_bf16_before_loading_weights_with_auto_accelerator(fake_mps, capsys, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the device check")

    monkeypatch.setattr("lit_lora.models.base.load_base_model", no_weights)
    fake_mps.macos = (13, 5)
    # sst2_lora.yaml says accelerator: auto, which resolves to MPS here.
    assert cli_error(capsys, "--trainer.precision", "bf16-mixed") == (
        "lit_lora: error: trainer.precision=bf16-mixed: bfloat16 on MPS needs macOS 14 or newer; "
        "use 16-mixed or 32-true"
    )


def test_cli_refuses_old_bitsandbytes_and_deepspeed_on_mps(fake_mps, capsys, monkeypatch):
    monkeypatch.setattr(devices, "installed_version", lambda name: Version("0.49.0"))
    message = cli_error(capsys, "--config", MPS_EXTRA, "--model.quantization.mode", "nf4")
    assert message.startswith("lit_lora: error: model.quantization.mode=nf4 on MPS needs bitsandbytes>=0.50")
    message = cli_error(capsys, "--trainer.strategy", "deepspeed_stage_2")
    assert message.startswith("lit_lora: error: trainer.strategy=deepspeed_stage_2: MPS is a single device")


# ---- memory in results.json ------------------------------------------------------------------------


def test_results_record_driver_and_current_mps_memory(monkeypatch, tiny_bert, tiny_sst2, tmp_path):
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 96 * 2**20)
    monkeypatch.setattr(torch.mps, "current_allocated_memory", lambda: 40 * 2**20)
    assert peak_memory(MPS) == (96.0, "mps_driver_allocated")
    assert memory_details(MPS) == {"mps_current_allocated_mb": 40.0}
    assert memory_details(torch.device("cpu")) == {}

    recorder = ResultsRecorder()
    run = trainer(tmp_path, callbacks=[recorder], limit_val_batches=1)
    module = classifier(tiny_bert, num_labels=2)
    run.validate(module, sst2(tiny_bert, tiny_sst2))
    cpu_record = json.loads((tmp_path / "results.json").read_text())
    assert cpu_record["memory_kind"] == "cpu_peak_rss" and "mps_current_allocated_mb" not in cpu_record
    run.strategy._root_device = MPS  # the same run's record, as written on an Apple GPU
    recorder._write(run, module, "validate")
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["memory_kind"] == "mps_driver_allocated" and record["peak_memory_mb"] == 96.0
    assert record["mps_current_allocated_mb"] == 40.0 and record["device"] == "mps"
