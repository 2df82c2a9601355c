"""``--ckpt_path last`` across runs: the newest ``last*.ckpt`` of this run directory's earlier versions.

Lightning looks for "last" in its checkpoint callbacks' folders, which by default lie inside the logger's
``version_N``. lit_lora's CLI claims a new ``version_N`` for every run, so Lightning would look in the new,
empty folder and silently train from scratch beside the checkpoint it was asked to resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


def find_last_checkpoint(trainer: Any) -> str | None:
    """The newest ``last*.ckpt`` (file, or DeepSpeed's folder) in the checkpoint callbacks' explicit
    folders and in every ``<default_root_dir>/lightning_logs/version_*/checkpoints``; None when none."""
    folders = [Path(cb.dirpath) for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    folders += Path(trainer.default_root_dir).glob("lightning_logs/version_*/checkpoints")
    found = [path for folder in folders for path in folder.glob("last*.ckpt")]
    if not found:
        return None
    # Ties (same mtime) go to the later name: last-v1.ckpt is written after last.ckpt.
    return str(max(found, key=lambda path: (path.stat().st_mtime, str(path))))
