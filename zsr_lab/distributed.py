"""Running under ``torchrun``: the set-up both command lines share (``python -m zsr_lab.train`` and
``python -m zsr_lab.evaluate``) and the few collective operations the engines use.

Without torchrun every function here is the one-process case: rank 0 of 1, no process group.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch.utils.data import Subset


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (which sets ``LOCAL_RANK``)."""
    return "LOCAL_RANK" in os.environ


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` without a process group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def local_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else this process's GPU (``cuda:$LOCAL_RANK``) when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def process_group() -> Iterator[bool]:
    """Join torchrun's process group for the duration of a command (NCCL on GPUs, Gloo on CPUs) and leave it
    afterwards, also on an error; does nothing outside torchrun. Yields whether this process is rank 0."""
    joined = launched_by_torchrun()
    if joined:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    try:
        yield rank_and_world()[0] == 0
    finally:
        if joined:
            torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait for every process (nothing to wait for in one)."""
    if rank_and_world()[1] > 1:
        torch.distributed.barrier()


def shard(data, rank: int, world: int):
    """This process's share of a dataset: every world-th example, no padding (counts stay exact)."""
    return data if world == 1 else Subset(data, list(range(rank, len(data), world)))


def all_reduce(tensor: torch.Tensor, op=None) -> torch.Tensor:
    """Sum (or ``op``) ``tensor`` over the processes in place; unchanged in one process."""
    if rank_and_world()[1] > 1:
        torch.distributed.all_reduce(tensor, **({"op": op} if op is not None else {}))
    return tensor


def all_gather_objects(value) -> list:
    """Every process's ``value`` (picklable), in rank order; ``[value]`` in one process."""
    world = rank_and_world()[1]
    if world == 1:
        return [value]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered
