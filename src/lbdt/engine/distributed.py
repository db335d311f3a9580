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
from datetime import timedelta
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


SETUP_TIMEOUT_VAR = "LBDT_DIST_TIMEOUT"  # seconds the ranks wait for each other at set-up (not torch's 30 minutes)
DEFAULT_SETUP_TIMEOUT = 120.0


def _env_int(name: str, default: int | None, minimum: int, maximum: int | None = None) -> int | None:
    """An integer environment variable (`default` when unset); anything else is an `LBDTError` naming it."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise LBDTError(f"environment variable {name}={text!r}: expected an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise LBDTError(f"environment variable {name}={value}: must be {bound}")
    return value


def setup_timeout() -> float:
    """Seconds the set-up waits for the other ranks: `$LBDT_DIST_TIMEOUT`, default 120."""
    text = os.environ.get(SETUP_TIMEOUT_VAR)
    if text is None:
        return DEFAULT_SETUP_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise LBDTError(f"environment variable {SETUP_TIMEOUT_VAR}={text!r}: expected a positive number of seconds")
    return value


def process_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun variables, checked: integers, 0 <= RANK < WORLD_SIZE,
    0 <= LOCAL_RANK < WORLD_SIZE. A RANK without a WORLD_SIZE (left over from another run) is refused: alone,
    a process with rank 1 would compute and write nothing."""
    world = _env_int("WORLD_SIZE", 1, 1)
    rank = _env_int("RANK", 0, 0)
    local_rank = _env_int("LOCAL_RANK", 0, 0)
    if rank >= world:
        if "WORLD_SIZE" not in os.environ:
            raise LBDTError(f"environment variable RANK={rank} is set but WORLD_SIZE is not (left over from "
                            "another run?): unset RANK and LOCAL_RANK to run one process, or start the ranks "
                            "with torchrun")
        raise LBDTError(f"environment variable RANK={rank} is not in [0, WORLD_SIZE={world})")
    if local_rank >= world:
        raise LBDTError(f"environment variable LOCAL_RANK={local_rank} is not in [0, WORLD_SIZE={world})")
    return rank, world, local_rank


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _rendezvous(rank: int, world: int) -> dist.Store:
    """Meet the other ranks at MASTER_ADDR:MASTER_PORT within `setup_timeout()` seconds and check that every
    rank was told the same WORLD_SIZE and that no RANK is taken twice; returns the store for the process group.
    Rank 0 hosts the store (under torchrun, the agent does). Every failure is one `LBDTError`."""
    addr = os.environ.get("MASTER_ADDR", "").strip()
    if not addr:
        raise LBDTError(f"environment variable MASTER_ADDR is not set (WORLD_SIZE={world}): the ranks need the "
                        "address of rank 0 (torchrun sets it)")
    port = _env_int("MASTER_PORT", None, 1, 65535)
    if port is None:
        raise LBDTError(f"environment variable MASTER_PORT is not set (WORLD_SIZE={world}): the ranks need a port "
                        "on rank 0 (torchrun sets it)")
    seconds = setup_timeout()
    timeout = timedelta(seconds=seconds)
    me = f"distributed set-up (rank {rank} of WORLD_SIZE={world}, MASTER_ADDR:MASTER_PORT {addr}:{port})"
    host = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    try:
        store = dist.TCPStore(addr, port, world, is_master=host, timeout=timeout, wait_for_workers=False,
                              multi_tenant=True)
    except (RuntimeError, OSError, ValueError) as e:  # DistNetworkError / DistStoreError are RuntimeErrors
        action = "cannot listen there (port in use, or not an address of this machine?)" if host \
            else f"cannot reach rank 0 within {seconds:g} s ({SETUP_TIMEOUT_VAR})"
        raise LBDTError(f"{me}: {action}: {_first_line(e)}") from None
    check = dist.PrefixStore("lbdt-setup", store)
    waiting_for = 0
    try:
        if check.add(f"rank-{rank}", 1) > 1:
            raise LBDTError(f"{me}: another process also has RANK={rank}")
        check.set(f"world-{rank}", str(world))
        for peer in (range(1, world) if rank == 0 else (0,)):  # rank 0 sees everyone; everyone sees rank 0
            waiting_for = peer
            check.wait([f"world-{peer}"], timeout)
            theirs = int(check.get(f"world-{peer}"))
            if rank != 0:
                check.set(f"seen-{rank}", "1")  # rank 0 (hosting the store) may stop once its peers have read it
            if theirs != world:
                if rank == 0:
                    check.wait([f"seen-{peer}"], timeout)
                raise LBDTError(f"{me}: the ranks disagree on WORLD_SIZE: rank {peer} was told {theirs}, this "
                                f"rank {world}")
    except LBDTError:
        raise
    except (RuntimeError, OSError, ValueError) as e:
        raise LBDTError(f"{me}: rank {waiting_for} did not join within {seconds:g} s ({SETUP_TIMEOUT_VAR}): "
                        f"{_first_line(e)}") from None
    return store


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by the torchrun environment (nccl on CUDA, gloo on CPU).

    The environment is checked first (`process_env`; MASTER_ADDR / MASTER_PORT when WORLD_SIZE > 1), then the
    ranks meet within `$LBDT_DIST_TIMEOUT` seconds (default 120) and check that they agree on the world size
    before the group is created; any problem is one `LBDTError` on every rank, never a wait of torch's 30 minutes.
    Inside an existing group (a caller that created it), the group must match the environment."""
    rank, world, local_rank = process_env()
    if dist.is_initialized() and (dist.get_rank(), dist.get_world_size()) != (rank, world):
        raise LBDTError(f"the existing process group (rank {dist.get_rank()} of {dist.get_world_size()}) "
                        f"differs from the environment (RANK={rank}, WORLD_SIZE={world})")
    dev = resolve_device(device, local_rank=local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        store = _rendezvous(rank, world)
        try:
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", store=store, rank=rank,
                                    world_size=world)
        except (RuntimeError, OSError, ValueError) as e:
            raise LBDTError(f"distributed set-up (rank {rank} of WORLD_SIZE={world}): cannot create the process "
                            f"group: {_first_line(e)}") from None
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
