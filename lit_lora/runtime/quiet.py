"""A quiet start: library messages lit_lora knows to be harmless stay off stderr; hub kernels stay off.

Each entry names the message *and* the module that emits it, so the same words from anywhere else,
and every other warning, still show. Why each is harmless:

- bitsandbytes ``Failed to load CPU gemm_4bit_forward from kernels-community``: on CPUs with AVX512-BF16
  bitsandbytes tries a hub kernel at import and, failing, uses its own NF4 kernels; lit_lora keeps the
  hub out (below), so this is always the case and the message reports nothing new.
- Lightning ``Starting from v1.9.0, `tensorboardX` has been removed``: lit_lora picks the loggers
  itself (``lit_lora/runtime/loggers.py``); ``--trainer.logger`` chooses another one.
- Lightning's ``💡 Tip`` lines advertising litlogger and litmodels: advertisements.
- torch's ``isinstance(treespec, LeafSpec)`` deprecation, raised in Lightning's pytree helper, and
  transformers' ``is_gradient_checkpointing`` deprecation, raised when PEFT reads that property:
  both concern library code calling library code.
- torchdata's ``'set_vital' is deprecated``: its StatefulDataLoader calling torch.
- PEFT's ``Could not find a config file in ... will assume that the vocabulary was not modified``
  (when saving an adapter offline): lit_lora never resizes the embeddings, so the assumption holds.
- DeepSpeed's ``Setting accelerator to CPU``: printed whenever DeepSpeed is imported on a machine
  without a GPU, a DeepSpeed-free run included; a DeepSpeed run states its device itself.

``python -W ...`` or ``PYTHONWARNINGS`` switch the warning filters off (the user asked for their own);
``LIT_LORA_VERBOSE=1`` switches every filter off.

Hub kernels. bitsandbytes (0.49+) calls ``kernels.get_kernel("kernels-community/quantization-bitsandbytes")``
when it is imported on a CPU with AVX512-BF16 and the ``kernels`` package is installed: online, that
downloads compiled code from the Hugging Face Hub and loads it into the process (``kernels`` allows only
publishers the Hub marks trusted unless ``trust_remote_code`` is given; offline it loads only a cached
copy and skips the publisher check). lit_lora never passes ``trust_remote_code`` or ``use_kernels`` to
``kernels`` or transformers, and the CLI imports bitsandbytes with ``kernels`` hidden, so bitsandbytes
uses the kernels it ships. ``LIT_LORA_HUB_KERNELS=1`` opts in to bitsandbytes' own choice. (Its MPS
backend asks for a hub kernel later, at the first 4-bit operation; that is not intercepted.)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import warnings

VERBOSE_ENV = "LIT_LORA_VERBOSE"
HUB_KERNELS_ENV = "LIT_LORA_HUB_KERNELS"

# (message regex, emitting module regex, category): matched by the warnings machinery itself.
WARNINGS = (
    (r"Starting from v1\.9\.0, `tensorboardX` has been removed",
     r"lightning\.pytorch\.trainer\.connectors\.logger_connector\.logger_connector", UserWarning),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree",
     FutureWarning),
    (r"`is_gradient_checkpointing` is deprecated", r"transformers\.modeling_utils", FutureWarning),
    (r"'set_vital' is deprecated", r"torchdata\.stateful_dataloader\.stateful_dataloader", UserWarning),
    (r"Could not find a config file in .* - will assume that the vocabulary was not modified",
     r"peft\.utils\.save_and_load", UserWarning),
)  # fmt: skip
# (logger, message regex, regex on the path of the file that logged it): one logger's records only.
LOG_RECORDS = (
    ("bitsandbytes.backends.cpu.ops", r"Failed to load CPU gemm_4bit_forward from kernels-community",
     r"bitsandbytes/backends/cpu/ops\.py$"),
    # Lightning logs through one rank-zero logger; the tips come from its two connectors.
    ("lightning.pytorch.utilities.rank_zero", r"💡 Tip: For seamless cloud",
     r"lightning/pytorch/trainer/connectors/(logger_connector/logger_connector|callback_connector)\.py$"),
    ("DeepSpeed", r"Setting accelerator to CPU\. If you have GPU or other accelerator",
     r"deepspeed/accelerator/real_accelerator\.py$"),
)  # fmt: skip


class _DropKnown(logging.Filter):
    """Drops a record whose message and source file both match one of ``known``."""

    def __init__(self, known: list[tuple[str, str]]) -> None:
        super().__init__()
        self.known = [(re.compile(message), re.compile(source)) for message, source in known]

    def filter(self, record: logging.LogRecord) -> bool:
        message, source = record.getMessage(), record.pathname.replace(os.sep, "/")
        return not any(m.match(message) and s.search(source) for m, s in self.known)


def install() -> None:
    """Add the filters above; idempotent. Call before the libraries are imported."""
    if os.environ.get(VERBOSE_ENV) == "1":
        return
    if not sys.warnoptions:  # -W / PYTHONWARNINGS given: the user's filters decide
        for message, module, category in WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in dict.fromkeys(name for name, _, _ in LOG_RECORDS):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown([(m, s) for n, m, s in LOG_RECORDS if n == name]))


def import_bitsandbytes_without_hub_kernels() -> None:
    """Import bitsandbytes with ``kernels`` hidden, so that it loads no hub kernel (module docstring)."""
    if os.environ.get(HUB_KERNELS_ENV) == "1" or "bitsandbytes" in sys.modules:
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        return
    missing = object()
    kernels = sys.modules.get("kernels", missing)
    sys.modules["kernels"] = None  # type: ignore[assignment]  # `from kernels import ...` raises ImportError
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # a broken install fails later, where quantisation is asked for
        pass
    finally:
        if kernels is missing:
            del sys.modules["kernels"]
        else:
            sys.modules["kernels"] = kernels
