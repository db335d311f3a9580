"""Build the A2D-Sentences layout of docs/datasets/a2d.md from the official releases.

Input (``raw``)::

    Release/clips320H/<vid>.mp4
    Release/videoset.csv                                   no header; first column video id, last column 0 train / 1 test
    text_annotations/a2d_annotation.txt                    CSV: video_id,instance_id,query
    text_annotations/a2d_annotation_with_instances/<vid>/<frame:05d>.h5   datasets instance, reMask (+ id)
    text_annotations/a2d_missed_videos.txt                 optional: videos to leave out

Output (``out``)::

    images/<vid>/<frame:05d>.jpg     every native frame, 1-based (frame k = the k-th decoded frame)
    masks/<vid>/<frame:05d>.h5       linked (or copied) from the annotation release
    train.txt, val.txt               comma6 lines; val = the official test split
"""

from __future__ import annotations

import csv
from pathlib import Path

import av
import h5py
import numpy as np

from lbdt.data.listfile import write_list
from lbdt.data.records import ReferRecord
from lbdt.errors import LBDTError
from lbdt.io import write_json
from lbdt.paths import check_name
from lbdt.tools.prepare_data.common import (
    PrepareSummary,
    clean_sentence,
    marker_path,
    place_file,
    progress,
    read_csv,
    read_marker,
    require_dir,
)

ACTORS = {1: "adult", 2: "baby", 3: "ball", 4: "bird", 5: "car", 6: "cat", 7: "dog"}
ACTIONS = {1: "climbing", 2: "crawling", 3: "eating", 4: "flying", 5: "jumping", 6: "rolling", 7: "running",
           8: "walking", 9: "none"}
SPLITS = {0: "train", 1: "val"}  # videoset.csv flag -> list file stem (val = the official test split)


def actor_action_name(code: int) -> str:
    """A2D class code (10 × actor + action) as "actor-action", e.g. 11 -> "adult-climbing"; "" if unknown."""
    actor, action = ACTORS.get(code // 10), ACTIONS.get(code % 10)
    return f"{actor}-{action}" if actor and action else ""


def read_videoset(path: Path) -> dict[str, int]:
    """video id -> split flag (0 train, 1 test) from ``videoset.csv`` (no header; the flag is the last column)."""
    if not path.is_file():
        raise LBDTError(f"A2D video list not found: {path}")
    splits = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            flag = row[-1].strip()
            if len(row) < 2 or flag not in ("0", "1"):
                raise LBDTError(f"{path}:{lineno}: expected '<video id>,…,<0|1>', got {','.join(row)!r}")
            splits[row[0].strip()] = int(flag)
    return splits


def read_frame_annotation(path: Path) -> dict:
    """Instances of one annotated frame: {"instances": [ids], "categories": [names]} from its .h5 file."""
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("instance", "reMask") if k not in f]
            if missing:
                raise LBDTError(f"{path}: missing dataset(s) {missing} (expected 'instance' and 'reMask')")
            instances = np.asarray(f["instance"][()], dtype=np.float64).reshape(-1)
            codes = np.asarray(f["id"][()]).reshape(-1) if "id" in f else np.zeros(0)
            mask_shape = f["reMask"].shape
    except OSError as e:
        raise LBDTError(f"{path}: unreadable HDF5 file ({e})") from None
    if not np.all(instances == np.round(instances)):
        raise LBDTError(f"{path}: 'instance' holds non-integer ids {instances.tolist()}")
    n = len(instances)
    if not ((len(mask_shape) == 2 and n == 1) or (len(mask_shape) == 3 and mask_shape[0] == n)):
        raise LBDTError(f"{path}: 'reMask' has shape {mask_shape}, expected [W,H] for one instance or "
                        f"[N,W,H] for N = {n}")
    categories = [actor_action_name(int(c)) for c in codes] if len(codes) == len(instances) else []
    return {"instances": [int(i) for i in instances], "categories": categories or [""] * len(instances)}


