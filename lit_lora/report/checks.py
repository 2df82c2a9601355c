"""What ``report`` checks before a record counts: it completed, it evaluated the fit's own data, its load.

Contention rule (one place, documented in the README and in every summary that uses it). A run's
time is *contended* when, over its training, the machine's mean 1-minute load average per core was
above ``LOAD_PER_CORE_LIMIT`` (more runnable threads than cores: something else competed), or, on a
CPU device, the process's CPU time (all its threads) was under ``CPU_SHARE_FLOOR`` of its wall time: a
training loop keeps at least one core busy, so it waited for a core or was paused. (A share per
thread is no rule: a small model leaves many of torch's threads idle on a large machine.) A record
written before lit_lora measured load has *unknown* load: nothing is invented for it, but when the
times of one config's runs (the same work) differ more than ``SPREAD_LIMIT`` times, the report says
they were not measured alike. GPU sharing is not measured.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

LOAD_PER_CORE_LIMIT = 1.5
CPU_SHARE_FLOOR = 0.5
# Seeds of one config do the same work: times further apart than this were not measured alike.
SPREAD_LIMIT = 1.5
# Data settings an evaluation run may choose for itself: they change how or how much it reads, not
# which task and rows it scores.
EVALUATION_CHOICES = frozenset(
    {
        "batch_size",
        "eval_batch_size",
        "num_workers",
        "test_split",
        "max_eval_samples",
        "max_train_samples",
        "group_by_length",
        "seed",
        "tokenizer_name",
        "trust_remote_code",
        "predict_file",
    }
)


def status(record: dict[str, Any]) -> str:
    """``completed``, ``failed``, ...; records from before lit_lora wrote a status were only written at
    a stage's successful end, so they are completed."""
    return str(record.get("status", "completed"))


def reason(record: dict[str, Any]) -> str:
    return str(record.get("failure") or "no reason recorded")


def data_difference(fit: dict[str, Any], evaluation: dict[str, Any]) -> str | None:
    """None if ``evaluation`` scored the fit's own task and data, else what differs (one phrase)."""
    mine, theirs = _data(fit), _data(evaluation)
    if mine is None and theirs is None:
        return None
    if mine is None or theirs is None:
        return f"the {'fit' if mine is None else 'evaluation'} records no data config"
    if _class_name(mine) != _class_name(theirs):
        return f"data {_class_name(theirs)}, not the fit's {_class_name(mine)}"
    args, fit_args = theirs.get("init_args") or {}, mine.get("init_args") or {}
    for key in sorted((set(args) | set(fit_args)) - EVALUATION_CHOICES):
        if not _same_setting(key, args.get(key), fit_args.get(key)):
            return f"data.{key}={args.get(key)!r}, not the fit's {fit_args.get(key)!r}"
    return None


def data_label(record: dict[str, Any]) -> str:
    """``GSM8KDataModule ../shared/data/gsm8k (test)``: what an evaluation scored."""
    data = _data(record) or {}
    args = data.get("init_args") or {}
    parts = [_class_name(data) or "(data not recorded)", args.get("data_dir") or "", args.get("test_split")]
    split = f"({parts[2]})" if record.get("stage") == "test" and parts[2] else ""
    return " ".join(str(p) for p in (*parts[:2], split) if p)


def _data(record: dict[str, Any]) -> dict[str, Any] | None:
    data = (record.get("config") or {}).get("data")
    return data if isinstance(data, dict) else None


def _class_name(data: dict[str, Any]) -> str:
    return str(data.get("class_path") or "").rsplit(".", 1)[-1]


def _same_setting(key: str, value: Any, fit_value: Any) -> bool:
    if value == fit_value:
        return True
    if key != "data_dir" or not isinstance(value, str) or not isinstance(fit_value, str):
        return False
    # Each run names the folder relative to where it ran: compare what both spell out.
    ours, theirs = (_named_parts(v) for v in (value, fit_value))
    shorter = min(len(ours), len(theirs))
    return shorter > 0 and ours[-shorter:] == theirs[-shorter:]


def _named_parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in PurePath(path).parts if p not in ("/", ".", ".."))


def load_state(record: dict[str, Any]) -> tuple[str, str]:
    """(``clear`` | ``contended`` | ``unknown``, why) for the record's measured time, by the rule above."""
    load = record.get("load")
    if not isinstance(load, dict):
        return "unknown", "load not recorded"
    reasons = []
    mean, cores = load.get("load_avg_1m_mean"), load.get("cpu_count")
    if mean is not None and cores and mean / cores > LOAD_PER_CORE_LIMIT:
        reasons.append(f"load {mean / cores:.2f} per core")
    cpu_s, wall_s = load.get("process_cpu_s"), load.get("wall_s")
    cpu_measured = record.get("device") == "cpu" and cpu_s is not None and bool(wall_s)
    if cpu_measured and cpu_s / wall_s < CPU_SHARE_FLOOR:
        reasons.append(f"process on a core {100 * cpu_s / wall_s:.0f}% of the wall time")
    if reasons:
        return "contended", "; ".join(reasons)
    if mean is None and not cpu_measured:
        return "unknown", "no load average on this platform"
    return "clear", ""


def device_label(record: dict[str, Any]) -> str:
    """``cpu``, ``NVIDIA H200``, ``NVIDIA H100 80GB HBM3 x8 on 2 nodes``: what measured the time and
    memory (8 processes on two machines talk over the network, so they are not one machine's 8)."""
    name = record.get("device_name") or record.get("device") or "unknown device"
    count = int(record.get("num_devices") or 1)
    nodes = int(record.get("num_nodes") or 1)
    label = f"{name} x{count}" if count > 1 else str(name)
    return f"{label} on {nodes} nodes" if nodes > 1 else label


def run_folder(record: dict[str, Any], directory: Path) -> str:
    return str(record.get("_run_dir") or directory)
