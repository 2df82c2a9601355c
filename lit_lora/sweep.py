"""``python -m lit_lora sweep SPEC``: run a W&B sweep specification offline, one run after another.

Each run lives in ``OUT/<run name>`` with its ``run.log`` and a ``sweep_run.json`` marker;
``OUT/sweep_state.json`` lists them all. Completed runs are skipped on a re-run, failed ones are
retried; a failure never stops the sweep, but the exit status is 1 if any run failed.

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

from lit_lora._io import atomic_write_json, read_json_object
from lit_lora._locks import is_claimed, locked, release, try_claim
from lit_lora._ranges import OptionalPositiveInt, Seed, check_config
from lit_lora.errors import LitLoraError
from lit_lora.sweep_spec import Sweep, build_command, expand, load_sweep, run_name, sample

MARKER = "sweep_run.json"
STATE = "sweep_state.json"
LOG = "run.log"
LOCK = ".sweep_run.lock"
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


def is_completed(run_dir: Path) -> bool:
    """Its marker says completed, or a ``results.json`` of a finished fit lies below it."""
    if read_json_object(run_dir / MARKER).get("status") == "completed":
        return True
    return any(read_json_object(p).get("stage") == "fit" for p in run_dir.rglob("results.json"))


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
) -> int:
    """Run (or with ``dry_run`` print) every run of the sweep; returns the number of failed runs."""
    if any(a.split("=")[0] == "--trainer.default_root_dir" for a in extra):
        raise LitLoraError("extra argument --trainer.default_root_dir: use --out; each run gets OUT/<run>")
    runs = expand(sweep, count, seed)
    lit_lora = fit_args(sweep) is not None
    if validate and lit_lora:
        validate_keys(sweep, extra)
    started = time.time()
    counts = {"completed": 0, "skipped": 0, "failed": 0}
    for index, params in enumerate(runs, 1):
        name = run_name(params)
        run_dir = out / name
        label = f"[{index}/{len(runs)}] {name}"
        command = build_command(sweep, params)
        if lit_lora:
            command.append(f"--trainer.default_root_dir={run_dir}")
        command += list(extra)
        if dry_run:
            print(("# completed, would skip: " if is_completed(run_dir) else "") + shlex.join(command))
            continue
        claim = try_claim(run_dir / LOCK)
        if claim is None:
            counts["skipped"] += 1
            print(f"{label}: running in another process, skipped", flush=True)
            continue
        try:  # checked only once claimed: another process may have finished it a moment ago
            entry: dict[str, Any] = {"params": params, "command": command, "dir": str(run_dir)}
            if reason := _skip_reason(run_dir, entry, started):
                counts["skipped"] += 1
                print(f"{label}: {reason}, skipped", flush=True)
                continue
            result = _run_one(command, run_dir, label, entry, claim)
            counts["completed" if result["status"] == "completed" else "failed"] += 1
        finally:
            release(claim)
        write_state(sweep, out)
    if dry_run:
        return 0
    state = write_state(sweep, out)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items())
    print(f"lit_lora sweep: {len(runs)} runs: {summary} (state: {state})")
    return counts["failed"]


def _skip_reason(run_dir: Path, entry: dict[str, Any], started: float) -> str | None:
    marker = read_json_object(run_dir / MARKER)
    if is_completed(run_dir):
        if marker.get("status") != "completed":  # a fit record without a marker: the state shows it
            atomic_write_json(run_dir / MARKER, {**entry, "status": "completed", "note": "fit record found"})
        return "already completed"
    if marker.get("status") == "failed" and marker.get("finished", 0) >= started:
        return "failed in another process since this one started (a later invocation retries it)"
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
    print(f"{label}: running (log: {log})", flush=True)
    start = time.time()
    atomic_write_json(run_dir / MARKER, {**entry, "status": "running", "pid": os.getpid(), "started": start})
    env = {**os.environ, "LIT_LORA_RUN_DIR": str(run_dir)}
    with log.open("w") as handle:
        try:
            # The run holds the claim too: if this process dies, nobody starts the run a second time.
            proc = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, pass_fds=(claim,)
            )
            code = proc.returncode
        except OSError as err:
            handle.write(f"cannot start {command[0]}: {err}\n")
            code = 127
    finished = time.time()
    result: dict[str, Any] = {
        **entry,
        "status": "completed" if code == 0 else "failed",
        "returncode": code,
        "seconds": round(finished - start, 2),
        "started": start,
        "finished": finished,
    }
    if code != 0:
        result["log_tail"] = _tail(log)
        last = result["log_tail"].splitlines()[-1:] or [""]
        print(f"{label}: FAILED (exit {code}) {last[0]}", flush=True)
    else:
        print(f"{label}: completed in {result['seconds']} s", flush=True)
    atomic_write_json(run_dir / MARKER, result)
    return result


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
    parser.add_argument("--out", type=Path, help="runs go to OUT/<run name> (default runs/sweeps/SPEC)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search (default 0)")
    parser.add_argument("--no-validate", action="store_true", help="skip checking keys with the CLI")
    args = parser.parse_args(own)
    check_config(run_sweep, vars(args), "--")  # --count, --seed: their declared ranges
    sweep = load_sweep(args.spec)
    out = args.out or Path("runs") / "sweeps" / args.spec.stem
    failed = run_sweep(sweep, out, args.count, args.seed, extra, args.dry_run, not args.no_validate)
    if failed:
        raise SystemExit(1)
