"""One LightningModule per head, sharing :class:`PeftModule`."""

from lit_lora.models.base import PeftModule
from lit_lora.models.causal_lm import CausalLM
from lit_lora.models.classification import SequenceClassifier
from lit_lora.models.question_answering import QuestionAnswering

__all__ = ["CausalLM", "PeftModule", "QuestionAnswering", "SequenceClassifier"]
