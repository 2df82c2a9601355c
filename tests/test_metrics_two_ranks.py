"""The SQuAD window metrics over two gloo processes: counts summed, objects gathered from both ranks.

Kept apart from the model tests so that the spawned ranks import only torch and lit_lora.metrics.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_lora.metrics.gathered import GatheredObjects
from lit_lora.metrics.span import SpanAccuracy

# Per rank: (start logits, end logits, attention mask, start labels, end labels) of its windows.
WINDOWS = {
    0: (
        torch.tensor([[0.0, 5.0, 1.0], [9.0, 1.0, 0.0]]),
        torch.tensor([[0.0, 1.0, 5.0], [0.0, 9.0, 1.0]]),
        torch.tensor([[1, 1, 1], [1, 1, 0]]),
        torch.tensor([1, 0]),
        torch.tensor([2, 0]),  # the second window's end is wrong
    ),
    1: (
        torch.tensor([[2.0, 1.0, 9.0]]),  # the highest start is padding: CLS wins among real tokens
        torch.tensor([[3.0, 1.0, 9.0]]),
        torch.tensor([[1, 1, 0]]),
        torch.tensor([0]),
        torch.tensor([0]),
    ),
}


def computed(windows: dict, objects: dict) -> tuple[dict[str, float], list[str]]:
    accuracy, gathered = SpanAccuracy(), GatheredObjects()
    for rank in sorted(windows):
        accuracy.update(*windows[rank])
        gathered.update(objects[rank])
    return {k: float(v) for k, v in accuracy.compute().items()}, gathered.compute()


def rank_main(rank: int, port: int, directory: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        result = computed({rank: WINDOWS[rank]}, {rank: [f"rank{rank}-{i}" for i in range(rank + 2)]})
        torch.save(result, directory / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_sum_window_counts_and_gather_every_object(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(rank_main, args=(port, tmp_path), nprocs=2, join=True)
    one_process = computed(WINDOWS, {0: ["rank0-0", "rank0-1"], 1: ["rank1-0", "rank1-1", "rank1-2"]})
    objects = ["rank0-0", "rank0-1", "rank1-0", "rank1-1", "rank1-2"]
    assert one_process == ({"start_acc": 1.0, "end_acc": pytest.approx(2 / 3)}, objects)
    for rank in (0, 1):
        assert torch.load(tmp_path / f"rank{rank}.pt") == one_process  # rank order, on every rank
