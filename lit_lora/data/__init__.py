"""One LightningDataModule per task, sharing :class:`TextDataModule`."""

from lit_lora.data.base import TextDataModule
from lit_lora.data.chat_sft import ChatSFTDataModule, ChatSource
from lit_lora.data.classification import AGNewsDataModule, ClassificationDataModule, SST2DataModule
from lit_lora.data.demo import DemoSentimentDataModule
from lit_lora.data.squad import SquadV2DataModule

__all__ = [
    "AGNewsDataModule",
    "ChatSFTDataModule",
    "ChatSource",
    "ClassificationDataModule",
    "DemoSentimentDataModule",
    "SST2DataModule",
    "SquadV2DataModule",
    "TextDataModule",
]