def extract_frames(clip: Path, dst: Path, *, jpeg_quality: int) -> tuple[int, int, int]:
    """Decode every frame of `clip` into ``dst/<k:05d>.jpg`` (k from 1); returns (frames, H, W)."""
    dst.mkdir(parents=True, exist_ok=True)
    n, size = 0, (0, 0)
    try:
        with av.open(str(clip)) as container:
            if not container.streams.video:
                raise LBDTError(f"{clip}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                n += 1
                image = frame.to_image()
                size = (image.height, image.width)
                image.save(dst / f"{n:05d}.jpg", quality=jpeg_quality)
    except av.error.FFmpegError as e:
        raise LBDTError(f"{clip}: unreadable video ({e})") from None
    if n == 0:
        raise LBDTError(f"{clip}: no frames could be decoded")
    for stale in dst.glob("*.jpg"):  # left by an earlier, different decode
        if not stale.stem.isdigit() or int(stale.stem) > n:
            stale.unlink()
    return n, size[0], size[1]


def _frames_present(folder: Path, count: int) -> bool:
    return all((folder / f"{k:05d}.jpg").is_file() for k in range(1, count + 1))


def _prepare_video(raw: Path, out: Path, vid: str, *, copy: bool, jpeg_quality: int,
                   summary: PrepareSummary) -> dict:
    """Frames + masks of one video (or the marker of an earlier run); returns the marker content."""
    marker = marker_path(out, "a2d", "videos", vid)
    done = read_marker(marker)
    if (done is not None and _frames_present(out / "images" / vid, done.get("frames", 0))
            and all((out / "masks" / vid / f"{f}.h5").is_file() for f in done.get("annotations", {}))):
        summary.reused += 1
        return done
    h5_files = {}
    for h5 in sorted((raw / "text_annotations" / "a2d_annotation_with_instances" / vid).glob("*.h5")):
        if not h5.stem.isdigit():
            raise LBDTError(f"{h5}: annotation file name must be the frame number, e.g. 00017.h5")
        h5_files[f"{int(h5.stem):05d}"] = h5
    annotations = {frame: read_frame_annotation(h5) for frame, h5 in h5_files.items()}
    n, h, w = extract_frames(raw / "Release" / "clips320H" / f"{vid}.mp4", out / "images" / vid,
                             jpeg_quality=jpeg_quality)
    for frame, h5 in h5_files.items():
        place_file(h5, out / "masks" / vid / f"{frame}.h5", copy=copy)
    done = {"frames": n, "height": h, "width": w, "annotations": annotations}
    write_json(marker, done)
    return done


def prepare_a2d(raw: str | Path, out: str | Path, *, copy: bool = False, jpeg_quality: int = 95,
                show_progress: bool = True) -> PrepareSummary:
    """Build ``out`` (images, masks, train.txt, val.txt) from the A2D-Sentences release at ``raw``.

    Skipped (and counted): videos in ``a2d_missed_videos.txt``, not in ``videoset.csv``, without a clip or
    without an instance-annotation folder; annotation rows whose instance id is not an integer (the release
    has one "1 (copy)") or that never appears in an annotated frame; annotated frames beyond the clip's end.
    """
    raw, out = Path(raw), Path(out)
    text_dir = raw / "text_annotations"
    splits = read_videoset(raw / "Release" / "videoset.csv")
    rows = read_csv(text_dir / "a2d_annotation.txt", "A2D sentence annotations", ("video_id", "instance_id", "query"))
    require_dir(raw / "Release" / "clips320H", "A2D clips")
    require_dir(text_dir / "a2d_annotation_with_instances", "A2D instance annotations")
    missed_file = text_dir / "a2d_missed_videos.txt"
    missed = set(missed_file.read_text(encoding="utf-8").split()) if missed_file.is_file() else set()
    summary = PrepareSummary(dataset="a2d", out=out)

    by_video: dict[str, list[tuple[int, str]]] = {}
    for lineno, row in rows:
        vid, sentence = row["video_id"], clean_sentence(row["query"])
        check_name(vid, "video id", f"{text_dir / 'a2d_annotation.txt'}:{lineno}")
        if not row["instance_id"].isdigit():
            summary.skip("annotation rows with a non-integer instance id")
        elif not sentence:
            summary.skip("annotation rows with an empty sentence")
        else:
            by_video.setdefault(vid, []).append((int(row["instance_id"]), sentence))

    usable = []
    for vid in sorted(by_video):
        if vid in missed:
            summary.skip("videos listed in a2d_missed_videos.txt")
        elif vid not in splits:
            summary.skip("videos not in Release/videoset.csv")
        elif not (raw / "Release" / "clips320H" / f"{vid}.mp4").is_file():
            summary.skip("videos without a clip in Release/clips320H")
        elif not (text_dir / "a2d_annotation_with_instances" / vid).is_dir():
            summary.skip("videos without a folder in a2d_annotation_with_instances")
        else:
            usable.append(vid)

    records: dict[str, list[ReferRecord]] = {"train": [], "val": []}
    videos = {"train": 0, "val": 0}
    for vid in progress(usable, "a2d videos", show_progress):
        info = _prepare_video(raw, out, vid, copy=copy, jpeg_quality=jpeg_quality, summary=summary)
        split = SPLITS[splits[vid]]
        videos[split] += 1
        found = set()
        for frame_id, ann in sorted(info["annotations"].items()):
            if int(frame_id) > info["frames"]:
                summary.skip("annotated frames beyond the clip's last frame")
                continue
            for instance_id, sentence in by_video[vid]:
                if instance_id in ann["instances"]:
                    found.add(instance_id)
                    category = ann["categories"][ann["instances"].index(instance_id)]
                    records[split].append(ReferRecord(
                        video_id=vid, frame_id=frame_id, object_id=str(instance_id), sentence=sentence,
                        original_size=(info["height"], info["width"]), category=category))
        summary.skip("annotation rows whose instance is in no annotated frame",
                     sum(1 for i, _ in by_video[vid] if i not in found))
    for split, recs in records.items():
        summary.samples[f"{split}.txt"] = write_list(out / f"{split}.txt", recs, "comma6")
        summary.videos[split] = videos[split]
    return summary
