"""``python -m lit_lora matrix SPEC.yaml --out DIR``: every model on every task, through ``lit_lora test``.

Each cell (model, task) is one ``python -m lit_lora test`` process writing under
``DIR/cells/<model>/<task>/<key>/`` (its ``results.json``, ``cell.log`` and ``cell_key.json``). The key
names what the cell evaluates: the base, the SHA-256 of the adapter's weights and adapter_config.json,
the SHA-256 of the task's config file and the task's args. A cell whose ``results.json`` under the same
key says ``stage: test, status: completed`` is finished and skipped on a re-run; one whose adapter, config
or args changed in the meantime has a new key and is evaluated again (the old folder is left as it was);
a failed cell is retried. A failed cell never stops the matrix: it shows as ``failed`` and the exit
status is 1.

``--tasks A B`` / ``--models X Y`` run only those columns / rows; cells left out show as finished
earlier (under the same key) or ``not run``.

Outputs: ``DIR/matrix.csv`` (scores, then each merge's ``share:<task>``), ``DIR/matrix.md`` (the same
as tables) and ``DIR/matrix.png`` (a heatmap, colour scaled per task).

Spec (YAML; relative paths are taken from the current directory, like ``--config``)::

    base: HuggingFaceTB/SmolLM2-135M-Instruct       # --model.model_name_or_path of every cell
    tasks:
      - name: agnews                                 # a column
        config: configs/agnews_smollm2.yaml          # the lit_lora config the test runs with
        metric: test/acc                             # the key read from results.json's metrics
      - name: gsm8k                                  # a list of keys: a column each, the first headlines
        config: configs/gsm8k_smollm2.yaml
        metric: [test/exact_match, test/exact_match_flexible]
        args: --data.max_eval_samples 500            # optional extra CLI args (string or list)
    models:
      - {name: base, adapter: null}                  # the base model alone
      - {name: LoRA_AGNews, adapter: runs/.../adapter, own_task: agnews}
      - {name: ties, adapter: runs/.../ties, merge: true}   # reported as a share of each own adapter
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lit_lora.core.io import atomic_write_json, check_output_folder, file_sha256, read_json_object
from lit_lora.core.ranges import PositiveInt, check_config
from lit_lora.errors import LitLoraError
from lit_lora.matrix.spec import Column, Model, Spec, Task, cell_command, load_spec
from lit_lora.matrix.tables import FAILED, NOT_RUN, Cell, Cells, write_all
from lit_lora.merge.command import adapter_weights_sha256

LOG = "cell.log"
KEY_FILE = "cell_key.json"
Key = dict[str, Any]


def _sha256_or_none(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def adapter_key(adapter: str | None) -> Key | None:
    """An adapter folder by content (its weights and adapter_config.json), wherever it lies."""
    if adapter is None:
        return None
    folder = Path(adapter)
    return {
        "weights_sha256": adapter_weights_sha256(folder),
        "config_sha256": _sha256_or_none(folder / "adapter_config.json"),
    }


def cell_key(spec: Spec, task: Task, adapter: Key | None) -> Key:
    """What a cell evaluates: a cell finished under another key is not this cell's result."""
    return {
        "base": spec.base,
        "adapter": adapter,
        "task_config_sha256": _sha256_or_none(Path(task.config)),
        "task_args": list(task.args),
    }


def cell_dir(out: Path, model: Model, task: Task, key: Key) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return out / "cells" / model.name / task.name / digest


def finished_record(cell_dir: Path) -> dict[str, Any] | None:
    """The newest completed test record below ``cell_dir`` (a retry after a failure is a new version)."""
    records = [(p.stat().st_mtime, read_json_object(p)) for p in cell_dir.rglob("results.json")]
    done = [(t, r) for t, r in records if r.get("stage") == "test" and r.get("status") == "completed"]
    return max(done, key=lambda pair: pair[0])[1] if done else None


def _read(record: dict[str, Any], task: Task) -> dict[str, Cell]:
    """The cell of each of the task's metrics; a metric the record lacks is a failed cell."""
    logged = record.get("metrics", {})
    found = ", ".join(sorted(logged)) or "none"
    cells = {}
    for metric in task.metrics:
        value = logged.get(metric)
        if isinstance(value, int | float):
            cells[metric] = Cell("completed", float(value))
        else:
            cells[metric] = Cell(FAILED, reason=f"metric {metric} not in results.json (found: {found})")
    return cells


