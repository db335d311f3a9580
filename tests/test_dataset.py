"""ReferringVideoDataset samples, collation into a Batch, config-driven building and loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY
from lbdt.config import DataConfig
from lbdt.data.collate import collate
from lbdt.data.dataset import ReferringVideoDataset
from lbdt.data.sources import A2DSource, YTVOSSource
from lbdt.data.transforms import ClipTransform, resize_target
from lbdt.engine.datasets import build_dataset, loader_throughput, make_loader
from lbdt.errors import LBDTError
from lbdt.words import WordVectors

SIZE = (64, 64)


def _cfg(root, fmt="a2d", **kw) -> DataConfig:
    return DataConfig(dataset=fmt, root=str(root), word_vectors="word_vectors.300d.txt", size=SIZE, **kw)


def test_sample_matches_source_and_transform(synth_roots):
    root = synth_roots["a2d"]
    ds = build_dataset(_cfg(root), "train", train=False)
    table = WordVectors.from_glove(root / "word_vectors.300d.txt")
    src = A2DSource(root)
    r = ds.records[0]
    s = ds[0]
    ref_id = f"{max(int(r.frame_id) - 6, 1):05d}"
    assert s.meta.ref_frame_id == ref_id
    expected = ClipTransform(SIZE).apply(
        ClipTransform(SIZE).draw(np.random.default_rng(), (1, 1)),
        src.read_frame(r.video_id, r.frame_id), src.read_frame(r.video_id, ref_id), src.read_mask(r), r.sentence)
    assert torch.equal(s.frame, expected.frame) and torch.equal(s.ref_frame, expected.ref_frame)
    assert torch.equal(s.mask, resize_target(src.read_mask(r), SIZE))
    np.testing.assert_array_equal(s.original_mask, src.read_mask(r))  # eval datasets keep the native mask
    vec, mask = table.encode(r.sentence, 25)
    assert torch.equal(s.word_vectors, vec) and torch.equal(s.word_mask, mask)
    assert s.word_mask.sum() == len(r.sentence.split())
    m = s.meta
    assert (m.dataset, m.video_id, m.object_id, m.frame_id, m.sentence, m.original_size) == (
        "a2d", r.video_id, r.object_id, r.frame_id, r.sentence, TINY["size"])
    assert m.group == r.category and m.group in ("motion", "appearance")  # the synthetic benchmark's sentence type


def test_collate_shapes_and_dtypes(synth_roots):
    ds = build_dataset(_cfg(synth_roots["a2d"]), "val", train=False)
    b = collate([ds[i] for i in range(3)])
    assert len(b) == 3
    assert b.frames.shape == b.ref_frames.shape == (3, 3, *SIZE) and b.frames.dtype == torch.float32
    assert b.word_vectors.shape == (3, 25, 300) and b.word_mask.shape == (3, 25)
    assert b.masks.shape == (3, *SIZE) and set(b.masks.unique().tolist()) <= {0.0, 1.0}
    assert len(b.metas) == 3 and len(b.original_masks) == 3 and b.original_masks[0].dtype == bool
    train = build_dataset(_cfg(synth_roots["a2d"]), "train", train=True)
    bt = collate([train[0], train[1]])
    assert bt.original_masks is None and bt.masks.shape == (2, *SIZE)


def test_ytvos_valid_has_no_masks_and_mixing_is_refused(synth_roots):
    cfg = _cfg(synth_roots["ytvos"], "ytvos")
    valid = build_dataset(cfg, "valid", train=False)
    s = valid[0]
    assert s.mask is None and s.original_mask is None and s.meta.expression_id == s.meta.object_id
    b = collate([valid[0], valid[1]])
    assert b.masks is None and b.original_masks is None
    val = build_dataset(cfg, "val", train=False)
    with pytest.raises(ValueError):
        collate([valid[0], val[0]])
    assert val[0].meta.ref_frame_id == YTVOSSource(synth_roots["ytvos"]).reference_frame_id(
        val.records[0].video_id, val.records[0].frame_id)


def test_augmentation_reproducible_and_epoch_dependent(synth_roots):
    ds = build_dataset(_cfg(synth_roots["a2d"], augment=True), "train", train=True)
    assert ds.transform.augment
    a, b = ds[0], ds[0]
    assert torch.equal(a.frame, b.frame) and torch.equal(a.mask, b.mask)
    frames = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        frames.add(ds[0].frame.sum().item())
    assert len(frames) > 1
    assert not build_dataset(_cfg(synth_roots["a2d"], augment=True), "val", train=False).transform.augment


def test_flip_swaps_sentence_vectors(synth_roots):
    root = synth_roots["a2d"]
    table = WordVectors.from_glove(root / "word_vectors.300d.txt")
    src = A2DSource(root)
    r = src.records("train")[0]
    r = type(r)(**{**r.__dict__, "sentence": "the red circle moving left"})

    class AlwaysFlip(ClipTransform):
        def draw(self, rng, original_size):
            from lbdt.data.transforms import ClipAugment
            return ClipAugment(flip=True)

    ds = ReferringVideoDataset(src, [r], word_vectors=table, size=SIZE, transform=AlwaysFlip(SIZE, augment=True))
    s = ds[0]
    assert torch.equal(s.word_vectors, table.encode("the red circle moving right", 25)[0])
    assert s.meta.sentence == "the red circle moving left"  # meta keeps the listed sentence


def test_holdout_split_is_disjoint(synth_roots):
    cfg = _cfg(synth_roots["a2d"], val_split="holdout:0.34")
    train = build_dataset(cfg, "train", train=True)
    held = build_dataset(cfg, cfg.val_split, train=False)
    tv, hv = {r.video_id for r in train.records}, {r.video_id for r in held.records}
    assert len(hv) == 1 and not tv & hv and len(tv | hv) == TINY["videos"][0]
    with pytest.raises(LBDTError, match="holdout"):
        build_dataset(_cfg(synth_roots["a2d"], val_split="holdout:2"), "train", train=True)


def test_empty_sentence_is_refused(synth_roots):
    src = A2DSource(synth_roots["a2d"])
    r = src.records("train")[0]
    bad = type(r)(**{**r.__dict__, "sentence": "   "})
    table = WordVectors.seeded(["the"])
    with pytest.raises(LBDTError, match="train.txt:1: empty sentence"):
        ReferringVideoDataset(src, [bad], word_vectors=table, size=SIZE)


def test_missing_word_vectors_named(synth_roots, tmp_path):
    cfg = DataConfig(dataset="a2d", root=str(synth_roots["a2d"]), word_vectors=str(tmp_path / "glove.txt"))
    with pytest.raises(LBDTError, match="glove.txt"):
        build_dataset(cfg, "train", train=True)


def test_loader_with_workers(synth_roots):
    ds = build_dataset(_cfg(synth_roots["ytvos"], "ytvos"), "val", train=False)
    loader = make_loader(ds, batch_size=5, shuffle=False, num_workers=2)
    batches = list(loader)
    assert sum(len(b) for b in batches) == len(ds)  # nothing dropped
    assert [m.video_id for b in batches for m in b.metas] == [r.video_id for r in ds.records]


def test_building_a_dataset_never_writes_data(tmp_path):
    root = tmp_path / "bench"
    with pytest.raises(LBDTError, match="dataset root not found"):
        build_dataset(_cfg(root, "ytvos"), "val", train=False)
    assert not root.exists()  # only an explicit command (`lbdt synth`) writes a dataset


def test_loader_throughput_counts_samples(synth_roots):
    ds = build_dataset(_cfg(synth_roots["a2d"]), "val", train=False)
    r = loader_throughput(ds, batch_size=4, num_workers=0, seconds=60)
    assert r["samples"] == len(ds) - 4 and r["samples_per_s"] > 0 and r["size"] == list(SIZE)  # one pass


def test_dataset_surfaces_source_errors(copy_benchmark):
    root = copy_benchmark("a2d")
    ds = build_dataset(_cfg(root), "train", train=True)
    r = ds.records[0]
    mask = root / "masks" / r.video_id / f"{r.frame_id}.h5"
    mask.unlink()
    with pytest.raises(LBDTError, match=f"{mask}: mask file not found"):
        ds[0]
    ref = ds.source.frame_path(r.video_id, ds.source.reference_frame_id(r.video_id, r.frame_id, ds.frame_gap))
    ref.write_bytes(b"garbage")
    with pytest.raises(LBDTError, match=f"{ref}: unreadable image"):
        ds[0]
