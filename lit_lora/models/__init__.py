"""One LightningModule per head, sharing :class:`PeftModule`."""

from lit_lora.models.base import PeftModule
from lit_lora.models.classification import SequenceClassifier

__all__ = ["PeftModule", "SequenceClassifier"]