def _launch(command: list[str], log: Path) -> int:
    """One test process; its output goes to the cell's log. Tests patch this to count launches."""
    with log.open("w") as handle:
        try:
            return subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
        except OSError as err:
            handle.write(f"cannot start {command[0]}: {err}\n")
            return 127


def _reason(log: Path, code: int) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]  # the CLI's one-line error, if any
    last = (errors or lines or [""])[-1]
    return f"exit {code}: {last[:300]}"


def run_cell(spec: Spec, model: Model, task: Task, out: Path, key: Key) -> tuple[dict[str, Cell], bool]:
    """The cell's scores (one per metric of the task) and whether a process ran for it."""
    directory = cell_dir(out, model, task, key)
    record = finished_record(directory)
    if record is not None:
        return _read(record, task), False
    atomic_write_json(directory / KEY_FILE, key)  # what the folder holds, for whoever opens it
    log = directory / LOG
    code = _launch(cell_command(spec, model, task, directory, sys.executable), log)
    record = finished_record(directory)
    if code != 0 or record is None:
        return dict.fromkeys(task.metrics, Cell(FAILED, reason=_reason(log, code))), True
    return _read(record, task), True


def run_matrix(
    spec: Spec, out: Path, jobs: PositiveInt = 1, tasks: Sequence[str] = (), models: Sequence[str] = ()
) -> Cells:
    """Every cell, or only those of ``tasks`` x ``models`` where given; the others are read if finished."""
    pairs = [(m, t) for m in spec.models for t in spec.tasks]
    adapters = {m.name: adapter_key(m.adapter) for m in spec.models}  # each adapter hashed once

    def one(pair: tuple[Model, Task]) -> dict[str, Cell]:
        model, task = pair
        key = cell_key(spec, task, adapters[model.name])
        if (tasks and task.name not in tasks) or (models and model.name not in models):
            record = finished_record(cell_dir(out, model, task, key))
            return dict.fromkeys(task.metrics, Cell(NOT_RUN)) if record is None else _read(record, task)
        cells, ran = run_cell(spec, model, task, out, key)
        done = all(c.status == "completed" for c in cells.values())
        verb = ("ran" if ran else "skipped, finished earlier") if done else "FAILED"
        details = {f"{m}={c.value:.4f}" if c.value is not None else c.reason for m, c in cells.items()}
        print(
            f"lit_lora matrix: {model.name} / {task.name}: {verb} ({'; '.join(sorted(details))})", flush=True
        )
        return cells

    # Threads only wait on child processes; each cell is its own process either way.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        by_pair = dict(zip(pairs, pool.map(one, pairs), strict=True))
    return {
        (m.name, Column(t, metric).name): cell
        for (m, t), cells in by_pair.items()
        for metric, cell in cells.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lit_lora matrix", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", type=Path, help="the matrix spec YAML")
    parser.add_argument("--out", type=Path, required=True, help="where cells/, matrix.csv/.md/.png go")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (default 1)")
    parser.add_argument("--tasks", nargs="+", default=[], metavar="TASK", help="run only these columns")
    parser.add_argument("--models", nargs="+", default=[], metavar="MODEL", help="run only these rows")
    args = parser.parse_args(argv)
    check_output_folder(args.out, "--out", ("matrix.csv", "matrix.md", "matrix.png", "matrix_cells.json"))
    check_config(run_matrix, vars(args), "--")  # --jobs: its declared range
    spec = load_spec(args.spec)
    for flag, names, known in (("--tasks", args.tasks, spec.tasks), ("--models", args.models, spec.models)):
        unknown = sorted(set(names) - {item.name for item in known})
        if unknown:
            allowed = ", ".join(item.name for item in known)
            raise LitLoraError(f"matrix {flag}: {', '.join(unknown)} not in {args.spec} (it has: {allowed})")
    cells = run_matrix(spec, args.out, args.jobs, args.tasks, args.models)
    written = write_all(spec, cells, args.out)
    summary = {f"{m}/{t}": vars(c) for (m, t), c in cells.items()}
    atomic_write_json(args.out / "matrix_cells.json", {"spec": str(args.spec), "cells": summary})
    failed = sum(c.status == FAILED for c in cells.values())
    done = f"{sum(c.status == 'completed' for c in cells.values())}/{len(cells)} cells completed"
    print(f"lit_lora matrix: {done} -> {args.out}/{{{','.join(written)}}}")
    if failed:
        raise SystemExit(1)
