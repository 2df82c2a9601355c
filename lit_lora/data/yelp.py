"""Throwaway: Yelp review polarity (local files with ``text`` and ``label``)."""

from lit_lora.data.classification import ClassificationDataModule
from lit_lora.data.label_generation import LabelGenerationDataModule


class YelpDataModule(ClassificationDataModule):
    hub_path = "fancyzhx/yelp_polarity"
    text_columns = ("text",)
    label_names = ("negative", "positive")


class YelpGenerationDataModule(LabelGenerationDataModule):
    task = YelpDataModule
    default_label_words = ("negative", "positive")
    default_instruction = "Classify the sentiment of this review as one of: negative, positive."
