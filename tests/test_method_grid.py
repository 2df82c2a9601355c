"""Every PEFT method on every task module, as one table: a row per method, the same checks for each.

Adding a method is a row here (its spec, an independent count of its trainable parameters from layer
shapes, and what else must hold for it); the checks live in ``tests/helpers/method_grid.py``.
Behaviour only one method has stays in that method's own test file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from lit_lora import LitLoraError
from lit_lora.core.quantization import Quantization
from lit_lora.methods import (
    AdaLoraSpec,
    DoraSpec,
    LoraPlusSpec,
    LoraSpec,
    OloraSpec,
    PeftMethod,
    PissaSpec,
)
from lit_lora.methods.vera import VeraSpec
from tests.helpers import method_grid as grid

R, INIT_R, VERA_R = 4, 6, 16
Shapes = list[tuple[int, int]]  # (d_in, d_out) of each adapted layer


def lora_count(shapes: Shapes) -> int:
    return sum(R * (d_in + d_out) for d_in, d_out in shapes)  # A: r x in, B: out x r


@dataclass(frozen=True)
class Method:
    name: str  # results.json's "method"
    label: str  # results.json's "method_label" and the report's approach
    spec: Callable[[list[str]], PeftMethod]  # the method on the given target modules
    trainable: Callable[[Shapes], int]  # adapter parameters that train, from the adapted layers' shapes
    export_atol: float = 0.0  # 0: the saved adapter reloads to equal outputs
    ranks: dict | None = None  # describe()["ranks"], where pinned
    resumes_exactly: bool = False  # an interrupted classifier fit resumes to the same losses and weights
    on_4bit_base: str | None = None  # the report's approach when it trains on an nf4 base
    refuses_quantized: str | None = None  # the one-line refusal of a quantised base ({mode} filled in)


METHODS = [
    Method("lora", "LoRA", lambda t: LoraSpec(r=R, dropout=0.0, target_modules=t), lora_count),
    Method(
        "adalora",
        "AdaLoRA",
        lambda t: AdaLoraSpec(init_r=INIT_R, target_r=3, tinit=1, tfinal=1, dropout=0.0, target_modules=t),
        lambda shapes: sum(INIT_R * (d_in + d_out + 1) for d_in, d_out in shapes),  # P, Q and E
    ),
    # OLoRA and PiSSA export plain LoRA on the unchanged base: equal up to float rounding.
    Method(
        "olora",
        "OLoRA",
        lambda t: OloraSpec(r=R, alpha=R, dropout=0.0, target_modules=t),
        lora_count,  # LoRA's shapes; only the start differs
        export_atol=1e-5,
        resumes_exactly=True,
        refuses_quantized="OloraSpec on a model.quantization.mode={mode} base is not supported",
    ),
    Method(
        "pissa",
        "PiSSA",
        lambda t: PissaSpec(r=R, alpha=R, dropout=0.0, target_modules=t),
        lora_count,
        export_atol=1e-5,
        resumes_exactly=True,
        refuses_quantized="PissaSpec cannot start from a model.quantization.mode={mode} base",
    ),
    Method(
        "dora",
        "DoRA",
        lambda t: DoraSpec(r=R, dropout=0.0, target_modules=t),
        lambda shapes: sum(R * (d_in + d_out) + d_out for d_in, d_out in shapes),  # + a magnitude per output
        resumes_exactly=True,
        on_4bit_base=f"DoRA + nf4 base, r={R}",
    ),
    Method(
        "vera",
        "VeRA",
        lambda t: VeraSpec(r=VERA_R, target_modules=t),
        # Per layer lambda_d (r) and lambda_b (out); the shared projections A and B are frozen buffers.
        lambda shapes: sum(VERA_R + d_out for _, d_out in shapes),
        ranks={"r": VERA_R},  # VeRA's config has no rank_pattern
        resumes_exactly=True,
        on_4bit_base=f"VeRA + nf4 base, r={VERA_R}",
    ),
    Method(
        "loraplus",
        "LoRA+",
        lambda t: LoraPlusSpec(r=R, dropout=0.0, lr_ratio=8.0, target_modules=t),
        lora_count,  # plain LoRA adapters
        resumes_exactly=True,
    ),
]


def rows(having: Callable[[Method], object] = lambda m: True) -> list:
    return [pytest.param(m, id=m.name) for m in METHODS if having(m)]


def spec_for(method: Method, task: str) -> PeftMethod:
    return method.spec(grid.TARGETS[task])


@pytest.mark.parametrize("task", grid.TASKS)
@pytest.mark.parametrize("method", rows())
def test_method_on_task(method: Method, task, tiny_models, tmp_path):
    module = grid.check_method_on_task(
        task,
        lambda t: spec_for(method, t),
        tiny_models,
        tmp_path / "adapter",
        method.trainable,
        (method.name, method.label),
        atol=method.export_atol,
    )
    if method.ranks is not None:
        assert module.describe()["ranks"] == method.ranks


@pytest.mark.parametrize("method", rows(lambda m: m.resumes_exactly))
def test_resumes_exactly(method: Method, tiny_bert, tiny_sst2, tmp_path):
    grid.check_resume(spec_for(method, "classification"), tiny_bert, tiny_sst2, tmp_path)


@pytest.mark.parametrize("method", rows(lambda m: m.on_4bit_base))
def test_trains_on_a_4bit_base(method: Method, tiny_models):
    spec = spec_for(method, "classification")
    module = grid.build("classification", spec, tiny_models, quantization=Quantization("nf4"))
    grid.check_only_adapter_and_head_get_gradients(module, "classification")
    assert grid.approach({**module.describe(), "precision": "32-true"}) == method.on_4bit_base


@pytest.mark.parametrize("mode", ["nf4", "int8"])
@pytest.mark.parametrize("method", rows(lambda m: m.refuses_quantized))
def test_refuses_a_quantised_base_in_one_line(method: Method, mode, tiny_bert):
    spec = spec_for(method, "classification")
    with pytest.raises(LitLoraError, match=method.refuses_quantized.format(mode=mode)):
        module = grid.build("classification", spec, {"bert": tiny_bert}, quantization=Quantization(mode))
        module.configure_model()  # the check comes before the base model loads
