"""Configuration → source, dataset and data loader."""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from lbdt.config import DataConfig
from lbdt.data.collate import collate
from lbdt.data.dataset import ReferringVideoDataset
from lbdt.data.records import ReferRecord
from lbdt.data.sources import SOURCES, Source
from lbdt.data.transforms import ClipTransform
from lbdt.errors import LBDTError
from lbdt.words import WordVectors, resolve_word_vectors

HOLDOUT = "holdout:"


def build_source(dataset: str, root: str) -> Source:
    """The source class of format `dataset` (a2d | jhmdb | ytvos | davis | mevis | longrvos) on `root`."""
    if dataset not in SOURCES:
        raise LBDTError(f"unknown dataset format {dataset!r}; expected one of {', '.join(SOURCES)}")
    return SOURCES[dataset](root)


@functools.lru_cache(maxsize=2)
def _load_word_vectors(table: str, root: str) -> WordVectors:
    return resolve_word_vectors(table=table, root=root)


def load_word_vectors(cfg: DataConfig) -> WordVectors:
    """The configured word-vector table `data.word_vectors` (as given, else under `data.root`; read once per
    process), through the one resolver `lbdt.words.resolve_word_vectors`."""
    return _load_word_vectors(cfg.word_vectors, cfg.root)


def split_records(source: Source, cfg: DataConfig, split: str) -> list[ReferRecord]:
    """Records of `split`. With `cfg.val_split = "holdout:<fraction>"`, that split is a deterministic
    fraction of `cfg.train_split`'s videos, and those videos are removed from the training split."""
    holdout = cfg.val_split.startswith(HOLDOUT)
    if not (holdout and split in (cfg.val_split, cfg.train_split)):
        return source.records(split)
    try:
        fraction = float(cfg.val_split[len(HOLDOUT):])
    except ValueError:
        fraction = -1.0
    if not 0.0 < fraction < 1.0:
        raise LBDTError(f"data.val_split {cfg.val_split!r}: expected holdout:<fraction between 0 and 1>")
    records = source.records(cfg.train_split)
    videos = sorted({r.video_id for r in records})
    n = max(1, round(fraction * len(videos)))
    held = set(np.random.default_rng(0).permutation(len(videos))[:n].tolist())
    held_ids = {videos[i] for i in held}
    keep_held = split == cfg.val_split
    return [r for r in records if (r.video_id in held_ids) == keep_held]


def build_dataset(cfg: DataConfig, split: str, *, train: bool, word_vectors: WordVectors | None = None,
                  with_original_mask: bool | None = None, seed: int = 0) -> ReferringVideoDataset:
    """The dataset of `split` (a list stem, or `cfg.val_split`): augmented when `train` and `cfg.augment`;
    evaluation datasets (train=False) also carry the native-resolution mask unless told otherwise."""
    source = build_source(cfg.dataset, cfg.root)
    records = split_records(source, cfg, split)
    if not records:
        raise LBDTError(f"{source.list_file(split)[0]}: no samples in split {split!r}")
    table = word_vectors if word_vectors is not None else load_word_vectors(cfg)
    size = tuple(cfg.size)
    list_split = cfg.train_split if split.startswith(HOLDOUT) else split
    return ReferringVideoDataset(
        source, records, word_vectors=table, size=size, frame_gap=cfg.frame_gap,
        transform=ClipTransform(size, augment=train and cfg.augment), max_words=cfg.max_words,
        with_original_mask=(not train) if with_original_mask is None else with_original_mask,
        with_masks=source.has_masks(list_split), seed=seed)


def make_loader(dataset: ReferringVideoDataset, *, batch_size: int, shuffle: bool, num_workers: int = 2,
                drop_last: bool = False, sampler: Sampler | None = None, seed: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader yielding `Batch`es. Evaluation loaders should keep `drop_last=False` (no sample dropped)."""

    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
                      sampler=sampler, num_workers=num_workers, collate_fn=collate, drop_last=drop_last,
                      pin_memory=pin_memory, generator=generator, persistent_workers=False)


def loader_throughput(dataset: ReferringVideoDataset, *, batch_size: int = 8, num_workers: int = 2,
                      seconds: float = 20.0) -> dict:
    """Samples per second through `make_loader` (shuffled), timed from the first batch on, for at most
    `seconds` (or one pass). Returns {"samples_per_s", "samples", "seconds", "num_workers", "size"}."""
    loader = make_loader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers)
    start, count = None, 0
    for batch in loader:
        if start is None:  # worker start-up is not part of the rate
            start = time.perf_counter()
            continue
        count += len(batch)
        if time.perf_counter() - start > seconds:
            break
    elapsed = time.perf_counter() - start if start is not None else 0.0
    return {"samples_per_s": count / elapsed if elapsed > 0 else 0.0, "samples": count, "seconds": elapsed,
            "num_workers": num_workers, "size": list(dataset.size)}
