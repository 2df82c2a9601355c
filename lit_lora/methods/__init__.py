"""PEFT methods, one file each; ``METHODS`` is the registry (a saved adapter is described by the one
method that recognises its config)."""

from lit_lora.methods.adalora import AdaLoraSpec
from lit_lora.methods.base import ADAPTER, AdapterHooks, PeftMethod
from lit_lora.methods.dora import DoraSpec
from lit_lora.methods.lora import LoraSpec
from lit_lora.methods.loraplus import LoraPlusSpec
from lit_lora.methods.olora import OloraSpec
from lit_lora.methods.pissa import PissaSpec
from lit_lora.methods.vera import VeraSpec

METHODS: tuple[type[PeftMethod], ...] = (
    LoraSpec,
    AdaLoraSpec,
    DoraSpec,
    LoraPlusSpec,
    PissaSpec,
    OloraSpec,
    VeraSpec,
)


def method_of(config: object) -> type[PeftMethod]:
    """The registered method whose saved configs look like ``config`` (LoRA when none claims it)."""
    return next((method for method in METHODS if method.recognises(config)), LoraSpec)  # type: ignore[arg-type]


__all__ = ["ADAPTER", "METHODS", "AdaLoraSpec", "AdapterHooks", "DoraSpec", "LoraSpec", "PeftMethod"]
__all__ += ["LoraPlusSpec", "OloraSpec", "PissaSpec", "method_of"]
