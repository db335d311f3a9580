"""A synthetic referring-video benchmark, written in the on-disk formats of A2D, J-HMDB, Ref-YouTube-VOS,
Ref-DAVIS17 or MeViS.

Each clip shows coloured shapes moving in straight lines over a static textured background (gradient,
stripes or smooth noise). Every clip has one *motion pair*: two objects of identical appearance (shape,
colour, size) that differ only in how they move, referred to by motion sentences ("the red circle moving
left" / "the red circle that is standing still"); and two *single* objects whose appearance is unique in
the clip, referred to by appearance sentences ("the big blue square"). Half the sentences therefore need
the temporal stream. Motions are left, right, up, down and still, at a constant speed whose shift across
the format's frame gap (a2d: 6 frames, jhmdb: 5, ytvos: 1 stored frame, davis: 4, mevis: 1) is clear but smaller
than a shape's radius, so the direction shows at the object itself in |I_t - I_{t-k}|.

The davis and mevis formats annotate every frame and score whole videos. davis: every object has one expression
in each of the four groups (the sentence templates in turn), splits train / val. mevis: every object has its own
expression, the motion pair also one joint expression (target = the union of both), each video one no-target
expression (an object that is not in the clip, as in MeViS v2), and the last object is absent (not drawn) in the
first third of the frames (mask_dict null there); splits train / valid_u / valid (no mask_dict.json).

Everything is a deterministic function of the seed. `make_clip` draws one clip in memory; `write_benchmark`
(`lbdt synth`) writes train/val/test splits, a `benchmark.json` ground-truth sidecar and a seeded 300-d
word-vector table in GloVe text format (`word_vectors.300d.txt`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image
from tqdm import tqdm

from lbdt.data.listfile import write_list
from lbdt.data.records import ReferRecord
from lbdt.data.sources import SOURCES
from lbdt.data.sources.davis import GROUPS
from lbdt.data.transforms import side_words
from lbdt.errors import LBDTError
from lbdt.paths import check_output_dir
from lbdt.words import DATASET_TABLE, WordVectors, tokenize

FORMATS = tuple(SOURCES)  # every dataset has a synthetic benchmark in its layout
SPLITS = ("train", "val", "test")
COLOURS = {"red": (220, 45, 45), "green": (40, 180, 70), "blue": (45, 85, 225), "yellow": (235, 210, 40),
           "purple": (150, 65, 200), "orange": (245, 135, 30)}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")  # all left-right symmetric: a flip keeps them
SIZES = {"small": 0.11, "big": 0.16}  # radius as a fraction of min(H, W) (10.6 / 15.4 px at 96x128)
MOTIONS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0), "still": (0.0, 0.0)}
MOTION_TEMPLATES = {
    "left": ("the {colour} {shape} moving left", "the {colour} {shape} that moves to the left",
             "{colour} {shape} going left"),
    "right": ("the {colour} {shape} moving right", "the {colour} {shape} that moves to the right",
              "{colour} {shape} going right"),
    "up": ("the {colour} {shape} moving up", "the {colour} {shape} that moves upwards", "{colour} {shape} going up"),
    "down": ("the {colour} {shape} moving down", "the {colour} {shape} that moves downwards",
             "{colour} {shape} going down"),
    "still": ("the {colour} {shape} that is standing still", "the {colour} {shape} that does not move",
              "the motionless {colour} {shape}"),
}
UNION_TEMPLATE = "{first} and {second}"  # mevis: one expression for both objects of the motion pair
APPEARANCE_TEMPLATES = ("the {size} {colour} {shape}", "a {size} {colour} {shape}", "the {colour} {shape} that is {size}")
FRAME_GAP = {name: source.default_frame_gap for name, source in SOURCES.items()}  # the sources' default k
# px per stored frame as a fraction of min(H, W): the displacement across the gap k (~7 % of min(H, W), 7 px at
# 96x128; ytvos 4 px) is below a small shape's radius, so the copies in |I_t - I_{t-k}| overlap the object: the
# leading edge lies inside the current shape, the trailing edge outside, and the direction is visible locally.
SPEED = {"a2d": 0.012, "jhmdb": 0.014, "ytvos": 0.04, "davis": 0.012, "mevis": 0.04}
# the generator's train / val / test splits -> the folder they are written to (davis writes no test split)
SPLIT_DIRS = {"davis": {"train": "train", "val": "val"}, "mevis": {"train": "train", "val": "valid_u", "test": "valid"}}
WORD_VECTORS = DATASET_TABLE  # the benchmark's seeded table, where `resolve_word_vectors` looks for a dataset's own


@dataclass(frozen=True)
class SynthObject:
    """One shape of a clip and the sentence that refers to it."""

    shape: str
    colour: str
    size: str  # "small" | "big"
    motion: str  # left | right | up | down | still
    radius: float  # px
    start: tuple[float, float]  # (y, x) centre at frame 0, whole px
    velocity: tuple[float, float]  # (dy, dx) px per frame; the centre at frame t is round(start + t * velocity)
    sentence: str
    sentence_type: str  # "motion" (member of the motion pair) | "appearance"


@dataclass
class SynthClip:
    frames: np.ndarray  # uint8 [T,H,W,3]
    masks: np.ndarray  # bool [O,T,H,W]: visible pixels of each object (later objects occlude earlier ones)
    objects: list[SynthObject]
    z_order: list[int]  # drawing order (object indices, back to front)


def vocabulary() -> list[str]:
    """Every token a benchmark sentence (or its left/right flip) can contain."""
    words = set(side_words())
    fill = {"colour": " ".join(COLOURS), "shape": " ".join(SHAPES), "size": " ".join(SIZES)}
    for t in [t for ts in MOTION_TEMPLATES.values() for t in ts] + list(APPEARANCE_TEMPLATES):
        words.update(tokenize(t.format(**fill), None))
    words.update(tokenize(UNION_TEMPLATE.format(first="", second=""), None))
    return sorted(words)


# ---------------------------------------------------------------- drawing
def _shape_mask(shape: str, dy: np.ndarray, dx: np.ndarray, r: float) -> np.ndarray:
    """bool mask of a shape of radius r given offsets dy, dx from its centre (broadcast arrays)."""
    if shape == "circle":
        return dy * dy + dx * dx <= r * r
    if shape == "square":
        return np.maximum(np.abs(dy), np.abs(dx)) <= 0.82 * r
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= 1.15 * r
    if shape == "triangle":  # apex up, base at dy = 0.8 r
        return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8 * 1.1)
    if shape == "cross":
        ay, ax = np.abs(dy), np.abs(dx)
        return ((ay <= 0.33 * r) & (ax <= r)) | ((ax <= 0.33 * r) & (ay <= r))
    raise ValueError(f"unknown shape {shape!r}")


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """float32 [H,W,3] in [0,255]: a desaturated gradient, stripes or smooth noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(70, 170) + rng.uniform(-25, 25, size=3)
    kind = rng.integers(3)
    if kind == 0:  # gradient
        a = rng.uniform(0, 2 * np.pi)
        t = yy * np.sin(a) + xx * np.cos(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
        other = rng.uniform(70, 170) + rng.uniform(-25, 25, size=3)
        bg = base + (other - base) * t[..., None]
    elif kind == 1:  # stripes
        a = rng.uniform(0, np.pi)
        period = rng.uniform(8, 20)
        s = np.sin(2 * np.pi * (yy * np.sin(a) + xx * np.cos(a)) / period + rng.uniform(0, 2 * np.pi))
        bg = base + rng.uniform(15, 35) * s[..., None] * rng.uniform(0.6, 1.0, size=3)
    else:  # smooth noise
        coarse = rng.uniform(-40, 40, size=(h // 12 + 2, w // 12 + 2, 3)).astype(np.float32)
        up = np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((w, h), Image.BICUBIC)) for c in range(3)], -1)
        bg = base + up
    bg = bg + rng.normal(0, 4, size=(h, w, 1))
    return np.clip(bg, 0, 255).astype(np.float32)


