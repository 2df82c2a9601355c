"""One LightningDataModule per task, sharing :class:`TextDataModule`."""

from lit_lora.data.base import TextDataModule
from lit_lora.data.causal import CausalTextDataModule
from lit_lora.data.chat_sft import ChatSFTDataModule, ChatSource
from lit_lora.data.classification import AGNewsDataModule, ClassificationDataModule, SST2DataModule
from lit_lora.data.demo import DemoSentimentDataModule
from lit_lora.data.gsm8k import GSM8KDataModule
from lit_lora.data.label_generation import (
    AGNewsGenerationDataModule,
    LabelGenerationDataModule,
    SST2GenerationDataModule,
)
from lit_lora.data.squad import SquadV2DataModule
from lit_lora.data.wikitext import WikiTextDataModule

__all__ = [
    "AGNewsDataModule",
    "AGNewsGenerationDataModule",
    "CausalTextDataModule",
    "ChatSFTDataModule",
    "ChatSource",
    "ClassificationDataModule",
    "DemoSentimentDataModule",
    "GSM8KDataModule",
    "LabelGenerationDataModule",
    "SST2DataModule",
    "SST2GenerationDataModule",
    "SquadV2DataModule",
    "TextDataModule",
    "WikiTextDataModule",
]
