"""``lit_lora matrix``: real ``lit_lora test`` cells, finished ones skipped, failures recorded, bad specs."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from lit_lora.__main__ import main
from lit_lora.matrix import command as matrix
from lit_lora.matrix.spec import cell_command, load_spec, parse_spec
from lit_lora.matrix.tables import Cell, to_csv, to_markdown
from tests.helpers import REPO

GSM8K = str(REPO / "configs" / "gsm8k_gpt2.yaml")


def _adapter(base: Path, directory: Path, seed: int) -> Path:
    """A rank-2 LoRA with non-zero B (so that each adapter changes the scores differently)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(directory)
    return directory


def _spec(path: Path, base: Path, data: Path, models: list[dict], n_tasks: int = 2) -> Path:
    args = ["--data.data_dir", str(data), "--data.max_eval_samples", "3", "--model.generate_in_eval", "false"]
    tasks = [
        {"name": "loss", "config": GSM8K, "metric": "test/loss", "args": args},
        {"name": "ppl", "config": GSM8K, "metric": "test/ppl", "args": args},
    ]
    path.write_text(yaml.safe_dump({"base": str(base), "tasks": tasks[:n_tasks], "models": models}))
    return path


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "matrix.csv").open() as handle:
        return {row["model"]: row for row in csv.DictReader(handle)}


def _result(out: Path, model: str, task: str) -> Path:
    (path,) = (out / "cells" / model / task).rglob("results.json")
    return path