def _start(rng: np.random.Generator, r: float, velocity: float, frames: int, extent: int) -> float:
    """A start coordinate keeping the whole trajectory (and the shape) inside [0, extent)."""
    travel = velocity * (frames - 1)
    lo = r + 1 - min(0.0, travel)
    hi = extent - 2 - r - max(0.0, travel)
    if np.ceil(lo) > np.floor(hi):
        raise LBDTError(f"--frames {frames} / --size: {frames} frames at {abs(velocity):.1f} px/frame do not fit "
                        f"in {extent} px; use fewer frames or larger frames")
    return float(rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1))


def _separated_starts(rng: np.random.Generator, radii: list[float], velocities: list[tuple[float, float]],
                      frames: int, h: int, w: int, tries: int = 200) -> list[tuple[float, float]]:
    """Start centres whose whole trajectories stay inside the frame and apart from each other.

    Two objects are apart when their centres are at least `1.2 (r_i + r_j) + 2` px away in every frame, so
    referred objects are rarely occluded. Rejection sampling; if no draw of `tries` succeeds, the draw with
    the largest worst-case clearance is used (objects may then touch).
    """
    t = np.arange(frames, dtype=np.float64)[:, None]
    r = np.asarray(radii)
    need = 1.2 * (r[:, None] + r[None, :]) + 2.0
    np.fill_diagonal(need, 0.0)
    best, best_score = None, -np.inf
    for _ in range(tries):
        starts = [(_start(rng, ri, vy, frames, h), _start(rng, ri, vx, frames, w))
                  for ri, (vy, vx) in zip(radii, velocities)]
        centres = np.stack([np.concatenate([s[0] + v[0] * t, s[1] + v[1] * t], 1)
                            for s, v in zip(starts, velocities)])  # [O,T,2]
        dist = np.linalg.norm(centres[:, None] - centres[None, :], axis=-1).min(-1)  # [O,O] closest approach
        score = float((dist - need + np.eye(len(radii)) * 1e9).min())
        if score >= 0:
            return starts
        if score > best_score:
            best, best_score = starts, score
    return best


