"""Sweep specifications and the offline runner: expansion, skipping, failures, the real sweep files."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lit_lora.__main__ import main as lit_lora_main
from lit_lora.core.locks import is_claimed, release, try_claim
from lit_lora.errors import LitLoraError
from lit_lora.sweep.command import LOCK, MARKER, STATE, is_completed, run_sweep, validate_keys
from lit_lora.sweep.spec import build_command, expand, load_sweep, run_name
from tests.helpers import REPO

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))

# A stand-in for `lit_lora fit`: logs its arguments to the run directory, fails for x=2.
FAKE = (
    "import os, sys, pathlib; d = pathlib.Path(os.environ['LIT_LORA_RUN_DIR']);"
    "(d / 'argv.txt').open('a').write(' '.join(sys.argv[1:]) + '\\n');"
    "print('training', sys.argv[1:]); sys.exit(3 if '--x=2' in sys.argv else 0)"
)
# The same, but each run takes a while, so that concurrent sweeps meet on the same runs.
SLOW = "import time; time.sleep(0.4); " + FAKE


def spec_file(
    tmp_path: Path, parameters: dict[str, Any], method: str = "grid", program: str = FAKE, **extra: Any
) -> Path:
    spec = {
        "method": method,
        "command": ["${interpreter}", "-c", program, "${args}"],
        "parameters": parameters,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, **extra}, sort_keys=False))
    return path


def test_grid_is_the_product_in_written_order(tmp_path: Path) -> None:
    sweep = load_sweep(spec_file(tmp_path, {"x": {"values": [1, 2, 3]}, "y": {"values": ["a", "b"]}}))
    runs = expand(sweep)
    assert len(runs) == 6
    assert runs[:3] == [{"x": 1, "y": "a"}, {"x": 1, "y": "b"}, {"x": 2, "y": "a"}]
    assert expand(sweep, count=4) == runs[:4]
    assert len({run_name(r) for r in runs}) == 6


def test_grid_with_a_constant_and_run_cap(tmp_path: Path) -> None:
    params = {"x": {"values": [1, 2, 3]}, "lr": {"value": 0.1}}
    sweep = load_sweep(spec_file(tmp_path, params, run_cap=2))
    assert expand(sweep) == [{"x": 1, "lr": 0.1}, {"x": 2, "lr": 0.1}]


def test_random_draws_are_seeded_distinct_and_in_range(tmp_path: Path) -> None:
    params = {
        "r": {"values": [4, 8, 16]},
        "steps": {"distribution": "int_uniform", "min": 1, "max": 1000},
        "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
        "dropout": {"min": 0.0, "max": 0.5},
        "batch": {"distribution": "q_uniform", "min": 8, "max": 64, "q": 8},
    }
    sweep = load_sweep(spec_file(tmp_path, params, method="random"))
    runs = expand(sweep, count=7, seed=1)
    assert len(runs) == 7 and len({json.dumps(r, sort_keys=True) for r in runs}) == 7
    assert expand(sweep, count=7, seed=1) == runs
    assert expand(sweep, count=7, seed=2) != runs
    for run in runs:
        assert run["r"] in (4, 8, 16)
        assert isinstance(run["steps"], int) and 1 <= run["steps"] <= 1000
        assert 1e-5 <= run["lr"] <= 1e-2 and 0.0 <= run["dropout"] <= 0.5
        assert run["batch"] % 8 == 0 and isinstance(run["batch"], int)
    lrs = [math.log10(r["lr"]) for r in expand(sweep, count=200, seed=0)]
    assert min(lrs) < -4 and max(lrs) > -3  # log-uniform: spread over the decades


def test_random_stops_when_the_space_is_exhausted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = load_sweep(spec_file(tmp_path, {"x": {"values": [1, 2]}}, method="bayes", metric={"name": "m"}))
    assert sorted(r["x"] for r in expand(sweep, count=5)) == [1, 2]
    err = capsys.readouterr().err
    assert "bayes runs as random" in err and "only 2 distinct" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "hyper"}, "method='hyper'"),
        ({"parameters": {"x": {"min": 1}}}, "parameter x"),
        ({"parameters": {"x": {"distribution": "beta", "min": 0, "max": 1}}}, "distribution='beta'"),
        ({"parameters": {"x": {"distribution": "uniform", "min": 0, "max": 1}}}, "method=grid needs"),
        ({"paramaters": {}}, "unknown key"),
        ({"command": ["python", "train.py"]}, "no ${args}"),
    ],
)
def test_bad_specs_are_one_line_errors(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    spec = yaml.safe_load(spec_file(tmp_path, {"x": {"values": [1]}}).read_text())
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**spec, **change}))
    with pytest.raises(LitLoraError, match="bad.yaml") as err:
        load_sweep(tmp_path / "bad.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_random_needs_a_count(tmp_path: Path) -> None:
    with pytest.raises(LitLoraError, match="--count"):
        expand(load_sweep(spec_file(tmp_path, {"x": {"values": [1, 2]}}, method="random")))


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep = load_sweep(spec_file(tmp_path, {"x": {"values": [1, 2, 3]}}))
    out = tmp_path / "out"
    assert run_sweep(sweep, out, extra=["--extra=yes"]) == 1
    state = json.loads((out / STATE).read_text())["runs"]
    assert [state[n]["status"] for n in ("x=1", "x=2", "x=3")] == ["completed", "failed", "completed"]
    failed = json.loads((out / "x=2" / MARKER).read_text())
    assert failed["returncode"] == 3 and "training" in failed["log_tail"]
    assert "--x=2" in (out / "x=2" / "run.log").read_text()
    assert (out / "x=3" / "argv.txt").read_text() == "--x=3 --extra=yes\n"  # extra args on every run

    # Again: completed runs are skipped, the failed one is retried (and fails again).
    assert run_sweep(sweep, out, extra=["--extra=yes"]) == 1
    assert (out / "x=1" / "argv.txt").read_text().count("\n") == 1
    assert (out / "x=2" / "argv.txt").read_text().count("\n") == 2
    assert json.loads((out / STATE).read_text())["runs"]["x=1"]["status"] == "completed"  # listed still


def test_four_sweeps_at_once_run_each_point_once_and_lose_no_result(tmp_path: Path) -> None:
    spec = spec_file(tmp_path, {"x": {"values": [1, 2, 3, 4, 5]}}, program=SLOW)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lit_lora", "sweep", str(spec), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    for x in range(1, 6):  # each point started once, by whichever process claimed it first
        assert (out / f"x={x}" / "argv.txt").read_text() == f"--x={x}\n", outputs
    assert (
        sum(o.count(": completed in") for o in outputs) == 4 and sum(o.count("FAILED") for o in outputs) == 1
    )
    assert sorted(p.returncode for p in procs) == [0, 0, 0, 1]  # the process that ran x=2 reports it
    state = json.loads((out / STATE).read_text())["runs"]
    assert {n: e["status"] for n, e in state.items()} == {
        "x=1": "completed", "x=2": "failed", "x=3": "completed", "x=4": "completed", "x=5": "completed"
    }  # fmt: skip
    assert all(e["params"] == {"x": int(n[2:])} for n, e in state.items())


def test_a_claimed_run_is_left_alone_and_a_dead_claim_is_not(tmp_path: Path, capsys) -> None:
    sweep = load_sweep(spec_file(tmp_path, {"x": {"values": [1, 3]}}))
    out = tmp_path / "out"
    claim = try_claim(out / "x=1" / LOCK)  # a live process (this one) is running x=1
    assert claim is not None and try_claim(out / "x=1" / LOCK) is None
    try:
        assert run_sweep(sweep, out) == 0
    finally:
        release(claim)
    assert "x=1: running in another process, skipped" in capsys.readouterr().out
    assert not (out / "x=1" / "argv.txt").exists() and (out / "x=3" / "argv.txt").is_file()

    # A claimer that crashed mid-run left its lock file (naming a dead pid) and a "running" marker.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    (out / "x=1" / LOCK).write_text(f"pid {int(dead.stdout)} on {os.uname().nodename} since {time.time()}\n")
    (out / "x=1" / MARKER).write_text(json.dumps({"status": "running", "pid": int(dead.stdout)}))
    state = json.loads((out / STATE).read_text())
    assert "x=1" not in state["runs"]
    assert run_sweep(sweep, out) == 0
    assert (out / "x=1" / "argv.txt").read_text() == "--x=1\n"
    assert json.loads((out / STATE).read_text())["runs"]["x=1"]["status"] == "completed"


def test_the_cli_exits_non_zero_with_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = spec_file(tmp_path, {"x": {"values": [1, 2]}})
    with pytest.raises(SystemExit) as exited:
        lit_lora_main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--count", "2"])
    assert exited.value.code == 1
    assert "2 runs: 1 completed, 0 skipped, 1 failed" in capsys.readouterr().out


def test_dry_run_prints_quoted_commands_and_runs_nothing(tmp_path: Path, capsys) -> None:
    spec = spec_file(tmp_path, {"x": {"values": ["a b", 2]}})
    lit_lora_main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--dry-run", "--", "--y=1"])
    lines = capsys.readouterr().out.splitlines()
    assert [shlex.split(line)[3:] for line in lines] == [["--x=a b", "--y=1"], ["--x=2", "--y=1"]]
    assert shlex.split(lines[0])[:3] == [sys.executable, "-c", FAKE]
    assert not (tmp_path / "out").exists()


def test_only_a_completed_fit_record_counts_as_completed(tmp_path: Path) -> None:
    results = tmp_path / "lightning_logs" / "version_0" / "results.json"
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps({"stage": "validate", "status": "completed"}))
    assert not is_completed(tmp_path)
    results.write_text(json.dumps({"stage": "fit", "status": "failed", "failure": "training loss is nan"}))
    assert not is_completed(tmp_path)  # Ctrl-C, SIGTERM, NaN, out of memory all write this record
    results.write_text(json.dumps({"stage": "fit", "status": "completed"}))
    assert is_completed(tmp_path)  # the sweep was killed before it could write its marker
    (tmp_path / MARKER).write_text(json.dumps({"status": "failed", "returncode": 1}))
    assert not is_completed(tmp_path)  # the sweep saw the run fail after its fit record


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        lit_lora_main(["sweep", str(tmp_path / "missing.yaml")])
    assert exited.value.code == 2
    assert (
        capsys.readouterr().err == f"lit_lora: error: sweep file {tmp_path / 'missing.yaml'}: no such file\n"
    )


def test_lit_lora_commands_get_their_own_root_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    sweep = load_sweep(REPO / "sweeps" / "sst2_methods.yaml")
    params = expand(sweep, count=1)[0]
    command = build_command(sweep, params, interpreter="python")
    assert command[:4] == ["python", "-m", "lit_lora", "fit"]
    assert command[4].startswith("--config=")  # config first, so its seed cannot override the sweep's


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_sweep_file_is_valid_and_uses_real_cli_keys(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    sweep = load_sweep(path.relative_to(REPO))
    assert sweep.program and "${args}" in sweep.command and "${interpreter}" in sweep.command
    assert sweep.command[sweep.command.index("${interpreter}") + 1 :][:3] == ["-m", "lit_lora", "fit"]
    assert len(expand(sweep)) >= 4
    validate_keys(sweep)


def test_validate_keys_rejects_unknown_keys_and_values(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    command = ["${env}", "${interpreter}", "-m", "lit_lora", "fit", "--config", "configs/sst2_lora.yaml"]
    for params, message in [
        ({"model.adapter.rank": {"values": [4]}}, "Option 'rank' is not accepted"),
        ({"model.quantization.mode": {"values": ["nf4", "nf5"]}}, "nf5"),
        ({"trainer.max_epochs": {"distribution": "uniform", "min": 0.5, "max": 1.5}}, "max_epochs"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(
            yaml.safe_dump({"method": "random", "command": [*command, "${args}"], "parameters": params})
        )
        with pytest.raises(LitLoraError, match=message):
            validate_keys(load_sweep(path))
    with pytest.raises(LitLoraError, match="unrecognized"):
        validate_keys(load_sweep(REPO / "sweeps" / "sst2_rank.yaml"), extra=["--trainer.maxepochs=1"])


# --- real fits: a tiny BERT, 96 rows in batches of 8, 12 optimizer steps --------------------------------
FIT = ["${interpreter}", "-m", "lit_lora", "fit", "--config", "configs/sst2_lora.yaml"]


def tiny_fit_args(model: Path, data: Path) -> list[str]:
    return [f"--model.model_name_or_path={model}", f"--data.data_dir={data}", "--data.batch_size=8",
            "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"]  # fmt: skip


@pytest.fixture
def fit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the spec's relative config path; the fits import this checkout
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def fit_spec(tmp_path: Path, parameters: dict[str, Any], *configs: Path) -> Path:
    command = [*FIT, *(t for c in configs for t in ("--config", str(c))), "${args}"]
    path = tmp_path / "fit_spec.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "command": command, "parameters": parameters}))
    return path


@pytest.mark.slow  # real fits in subprocesses
def test_a_fit_that_fails_is_retried_on_the_next_invocation_up_to_the_limit(
    tiny_bert: Path, tiny_sst2: Path, tmp_path: Path, fit_env: None, capsys: pytest.CaptureFixture
) -> None:
    # lr 1e30: the NaN guard stops the fit at optimizer step 3 (after warmup); results.json says failed.
    spec = fit_spec(tmp_path, {"model.learning_rate": {"values": [1e30]}})
    out, args = tmp_path / "out", tiny_fit_args(tiny_bert, tiny_sst2)
    sweep = load_sweep(spec)
    assert run_sweep(sweep, out, extra=args, validate=False, max_attempts=2) == 1
    run = out / "learning_rate=1e+30"
    record = json.loads((run / "lightning_logs" / "version_0" / "results.json").read_text())
    assert (record["stage"], record["status"]) == ("fit", "failed")
    assert record["failure"].startswith("training loss is nan at optimizer step 3 ")

    assert run_sweep(sweep, out, extra=args, validate=False, max_attempts=2) == 1  # retried, not "completed"
    marker = json.loads((run / MARKER).read_text())
    assert [(a["attempt"], a["status"], a["returncode"]) for a in marker["attempts"]] == [
        (1, "failed", 2), (2, "failed", 2)
    ]  # fmt: skip
    assert marker["status"] == "failed" and marker["attempts"][1]["resumed_from"] is None  # no checkpoint
    assert (
        json.loads((run / "lightning_logs" / "version_1" / "results.json").read_text())["status"] == "failed"
    )
    capsys.readouterr()

    assert run_sweep(sweep, out, extra=args, validate=False, max_attempts=2) == 1  # the limit: not run again
    assert not (run / "lightning_logs" / "version_2").exists()
    assert "given up after 2 failed attempts (--max-attempts 2" in capsys.readouterr().out
    lit_lora_main(["sweep", str(spec), "--out", str(out), "--status", "--max-attempts", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "learning_rate=1e+30: failed (2 of 3 attempts failed (exit 2: lit_lora: error: training loss is nan"
    )
    assert lines[1] == f"lit_lora sweep: 1 runs in {out}: 1 failed"


@pytest.mark.slow  # real fits in subprocesses, one killed
def test_a_sweep_killed_mid_run_resumes_it_from_its_last_checkpoint(
    tiny_bert: Path, tiny_sst2: Path, tmp_path: Path, fit_env: None, capsys: pytest.CaptureFixture
) -> None:
    # Checkpoints every 2 optimizer steps; after step 3 the first run kills the sweep and itself (once).
    flag = tmp_path / "kill"
    flag.touch()
    config = tmp_path / "checkpoints.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"every_n_train_steps": 2, "save_last": True}},
        {"class_path": "tests.helpers.sweep_probe.KillSweepOnce",
         "init_args": {"step": 3, "flag": str(flag)}},
    ]}}))  # fmt: skip
    # Two runs that train alike (logging differs): the first is killed and resumed, the second is not.
    spec = fit_spec(tmp_path, {"trainer.log_every_n_steps": {"values": [1, 2]}}, config)
    out, args = tmp_path / "out", tiny_fit_args(tiny_bert, tiny_sst2)
    command = [sys.executable, "-m", "lit_lora", "sweep", str(spec), "--out", str(out), "--no-validate"]
    killed = subprocess.run([*command, "--", *args], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9 and not flag.exists(), killed.stdout[-2000:] + killed.stderr[-2000:]
    run = out / "log_every_n_steps=1"
    last = run / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file() and not (out / "log_every_n_steps=2").exists()
    for _ in range(300):  # the killed fit, which shares the claim, may take a moment to exit
        if not is_claimed(run / LOCK):
            break
        time.sleep(0.1)
    lit_lora_main(["sweep", str(spec), "--out", str(out), "--status"])
    assert capsys.readouterr().out.splitlines()[0] == (
        "log_every_n_steps=1: interrupted (1 attempt, cut off with its sweep; retried next time; "
        "resumes from lightning_logs/version_0/checkpoints/last.ckpt)"
    )

    assert run_sweep(load_sweep(spec), out, extra=args, validate=False) == 0
    marker = json.loads((run / MARKER).read_text())
    assert [(a["status"], a["resumed_from"]) for a in marker["attempts"]] == [
        ("interrupted", None), ("completed", str(last))
    ]  # fmt: skip
    assert f"Restoring states from the checkpoint path at {last}" in (run / "run.log").read_text()
    record = json.loads((run / "lightning_logs" / "version_1" / "results.json").read_text())
    assert (record["status"], record["global_steps"], record["train_samples"]) == ("completed", 12, 96)
    resumed = load_file(run / "lightning_logs" / "version_1" / "adapter" / "adapter_model.safetensors")
    straight = load_file(
        out / "log_every_n_steps=2" / "lightning_logs" / "version_0" / "adapter" / "adapter_model.safetensors"
    )
    assert resumed.keys() == straight.keys() and len(resumed) > 0
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
