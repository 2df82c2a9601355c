"""Sequence classification (SST-2, AG News, ...) with a PEFT adapter."""

from __future__ import annotations

from typing import Annotated, Any

import torch
import torch.nn.functional as F
from peft import TaskType
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import Accuracy, F1Score
from transformers import AutoModelForSequenceClassification

from lit_lora.core.ranges import Range
from lit_lora.errors import LitLoraError
from lit_lora.models.base import PeftModule

Batch = dict[str, torch.Tensor]


class SequenceClassifier(PeftModule):
    """``AutoModelForSequenceClassification`` + adapter; the head and pooler are trained in full.

    F1 is the positive-class F1 for two labels and macro F1 for more.
    """

    auto_model_class = AutoModelForSequenceClassification
    task_type = TaskType.SEQ_CLS
    metric_stages = ("train", "val", "test")  # accuracy and F1 of the training batches too

    def __init__(
        self, *args: Any, num_labels: Annotated[int | None, Range(ge=2)] = None, **kwargs: Any
    ) -> None:
        """
        Args:
            num_labels: Number of classes; None takes it from the datamodule.
        """
        super().__init__(*args, **kwargs)
        self.num_labels = num_labels

    def _resolved_num_labels(self) -> int:
        if self.num_labels is None:
            datamodule = self._trainer.datamodule if self._trainer is not None else None
            self.num_labels = getattr(datamodule, "num_labels", None)
        if self.num_labels is None:
            raise LitLoraError("model.num_labels is not set and no datamodule provides it")
        return self.num_labels

    def _build_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"num_labels": self._resolved_num_labels()}
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        label_names = getattr(datamodule, "label_names", None)
        if label_names:
            kwargs["id2label"] = dict(enumerate(label_names))
            kwargs["label2id"] = {name: i for i, name in enumerate(label_names)}
        return kwargs

    def _new_metrics(self, stage: str) -> dict[str, nn.Module]:
        n = self._resolved_num_labels()
        task_args: dict[str, Any] = {"task": "binary"} if n == 2 else {"task": "multiclass", "num_classes": n}
        average = {} if n == 2 else {"average": "macro"}
        scores = {"acc": Accuracy(**task_args), "f1": F1Score(**task_args, **average)}
        metrics: dict[str, nn.Module] = {"scores": MetricCollection(scores, prefix=f"{stage}/")}
        if stage != "train":  # train/loss is logged per step and averaged by Lightning
            metrics["loss"] = MeanMetric()  # row-weighted over the whole split and all ranks
        return metrics

    def forward(self, batch: Batch) -> Any:
        return self.peft_model(**batch)

    def _scored(self, batch: Batch, stage: str) -> tuple[Any, torch.Tensor]:
        outputs = self(batch)
        logits = outputs.logits.float()
        self.stage_metrics[stage]["scores"].update(logits.argmax(dim=-1), batch["labels"])
        return outputs, F.cross_entropy(logits, batch["labels"])

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        outputs, task_loss = self._scored(batch, "train")
        size = batch["labels"].shape[0]
        self.log("train/loss", task_loss, prog_bar=True, batch_size=size)
        # Lightning computes and resets metric objects logged per epoch.
        self.log_dict(self.stage_metrics["train"]["scores"], on_step=False, on_epoch=True, batch_size=size)
        extra = self.method_hooks.extra_loss_name
        if outputs.loss is not None and extra:
            # PEFT adds the method's regulariser (AdaLoRA's orthogonality term) to its loss; log it apart.
            self.log(f"train/{extra}", outputs.loss.detach() - task_loss.detach(), batch_size=size)
        return outputs.loss if outputs.loss is not None else task_loss

    def _eval_step(self, batch: Batch, stage: str) -> None:
        _, task_loss = self._scored(batch, stage)
        self.stage_metrics[stage]["loss"].update(task_loss, weight=batch["labels"].shape[0])

    def _eval_epoch_end(self, stage: str) -> None:
        # Computed here on every rank (each syncs its states), so a rank that only ran padding
        # batches still takes part; the values are global, hence no further sync_dist.
        metrics = self.stage_metrics[stage]
        self.log_dict(metrics["scores"].compute(), prog_bar=True)
        self.log(f"{stage}/loss", metrics["loss"].compute(), prog_bar=True)

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Any]]:
        batch = {k: v for k, v in batch.items() if k != "labels"}
        probs = self(batch).logits.float().softmax(dim=-1)
        confidence, label = probs.max(dim=-1)
        id2label = self.peft_model.config.id2label
        return [
            {"label": int(i), "label_name": id2label.get(int(i), str(int(i))), "confidence": float(c)}
            for i, c in zip(label, confidence, strict=True)
        ]