def make_clip(seed: int, *, frames: int = 14, size: tuple[int, int] = (96, 128), speed: float = 1.2,
              pairs: int = 1, singles: int = 2, absent: dict[int, Sequence[int]] | None = None) -> SynthClip:
    """Draw one clip: `pairs` motion pairs and `singles` uniquely-looking objects, moving at `speed` px/frame.
    `absent` maps an object index to frame indices where it is not drawn (it changes no random draw).

    Returns frames uint8 [T,H,W,3] and visible masks bool [O,T,H,W]; objects 2i, 2i+1 form motion pair i
    (same shape, colour and size; different motions); the singles follow.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    scale = min(h, w)
    looks: list[tuple[str, str, str]] = []
    for _ in range(pairs):
        while True:
            look = (str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES))))
            if all(look[:2] != old[:2] for old in looks):
                looks += [look, look]
                break
    paired = {old[:2] for old in looks}
    for _ in range(singles):
        while True:
            look = (str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES))))
            if look[:2] not in paired and look not in looks:
                looks.append(look)
                break
    motions: list[str] = []
    for _ in range(pairs):
        motions += [str(m) for m in rng.choice(list(MOTIONS), size=2, replace=False)]
    motions += [str(rng.choice(list(MOTIONS))) for _ in range(singles)]

    radii = [SIZES[look[2]] * scale for look in looks]
    velocities = [tuple(d * speed for d in MOTIONS[m]) for m in motions]
    starts = _separated_starts(rng, radii, velocities, frames, h, w)
    objects = []
    for i, ((shape, colour, size_word), motion) in enumerate(zip(looks, motions)):
        r, (vy, vx), start = radii[i], velocities[i], starts[i]
        if i < 2 * pairs:
            kind, template = "motion", str(rng.choice(MOTION_TEMPLATES[motion]))
        else:
            kind, template = "appearance", str(rng.choice(APPEARANCE_TEMPLATES))
        sentence = template.format(colour=colour, shape=shape, size=size_word)
        objects.append(SynthObject(shape, colour, size_word, motion, float(r), start, (vy, vx), sentence, kind))

    canvas = np.repeat(_background(rng, h, w)[None], frames, axis=0)  # [T,H,W,3]
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    order = [int(i) for i in rng.permutation(len(objects))]
    full = np.zeros((len(objects), frames, h, w), dtype=bool)
    for i in order:
        o = objects[i]
        cy, cx = np.round(o.start[0] + o.velocity[0] * t), np.round(o.start[1] + o.velocity[1] * t)
        full[i] = _shape_mask(o.shape, yy - cy, xx - cx, o.radius)
        full[i][list((absent or {}).get(i, ()))] = False
        canvas[full[i]] = COLOURS[o.colour]
    visible = full.copy()
    for k, i in enumerate(order):
        for j in order[k + 1:]:
            visible[i] &= ~full[j]
    noise = rng.integers(-3, 4, size=canvas.shape, dtype=np.int16)
    frames_u8 = np.clip(canvas + noise, 0, 255).astype(np.uint8)
    return SynthClip(frames=frames_u8, masks=visible, objects=objects, z_order=order)


# ---------------------------------------------------------------- benchmark plan
@dataclass
class SynthVideo:
    """One video of the benchmark: its clip, stored frame names, annotated frame indices and referred objects."""

    video_id: str
    split: str
    clip: SynthClip
    frame_names: list[str]
    annotated: list[int]  # indices into frame_names
    targets: list[int]  # referred object indices (all objects; J-HMDB: one per video)


def video_id(split: str, index: int) -> str:
    return f"syn_{split}_{index:04d}"


def frame_names(fmt: str, frames: int) -> list[str]:
    """a2d / jhmdb: 1-based frame numbers; ytvos: every 5th raw frame from 00000; davis / mevis: 00000, 00001, …"""
    if fmt in SPLIT_DIRS:
        return [f"{t:05d}" for t in range(frames)]
    return [f"{5 * t:05d}" if fmt == "ytvos" else f"{t + 1:05d}" for t in range(frames)]


def benchmark_video(seed: int, split: str, index: int, *, fmt: str, frames: int = 14,
                    size: tuple[int, int] = (96, 128), annotated: int = 1) -> SynthVideo:
    """The `index`-th video of `split` in the benchmark written with this seed (its in-memory ground truth)."""
    if fmt not in FORMATS:
        raise LBDTError(f"unknown synthetic format {fmt!r}; expected one of {', '.join(FORMATS)}")
    ss = np.random.SeedSequence([int(seed), SPLITS.index(split) if split in SPLITS else 99, int(index)])
    clip_seed, plan_seed = (int(s) for s in ss.generate_state(2))
    absent = {3: range(frames // 3)} if fmt == "mevis" else None  # the last single: absent at first
    clip = make_clip(clip_seed, frames=frames, size=size, speed=SPEED[fmt] * min(size), absent=absent)
    rng = np.random.default_rng(plan_seed)
    # annotated frames at least k frames in (the motion cue is complete) ...
    pool = np.arange(min(FRAME_GAP[fmt], frames - 1), frames)
    n = min(annotated, len(pool))
    chosen = {int(i) for i in rng.choice(pool, size=n, replace=False)}
    if n >= 2 and index % 4 == 0 and 1 not in chosen:  # ... and, in every 4th video annotated at least
        # twice, one near the start: t - k is clamped to the first frame (a 1-frame motion cue)
        chosen.discard(max(chosen))
        chosen.add(1)
    targets = list(range(len(clip.objects)))
    if fmt == "jhmdb":  # one puppet mask per video: alternate motion and appearance targets
        pair = [i for i, o in enumerate(clip.objects) if o.sentence_type == "motion"]
        single = [i for i, o in enumerate(clip.objects) if o.sentence_type == "appearance"]
        targets = [int(rng.choice(pair if index % 2 == 0 else single))]
    if fmt in SPLIT_DIRS:  # whole videos are scored: every frame is annotated
        chosen = set(range(frames))
    return SynthVideo(video_id(split, index), split, clip, frame_names(fmt, frames), sorted(chosen), targets)


# ---------------------------------------------------------------- writing
def _save_image(array: np.ndarray, path: Path, **kwargs) -> None:
    Image.fromarray(array).save(path, **kwargs)


def _save_mat(path: Path, variables: dict) -> None:
    """A MATLAB v5 file without the creation time in its header, so files are reproducible."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=True)
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by lbdt synth".ljust(116, b" ")
    path.write_bytes(bytes(data))


