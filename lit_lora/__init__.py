"""lit_lora: LoRA, QLoRA and AdaLoRA fine-tuning of Hugging Face models with Lightning and PEFT."""

from lit_lora.adapters import AdaLoraSpec, LoraSpec, Quantization
from lit_lora.errors import LitLoraError

__version__ = "0.1.0"
__all__ = ["AdaLoraSpec", "LitLoraError", "LoraSpec", "Quantization", "__version__"]
