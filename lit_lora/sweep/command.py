"""``python -m lit_lora sweep SPEC``: run a W&B sweep specification offline, one run after another.

Each run lives in ``OUT/<run name>`` with its ``run.log`` and a ``sweep_run.json`` marker that records
every attempt; ``OUT/sweep_state.json`` lists them all and ``--status`` prints each run's state.
Completed runs are skipped on a re-run; a failed or interrupted run is tried again, from the newest
checkpoint it left (``fit --ckpt_path``, an exact resume), until ``--max-attempts`` attempts have
failed. A failure never stops the sweep, but the exit status is 1 if any run failed.

Several processes may work on one sweep and folder at once (start it N times to run N in parallel):
a run is claimed with a lock on ``OUT/<run>/.sweep_run.lock`` before anything else, so each runs once;
a run that another process is running, or that failed since this process started, is skipped. The
state file is rebuilt from the markers under a lock, so no process drops another's runs.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import subprocess
import sys
import time
from argparse import ArgumentError
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from lit_lora.core.io import atomic_write_json, check_output_folder, read_json_object
from lit_lora.core.locks import is_claimed, locked, release, try_claim
from lit_lora.core.ranges import OptionalPositiveInt, PositiveInt, Seed, check_config
from lit_lora.errors import LitLoraError
from lit_lora.sweep.points import (
    DEFAULT_MAX_ATTEMPTS,
    LOCK,
    MARKER,
    attempts,
    describe,
    failed_attempts,
    is_completed,
    resume_checkpoint,
)
from lit_lora.sweep.spec import Sweep, build_command, expand, load_sweep, run_name, sample

STATE = "sweep_state.json"
LOG = "run.log"
STATE_LOCK = ".sweep_state.lock"
REASONS = ("not accepted", "unrecognized", "does not exist", "Expected a typing", "Got value", "Expected a")


def fit_args(sweep: Sweep) -> list[str] | None:
    """The arguments after ``-m lit_lora fit`` without the macros, or None for another program."""
    cmd = sweep.command
    for i in range(len(cmd) - 2):
        if cmd[i : i + 3] == ["-m", "lit_lora", "fit"]:
            return [t for t in cmd[i + 3 :] if not t.startswith("${")]
    return None


@lru_cache(maxsize=1)
def fit_parser() -> Any:
    """The real ``lit_lora fit`` parser, built by the CLI but stopped before it parses anything."""
    from unittest import mock

    from lit_lora import cli

    class _Built(Exception):
        pass

    def _stop(self: Any, parser: Any, args: Any) -> None:
        raise _Built(self._parser("fit"))

    with mock.patch.object(cli.LitLoraCLI, "parse_arguments", _stop):
        try:
            cli.build_cli(["fit"])
        except _Built as built:
            parser = built.args[0]
    parser.exit_on_error = False
    return parser


def _reason(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for marker in REASONS:
        if found := [line for line in lines if marker in line]:
            return found[0]
    return lines[0] if lines else type(err).__name__


def validate_keys(sweep: Sweep, extra: Sequence[str] = ()) -> None:
    """Parse the base command with every parameter value using the real CLI parser; fail on the first
    key or value that ``lit_lora fit`` would reject. Distributions are checked on a few draws."""
    base = fit_args(sweep)
    if base is None:
        raise LitLoraError(f"sweep file {sweep.path}: 'command' does not run '-m lit_lora fit'")
    from lit_lora.cli import check_ranges

    parser = fit_parser()
    configs = sweep.parameters.get("config", {}).get("values", [None])

    def check(args: list[str], what: str) -> None:
        try:
            check_ranges(parser.parse_args(args))
        except (ArgumentError, SystemExit, ValueError, TypeError) as err:
            msg = f"sweep file {sweep.path}: {what} rejected by 'lit_lora fit': {_reason(err)}"
            raise LitLoraError(msg) from None

    for config in configs:
        context = base + ([f"--config={config}"] if config is not None else [])
        check(context + list(extra), f"parameter config={config}" if config else "the base command")
        for name, p in sweep.parameters.items():
            if name == "config":
                continue
            values = p["values"] if "values" in p else [sample(p, random.Random(i)) for i in range(3)]
            for value in values:
                check([*context, f"--{name}={value}", *extra], f"parameter {name}={value}")


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def run_sweep(
    sweep: Sweep,
    out: Path,
    count: OptionalPositiveInt = None,
    seed: Seed = 0,
    extra: Sequence[str] = (),
    dry_run: bool = False,
    validate: bool = True,
    max_attempts: PositiveInt = DEFAULT_MAX_ATTEMPTS,
) -> int:
    """Run (or with ``dry_run`` print) every run of the sweep; returns the number of failed runs."""
    if any(a.split("=")[0] == "--trainer.default_root_dir" for a in extra):
        raise LitLoraError("extra argument --trainer.default_root_dir: use --out; each run gets OUT/<run>")
    check_output_folder(out, "--out", (STATE,))
    runs = expand(sweep, count, seed)
    lit_lora = fit_args(sweep) is not None
    if validate and lit_lora:
        validate_keys(sweep, extra)
    started = time.time()
    counts = {"completed": 0, "skipped": 0, "failed": 0, "given up": 0}
    for index, params in enumerate(runs, 1):
        name = run_name(params)
        run_dir = out / name
        label = f"[{index}/{len(runs)}] {name}"
        command = build_command(sweep, params)
        if lit_lora:
            command.append(f"--trainer.default_root_dir={run_dir}")
        command += list(extra)
        if dry_run:
            print(_dry_run_line(run_dir, command, lit_lora, max_attempts))
            continue
        claim = try_claim(run_dir / LOCK)
        if claim is None:
            counts["skipped"] += 1
            print(f"{label}: running in another process, skipped", flush=True)
            continue
        try:  # checked only once claimed: another process may have finished it a moment ago
            entry: dict[str, Any] = {"params": params, "command": command, "dir": str(run_dir)}
            if reason := _skip_reason(run_dir, entry, started, max_attempts):
                counts["given up" if reason.startswith("given up") else "skipped"] += 1
                print(f"{label}: {reason}, skipped", flush=True)
                continue
            resume = _resume_args(run_dir, command) if lit_lora else []
            result = _run_one(command + resume, run_dir, label, entry, claim)
            counts["completed" if result["status"] == "completed" else "failed"] += 1
        finally:
            release(claim)
        write_state(sweep, out)
    if dry_run:
        return 0
    state = write_state(sweep, out)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    print(f"lit_lora sweep: {len(runs)} runs: {summary} (state: {state})")
    return counts["failed"] + counts["given up"]


def _dry_run_line(run_dir: Path, command: list[str], lit_lora: bool, max_attempts: int) -> str:
    if is_completed(run_dir):
        return f"# completed, would skip: {shlex.join(command)}"
    if failed_attempts(read_json_object(run_dir / MARKER)) >= max_attempts:
        return f"# given up, would skip: {shlex.join(command)}"
    return shlex.join(command + (_resume_args(run_dir, command) if lit_lora else []))


def _resume_args(run_dir: Path, command: list[str]) -> list[str]:
    """``--ckpt_path`` of the newest checkpoint an earlier attempt left, unless the command gives one."""
    checkpoint = resume_checkpoint(run_dir)
    if checkpoint is None or any(a.split("=")[0] == "--ckpt_path" for a in command):
        return []
    return [f"--ckpt_path={checkpoint}"]


def _skip_reason(run_dir: Path, entry: dict[str, Any], started: float, max_attempts: int) -> str | None:
    marker = read_json_object(run_dir / MARKER)
    if is_completed(run_dir):
        if marker.get("status") != "completed":  # a fit record without a marker: the state shows it
            atomic_write_json(
                run_dir / MARKER, {**marker, **entry, "status": "completed", "note": "fit record found"}
            )
        return "already completed"
    if marker.get("status") == "failed" and marker.get("finished", 0) >= started:
        return "failed in another process since this one started (a later invocation retries it)"
    if (failed := failed_attempts(marker)) >= max_attempts:
        return f"given up after {failed} failed attempts (--max-attempts {max_attempts}; see {run_dir / LOG})"
    return None


def write_state(sweep: Sweep, out: Path) -> Path:
    """Rebuild ``OUT/sweep_state.json`` from every run's marker, one process at a time."""
    with locked(out / STATE_LOCK):
        runs = {}
        for path in sorted(out.glob(f"*/{MARKER}")):
            entry = read_json_object(path)
            if entry.get("status") == "running" and not is_claimed(path.parent / LOCK):
                entry["status"] = "interrupted"  # its claimer died without writing the outcome
            runs[path.parent.name] = entry
        return atomic_write_json(out / STATE, {"spec": str(sweep.path), "method": sweep.method, "runs": runs})