def _save_h5(path: Path, instances: np.ndarray, masks: np.ndarray) -> None:
    """A2D layout: `instance` [N] and `reMask` [W,H] (N = 1) or [N,W,H] (MATLAB order)."""
    remask = masks.transpose(0, 2, 1).astype(np.uint8)
    with h5py.File(path, "w", track_order=False) as f:
        f.create_dataset("instance", data=instances.astype(np.float64), track_times=False)
        f.create_dataset("reMask", data=remask[0] if len(remask) == 1 else remask, track_times=False)


def _palette() -> list[int]:
    """DAVIS-style palette: index 0 black, then distinct colours."""
    pal = [0, 0, 0]
    for i in range(1, 256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _records(v: SynthVideo, object_ids: Sequence[str], size: tuple[int, int]) -> list[ReferRecord]:
    return [ReferRecord(v.video_id, v.frame_names[t], object_ids[o], v.clip.objects[o].sentence, size,
                        category=v.clip.objects[o].sentence_type)
            for t in v.annotated for o in v.targets]


def _save_frames_and_index(part: Path, v: SynthVideo, palette: list[int] | None) -> None:
    """`part/JPEGImages/<video>/<frame>.jpg` and, with a palette, `part/Annotations/<video>/<frame>.png`
    (palette PNG, pixel = object index + 1)."""
    clip = v.clip
    img_dir = part / "JPEGImages" / v.video_id
    img_dir.mkdir(parents=True)
    if palette is not None:
        (part / "Annotations" / v.video_id).mkdir(parents=True)
    for t, name in enumerate(v.frame_names):
        _save_image(clip.frames[t], img_dir / f"{name}.jpg", quality=92)
        if palette is None:
            continue
        index = np.zeros(clip.frames.shape[1:3], dtype=np.uint8)
        for o in range(len(clip.objects)):
            index[clip.masks[o, t]] = o + 1
        im = Image.fromarray(index, mode="P")
        im.putpalette(palette)
        im.save(part / "Annotations" / v.video_id / f"{name}.png")


def sentence_variants(o: SynthObject) -> list[str]:
    """Every sentence the templates of `o`'s type give for it, starting with its own sentence."""
    templates = MOTION_TEMPLATES[o.motion] if o.sentence_type == "motion" else APPEARANCE_TEMPLATES
    variants = [t.format(colour=o.colour, shape=o.shape, size=o.size) for t in templates]
    k = variants.index(o.sentence)
    return variants[k:] + variants[:k]


def _expressions(fmt: str, v: SynthVideo, anno_ids: list[str]) -> dict[str, dict]:
    """The video's meta_expressions entries: davis one per (object, group); mevis one per object, the motion
    pair's union and one no-target expression (anno_ids: one per object)."""
    objects = v.clip.objects
    exps: dict[str, dict] = {}
    if fmt == "davis":
        for o, ob in enumerate(objects):
            variants = sentence_variants(ob)
            for g, group in enumerate(GROUPS):
                exps[str(len(exps))] = {"exp": variants[g % len(variants)], "obj_id": str(o + 1), "group": group}
        return exps
    for o, ob in enumerate(objects):
        exps[str(len(exps))] = {"exp": ob.sentence, "obj_id": [o], "anno_id": [int(anno_ids[o])], "type": ob.sentence_type}
    a, b = (o for o, ob in enumerate(objects) if ob.sentence_type == "motion")
    exps[str(len(exps))] = {"exp": UNION_TEMPLATE.format(first=objects[a].sentence, second=objects[b].sentence),
                            "obj_id": [a, b],
                            "anno_id": [int(anno_ids[a]), int(anno_ids[b])], "type": "union"}
    looks = {(ob.shape, ob.colour) for ob in objects}
    shape, colour = next((sh, c) for c in COLOURS for sh in SHAPES if (sh, c) not in looks)
    exps[str(len(exps))] = {"exp": APPEARANCE_TEMPLATES[0].format(size="big", colour=colour, shape=shape),
                            "obj_id": [], "anno_id": [], "type": "no-target"}
    return exps


def _write_expression_video(root: Path, fmt: str, v: SynthVideo, palette: list[int], meta: dict, masks: dict) -> int:
    """Write one davis / mevis video into its split folder, add its meta (and mask_dict) entries; its sample count."""
    from pycocotools import mask as mask_utils

    folder = SPLIT_DIRS[fmt][v.split]
    _save_frames_and_index(root / folder, v, palette if fmt == "davis" else None)
    anno_ids = []
    if fmt == "mevis":
        split_masks = masks.setdefault(folder, {})
        for o in range(len(v.clip.objects)):
            anno = str(len(split_masks))
            anno_ids.append(anno)
            rles = []
            for t in range(len(v.frame_names)):
                m = v.clip.masks[o, t]
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) if m.any() else None
                rles.append(None if rle is None else {"size": [int(x) for x in rle["size"]],
                                                      "counts": rle["counts"].decode("ascii")})
            split_masks[anno] = rles
    exps = _expressions(fmt, v, anno_ids)
    meta.setdefault(folder, {})[v.video_id] = {"frames": v.frame_names, "expressions": exps}
    return len(exps) * len(v.frame_names)


