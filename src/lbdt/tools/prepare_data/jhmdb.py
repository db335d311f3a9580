"""Build the J-HMDB-Sentences layout of docs/datasets/jhmdb.md from the official release.

Input (``raw``)::

    Rename_Images/<action>/<vid>/<frame:05d>.png
    puppet_mask/<action>/<vid>/puppet_mask.mat     variable part_mask [H,W,T]
    jhmdb_annotation.txt                           CSV: video_id,query

Output (``out``): the same two trees (linked or copied), ``val.txt`` (comma6; instance id 1, the puppet
mask being the single actor; category = the action folder) and ``jhmdb_frames.json`` recording the
evaluated frames. Each video gets ``frames_per_video`` frames drawn with a random generator seeded by
``(seed, video id)``, among frames t with ``frame_gap < t <= T`` (so t - frame_gap exists and has a mask).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import scipy.io

from lbdt.data.listfile import write_list
from lbdt.data.records import ReferRecord
from lbdt.errors import LBDTError
from lbdt.io import read_json, write_json
from lbdt.tools.prepare_data.common import (
    PrepareSummary,
    clean_sentence,
    image_size,
    place_file,
    progress,
    read_csv,
    require_dir,
)

FRAMES_FILE = "jhmdb_frames.json"


def count_mask_frames(path: Path) -> int:
    """T of ``part_mask`` [H,W,T] in a puppet_mask.mat file."""
    try:
        masks = scipy.io.loadmat(str(path), variable_names=["part_mask"]).get("part_mask")
    except (OSError, ValueError, NotImplementedError) as e:
        raise LBDTError(f"{path}: unreadable MATLAB file ({e})") from None
    if masks is None:
        raise LBDTError(f"{path}: no variable 'part_mask'")
    masks = np.asarray(masks)
    if masks.ndim == 2:  # a one-frame video loads as [H,W]
        return 1
    if masks.ndim != 3:
        raise LBDTError(f"{path}: 'part_mask' has shape {masks.shape}, expected [H,W,T]")
    return int(masks.shape[2])


def choose_frames(candidates: list[int], count: int, seed: int, video_id: str) -> list[int]:
    """`count` of `candidates` (all of them if fewer), sorted; depends only on (seed, video id, candidates)."""
    rng = random.Random(f"{seed}/{video_id}")
    return sorted(rng.sample(candidates, min(count, len(candidates))))


def _index(root: Path, pattern: str, depth_from_end: int) -> dict[str, Path]:
    """video id -> path, for paths matching ``root/pattern`` (the id is the part `depth_from_end` from the end)."""
    return {p.parts[-depth_from_end]: p for p in sorted(root.glob(pattern))}


def prepare_jhmdb(raw: str | Path, out: str | Path, *, copy: bool = False, seed: int = 0,
                  frames_per_video: int = 3, frame_gap: int = 5, show_progress: bool = True) -> PrepareSummary:
    """Build ``out`` (Rename_Images, puppet_mask, val.txt, jhmdb_frames.json) from the release at ``raw``.

    Skipped (and counted): annotated videos without a frame folder or a puppet_mask.mat, videos with no
    frame after ``frame_gap`` that has a mask. Re-running reuses the frames recorded in jhmdb_frames.json
    when the seed and settings match.
    """
    raw, out = Path(raw), Path(out)
    rows = read_csv(raw / "jhmdb_annotation.txt", "J-HMDB sentence annotations", ("video_id", "query"))
    frame_dirs = _index(require_dir(raw / "Rename_Images", "J-HMDB frames"), "*/*", 1)
    mask_files = _index(require_dir(raw / "puppet_mask", "J-HMDB masks"), "*/*/puppet_mask.mat", 2)
    settings = {"seed": seed, "frames_per_video": frames_per_video, "frame_gap": frame_gap}
    earlier = {}
    if (out / FRAMES_FILE).is_file():
        saved = read_json(out / FRAMES_FILE, "J-HMDB frame choice")
        if isinstance(saved, dict) and all(saved.get(k) == v for k, v in settings.items()):
            earlier = saved.get("videos", {})
    summary = PrepareSummary(dataset="jhmdb", out=out)

    chosen: dict[str, dict] = {}
    records = []
    few: set[str] = set()
    for _, row in progress(rows, "jhmdb videos", show_progress):
        vid, sentence = row["video_id"], clean_sentence(row["query"])
        if not sentence:
            summary.skip("annotation rows with an empty sentence")
            continue
        if vid not in frame_dirs:
            summary.skip("videos without a folder in Rename_Images")
            continue
        if vid not in mask_files:
            summary.skip("videos without a puppet_mask.mat")
            continue
        if vid not in chosen:
            chosen[vid] = _prepare_video(vid, frame_dirs[vid], mask_files[vid], raw, out, earlier.get(vid),
                                         copy=copy, seed=seed, settings=settings, summary=summary)
        info = chosen[vid]
        if not info["frames"]:
            summary.skip(f"videos with no frame > {frame_gap} that has a mask")
            continue
        if len(info["frames"]) < frames_per_video:
            few.add(vid)
        for t in info["frames"]:
            records.append(ReferRecord(video_id=vid, frame_id=f"{t:05d}", object_id="1", sentence=sentence,
                                       original_size=(info["height"], info["width"]), category=info["action"]))
    if few:
        summary.warnings.append(f"{len(few)} video(s) have fewer than {frames_per_video} eligible frames; all of "
                                f"theirs are used: {', '.join(sorted(few)[:5])}{' …' if len(few) > 5 else ''}")
    write_json(out / FRAMES_FILE, {**settings, "videos": chosen})
    summary.samples["val.txt"] = write_list(out / "val.txt", records, "comma6")
    summary.videos["val"] = len({r.video_id for r in records})
    return summary


def _prepare_video(vid: str, frame_dir: Path, mask_file: Path, raw: Path, out: Path, earlier: dict | None, *,
                   copy: bool, seed: int, settings: dict, summary: PrepareSummary) -> dict:
    """Link one video's frames and mask; choose (or reuse) its evaluated frames."""
    action = frame_dir.parent.name
    frames = sorted(frame_dir.glob("*.png"))
    linked = False
    for png in frames:
        linked |= place_file(png, out / frame_dir.relative_to(raw) / png.name, copy=copy)
    linked |= place_file(mask_file, out / mask_file.relative_to(raw), copy=copy)
    if earlier is not None and not linked and earlier.get("action") == action:
        summary.reused += 1
        return earlier
    numbers = sorted(int(p.stem) for p in frames if p.stem.isdigit())
    num_masks = count_mask_frames(mask_file)
    gap, present = settings["frame_gap"], set(numbers)
    candidates = [t for t in numbers if gap < t <= num_masks and t - gap in present]
    picked = choose_frames(candidates, settings["frames_per_video"], seed, vid)
    h, w = image_size(frame_dir / f"{picked[0]:05d}.png") if picked else (0, 0)
    return {"action": action, "frames": picked, "image_frames": len(numbers), "mask_frames": num_masks,
            "height": h, "width": w}
