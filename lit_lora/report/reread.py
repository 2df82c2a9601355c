"""An earlier report's ``results.csv`` read back as runs, for a report whose run folders are gone.

Each row is one run as that report wrote it; its ``config`` column (the earlier group label) stands
for the recorded config, so the rows group as they did. Columns the earlier report did not write stay
unknown: no ``status`` (reports before 2026-12 kept every record, failed ones too) and no load.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lit_lora.errors import LitLoraError
from lit_lora.report import checks

NEEDED = ("config", "run_dir", "config_name", "approach", "device", "memory_kind", "train_time_s")


def reread_results_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in NEEDED if c not in (reader.fieldnames or [])]
        if missing:
            raise LitLoraError(f"{path}: not a report's results.csv (no column {', '.join(missing)})")
        # An empty metric cell is a metric that run did not log (another task's, say): no key at all.
        rows = [{k: _value(v) for k, v in row.items() if v or "/" not in k} for row in reader]
    for row in rows:
        row.setdefault("status", None)  # None: not recorded (later reports write only completed runs)
        row["device_label"] = row.get("device_label") or checks.device_label(row)
        if row.get("load") is None:
            row["load"], row["load_note"] = "unknown", "load not recorded"
        label = str(row.pop("config"))
        row["_config"] = {}
        row["_key"] = (label, row["device_label"], row["memory_kind"])
    return rows


def _value(text: str | None) -> Any:
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