def _write_video(root: Path, fmt: str, v: SynthVideo, palette: list[int]) -> list[ReferRecord]:
    """Write one video's frames and masks; return its list records."""
    clip, size = v.clip, tuple(v.clip.frames.shape[1:3])
    if fmt == "a2d":
        img_dir, mask_dir = root / "images" / v.video_id, root / "masks" / v.video_id
        img_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for t, name in enumerate(v.frame_names):
            _save_image(clip.frames[t], img_dir / f"{name}.jpg", quality=92)
        ids = np.arange(len(clip.objects))
        for t in v.annotated:
            _save_h5(mask_dir / f"{v.frame_names[t]}.h5", ids, clip.masks[:, t])
        return _records(v, [str(i) for i in ids], size)
    if fmt == "jhmdb":
        target = v.targets[0]
        action = clip.objects[target].shape
        img_dir = root / "Rename_Images" / action / v.video_id
        mask_dir = root / "puppet_mask" / action / v.video_id
        img_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        for t, name in enumerate(v.frame_names):
            _save_image(clip.frames[t], img_dir / f"{name}.png", compress_level=1)
        _save_mat(mask_dir / "puppet_mask.mat", {"part_mask": clip.masks[target].transpose(1, 2, 0).astype(np.uint8)})
        return _records(v, [str(i) for i in range(len(clip.objects))], size)
    part = root / ("train" if v.split == "train" else "val")
    _save_frames_and_index(part, v, palette)
    return _records(v, [str(o + 1) for o in range(len(clip.objects))], size)


