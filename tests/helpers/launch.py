"""Several ``python -m lit_lora`` processes that form one process group on localhost (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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


BY_HAND = (
    "import json, sys\nfrom lit_lora.cli import main\nfor args in json.loads(sys.argv[1]):\n    main(args)"
)


def run_ranks_by_hand(runs: list[list[str]], logs: Path, timeout: float = 300) -> list[int]:
    """Two ranks started here, each running every CLI invocation of ``runs`` in turn (Lightning sees
    LOCAL_RANK and relaunches nothing): the start-up is paid once. Returns the exit codes; each rank's
    output goes to ``logs``/rank<N>.log."""
    logs.mkdir(parents=True, exist_ok=True)
    env = rank_env(logs, free_port(), WORLD_SIZE="2", NODE_RANK="0")
    procs = []
    for rank in (0, 1):
        with open(logs / f"rank{rank}.log", "w") as out:
            command = [sys.executable, "-c", BY_HAND, json.dumps(runs)]
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=REPO,
                    env={**env, "LOCAL_RANK": str(rank)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        return [proc.wait(timeout=timeout) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
