"""The synthetic benchmark: deterministic files, motion pairs that differ only by motion, unique appearance
sentences, a fixed motion share, visible motion across the frame gap, a download-free word-vector table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from lbdt.cli import main
from lbdt.data.listfile import read_list
from lbdt.data.sources import SOURCES
from lbdt.data.synth import (
    COLOURS,
    FORMATS,
    FRAME_GAP,
    MOTIONS,
    SIZES,
    SPEED,
    SPLIT_DIRS,
    SPLITS,
    WORD_VECTORS,
    _shape_mask,
    make_clip,
    vocabulary,
)
from lbdt.data.transforms import swap_left_right
from lbdt.words import WordVectors, tokenize


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(out: Path, fmt: str, seed: int) -> int:
    return main(["synth", "--format", fmt, "--out", str(out), "--seed", str(seed), "--videos", "2", "1", "1",
                 "--frames", "8", "--size", "48", "64", "--no-progress"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_seed_same_files(tmp_path, fmt):
    assert _write(tmp_path / "a", fmt, 1) == 0
    assert _write(tmp_path / "b", fmt, 1) == 0
    assert _write(tmp_path / "c", fmt, 2) == 0
    a, b, c = (_files(tmp_path / d) for d in "abc")
    assert a == b and len(a) > 10
    assert a != c  # (file names differ too: annotated frames, J-HMDB action folders)


def test_existing_output_is_refused(tmp_path, capsys):
    assert _write(tmp_path / "a", "a2d", 1) == 0
    assert _write(tmp_path / "a", "a2d", 1) == 2
    assert "already exists" in capsys.readouterr().err


def test_make_clip_shapes_and_determinism():
    c = make_clip(11, frames=9, size=(40, 72), speed=2.0)
    assert c.frames.shape == (9, 40, 72, 3) and c.frames.dtype == np.uint8
    assert c.masks.shape == (4, 9, 40, 72) and c.masks.dtype == bool
    assert np.array_equal(c.frames, make_clip(11, frames=9, size=(40, 72), speed=2.0).frames)
    assert not np.array_equal(c.frames, make_clip(12, frames=9, size=(40, 72), speed=2.0).frames)
    assert not (c.masks.sum(0) > 1).any()  # visible masks never overlap
    for o, ob in enumerate(c.objects):  # visible pixels have the object's colour (noise is +-3)
        px = c.frames[c.masks[o]].astype(int)
        assert px.size and np.abs(px - np.array(COLOURS[ob.colour])).max() <= 3


@pytest.mark.parametrize("seed", range(25))
def test_motion_pair_differs_only_by_motion_and_singles_are_unique(seed):
    c = make_clip(seed)
    a, b, *singles = c.objects
    assert (a.shape, a.colour, a.size, a.radius) == (b.shape, b.colour, b.size, b.radius)
    assert a.motion != b.motion and a.sentence != b.sentence
    assert a.sentence_type == b.sentence_type == "motion"
    for o in (a, b):
        words = tokenize(o.sentence, None)
        assert o.colour in words and o.shape in words and not set(SIZES) & set(words)
        assert ("still" in words or "move" in words or "motionless" in words) if o.motion == "still" \
            else any(w.startswith(o.motion) for w in words)
    looks = [(o.shape, o.colour, o.size) for o in c.objects]
    for s in singles:
        assert s.sentence_type == "appearance"
        assert looks.count((s.shape, s.colour, s.size)) == 1 and (s.shape, s.colour) != (a.shape, a.colour)
        words = tokenize(s.sentence, None)
        assert {s.size, s.colour, s.shape} <= set(words) and not set(MOTIONS) & set(words)
    # the pair's pixels are the same up to a whole-pixel translation (centres are whole pixels)
    assert all(float(v).is_integer() for v in (*a.start, *b.start))
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    ma, mb = (_shape_mask(o.shape, yy - o.start[0], xx - o.start[1], o.radius) for o in (a, b))
    dy, dx = int(b.start[0] - a.start[0]), int(b.start[1] - a.start[1])
    assert np.array_equal(np.roll(ma, (dy, dx), axis=(0, 1)), mb)


@pytest.mark.parametrize("fmt", FORMATS)
def test_motion_is_visible_across_the_frame_gap(fmt):
    speed = SPEED[fmt] * 96
    k = FRAME_GAP[fmt]
    # at the default 96x128 the shift across the gap is clear (>= 3 px) but below a small shape's radius, so the
    # two copies in |I_t - I_{t-k}| overlap and the direction is visible at the object itself
    assert 3.0 <= speed * k < SIZES["small"] * 96
    frames = 14
    checked = 0
    for seed in range(6):
        c = make_clip(seed, frames=frames, speed=speed)
        for o, ob in enumerate(c.objects):
            full_area = c.masks[o].sum((1, 2)).max()
            clear = [t for t in range(frames) if c.masks[o, t].sum() == full_area]  # unoccluded frames
            cent = {t: np.argwhere(c.masks[o, t]).mean(0) for t in clear}
            for t in clear:
                if t - k in cent:
                    shift = np.abs(cent[t] - cent[t - k]).sum()
                    checked += 1
                    if ob.motion == "still":
                        assert shift == 0
                    else:
                        assert round(shift) >= np.floor(speed * k)  # whole-pixel centres: speed * k up to rounding
    assert checked > 50


@pytest.mark.parametrize("fmt", ["a2d", "ytvos"])
def test_half_of_the_sentences_are_motion(synth_roots, fmt):
    source = SOURCES[fmt](synth_roots[fmt])
    for split in SPLITS:
        kinds = [r.category for r in source.records(split)]
        assert kinds.count("motion") == kinds.count("appearance") == len(kinds) // 2


def test_jhmdb_alternates_motion_and_appearance_targets(synth_roots):
    records = SOURCES["jhmdb"](synth_roots["jhmdb"]).records("train")
    by_video = {r.video_id: r.category for r in records}
    assert list(by_video.values()) == ["motion", "appearance", "motion"]


def test_word_vectors_are_the_seeded_table_and_cover_every_sentence(synth_roots):
    for fmt, root in synth_roots.items():
        table = WordVectors.from_glove(root / WORD_VECTORS)
        seeded = WordVectors.seeded(vocabulary(), dim=300, seed=TINY["seed"])
        assert table.words == seeded.words
        np.testing.assert_allclose(table.vectors, seeded.vectors, atol=1e-6)
        for split in SPLIT_DIRS[fmt].values() if fmt in SPLIT_DIRS else SPLITS:
            for r in SOURCES[fmt](root).records(split):
                for s in (r.sentence, swap_left_right(r.sentence)):
                    assert all(tok in table for tok in tokenize(s, None)), s


def test_sidecar_and_meta_expressions(synth_roots):
    for fmt, root in synth_roots.items():
        info = json.loads((root / "benchmark.json").read_text())
        assert info["format"] == fmt and info["seed"] == TINY["seed"] and info["size"] == list(TINY["size"])
        splits = dict(zip(SPLITS, SPLITS))
        if fmt in SPLIT_DIRS:  # davis / mevis: keyed by the split folders written
            splits = SPLIT_DIRS[fmt]
        assert info["videos"] == {splits[s]: n for s, n in zip(SPLITS, TINY["videos"]) if s in splits}
        assert info["frame_gap"] == FRAME_GAP[fmt]
        n = {s: len(SOURCES[fmt](root).records(s)) for s in splits.values()}
        assert info["samples"] == n
        for v in info["video_list"]:
            assert {o["sentence_type"] for o in v["objects"]} == {"motion", "appearance"}
    meta = json.loads((synth_roots["ytvos"] / "meta_expressions.json").read_text())["videos"]
    assert len(meta) == sum(TINY["videos"])
    first = next(iter(meta.values()))
    assert len(first["frames"]) == TINY["frames"] and first["frames"][:2] == ["00000", "00005"]
    assert {e["type"] for e in first["expressions"].values()} == {"motion", "appearance"}
    valid = read_list(synth_roots["ytvos"] / "valid_new_pure.txt", "hash5")
    assert {r.video_id for r in valid} == {v for v, m in meta.items() if m["split"] == "test"}
