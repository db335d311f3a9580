"""Tiny fake copies of the official A2D-Sentences, J-HMDB-Sentences and Ref-YouTube-VOS downloads.

Frame k of every clip has a distinctive solid colour (`frame_colour`), so a test can check by mean
colour that frame k landed in ``<k:05d>.jpg`` even though JPEG and MPEG-4 are lossy.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

import media

A2D_SIZE = (48, 64)  # (H, W) of the fake clips
JHMDB_SIZE = (24, 32)
YTVOS_SIZE = (20, 30)

A2D_SENTENCES = {
    ("vidA", 1): "man, in a red shirt #1 ~ climbing",
    ("vidB", 1): "the ball, rolling left",  # written unquoted: the surplus field is joined back
    ("vidB", 2): 'a man "walking", slowly',
}


def frame_colour(k: int, video_index: int) -> tuple[int, int, int]:
    """RGB of frame k (1-based) of the video_index-th fake clip."""
    return (20 * k, 255 - 20 * k, 60 + 70 * video_index)


def solid(size: tuple[int, int], colour: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((*size, 3), np.uint8)
    img[...] = colour
    return img


def write_mp4(path: Path, frames: list[np.ndarray]) -> None:
    """An MPEG-4 clip like the A2D release's (lossy, yuv420p)."""
    media.write_mp4(path, frames, lossless=False)


