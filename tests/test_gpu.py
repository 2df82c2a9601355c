"""CUDA behaviour (`make test-gpu`): bf16 LoRA, QLoRA peak memory, adapter round trip, two-GPU runs.

Every test here is marked `gpu` and skipped where torch sees no CUDA device; the two-GPU ones also
need ``torch.cuda.device_count() >= 2``.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from lit_lora import Quantization
from lit_lora.callbacks import ResultsRecorder
from lit_lora.callbacks.results import run_dir
from tests.helpers import REPO, classifier, sst2, trainer
from tests.helpers.cli import run_cli
from tests.helpers.training import LossTrace, changed_keys, fit, snapshot, trainable_keys

DEVICE = "cuda"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
QLORA = Quantization(mode="nf4", double_quant=True, compute_dtype="bfloat16")


class DeviceProbe(L.Callback):
    """Records the device of every training batch."""

    def __init__(self) -> None:
        self.types: set[str] = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.types.add(batch["input_ids"].device.type)


def test_bf16_lora_trains_only_the_adapter_on_cuda(tiny_bert, tiny_sst2, tmp_path):
    module = classifier(tiny_bert, num_labels=2)
    before = snapshot(module)
    on_device = DeviceProbe()
    trace = fit(
        module, sst2(tiny_bert, tiny_sst2), tmp_path, accelerator=DEVICE, precision="bf16-mixed",
        max_steps=4, gradient_clip_val=1.0, callbacks=[on_device],
    )  # fmt: skip
    assert on_device.types == {DEVICE}
    assert len(trace.losses) == 4 and all(torch.isfinite(torch.tensor(trace.losses)))
    trainable = trainable_keys(module)
    assert trainable and all(".lora_" in k or ".modules_to_save." in k for k in trainable)
    assert changed_keys(before, module) == trainable  # the frozen base is bit for bit unchanged


@pytest.mark.parametrize("base", ["tiny_bert", "minilm"])
def test_qlora_nf4_records_cuda_peak_memory(base, request, tiny_sst2, tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    model = request.getfixturevalue(base)
    module = classifier(model, num_labels=2, quantization=QLORA)
    trace = LossTrace()
    run = trainer(
        tmp_path, accelerator=DEVICE, precision="bf16-mixed", max_steps=4, limit_val_batches=2,
        callbacks=[ResultsRecorder(), trace],
    )  # fmt: skip
    run.fit(module, sst2(model, tiny_sst2))
    assert len(trace.losses) == 4 and all(torch.isfinite(torch.tensor(trace.losses)))
    layers = [m for m in module.peft_model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.quant_type == "nf4" and m.compute_dtype == torch.bfloat16 for m in layers)
    assert all(m.weight.quant_state.nested for m in layers)  # double quantisation

    record = json.loads((run_dir(run) / "results.json").read_text())
    assert record["device"] == DEVICE and (record["quantization"], record["double_quant"]) == ("nf4", True)
    assert record["memory_kind"] == f"{DEVICE}_max_allocated"
    assert record["peak_memory_mb"] > 0


@pytest.mark.parametrize("quantization", [None, QLORA], ids=["lora", "qlora"])
def test_saved_adapter_reloads_with_equal_logits_on_cuda(quantization, tiny_bert, tiny_sst2, tmp_path):
    datamodule = sst2(tiny_bert, tiny_sst2)
    module = classifier(tiny_bert, num_labels=2, quantization=quantization)
    fit(module, datamodule, tmp_path / "fit", accelerator=DEVICE, max_steps=3)
    module.save_adapter(tmp_path / "adapter")
    # The reloaded base is built (and quantised) on the GPU by the Trainer, as the CLI's `test` would.
    reloaded = classifier(
        tiny_bert, num_labels=2, quantization=quantization, adapter_path=str(tmp_path / "adapter")
    )
    trainer(tmp_path / "reload", accelerator=DEVICE).validate(reloaded, datamodule)

    batch = next(iter(datamodule.val_dataloader()))
    inputs = {k: v.to(DEVICE) for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        expected = module.to(DEVICE).eval().peft_model(**inputs).logits
        assert expected.device.type == DEVICE
        torch.testing.assert_close(reloaded.to(DEVICE).eval().peft_model(**inputs).logits, expected)
        if quantization is None:  # plain PEFT reads the same adapter
            base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
            plain = PeftModel.from_pretrained(base, tmp_path / "adapter").to(DEVICE).eval()
            torch.testing.assert_close(plain(**inputs).logits, expected)


# ---- two GPUs, from the command line ---------------------------------------------------------------


def results(root: Path) -> dict:
    return json.loads((root / "lightning_logs" / "version_0" / "results.json").read_text())


@two_gpus
def test_ddp_on_two_gpus(tiny_bert, tiny_sst2, tmp_path):
    fitted = run_cli(
        "fit", "--config", "configs/sst2_lora.yaml", "--trainer.strategy", "ddp",
        "--model.model_name_or_path", str(tiny_bert), "--data.data_dir", str(tiny_sst2),
        "--trainer.accelerator", DEVICE, "--trainer.devices", "2", "--trainer.max_epochs", "1",
        "--trainer.precision", "bf16-mixed", "--trainer.default_root_dir", str(tmp_path),
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    record = results(tmp_path)
    assert record["num_devices"] == 2 and record["device"] == DEVICE
    assert record["train_samples"] >= 96  # every row once; a rank may repeat one to keep in step
    assert {"val/acc", "train/loss"} <= set(record["metrics"])
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    PeftModel.from_pretrained(base, tmp_path / "lightning_logs" / "version_0" / "adapter")


DEEPSPEED_EXTRAS = sorted((REPO / "configs" / "extras").glob("deepspeed_zero2*.yaml"))


@two_gpus
@pytest.mark.parametrize("extra", DEEPSPEED_EXTRAS, ids=lambda p: p.stem)
def test_qlora_sft_recipe_with_deepspeed_on_two_gpus(extra, tiny_llama, tmp_path):
    pytest.importorskip("deepspeed")
    fitted = run_cli(
        "fit", "--config", "configs/qlora_sft_deepspeed.yaml", "--config", str(extra),
        "--model.model_name_or_path", str(tiny_llama), "--trainer.accelerator", DEVICE,
        "--trainer.devices", "2", "--trainer.max_steps", "4", "--trainer.val_check_interval", "4",
        "--trainer.default_root_dir", str(tmp_path),
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    record = results(tmp_path)
    assert record["num_devices"] == 2 and record["global_steps"] == 4
    assert (record["quantization"], record["double_quant"]) == ("nf4", True)
    assert record["memory_kind"] == f"{DEVICE}_max_allocated" and record["peak_memory_mb"] > 0
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    PeftModel.from_pretrained(base, tmp_path / "lightning_logs" / "version_0" / "adapter")


def bert_of_550_mb(tokenizer_from: Path, directory: Path) -> Path:
    """A 16-layer BERT-base-wide encoder, seeded: 137M fp32 parameters, its largest module (the word
    embeddings, 94 MB) a sixth of the whole."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    config = BertConfig(vocab_size=tokenizer.vocab_size, num_hidden_layers=16)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@two_gpus
