"""A callback for the sweep's resume test: it kills the sweep and its fit together, once.

Used as ``tests.helpers.sweep_probe.KillSweepOnce`` in a config of a fit that ``lit_lora sweep`` starts: after
optimizer step ``step`` it SIGKILLs the parent (the sweep) and then itself, as a preempted job dies, if
the file ``flag`` exists; it removes the file first, so the resumed attempt runs to the end.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import lightning as L


class KillSweepOnce(L.Callback):
    def __init__(self, step: int, flag: str) -> None:
        self.step = step
        self.flag = Path(flag)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and self.flag.exists():
            self.flag.unlink()
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
