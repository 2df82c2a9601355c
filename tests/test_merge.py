"""``lit_lora merge``: what each method's merged weight update equals, seeds, loading, refusals."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lit_lora.__main__ import main
from lit_lora.merge.command import merge

W1, W2 = 0.7, -0.3  # a negative weight too: PEFT's linear puts its sign on A only


def make_adapter(
    base: Path, out: Path, seed: int, r: int = 4, alpha: int = 8, targets=("q_proj", "v_proj"), **kwargs
) -> Path:
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)  # init_lora_weights=False: random A and B, so B·A is not zero
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(targets),
        init_lora_weights=False,
        task_type="CAUSAL_LM",
        **kwargs,
    )
    get_peft_model(model, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge_sources")
    return {
        "a": make_adapter(tiny_llama, root / "a", seed=1, r=4, alpha=8),
        "b": make_adapter(tiny_llama, root / "b", seed=2, r=4, alpha=16),
        "c": make_adapter(tiny_llama, root / "c", seed=5, r=4, alpha=8),
        "r2": make_adapter(tiny_llama, root / "r2", seed=3, r=2, alpha=4),
        "q_only": make_adapter(tiny_llama, root / "q_only", seed=4, targets=("q_proj",)),
    }


def factors(adapter: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Per LoRA module: A, B and the scaling alpha / r that the saved config implies."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert not config.get("use_rslora")
    scaling = config["lora_alpha"] / config["r"]
    state = load_file(adapter / "adapter_model.safetensors")
    names = {k.removesuffix(".lora_A.weight") for k in state if k.endswith(".lora_A.weight")}
    return {n: (state[f"{n}.lora_A.weight"], state[f"{n}.lora_B.weight"], scaling) for n in names}


def delta(adapter: Path) -> dict[str, torch.Tensor]:
    return {n: s * b @ a for n, (a, b, s) in factors(adapter).items()}


def test_cat_is_the_weighted_sum_of_updates(adapters, tmp_path):
    out = merge([adapters["a"], adapters["b"]], "cat", [W1, W2], tmp_path / "cat")
    d1, d2, merged = delta(adapters["a"]), delta(adapters["b"]), delta(out)
    assert merged.keys() == d1.keys() and len(merged) == 4
    for name in merged:
        torch.testing.assert_close(merged[name], W1 * d1[name] + W2 * d2[name])
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 8  # ranks add up


def test_linear_mixes_a_and_b_with_square_root_weights(adapters, tmp_path):
    out = merge([adapters["a"], adapters["b"]], "linear", [W1, W2], tmp_path / "linear")
    f1, f2, merged = factors(adapters["a"]), factors(adapters["b"]), factors(out)
    d1, d2 = delta(adapters["a"]), delta(adapters["b"])
    for name, (a, b, scaling) in merged.items():
        (a1, b1, s1), (a2, b2, s2) = f1[name], f2[name]
        c1, c2 = math.sqrt(abs(W1 * s1)), math.sqrt(abs(W2 * s2))
        assert scaling == 1.0
        # What PEFT computes: A = sum sign_i c_i A_i, B = sum c_i B_i, so that B·A has cross terms.
        torch.testing.assert_close(a, c1 * a1 - c2 * a2)
        torch.testing.assert_close(b, c1 * b1 + c2 * b2)
        torch.testing.assert_close(b @ a, (c1 * b1 + c2 * b2) @ (c1 * a1 - c2 * a2))
        assert not torch.allclose(b @ a, W1 * d1[name] + W2 * d2[name], atol=1e-4)


def test_dare_is_reproducible_under_a_seed(adapters, tmp_path):
    def dare(seed: int, name: str) -> dict[str, torch.Tensor]:
        out = merge([adapters["a"], adapters["b"]], "dare_ties", [W1, W2], tmp_path / name, 0.5, seed)
        return load_file(out / "adapter_model.safetensors")

    first, again, other = dare(0, "s0"), dare(0, "s0_again"), dare(1, "s1")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    record = json.loads((tmp_path / "s1" / "merge.json").read_text())
    assert (record["method"], record["density"], record["seed"], record["weights"]) == (
        "dare_ties",
        0.5,
        1,
        [W1, W2],
    )
    assert [s["path"] for s in record["sources"]] == [str(adapters["a"]), str(adapters["b"])]
    weights = [adapters[k] / "adapter_model.safetensors" for k in "ab"]
    assert [s["sha256"] for s in record["sources"]] == [
        hashlib.sha256(w.read_bytes()).hexdigest() for w in weights
    ]


def test_the_record_names_sources_as_given_so_that_it_moves_with_the_project(adapters, tmp_path, monkeypatch):
    monkeypatch.chdir(adapters["a"].parent)
    merge([Path(adapters["a"].name), Path(adapters["b"].name)], "linear", [W1, W2], tmp_path / "relative")
    record = json.loads((tmp_path / "relative" / "merge.json").read_text())
    assert [s["path"] for s in record["sources"]] == [adapters["a"].name, adapters["b"].name]


def test_merged_adapter_loads_in_peft_and_lit_lora(adapters, tiny_llama, tmp_path):
    from lit_lora.models import CausalLM

    out = tmp_path / "cli_cat"
    main(["merge", str(adapters["a"]), str(adapters["b"]), "--method", "cat", "--weights", "0.5", "0.5"]
         + ["--out", str(out)])  # fmt: skip
    d1, d2 = delta(adapters["a"]), delta(adapters["b"])
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out)
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    name = "base_model.model.model.layers.0.self_attn.q_proj"
    torch.testing.assert_close(
        layer.get_delta_weight("default"), 0.5 * d1[name] + 0.5 * d2[name]
    )  # loaded scaling is 1

    module = CausalLM(str(tiny_llama), adapter_path=str(out))
    ids = torch.tensor([[1, 5, 9, 3]])
    module.peft_model.eval()
    with torch.no_grad():
        logits = module.peft_model(input_ids=ids).logits
        torch.testing.assert_close(logits, peft_model.eval()(input_ids=ids).logits)


def test_cat_of_rslora_adapters_loads_with_scaling_one(adapters, tiny_llama, tmp_path):
    # PEFT's merged config keeps use_rslora with lora_alpha = r: it would load scaled by sqrt(r).
    sources = [make_adapter(tiny_llama, tmp_path / f"rs{i}", seed=i, use_rslora=True) for i in (1, 2)]
    out = merge(sources, "cat", [W1, W2], tmp_path / "cat_rs")
    layers = [
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), path)
        .base_model.model.model.layers[1]
        .self_attn.v_proj.get_delta_weight("default")
        for path in (*sources, out)
    ]
    torch.testing.assert_close(layers[2], W1 * layers[0] + W2 * layers[1])


def test_average_ab_averages_a_and_b_separately(adapters, tmp_path):
    out = merge([adapters["a"], adapters["c"]], "average_ab", [3.0, 1.0], tmp_path / "avg", base="elsewhere")
    s1, s2 = (load_file(adapters[k] / "adapter_model.safetensors") for k in ("a", "c"))
    merged = load_file(out / "adapter_model.safetensors")
    assert merged.keys() == s1.keys()
    for key, value in merged.items():
        torch.testing.assert_close(value, (3.0 * s1[key] + 1.0 * s2[key]) / 4.0)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "elsewhere"


def edited(adapter: Path, directory: Path, **changes) -> Path:
    shutil.copytree(adapter, directory)
    config = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    return directory


@pytest.mark.parametrize(
    ("second", "changes", "method", "message"),
    [
        ("b", {"base_model_name_or_path": "other/model"}, "cat", "base model 'other/model' is not"),
        ("b", {"task_type": "SEQ_CLS"}, "cat", "task type 'SEQ_CLS' is not"),
        ("q_only", {}, "cat", "target_modules ['q_proj'] differ"),
        ("r2", {}, "linear", "use cat (exact) or svd"),
        ("b", {}, "average_ab", "average_ab needs equal scaling"),
        ("b", {"peft_type": "ADALORA"}, "svd", "PEFT does not merge AdaLoRA"),
        ("b", {"modules_to_save": ["lm_head"]}, "cat", "modules_to_save=['lm_head']"),
    ],
)
def test_refusals_are_one_line_and_exit_2(adapters, tmp_path, capsys, second, changes, method, message):
    other = edited(adapters[second], tmp_path / "other", **changes)
    argv = ["merge", str(adapters["a"]), str(other), "--method", method, "--weights", "1", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lit_lora: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("runs", "--out runs: holds the source runs/a; write elsewhere"),
        (".", "--out .: is the working directory or a folder above it"),
        ("runs/a", "--out runs/a: is the source runs/a itself"),
        ("notes", "--out notes: exists and is not a previous merged adapter written by lit_lora"),
        ("runs/trained", "--out runs/trained: exists and is not a previous merged adapter"),
        ("runs/merged_then_edited", "--out runs/merged_then_edited: exists and is not a previous merged"),
    ],
)
def test_out_never_deletes_what_merge_did_not_write(adapters, tmp_path, monkeypatch, capsys, out, message):
    monkeypatch.chdir(tmp_path)
    for name in ("a", "c"):
        shutil.copytree(adapters[name], tmp_path / "runs" / name)
    shutil.copytree(adapters["b"], tmp_path / "runs" / "trained")  # an adapter, but not a merge
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "ideas.txt").write_text("keep me")
    argv = ["merge", "runs/a", "runs/c", "--method", "average_ab", "--weights", "1", "1"]
    main([*argv, "--out", "runs/merged_then_edited"])
    (tmp_path / "runs" / "merged_then_edited" / "my_eval.txt").write_text("keep me too")
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", out])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lit_lora: error: {message}") and err.count("\n") == 1
    assert tree(tmp_path) == before  # sources, the other adapter, notes and the edited merge untouched


def test_out_replaces_a_previous_merge_or_an_empty_folder(adapters, tmp_path):
    sources = [adapters["a"], adapters["c"]]
    out = merge(sources, "average_ab", [1.0, 1.0], tmp_path / "merged")
    marker = json.loads((out / ".lit_lora_output.json").read_text())
    assert marker == {
        "kind": "merged adapter",
        "files": ["adapter_config.json", "adapter_model.safetensors", "merge.json"],
    }
    again = merge(sources, "average_ab", [3.0, 1.0], out)  # a previous merge: replaced
    assert json.loads((again / "merge.json").read_text())["weights"] == [3.0, 1.0]
    (out / ".lit_lora_output.json").unlink()  # a merge written before the marker: still replaced
    merge(sources, "average_ab", [1.0, 3.0], out)
    assert json.loads((out / "merge.json").read_text())["weights"] == [1.0, 3.0]
    (tmp_path / "empty").mkdir()
    assert (merge(sources, "average_ab", [1.0, 1.0], tmp_path / "empty") / "merge.json").is_file()