def write_benchmark(out: str | os.PathLike, *, fmt: str = "a2d", seed: int = 0,
                    videos: Sequence[int] = (360, 60, 90), frames: int = 14, size: tuple[int, int] = (96, 128),
                    annotated: int = 1, overwrite: bool = False, progress: bool = True) -> dict:
    """Write the benchmark to `out` in format `fmt` (atomically: built next to it, then renamed).

    `videos` = (train, val, test) counts; the default, many videos with one annotated frame each, gives more
    distinct clips per epoch than few videos annotated several times. Returns the summary also written to `out/benchmark.json`
    (without the per-video entries).
    """
    check_output_dir(out)  # before any work (lbdt.paths)
    if fmt not in FORMATS:
        raise LBDTError(f"unknown synthetic format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if len(videos) != len(SPLITS) or any(n < 0 for n in videos) or sum(videos) == 0:
        raise LBDTError(f"--videos: need three counts (train, val, test), not all zero, got {list(videos)}")
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise LBDTError(f"{out}: already exists; choose another folder or pass overwrite")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        palette = _palette()
        lists: dict[str, list[ReferRecord]] = {s: [] for s in SPLITS}
        entries, meta = [], {}
        todo = [(s, i) for s, n in zip(SPLITS, videos) for i in range(n) if s in SPLIT_DIRS.get(fmt, SPLITS)]
        masks: dict[str, dict] = {}  # mevis: split folder -> mask_dict
        counts: dict[str, int] = {}  # davis / mevis: split folder -> samples
        for split, i in tqdm(todo, desc=f"synth {fmt}", unit="video", disable=not progress):
            v = benchmark_video(seed, split, i, fmt=fmt, frames=frames, size=size, annotated=annotated)
            if fmt in SPLIT_DIRS:
                folder = SPLIT_DIRS[fmt][split]
                counts[folder] = counts.get(folder, 0) + _write_expression_video(tmp, fmt, v, palette, meta, masks)
            else:
                lists[split] += _write_video(tmp, fmt, v, palette)
            objs = [{"id": rec_id, **{k: val for k, val in asdict(o).items() if k in
                                      ("shape", "colour", "size", "motion", "sentence", "sentence_type")}}
                    for rec_id, o in zip(_object_ids(fmt, len(v.clip.objects)), v.clip.objects)]
            entries.append({"video_id": v.video_id, "split": split, "annotated_frames": [v.frame_names[t] for t in v.annotated],
                            "targets": [objs[o]["id"] for o in v.targets], "objects": objs})
            if fmt == "ytvos":
                meta[v.video_id] = {"split": split, "frames": v.frame_names, "expressions": {
                    str(o): {"exp": ob.sentence, "obj_id": str(o + 1), "type": ob.sentence_type}
                    for o, ob in enumerate(v.clip.objects)}}
        if fmt == "ytvos":
            write_list(tmp / "train.txt", lists["train"], "hash5")
            write_list(tmp / "val.txt", lists["val"], "tilde5")
            write_list(tmp / "test.txt", lists["test"], "tilde5")
            valid = [ReferRecord(vid, f, eid, e["exp"], size) for vid, m in meta.items() if m["split"] == "test"
                     for f in m["frames"] for eid, e in m["expressions"].items()]
            write_list(tmp / "valid_new_pure.txt", valid, "hash5")
            (tmp / "meta_expressions.json").write_text(json.dumps({"videos": meta}, indent=1) + "\n", encoding="utf-8")
        elif fmt in SPLIT_DIRS:
            for split, folder in SPLIT_DIRS[fmt].items():
                (tmp / folder).mkdir(exist_ok=True)
                (tmp / folder / "meta_expressions.json").write_text(
                    json.dumps({"videos": meta.get(folder, {})}, indent=1) + "\n", encoding="utf-8")
                if fmt == "mevis" and split != "test":
                    (tmp / folder / "mask_dict.json").write_text(json.dumps(masks.get(folder, {})) + "\n", encoding="utf-8")
        else:
            for split in SPLITS:
                write_list(tmp / f"{split}.txt", lists[split], "comma6")
        table = WordVectors.seeded(vocabulary(), dim=300, seed=seed)
        with open(tmp / WORD_VECTORS, "w", encoding="utf-8") as f:
            f.writelines(word + " " + " ".join(f"{x:.6f}" for x in vec) + "\n"
                         for word, vec in zip(table.words, table.vectors))
        if fmt in SPLIT_DIRS:  # keyed by the split folders written
            n_videos = {folder: int(n) for s, n in zip(SPLITS, videos) for k, folder in SPLIT_DIRS[fmt].items() if k == s}
            samples = {folder: counts.get(folder, 0) for folder in SPLIT_DIRS[fmt].values()}
        else:
            n_videos = dict(zip(SPLITS, (int(n) for n in videos)))
            samples = {s: len(lists[s]) for s in SPLITS}
        summary = {"format": fmt, "seed": int(seed), "frames": int(frames), "size": [int(size[0]), int(size[1])],
                   "videos": n_videos, "frame_gap": FRAME_GAP[fmt], "samples": samples, "word_vectors": WORD_VECTORS}
        (tmp / "benchmark.json").write_text(json.dumps({**summary, "video_list": entries}, indent=1) + "\n",
                                            encoding="utf-8")
    except BaseException:  # a bad setting found while drawing (or Ctrl-C): leave nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished first (e.g. two ranks of one run)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out / "benchmark.json").is_file():
            raise
    return summary


def _object_ids(fmt: str, n: int) -> list[str]:
    return [str(o + 1) for o in range(n)] if fmt in ("ytvos", "davis") else [str(o) for o in range(n)]