def test_zero3_partitions_the_base_at_load_on_two_gpus(tiny_bert, tiny_sst2, tmp_path):
    # Loaded whole and partitioned in deepspeed.initialize, each GPU would first hold the whole model.
    # Partitioned at load, a rank holds its half and, while loading, one whole module at a time.
    pytest.importorskip("deepspeed")
    model = bert_of_550_mb(tiny_bert, tmp_path / "model")
    whole = (model / "model.safetensors").stat().st_size
    fitted = run_cli(
        "fit", "--config", "configs/sst2_lora.yaml", "--config", "configs/extras/deepspeed_zero3.yaml",
        "--model.model_name_or_path", str(model), "--data.data_dir", str(tiny_sst2),
        "--trainer.accelerator", DEVICE, "--trainer.devices", "2", "--trainer.max_steps", "2",
        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        # DeepSpeed's communication buckets (2e8 elements each by default) small beside the weights.
        "--trainer.strategy.reduce_bucket_size", "1000000",
        "--trainer.strategy.allgather_bucket_size", "1000000",
        "--trainer.callbacks+=tests.helpers.ds_probe.DumpPeakMemory",
        "--trainer.default_root_dir", str(tmp_path / "fit"),
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    peaks = [json.loads((tmp_path / "fit" / f"peak.{rank}.json").read_text())["peak"] for rank in (0, 1)]
    assert all(0 < peak < 0.8 * whole for peak in peaks), (peaks, whole)
    base = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
    PeftModel.from_pretrained(base, tmp_path / "fit" / "lightning_logs" / "version_0" / "adapter")


def test_qlora_under_fsdp2_shards_4bit_weights_stored_in_the_compute_dtype(tiny_bert, tiny_sst2, tmp_path):
    # Packed 4-bit weights stored as uint8 would be the one dtype apart from the bf16 compute dtype:
    # lit_lora stores them in the compute dtype under FSDP2 (bnb_4bit_quant_storage) so they shard.
    pytest.importorskip("bitsandbytes")
    devices = str(min(2, torch.cuda.device_count()))
    common = [
        "--config", "configs/sst2_qlora.yaml", "--model.model_name_or_path", str(tiny_bert),
        "--data.data_dir", str(tiny_sst2), "--trainer.accelerator", DEVICE,
    ]  # fmt: skip
    fitted = run_cli(
        "fit", *common, "--config", "configs/extras/fsdp.yaml", "--trainer.devices", devices,
        "--trainer.max_epochs", "1", "--trainer.callbacks+=tests.helpers.dist_probe.ShardProbe",
        "--trainer.default_root_dir", str(tmp_path / "fit"),
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    record = results(tmp_path / "fit")
    assert record["num_devices"] == int(devices) and record["quantization"] == "nf4"
    shards = json.loads((tmp_path / "fit" / "shards0.json").read_text())
    assert shards["packed_dtypes"] == ["torch.bfloat16"]
    if devices == "2":
        assert shards["local"] < 0.51 * shards["numel"]
    # The export, gathered whole, scores in one process what the sharded model scored.
    adapter = tmp_path / "fit" / "lightning_logs" / "version_0" / "adapter"
    validated = run_cli(
        "validate", *common, "--trainer.devices", "1", "--model.adapter_path", str(adapter),
        "--trainer.default_root_dir", str(tmp_path / "one"),
    )  # fmt: skip
    assert validated.returncode == 0, validated.stderr[-3000:]
    one = results(tmp_path / "one")["metrics"]
    assert one["val/acc"] == record["metrics"]["val/acc"]
    assert one["val/loss"] == pytest.approx(record["metrics"]["val/loss"], rel=1e-3)


def test_varlen_attention_on_cuda_equals_sdpa_over_the_block_diagonal_mask():
    # The per-sequence causal kernels (flash / memory-efficient on CUDA) against sdpa's masked one.
    from transformers import AutoConfig

    from lit_lora.models.lm.packing import packed_inputs
    from lit_lora.models.lm.varlen_attention import VARLEN_SDPA

    shape = {"vocab_size": 300, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    lengths = [7, 33, 5, 64]
    pack = {
        "input_ids": torch.randint(5, 300, (1, sum(lengths)), generator=torch.Generator().manual_seed(0)),
        "position_ids": torch.cat([torch.arange(n) for n in lengths])[None],
    }
    logits = {}
    for attention in ("sdpa", VARLEN_SDPA):
        torch.manual_seed(0)
        config = AutoConfig.for_model("llama", **shape)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attention).to(DEVICE)
        inputs = {k: v.to(DEVICE) if torch.is_tensor(v) and k != "cu_seq_lens_q" else v
                  for k, v in packed_inputs(pack).items()}  # fmt: skip
        with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16):
            logits[attention] = model(**inputs).logits.float()
    torch.testing.assert_close(logits[VARLEN_SDPA], logits["sdpa"], atol=2e-2, rtol=2e-2)
