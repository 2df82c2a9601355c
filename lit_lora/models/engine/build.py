"""Loading a Hugging Face model, quantised or not, and wrapping it with a PEFT adapter."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, TaskType, get_peft_model
from safetensors import SafetensorError
from transformers import PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from lit_lora.core.hub import resolve_model_path
from lit_lora.core.quantization import Quantization
from lit_lora.errors import LitLoraError
from lit_lora.methods import ADAPTER, PeftMethod, method_of

log = logging.getLogger(__name__)


def head_module_names(auto_cls: Any, config: PretrainedConfig) -> list[str]:
    """Task heads and the pooler: trained in full and never quantised.

    Found by building the architecture on the meta device (no memory, no weights): every top-level
    child that is not the backbone is a head, and the backbone's pooler, if any, feeds the head.
    """
    with torch.device("meta"):
        skeleton = auto_cls.from_config(config)
    backbone_name = skeleton.base_model_prefix
    heads = [
        name for name, _ in skeleton.named_children() if name != backbone_name and _has_params(skeleton, name)
    ]
    backbone = getattr(skeleton, backbone_name, None)
    if backbone is not None and getattr(backbone, "pooler", None) is not None:
        heads.append(f"{backbone_name}.pooler")
    return heads


def _has_params(model: torch.nn.Module, child: str) -> bool:
    return any(True for _ in getattr(model, child).parameters())


def load_base_model(
    auto_cls: Any,
    name_or_path: str,
    config: PretrainedConfig,
    quantization: Quantization,
    device: torch.device,
    keep_full_precision: list[str],
    trust_remote_code: bool = False,
    shardable: bool = False,
) -> PreTrainedModel:
    """``shardable``: the base will be sharded (FSDP2), so 4-bit weights are stored in the compute dtype."""
    kwargs: dict[str, Any] = {"config": config, "trust_remote_code": trust_remote_code}
    if quantization.enabled:
        quantization.check_supported(device)
        kwargs["quantization_config"] = quantization.to_bnb_config(keep_full_precision, device, shardable)
        kwargs["device_map"] = {"": device}
    try:
        return auto_cls.from_pretrained(resolve_model_path(name_or_path), **kwargs)
    except OSError as err:
        raise LitLoraError(f"model.model_name_or_path={name_or_path}: {str(err).splitlines()[0]}") from err


def keep_4bit_weights_trainable_layout(model: torch.nn.Module) -> None:
    """Stop bitsandbytes (0.50) from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16 an eval-mode forward (Lightning's sanity check, validation) repacks the
    weights in place and training mode never unpacks them, so the next training step fails inside
    ``matmul_4bit``. lit_lora keeps the portable layout throughout.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def wrap_with_adapter(
    base: PreTrainedModel,
    adapter: PeftMethod,
    task_type: TaskType,
    modules_to_save: list[str],
    total_steps: int | None,
    adapter_path: str | None = None,
) -> PeftModel:
    """A fresh trainable adapter, or the one saved at ``adapter_path`` (frozen, for evaluation)."""
    if adapter_path is not None:
        if not (Path(adapter_path) / "adapter_config.json").is_file():
            raise LitLoraError(f"model.adapter_path={adapter_path}: no adapter_config.json there")
        model = _load_adapter(base, adapter_path)
        method_of(model.peft_config[ADAPTER]).prepare_loaded(model)
        return model
    config = adapter.to_peft_config(task_type, modules_to_save, total_steps)
    try:
        # Lightning builds the model under a default-device context (torch.device("cuda")), where PEFT's
        # CPU-generator initialisations (VeRA's shared projections) fail. Built on the CPU, PEFT moves
        # each adapter to its base layer's device, and a seed gives the same adapter on every device.
        with torch.device("cpu"):
            return get_peft_model(base, config)
    except ValueError as err:
        if "target" not in str(err).lower():
            raise
        raise LitLoraError(
            f"model.adapter.target_modules={adapter.target_modules} matches no layer of this model; its "
            f"linear layers are {linear_layer_names(base)}"
        ) from err


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """The last name part of every linear layer: what target_modules may list."""
    linear = (torch.nn.Linear, Conv1D)
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, linear)})


def _load_adapter(base: PreTrainedModel, adapter_path: str) -> PeftModel:
    with _adapter_errors(adapter_path, "model.adapter_path"):
        return PeftModel.from_pretrained(base, adapter_path, is_trainable=False)


def load_more_adapter(model: PeftModel, adapter_path: str, name: str, key: str) -> None:
    """Load the saved adapter at ``adapter_path`` into ``model`` as ``name``, frozen (``key`` names it)."""
    with _adapter_errors(adapter_path, key):
        model.load_adapter(adapter_path, adapter_name=name, is_trainable=False)


@contextmanager
def _adapter_errors(adapter_path: str, key: str) -> Iterator[None]:
    """PEFT's loading errors as one line naming ``key``'s folder and the likely cause."""
    try:
        yield
    except SafetensorError as err:
        raise LitLoraError(
            f"{key}={adapter_path}: adapter_model.safetensors cannot be read ({err}); it is "
            "corrupt or truncated: export the adapter again"
        ) from err
    except (RuntimeError, ValueError, KeyError) as err:
        lines = str(err).splitlines()
        detail = next((line.strip() for line in lines if "size mismatch" in line), lines[0] if lines else "")
        raise LitLoraError(
            f"{key}={adapter_path} does not fit this base model ({detail}); was it trained on "
            "another model.model_name_or_path?"
        ) from err