def _run_one(
    command: list[str], run_dir: Path, label: str, entry: dict[str, Any], claim: int
) -> dict[str, Any]:
    log = run_dir / LOG
    earlier = attempts(read_json_object(run_dir / MARKER))
    resumed = next((a.split("=", 1)[1] for a in command if a.startswith("--ckpt_path=")), None)
    attempt: dict[str, Any] = {"attempt": len(earlier) + 1, "started": time.time(), "resumed_from": resumed}
    origin = f" from {resumed}" if resumed else ""
    print(f"{label}: running attempt {attempt['attempt']}{origin} (log: {log})", flush=True)
    marker = {**entry, "status": "running", "pid": os.getpid(), "attempts": [*earlier, attempt]}
    atomic_write_json(run_dir / MARKER, marker)
    env = {**os.environ, "LIT_LORA_RUN_DIR": str(run_dir)}
    with log.open("a") as handle:  # every attempt's output, each under its own header
        handle.write(f"==== attempt {attempt['attempt']}: {shlex.join(command)}\n")
        handle.flush()
        try:
            # The run holds the claim too: if this process dies, nobody starts the run a second time.
            proc = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, pass_fds=(claim,)
            )
            code = proc.returncode
        except OSError as err:
            handle.write(f"cannot start {command[0]}: {err}\n")
            code = 127
        except KeyboardInterrupt:  # Ctrl-C: the run stopped with the sweep; it resumes next time
            _record(run_dir, marker, attempt, "interrupted", None)
            raise
    result = _record(run_dir, marker, attempt, "completed" if code == 0 else "failed", code)
    if code != 0:
        last = result["log_tail"].splitlines()[-1:] or [""]
        print(f"{label}: FAILED (exit {code}) {last[0]}", flush=True)
    else:
        print(f"{label}: completed in {result['seconds']} s", flush=True)
    return result


