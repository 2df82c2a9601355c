"""Peak memory of the device in use, by the best measure each backend offers."""

from __future__ import annotations

import resource
import sys

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
