"""The state of one sweep point (one run folder): its marker, its attempts, the checkpoint it resumes from.

``OUT/<run>/sweep_run.json`` (the marker) holds the point's status and one entry per attempt. Only the
marker's own ``completed`` counts as done, or, where the sweep never recorded an outcome (it was killed
with its run), a fit record below the folder that says ``status: completed``: a failed fit also writes
``results.json``, with ``status: failed``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lit_lora.core.io import read_json_object
from lit_lora.core.locks import is_claimed

MARKER = "sweep_run.json"
LOCK = ".sweep_run.lock"
DEFAULT_MAX_ATTEMPTS = 3


def is_completed(run_dir: Path) -> bool:
    """Its marker says completed, or it recorded no outcome and a completed fit record lies below it."""
    status = read_json_object(run_dir / MARKER).get("status")
    if status in ("completed", "failed"):
        return status == "completed"
    records = (read_json_object(p) for p in run_dir.rglob("results.json"))
    return any(r.get("stage") == "fit" and r.get("status") == "completed" for r in records)


def attempts(marker: dict[str, Any]) -> list[dict[str, Any]]:
    """Every recorded attempt, oldest first; one without an outcome was cut off with its sweep."""
    recorded = marker.get("attempts")
    if isinstance(recorded, list):
        return [{"status": "interrupted", **a} for a in recorded if isinstance(a, dict)]
    # A marker written before attempts were kept records one attempt, or none.
    status = marker.get("status")
    return [{**marker, "status": "interrupted" if status == "running" else status}] if status else []


def failed_attempts(marker: dict[str, Any]) -> int:
    """Attempts whose run ended with an error (interrupted ones, the sweep killed with them, do not count)."""
    return sum(a.get("status") == "failed" for a in attempts(marker))


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint an earlier attempt left below the run folder (``last.ckpt`` among equals).

    Every attempt logs to a new ``version_N`` folder, so Lightning's ``ckpt_path="last"`` (which looks in
    the new one) would not find it: the sweep passes the path itself.
    """
    found = [p for p in run_dir.rglob("*.ckpt") if p.exists()]  # DeepSpeed's are folders
    return max(found, key=lambda p: (p.stat().st_mtime, p.name.startswith("last")), default=None)


def describe(run_dir: Path, max_attempts: int) -> tuple[str, str]:
    """The point's state (pending, running, completed, failed, given up, interrupted) and a detail."""
    marker = read_json_object(run_dir / MARKER)
    tried = attempts(marker)
    count = f"{len(tried)} attempt{'s' * (len(tried) != 1)}"
    if is_claimed(run_dir / LOCK):
        return "running", f"attempt {len(tried)}, in another process"
    if is_completed(run_dir):
        return "completed", count
    checkpoint = resume_checkpoint(run_dir)
    resumes = f"; resumes from {checkpoint.relative_to(run_dir)}" if checkpoint else ""
    failed = failed_attempts(marker)
    if marker.get("status") == "failed":
        last = (tried[-1].get("log_tail") or "").splitlines()[-1:] or [""]
        why = f"exit {marker.get('returncode')}: {last[0].strip()[:160]}"
        if failed >= max_attempts:
            return "given up", f"{failed} failed attempts of {max_attempts} allowed ({why})"
        return "failed", f"{failed} of {max_attempts} attempts failed ({why}); retried next time{resumes}"
    if tried:
        return "interrupted", f"{count}, cut off with its sweep; retried next time{resumes}"
    return "pending", "not started"
