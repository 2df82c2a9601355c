"""Claims shared by processes on one output folder: advisory ``flock`` locks on small files.

The kernel drops a process's locks when it exits, however it exits, so a crashed claimer leaves no
stale claim to detect (a pid check could be fooled by a reused pid or another host). The file stays;
its text names the last holder for people reading the folder.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def try_claim(path: str | Path) -> int | None:
    """Lock ``path`` without waiting: the open descriptor while held, None when another process has it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.time():.0f}\n".encode())
    return fd


def release(fd: int) -> None:
    """Give a claim back (closing the last descriptor to it releases the lock)."""
    os.close(fd)


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold ``path``'s lock for a short critical section, waiting for it if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_claimed(path: str | Path) -> bool:
    """Whether a process holds ``path``'s lock now (asked with a shared lock, so nothing is written)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