def write_a2d_h5(path: Path, instances: list[int], masks: list[np.ndarray], codes: list[int]) -> None:
    """An A2D instance file: MATLAB-style transposed reMask ([W,H] for one instance, [N,W,H] for several)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = np.stack(masks).transpose(0, 2, 1).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f["instance"] = np.asarray(instances, dtype=np.float64)  # MATLAB doubles
        f["reMask"] = stack[0] if len(instances) == 1 else stack
        f["id"] = np.asarray([codes], dtype=np.float64)  # [1,N] actor-action codes


def box_mask(size: tuple[int, int], top: int, left: int) -> np.ndarray:
    m = np.zeros(size, bool)
    m[top:top + 8, left:left + 8] = True
    return m


def make_a2d(root: Path) -> Path:
    """vidA (train, 12 frames; instance 1 in frames 7 and 12), vidB (test, 12 frames; instances 1+2 in
    frame 9, only 2 in frame 5), vidNoClip (annotated, no clip), vidMissed (in a2d_missed_videos.txt),
    and a "1 (copy)" annotation row."""
    release, text = root / "Release", root / "text_annotations"
    for i, vid in enumerate(["vidA", "vidB"]):
        write_mp4(release / "clips320H" / f"{vid}.mp4", [solid(A2D_SIZE, frame_colour(k, i)) for k in range(1, 13)])
    write_mp4(release / "clips320H" / "vidMissed.mp4", [solid(A2D_SIZE, (0, 0, 0))] * 3)
    h, w = A2D_SIZE
    (release / "videoset.csv").write_text(
        f"vidA,11,0,1,{h},{w},12,2,0\nvidB,36,0,1,{h},{w},12,2,1\nvidNoClip,11,0,1,{h},{w},12,1,0\n"
        f"vidMissed,11,0,1,{h},{w},3,1,0\n")
    inst = text / "a2d_annotation_with_instances"
    write_a2d_h5(inst / "vidA" / "00007.h5", [1], [box_mask(A2D_SIZE, 2, 3)], [11])
    write_a2d_h5(inst / "vidA" / "00012.h5", [1], [box_mask(A2D_SIZE, 4, 5)], [11])
    write_a2d_h5(inst / "vidB" / "00009.h5", [1, 2], [box_mask(A2D_SIZE, 0, 0), box_mask(A2D_SIZE, 20, 30)], [36, 18])
    write_a2d_h5(inst / "vidB" / "00005.h5", [2], [box_mask(A2D_SIZE, 10, 10)], [18])
    write_a2d_h5(inst / "vidNoClip" / "00001.h5", [1], [box_mask(A2D_SIZE, 0, 0)], [11])
    write_a2d_h5(inst / "vidMissed" / "00001.h5", [1], [box_mask(A2D_SIZE, 0, 0)], [11])
    rows = ["video_id,instance_id,query"]
    rows += [f'{vid},{i},' + (s if vid == "vidB" and i == 1 else '"' + s.replace('"', '""') + '"')
             for (vid, i), s in A2D_SENTENCES.items()]
    rows += ["vidA,1 (copy),a duplicate", "vidNoClip,1,a man", "vidMissed,1,a man"]
    text.mkdir(parents=True, exist_ok=True)
    (text / "a2d_annotation.txt").write_text("\n".join(rows) + "\n")
    (text / "a2d_missed_videos.txt").write_text("vidMissed\n")
    return root


JHMDB_VIDEOS = {  # vid -> (action, image frames, mask frames, sentence)
    "v1": ("brush_hair", 12, 10, "a woman, brushing her #hair ~ slowly"),
    "v2": ("catch", 8, 8, "a boy catching a ball"),
}


def make_jhmdb(root: Path) -> Path:
    """v1 (12 PNGs, 10 mask frames), v2 (8 PNGs, 8 mask frames), v3 annotated but absent."""
    for i, (vid, (action, n_img, n_mask, _)) in enumerate(JHMDB_VIDEOS.items()):
        for k in range(1, n_img + 1):
            p = root / "Rename_Images" / action / vid / f"{k:05d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(solid(JHMDB_SIZE, frame_colour(k, i))).save(p)
        masks = np.zeros((*JHMDB_SIZE, n_mask), np.uint8)
        for t in range(n_mask):
            masks[t:t + 5, 2 * t:2 * t + 6, t] = 1
        p = root / "puppet_mask" / action / vid / "puppet_mask.mat"
        p.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(p), {"part_mask": masks})
    rows = ["video_id,query"] + [f'{vid},"{s}"' for vid, (_, _, _, s) in JHMDB_VIDEOS.items()] + ["v3,a ghost"]
    (root / "jhmdb_annotation.txt").write_text("\n".join(rows) + "\n")
    return root


YTVOS_FRAMES = ["00000", "00005", "00010"]
YTVOS_EXPRESSIONS = {"0": {"exp": "a cat, #1 ~ on the left", "obj_id": "1"}, "1": {"exp": "the dog", "obj_id": "2"}}


def ytvos_index_map(frame: str) -> np.ndarray:
    """Palette indices of a train frame: object 1 everywhere at the top, object 2 at the bottom except in 00010."""
    m = np.zeros(YTVOS_SIZE, np.uint8)
    m[:5, :10] = 1
    if frame != "00010":
        m[12:, 20:] = 2
    return m


def _palette_png(path: Path, index: np.ndarray) -> None:
    im = Image.fromarray(index, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def make_ytvos(root: Path, *, train_videos: int = 6, with_test: bool = True) -> Path:
    """train t0..t5 (3 frames, objects 1 and 2, two expressions each); valid v0, v1, v2 with v2 also in test."""
    train = {f"t{i}": {"expressions": YTVOS_EXPRESSIONS, "frames": YTVOS_FRAMES} for i in range(train_videos)}
    objects = {"1": {"category": "cat", "frames": YTVOS_FRAMES}, "2": {"category": "dog", "frames": YTVOS_FRAMES[:2]}}
    meta = {"videos": {vid: {"objects": objects} for vid in train}}
    for vid in train:
        for f in YTVOS_FRAMES:
            p = root / "train" / "JPEGImages" / vid / f"{f}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(solid(YTVOS_SIZE, (10, 200, 30))).save(p)
            _palette_png(root / "train" / "Annotations" / vid / f"{f}.png", ytvos_index_map(f))
    valid_exps = {"0": {"exp": "a bird # flying ~ away"}, "1": {"exp": "a tree"}}
    valid = {f"v{i}": {"expressions": valid_exps, "frames": YTVOS_FRAMES[:2]} for i in range(3)}
    for vid in valid:
        for f in YTVOS_FRAMES[:2]:
            p = root / "valid" / "JPEGImages" / vid / f"{f}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(solid((16, 24), (90, 90, 90))).save(p)
    for split, videos in [("train", train), ("valid", valid)] + ([("test", {"v2": valid["v2"]})] if with_test else []):
        p = root / "meta_expressions" / split / "meta_expressions.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"videos": videos}))
    (root / "train" / "meta.json").write_text(json.dumps(meta))
    return root
