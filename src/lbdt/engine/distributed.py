"""Process groups and data sharding: the same code runs alone or under `torchrun`.

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT); without them the run
is a single process and no process group is created.

Evaluation on many processes: `shard` gives each rank whole videos of the split (deterministically),
each rank predicts its share and packs every sample (`pack`: bit-packed masks), and `gather` brings them
to rank 0 in the split's order, so evaluators and writers there see exactly the stream of one process.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from lbdt.errors import LBDTError
from lbdt.runtime import resolve_device
from lbdt.types import Prediction, SampleMeta

T = TypeVar("T")
SHARD_MODES = ("contiguous", "round_robin")


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


# ---------------------------------------------------------------- evaluation on many processes


def shard(video_ids: Sequence[str], *, rank: int, world_size: int, mode: str = "contiguous") -> list[int]:
    """Indices (in split order) of the samples rank `rank` of `world_size` evaluates; `video_ids[i]` is
    sample i's video. Every sample of a video goes to one rank, so per-video state (the reference frame,
    the masks folder) stays on one process. Videos are taken in order of first appearance:

    * `contiguous`: video v goes to rank floor(first(v) x world_size / N), where first(v) is the number of
      samples before v's first one, so each rank takes a run of consecutive videos of about N / world_size samples;
    * `round_robin`: the j-th video goes to rank j mod world_size.

    A pure function of its arguments: every rank computes the same partition without communicating.
    """
    if mode not in SHARD_MODES:
        raise LBDTError(f"unknown shard mode {mode!r}; choose one of {', '.join(SHARD_MODES)}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise LBDTError(f"rank {rank} is not in [0, world_size = {world_size})")
    first: dict[str, int] = {}
    for i, video in enumerate(video_ids):
        first.setdefault(video, i)
    n = len(video_ids)
    owner = {video: (j % world_size if mode == "round_robin" else start * world_size // n)
             for j, (video, start) in enumerate(first.items())}
    return [i for i, video in enumerate(video_ids) if owner[video] == rank]


def describe_share(indices: Sequence[int], video_ids: Sequence[str], info: DistInfo) -> str:
    """One log line: which share of the split this rank takes."""
    videos = len({video_ids[i] for i in indices})
    return (f"rank {info.rank}/{info.world_size}: {videos} of {len(set(video_ids))} videos, "
            f"{len(indices)} of {len(video_ids)} samples")


@dataclass(frozen=True)
class PackedSample:
    """One evaluated sample as sent between ranks: masks bit-packed (1 bit per pixel, `np.packbits`)."""

    meta: SampleMeta
    shape: tuple[int, int]  # (H0, W0) of the mask (and of the ground truth)
    mask: bytes
    score: float
    gt: bytes | None  # None where the split has no ground truth

    def unpack(self) -> tuple[Prediction, np.ndarray | None]:
        """(Prediction, ground truth bool [H0,W0] or None), equal to what `pack` was given."""
        return (Prediction(meta=self.meta, mask=_unpack_bits(self.mask, self.shape), score=self.score),
                None if self.gt is None else _unpack_bits(self.gt, self.shape))


def pack(pred: Prediction, gt: np.ndarray | None) -> PackedSample:
    """`pred` (mask, meta, score; not `prob` / `frame`) and its ground truth, ready for `gather`."""
    mask = np.asarray(pred.mask, dtype=bool)
    if gt is not None and np.shape(gt) != mask.shape:
        raise LBDTError(f"ground truth {np.shape(gt)} and prediction {mask.shape} differ in size for "
                        f"{pred.meta.video_id}/{pred.meta.frame_id}")
    return PackedSample(meta=pred.meta, shape=(int(mask.shape[0]), int(mask.shape[1])),
                        mask=np.packbits(mask).tobytes(), score=float(pred.score),
                        gt=None if gt is None else np.packbits(np.asarray(gt, dtype=bool)).tobytes())


def _unpack_bits(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    count = shape[0] * shape[1]
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count).astype(bool).reshape(shape)


def gather(items: Iterable[tuple[int, T]], info: DistInfo, *, total: int | None = None,
           dst: int = 0) -> list[T] | None:
    """Every rank's (split index, item) pairs, on rank `dst`, as one list in split-index order (None on the
    other ranks). Alone (world size 1) it only sorts. With `total`, raises `LBDTError` unless the indices are
    exactly 0..total-1; duplicates always raise, so no sample is silently lost or counted twice.
    Uses `torch.distributed.gather_object` (gloo or nccl; with nccl each rank must have set its CUDA device,
    as `init_distributed` does)."""
    local = list(items)
    if info.distributed:
        parts: list[Any] | None = [None] * info.world_size if info.rank == dst else None
        dist.gather_object(local, parts, dst=dst)
        if info.rank != dst:
            return None
        local = [pair for part in parts for pair in part]
    local.sort(key=lambda pair: pair[0])
    indices = [i for i, _ in local]
    if len(set(indices)) != len(indices):
        dup = next(i for i, j in itertools.pairwise(indices) if i == j)
        raise LBDTError(f"sample {dup} was evaluated by more than one rank")
    if total is not None and indices != list(range(total)):
        missing = sorted(set(range(total)) - set(indices))
        raise LBDTError(f"gathered {len(indices)} of {total} samples"
                        + (f"; missing e.g. {missing[:5]}" if missing else "; indices out of range"))
    return [item for _, item in local]
