"""One LightningDataModule per task, sharing :class:`TextDataModule`.

Every public module of this package is imported and each :class:`TextDataModule` it defines is
exported here (``lit_lora.data.SST2DataModule``, as configs name them): a task is its own file.
"""

import importlib
import inspect
import pkgutil

from lit_lora.data.base import TextDataModule
from lit_lora.data.chat_sft import ChatSource as ChatSource  # the type of ChatSFTDataModule's sources


def _discover() -> dict[str, type[TextDataModule]]:
    found: dict[str, type[TextDataModule]] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        classes = {
            n: c for n, c in vars(module).items() if inspect.isclass(c) and c.__module__ == module.__name__
        }
        found |= {n: c for n, c in classes.items() if issubclass(c, TextDataModule)}
    return found


_TASKS = _discover()
globals().update(_TASKS)
__all__ = sorted(["ChatSource", *_TASKS])