def _record(
    run_dir: Path, marker: dict[str, Any], attempt: dict[str, Any], status: str, code: int | None
) -> dict[str, Any]:
    """Write the attempt's outcome into the marker (the newest attempt's also at its top level)."""
    finished = time.time()
    outcome = {"status": status, "returncode": code, "finished": finished,
               "seconds": round(finished - attempt["started"], 2)}  # fmt: skip
    if status != "completed":
        outcome["log_tail"] = _tail(run_dir / LOG)
    attempt.update(outcome)
    result = {**marker, **outcome, "started": attempt["started"], "attempts": marker["attempts"]}
    result.pop("pid", None)
    atomic_write_json(run_dir / MARKER, result)
    return result


def print_status(sweep: Sweep, out: Path, count: int | None, seed: int, max_attempts: int) -> None:
    """One line per run: its state and attempts, and the checkpoint a retry resumes from."""
    runs = expand(sweep, count, seed)
    states: dict[str, int] = {}
    for params in runs:
        name = run_name(params)
        state, detail = describe(out / name, max_attempts)
        states[state] = states.get(state, 0) + 1
        print(f"{name}: {state} ({detail})")
    summary = ", ".join(f"{n} {state}" for state, n in states.items())
    print(f"lit_lora sweep: {len(runs)} runs in {out}: {summary}")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="lit_lora sweep",
        description="Run a W&B sweep specification offline, sequentially, one directory per run.",
        epilog="Arguments after -- are appended to every run, e.g. -- --trainer.max_epochs=1",
    )
    parser.add_argument("spec", type=Path, help="a W&B sweep file, e.g. sweeps/sst2_rank.yaml")
    parser.add_argument("--count", type=int, help="at most N runs (grid: the first N; random: N draws)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--status", action="store_true", help="print each run's state, run nothing")
    parser.add_argument("--out", type=Path, help="runs go to OUT/<run name> (default runs/sweeps/SPEC)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search (default 0)")
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        help=f"failed attempts after which a run is no longer retried (default {DEFAULT_MAX_ATTEMPTS})",
    )
    parser.add_argument("--no-validate", action="store_true", help="skip checking keys with the CLI")
    args = parser.parse_args(own)
    check_config(run_sweep, vars(args), "--")  # --count, --seed, --max-attempts: their declared ranges
    sweep = load_sweep(args.spec)
    out = args.out or Path("runs") / "sweeps" / args.spec.stem
    if args.status:
        print_status(sweep, out, args.count, args.seed, args.max_attempts)
        return
    failed = run_sweep(
        sweep, out, args.count, args.seed, extra, args.dry_run, not args.no_validate, args.max_attempts
    )
    if failed:
        raise SystemExit(1)