@pytest.mark.slow  # a matrix of real CLI fits
def test_matrix_runs_cells_skips_finished_and_records_failures(
    tiny_llama: Path, gsm8k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lora = _adapter(tiny_llama, tmp_path / "lora", seed=1)
    merged = _adapter(tiny_llama, tmp_path / "merged", seed=2)
    models = [
        {"name": "lora", "adapter": str(lora), "own_task": "loss"},
        {"name": "merged", "adapter": str(merged), "merge": True},
    ]
    spec, out = _spec(tmp_path / "spec.yaml", tiny_llama, gsm8k_dir, models), tmp_path / "out"
    launches: list[list[str]] = []
    real_launch = matrix._launch

    def counting(command: list[str], log: Path) -> int:
        launches.append(command)
        return real_launch(command, log)

    monkeypatch.setattr(matrix, "_launch", counting)
    main(["matrix", str(spec), "--out", str(out), "--jobs", "2"])

    assert len(launches) == 4 and all(
        c[c.index("-m") + 1 : c.index("-m") + 3] == ["lit_lora", "test"] for c in launches
    )
    rows = _rows(out)
    assert list(rows) == ["lora", "merged"]
    assert list(rows["lora"]) == ["model", "kind", "own_task", "loss", "ppl", "share:loss", "share:ppl"]
    scores = {}
    for model in rows:
        for task, key in (("loss", "test/loss"), ("ppl", "test/ppl")):
            record = json.loads(_result(out, model, task).read_text())
            assert record["status"] == "completed" and record["stage"] == "test"
            scores[model, task] = record["metrics"][key]
            assert float(rows[model][task]) == pytest.approx(scores[model, task], abs=1e-4)
    assert scores["lora", "loss"] != scores["merged", "loss"]  # the two adapters really were loaded
    # Share of the task's own adapter: merged / lora on "loss"; "ppl" has no own adapter, so blank.
    expected = scores["merged", "loss"] / scores["lora", "loss"]
    assert float(rows["merged"]["share:loss"]) == pytest.approx(expected, abs=1e-4)
    assert rows["merged"]["share:ppl"] == "" and rows["lora"]["share:loss"] == ""
    assert "## Merges as a share" in (out / "matrix.md").read_text()
    assert (out / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Second run, one task, a broken adapter added: the finished cells are skipped, untouched.
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("results.json")}
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    _spec(spec, tiny_llama, gsm8k_dir, [*models, {"name": "broken", "adapter": str(broken)}], n_tasks=1)
    launches.clear()
    with pytest.raises(SystemExit) as exit_info:
        main(["matrix", str(spec), "--out", str(out), "--jobs", "2"])
    assert exit_info.value.code == 1
    assert [c[c.index("--model.adapter_path") + 1] for c in launches] == [str(broken)]
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").rglob("results.json")} == mtimes
    rows = _rows(out)
    assert rows["broken"]["loss"] == "failed" and "ppl" not in rows["broken"]
    assert float(rows["lora"]["loss"]) == pytest.approx(scores["lora", "loss"], abs=1e-4)
    assert "broken / loss: exit" in (out / "matrix.md").read_text()

    # Third run of the first spec: all four cells finished earlier, nothing runs, exit status 0.
    _spec(spec, tiny_llama, gsm8k_dir, models)
    launches.clear()
    main(["matrix", str(spec), "--out", str(out)])
    assert launches == []


def test_share_table_and_failed_cells() -> None:
    spec = parse_spec(
        {
            "base": "b",
            "tasks": [{"name": t, "config": "c.yaml", "metric": "test/acc"} for t in ("x", "y")],
            "models": [
                {"name": "base", "adapter": None},
                {"name": "ax", "adapter": "a", "own_task": "x"},
                {"name": "ay", "adapter": "a", "own_task": "y"},
                {"name": "ties", "adapter": "m", "merge": True},
            ],
        },
        check_files=False,
    )
    cells = {
        ("base", "x"): Cell("completed", 0.25),
        ("base", "y"): Cell("completed", 0.1),
        ("ax", "x"): Cell("completed", 0.8),
        ("ax", "y"): Cell("completed", 0.2),
        ("ay", "x"): Cell("completed", 0.3),
        ("ay", "y"): Cell("failed", reason="exit 1: boom"),
        ("ties", "x"): Cell("completed", 0.6),
        ("ties", "y"): Cell("completed", 0.4),
    }
    rows = list(csv.DictReader(to_csv(spec, cells).splitlines()))
    assert [r["model"] for r in rows] == ["base", "ax", "ay", "ties"]
    assert [r["kind"] for r in rows] == ["base", "adapter", "adapter", "merge"]
    assert rows[3]["share:x"] == "0.7500"  # 0.6 / 0.8 (ax is x's own adapter)
    assert rows[3]["share:y"] == ""  # y's own adapter failed: no share
    assert rows[2]["y"] == "failed" and rows[0]["share:x"] == ""
    text = to_markdown(spec, cells)
    assert "| ties | 0.7500 |  |" in text and "x / ax" in text and "ay / y: exit 1: boom" in text
    base_cmd = cell_command(spec, spec.models[0], spec.tasks[0], Path("d"), "python")
    assert "--model.adapter_path" not in base_cmd and base_cmd[-2:] == ["--trainer.default_root_dir", "d"]


def test_example_spec_structure() -> None:
    spec = load_spec(REPO / "configs" / "matrix" / "loracombench_smollm2.yaml", check_files=False)
    assert [(t.name, t.metrics) for t in spec.tasks] == [
        ("agnews", ("test/acc",)),
        ("gsm8k", ("test/exact_match", "test/exact_match_flexible")),
    ]
    assert [c.name for c in spec.columns] == ["agnews", "gsm8k", "gsm8k:test/exact_match_flexible"]
    assert [m.name for m in spec.models] == [
        "base", "LoRA_AGNews", "LoRA_GSM8K", "average_ab", "linear", "ties", "dare_ties",
    ]  # fmt: skip
    assert spec.own_adapter("agnews").name == "LoRA_AGNews" and spec.own_adapter("gsm8k").name == "LoRA_GSM8K"
    assert [m.name for m in spec.models if m.merge] == ["average_ab", "linear", "ties", "dare_ties"]


GOOD_TASK = {"name": "t", "config": GSM8K, "metric": "test/loss"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"base": "b", "tasks": [GOOD_TASK], "models": [{"name": "m", "adapter": None}], "x": 1},
            "unknown key",
        ),
        (
            {
                "base": "b",
                "tasks": [{**GOOD_TASK, "metrc": "a/b"}],
                "models": [{"name": "m", "adapter": None}],
            },
            "unknown key",
        ),
        ({"base": "b", "tasks": [{**GOOD_TASK, "config": "nope.yaml"}], "models": [{}]}, "no such file"),
        (
            {"base": "b", "tasks": [GOOD_TASK], "models": [{"name": "m", "adapter": "/no/such"}]},
            "no such folder",
        ),
        (
            {"base": "b", "tasks": [GOOD_TASK, GOOD_TASK], "models": [{"name": "m", "adapter": None}]},
            "duplicate",
        ),
        (
            {"base": "b", "tasks": [GOOD_TASK], "models": [{"name": "m", "adapter": None}] * 2},
            "duplicate",
        ),
        (
            {"base": "b", "tasks": [GOOD_TASK], "models": [{"name": "m", "adapter": ".", "own_task": "z"}]},
            "not a task",
        ),
        (
            {"base": "b", "tasks": [{**GOOD_TASK, "metric": []}], "models": [{"name": "m", "adapter": None}]},
            "must be a logged key",
        ),
        (
            {
                "base": "b",
                "tasks": [{**GOOD_TASK, "metric": ["test/a", "test/a"]}],
                "models": [{"name": "m", "adapter": None}],
            },
            "names a key twice",
        ),
    ],
)
def test_spec_errors_are_one_line(
    raw: dict, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit) as exit_info:
        main(["matrix", str(spec), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lit_lora: error: ") and "\n" not in err and message in err
    assert not (tmp_path / "out").exists()


def fake_tests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Replace each cell's process by a finished test record whose score counts the launches so far."""
    launched: list[tuple[str, str]] = []

    def fake_test(command: list[str], log: Path) -> int:
        cell_dir = Path(command[command.index("--trainer.default_root_dir") + 1])
        parts = cell_dir.parts  # DIR/cells/<model>/<task>/...
        model, task = parts[parts.index("cells") + 1 : parts.index("cells") + 3]
        launched.append((model, task))
        record = {"stage": "test", "status": "completed", "metrics": {f"test/{task}": len(launched)}}
        (cell_dir / "results.json").write_text(json.dumps(record))
        return 0

    monkeypatch.setattr(matrix, "_launch", fake_test)
    return launched


def _fake_adapter(directory: Path, weights: bytes, alpha: int = 4) -> str:
    directory.mkdir(exist_ok=True)
    (directory / "adapter_model.safetensors").write_bytes(weights)
    (directory / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": alpha}))
    return str(directory)


def test_a_cell_is_reused_only_while_its_adapter_config_and_args_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lora, other = _fake_adapter(tmp_path / "lora", b"A"), _fake_adapter(tmp_path / "other", b"B")
    models = [{"name": "lora", "adapter": lora}, {"name": "other", "adapter": other}]
    spec, out = _spec(tmp_path / "spec.yaml", tmp_path, tmp_path, models), tmp_path / "out"
    launched = fake_tests(monkeypatch)
    run = ["matrix", str(spec), "--out", str(out)]
    main(run)
    assert len(launched) == 4
    main(run)  # nothing changed: every cell reused
    assert len(launched) == 4 and _rows(out)["lora"]["loss"] == "1.0000"

    _fake_adapter(tmp_path / "lora", b"A retrained")  # new weights in the same folder
    main(run)
    assert launched[4:] == [("lora", "loss"), ("lora", "ppl")]
    assert _rows(out)["lora"]["loss"] == "5.0000" and _rows(out)["other"]["loss"] == "3.0000"

    _fake_adapter(tmp_path / "other", b"B", alpha=8)  # same weights, another scaling
    main(run)
    assert launched[6:] == [("other", "loss"), ("other", "ppl")]

    task_config = tmp_path / "task.yaml"  # a task whose config file is edited between runs
    task_config.write_text("seed_everything: 1\n")
    raw = yaml.safe_load(spec.read_text())
    raw["tasks"][0]["config"] = str(task_config)
    spec.write_text(yaml.safe_dump(raw))
    main(run)
    assert launched[8:] == [("lora", "loss"), ("other", "loss")]
    task_config.write_text("seed_everything: 2\n")
    main(run)
    assert launched[10:] == [("lora", "loss"), ("other", "loss")]

    raw["tasks"][1]["args"] = [*raw["tasks"][1]["args"], "--data.max_eval_samples", "5"]  # another test
    spec.write_text(yaml.safe_dump(raw))
    main([*run, "--models", "other"])
    assert launched[12:] == [("other", "ppl")]
    rows = _rows(out)  # lora's ppl cell ran with the old args: not this spec's result
    assert rows["lora"]["ppl"] == "not run" and rows["other"]["ppl"] == "13.0000"
    main(run)
    assert launched[13:] == [("lora", "ppl")]

    moved = tmp_path / "moved"  # the same adapter in another folder is the same cell
    (tmp_path / "lora").rename(moved)
    raw["models"][0]["adapter"] = str(moved)
    spec.write_text(yaml.safe_dump(raw))
    main(run)
    assert len(launched) == 14
    key_files = sorted(
        (out / "cells" / "lora" / "ppl").glob("*/cell_key.json"), key=lambda p: p.stat().st_mtime
    )
    assert len(key_files) == 3  # one folder per key that ran; the newest is this spec's
    key = json.loads(key_files[-1].read_text())
    assert key["adapter"]["weights_sha256"] == hashlib.sha256(b"A retrained").hexdigest()
    assert key["task_args"][-2:] == ["--data.max_eval_samples", "5"]


def test_a_task_with_several_metrics_has_a_column_for_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = [
        {"name": "own", "adapter": str(tmp_path), "own_task": "gen"},
        {"name": "merged", "adapter": str(tmp_path), "merge": True},
    ]
    metrics = ["test/exact_match", "test/exact_match_flexible", "test/missing"]
    tasks = [{"name": "gen", "config": GSM8K, "metric": metrics}]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": "b", "tasks": tasks, "models": models}))
    scores = {"own": (0.5, 0.8), "merged": (0.25, 0.6)}

    def fake_test(command: list[str], log: Path) -> int:  # one process scores both logged metrics
        cell_dir = Path(command[command.index("--trainer.default_root_dir") + 1])
        strict, flexible = scores[cell_dir.parts[-3]]
        logged = {"test/exact_match": strict, "test/exact_match_flexible": flexible}
        record = {"stage": "test", "status": "completed", "metrics": logged}
        (cell_dir / "results.json").write_text(json.dumps(record))
        return 0

    monkeypatch.setattr(matrix, "_launch", fake_test)
    with pytest.raises(SystemExit):  # test/missing was not logged: that column failed
        main(["matrix", str(spec), "--out", str(tmp_path / "out")])
    rows = _rows(tmp_path / "out")
    assert list(rows["own"])[3:] == [
        "gen", "gen:test/exact_match_flexible", "gen:test/missing",
        "share:gen", "share:gen:test/exact_match_flexible", "share:gen:test/missing",
    ]  # fmt: skip
    assert [rows["merged"][k] for k in list(rows["merged"])[3:]] == [
        "0.2500", "0.6000", "failed", "0.5000", "0.7500", "",
    ]  # fmt: skip
    text = (tmp_path / "out" / "matrix.md").read_text()
    assert "| gen (test/exact_match) | gen (test/exact_match_flexible) |" in text
    assert "- merged / gen:test/missing: metric test/missing not in results.json" in text


def test_tasks_and_models_select_cells_and_the_rest_show_as_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = [
        {"name": "lora", "adapter": str(tmp_path), "own_task": "loss"},
        {"name": "base", "adapter": None},
    ]
    spec, out = _spec(tmp_path / "spec.yaml", tmp_path, tmp_path, models), tmp_path / "out"
    launched = fake_tests(monkeypatch)
    main(["matrix", str(spec), "--out", str(out), "--tasks", "loss"])
    assert launched == [("lora", "loss"), ("base", "loss")]
    rows = _rows(out)
    assert (rows["lora"]["loss"], rows["lora"]["ppl"], rows["base"]["ppl"]) == (
        "1.0000",
        "not run",
        "not run",
    )
    assert "Failed cells" not in (out / "matrix.md").read_text()

    main(["matrix", str(spec), "--out", str(out), "--models", "base"])  # base's other column only
    assert launched[2:] == [("base", "ppl")]
    rows = _rows(out)
    cells = rows["lora"]["loss"], rows["lora"]["ppl"], rows["base"]["ppl"]
    assert cells == ("1.0000", "not run", "3.0000")

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["matrix", str(spec), "--out", str(out), "--tasks", "los"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "--tasks: los not in" in error and "it has: loss, ppl" in error
