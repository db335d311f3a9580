"""Process groups and data sharding: the same code runs alone or under `torchrun`.

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); without them the run
is a single process and no process group is created.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from lbdt.errors import LBDTError
from lbdt.runtime import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int  # global rank, 0 for a single process
    world_size: int  # number of processes
    local_rank: int  # rank on this machine (selects the GPU)
    device: torch.device  # device of this process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by the torchrun environment (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank=local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(obj, info: DistInfo, src: int = 0):
    """Rank `src`'s `obj` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class EpochSampler(Sampler[int]):
    """Deterministic, sharded sample order: a pure function of (seed, epoch, rank, world_size).

    As `DistributedSampler`: the permutation is padded (by repeating its head) to a multiple of
    `world_size` and rank r takes positions r, r + world, .... `set_epoch(epoch, start)` also skips
    the first `start` indices of this rank's share, which is how a resumed run continues mid-epoch.
    """

    def __init__(self, size: int, *, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if size <= 0:
            raise LBDTError("the dataset is empty: nothing to sample")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(size / world_size)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        """This rank's whole share for the current epoch (ignoring `start`)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.size))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start
