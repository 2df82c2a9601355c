"""A W&B logger that never blocks or prompts: it goes offline when W&B cannot be reached."""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger


def wandb_reachable(timeout_s: float = 2.0) -> bool:
    """True when an API key is configured and the W&B server accepts a TCP connection."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return False
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has_key():
        return False
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _netrc_has_key() -> bool:
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class AutoWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger``, offline unless a key is set and the server answers.

    Offline runs land in ``<save_dir>/wandb/offline-run-*``; ``wandb sync`` uploads them later.
    lit_lora's results recorder copies the run config and ``results.json`` into the run's config and
    summary.
    """

    def __init__(self, project: str = "lit_lora", offline: bool | None = None, **kwargs: Any) -> None:
        """
        Args:
            project: W&B project name.
            offline: Force offline (true) or online (false); None decides from key and network.
            **kwargs: Any other ``lightning.pytorch.loggers.WandbLogger`` argument.
        """
        if offline is None:
            offline = not wandb_reachable()
        kwargs.setdefault("anonymous", False)
        super().__init__(project=project, offline=offline, **kwargs)
