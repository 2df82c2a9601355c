"""Several ``python -m lit_lora`` processes that form one process group on localhost (gloo)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.helpers.paths import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_env(dump: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment every process of one run shares: one master address and port, one thread each
    (a 2-core machine), and where ``dist_probe.RankDump`` writes."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
        "LIT_LORA_RANK_DUMP": str(dump),
        **extra,
    }
