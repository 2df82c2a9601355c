"""Peak memory of the device in use, by the best measure each backend offers; the host's load beside it."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(megabytes, what was measured)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    if device.type == "mps":
        # What Metal holds for the process, the allocator's cached blocks included (torch keeps no MPS peak).
        return torch.mps.driver_allocated_memory() / 2**20, "mps_driver_allocated"
    # ru_maxrss is in kilobytes on Linux and bytes on macOS; it is the process's lifetime peak.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_peak_rss"


def memory_details(device: torch.device) -> dict[str, float]:
    """Figures recorded beside the peak: on MPS, the memory held by live tensors at the time of writing."""
    if device.type == "mps":
        return {"mps_current_allocated_mb": round(torch.mps.current_allocated_memory() / 2**20, 1)}
    return {}


class MachineLoad:
    """How loaded the host was while a stage ran, so that a report can tell a contended time from a clean one.

    Samples the 1-minute load average (the whole machine's runnable threads) at the start, every
    ``every_s`` seconds of batches and at the end, and takes the process's CPU time (all its threads)
    beside its wall time over the same span. GPU sharing is not measured: these are the host's figures.
    """

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._wall = self._cpu = self._last = 0.0
        self._loads: list[float | None] = []
        self._started = False

    def start(self) -> None:
        self._wall = self._last = time.perf_counter()
        self._cpu = time.process_time()
        self._loads = [_load_average()]
        self._started = True

    def sample(self) -> None:
        now = time.perf_counter()
        if self._started and now - self._last >= self.every_s:
            self._loads.append(_load_average())
            self._last = now

    def record(self) -> dict[str, Any]:
        """The ``load`` entry of a results record; empty if the stage never started."""
        if not self._started:
            return {}
        wall, cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu
        loads = [x for x in [*self._loads, _load_average()] if x is not None]
        threads = min(torch.get_num_threads(), _usable_cores())
        return {
            "load": {
                "cpu_count": os.cpu_count(),  # the machine's: the load average counts all of it
                "usable_cores": _usable_cores(),  # this process's affinity
                "torch_threads": torch.get_num_threads(),
                "load_avg_1m_mean": round(statistics.fmean(loads), 2) if loads else None,
                "load_avg_1m_max": round(max(loads), 2) if loads else None,
                "load_samples": len(loads),
                "wall_s": round(wall, 2),
                "process_cpu_s": round(cpu, 2),
                # 1.0: every thread torch may use was busy all the time; contention or a pause lowers it.
                "cpu_utilisation": round(cpu / (wall * threads), 3) if wall > 0 else None,
            }
        }


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not every platform has one
        return None


def _usable_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def device_name(device: torch.device) -> str:
    """What measured the time and memory: the GPU's name, or the CPU's model and the cores this process
    may use, since timings on another CPU, or on more of its cores, are not the same device's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"{cpu_model()}, {_usable_cores()} cores"
    return device.type


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), or what the platform says of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or "cpu"
