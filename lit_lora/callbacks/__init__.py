"""Callbacks that every lit_lora run gets: results record, adapter export, predictions file."""

from lit_lora.callbacks.export import AdapterExport
from lit_lora.callbacks.guard import NonFiniteLossGuard
from lit_lora.callbacks.predictions import PredictionsWriter
from lit_lora.callbacks.results import ResultsRecorder

__all__ = ["AdapterExport", "NonFiniteLossGuard", "PredictionsWriter", "ResultsRecorder"]
