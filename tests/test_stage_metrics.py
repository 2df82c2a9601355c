"""Metric objects per stage: one ModuleDict per stage, nothing shared between stages, nothing checkpointed."""

from __future__ import annotations

import pytest
from torchmetrics import MeanMetric

from lit_lora import LoraSpec
from lit_lora.metrics.stages import StageMetrics
from lit_lora.models import CausalLM, PeftModule, QuestionAnswering, SequenceClassifier


def test_each_stage_gets_its_own_metrics_and_train_stays_a_method():
    metrics = StageMetrics(lambda stage: {"loss": MeanMetric()}, ("train", "val", "test"))
    assert "train" in metrics and "predict" not in metrics
    assert len({id(metrics[stage]["loss"]) for stage in ("train", "val", "test")}) == 3
    assert metrics.train(False) is metrics and not metrics["val"].training  # nn.Module.train untouched
    metrics["val"]["loss"].update(2.0)
    metrics.reset("val")
    metrics["test"]["loss"].update(1.0)
    assert float(metrics["test"]["loss"].compute()) == 1.0
    assert metrics["val"]["loss"].update_count == 0


def build(kind: str, models: dict) -> PeftModule:
    adapter = LoraSpec(r=4, alpha=8, dropout=0.0)
    if kind == "classifier":
        return SequenceClassifier(str(models["bert"]), adapter=adapter, num_labels=2)
    if kind == "qa":
        return QuestionAnswering(str(models["bert"]), adapter=adapter)
    return CausalLM(str(models["llama"]), adapter=adapter)


@pytest.mark.parametrize("kind", ["classifier", "qa", "causal_lm"])
def test_metric_states_never_enter_the_state_dict(kind, tiny_models):
    module = build(kind, tiny_models)
    module.configure_model()
    assert all(stage in module.stage_metrics for stage in module.metric_stages)
    # Old checkpoints load strictly only if the module adds no keys of its own beside the model's.
    assert set(module.state_dict()) == {f"model.{key}" for key in module.peft_model.state_dict()}
