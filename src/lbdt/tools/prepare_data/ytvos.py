"""Build the Ref-YouTube-VOS layout of docs/datasets/ytvos.md from the official release.

Input (``raw``)::

    meta_expressions/{train,valid}/meta_expressions.json   {"videos": {vid: {"expressions": {exp_id: {"exp", "obj_id"}},
                                                                           "frames": ["00000", "00005", …]}}}
    meta_expressions/test/meta_expressions.json            optional: its videos are removed from the valid list
    train/JPEGImages/<vid>/<frame>.jpg, train/Annotations/<vid>/<frame>.png   (palette PNG, pixel = object id)
    train/meta.json                                        only needed with drop_absent (objects' frames)
    valid/JPEGImages/<vid>/<frame>.jpg

Output (``out``)::

    train/{JPEGImages,Annotations}/<vid>/   training videos minus the held-out ones   -> train.txt (hash5)
    val/{JPEGImages,Annotations}/<vid>/     held-out videos (a seeded val_fraction)    -> val.txt (tilde5)
    val/JPEGImages/<vid>/                   official valid videos minus test videos    -> valid_new_pure.txt (hash5,
                                                                                           4th field = expression id)
    meta_expressions.json                   the expressions of every video written above (ids for the readers)

The official valid frames share ``val/`` with the held-out videos, as in the original; they
get no masks. One line per (listed frame, expression). Frames where the referred object is absent are kept unless
``drop_absent`` (the original's choice is unknown).
"""

from __future__ import annotations

import random
from pathlib import Path

from lbdt.data.listfile import write_list
from lbdt.data.records import ReferRecord
from lbdt.errors import LBDTError
from lbdt.io import read_json, write_json
from lbdt.paths import check_name
from lbdt.tools.prepare_data.common import (
    PrepareSummary,
    clean_sentence,
    image_size,
    marker_path,
    place_file,
    progress,
    read_marker,
    remove_tree,
    require_dir,
)

OUT_DIRS = {"train": "train", "val": "val", "valid": "val"}  # split -> folder under out
# split -> (list file, list format)
SPLIT_FORMATS = {"train": ("train.txt", "hash5"), "val": ("val.txt", "tilde5"),
                 "valid": ("valid_new_pure.txt", "hash5")}


def read_expressions(path: Path, *, need_obj_id: bool) -> dict[str, dict]:
    """``{vid: {"frames": [...], "expressions": {exp_id: {"exp": str, "obj_id": str}}}}`` from a
    meta_expressions.json, checked; any malformed entry is an `LBDTError` naming the file and the video."""
    data = read_json(path, "Ref-YouTube-VOS expressions")
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise LBDTError(f"{path}: malformed meta_expressions JSON (expected an object with a 'videos' object)")
    for vid, video in videos.items():
        ok = (isinstance(video, dict) and isinstance(video.get("frames"), list)
              and all(isinstance(f, str) for f in video["frames"]) and isinstance(video.get("expressions"), dict))
        for exp in (video.get("expressions") or {}).values() if ok else ():
            ok = ok and isinstance(exp, dict) and isinstance(exp.get("exp"), str)
            ok = ok and (not need_obj_id or str(exp.get("obj_id", "")).isdigit())
        if not ok:
            raise LBDTError(f"{path}: malformed entry for video {vid!r} (expected 'frames': [names] and "
                            f"'expressions': {{id: {{'exp': text{', obj_id: number' if need_obj_id else ''}}}}})")
        where = f"{path} (video {vid!r})"
        check_name(vid, "video id", where)  # ids and frame names become paths under --out
        for name in video["frames"]:
            check_name(name, "frame name", where)
        for eid in video["expressions"]:
            check_name(str(eid), "expression id", where)
    return videos


def object_frames(path: Path) -> dict[tuple[str, str], set[str]]:
    """(video id, object id) -> frames where the object is annotated, from train/meta.json."""
    data = read_json(path, "Ref-YouTube-VOS train meta.json (needed to drop absent objects)")
    try:
        return {(vid, obj): set(o["frames"]) for vid, v in data["videos"].items() for obj, o in v["objects"].items()}
    except (KeyError, TypeError, AttributeError):
        raise LBDTError(f"{path}: malformed meta.json (expected videos -> objects -> frames)") from None


def held_out_videos(videos: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded `fraction` of `videos` (at least one when fraction > 0 and there are two or more)."""
    if not 0.0 <= fraction < 1.0:
        raise LBDTError(f"val_fraction must be in [0, 1), got {fraction}")
    k = round(fraction * len(videos))
    if fraction > 0 and len(videos) >= 2:
        k = min(max(k, 1), len(videos) - 1)
    return set(random.Random(seed).sample(sorted(videos), k))


def _place_video(raw_split: Path, out: Path, split: str, vid: str, *, masks: bool, copy: bool,
                 summary: PrepareSummary) -> dict | None:
    """Link one video's frames (and masks) into ``out/OUT_DIRS[split]``; {"frames", "height", "width"} or None."""
    folders = ["JPEGImages", "Annotations"] if masks else ["JPEGImages"]
    dest = out / OUT_DIRS[split]
    for other in {"train", "val"} - {split} if masks else ():  # the video may have changed split since a run
        for folder in folders:
            remove_tree(out / other / folder / vid)
        marker_path(out, "ytvos", other, vid).unlink(missing_ok=True)
    marker = marker_path(out, "ytvos", split, vid)
    done = read_marker(marker)
    if done and done.get("frames") and all((dest / folder / vid / f"{f}.{ext}").is_file() for f in done["frames"]
                                           for folder, ext in zip(folders, ("jpg", "png"))):
        summary.reused += 1
        return done
    for folder in folders:
        if not (raw_split / folder / vid).is_dir():
            summary.skip(f"videos without a folder in {raw_split.name}/{folder}")
            return None
    frames = []
    for jpg in sorted((raw_split / "JPEGImages" / vid).glob("*.jpg")):
        png = raw_split / "Annotations" / vid / f"{jpg.stem}.png"
        if masks and not png.is_file():
            summary.skip(f"{raw_split.name} frames without an annotation PNG")
            continue
        place_file(jpg, dest / "JPEGImages" / vid / jpg.name, copy=copy)
        if masks:
            place_file(png, dest / "Annotations" / vid / png.name, copy=copy)
        frames.append(jpg.stem)
    if not frames:
        summary.skip(f"videos without frames in {raw_split.name}/JPEGImages")
        return None
    h, w = image_size(raw_split / "JPEGImages" / vid / f"{frames[0]}.jpg")
    done = {"frames": frames, "height": h, "width": w}
    write_json(marker, done)
    return done


def prepare_ytvos(raw: str | Path, out: str | Path, *, copy: bool = False, val_fraction: float = 0.05,
                  seed: int = 0, drop_absent: bool = False, show_progress: bool = True) -> PrepareSummary:
    """Build ``out`` (train/, val/, their lists, meta_expressions.json) from the Ref-YouTube-VOS release at ``raw``.

    Skipped (and counted): videos without frame/annotation folders, frames without an annotation PNG,
    listed frames without a JPEG, expressions with an empty sentence, and (with ``drop_absent``) frames
    where the referred object is not annotated. Without ``meta_expressions/valid`` only train/val are built;
    without ``meta_expressions/test`` the valid list keeps the test videos; both cases print a warning.
    """
    raw, out = Path(raw), Path(out)
    meta = raw / "meta_expressions"
    require_dir(raw / "train" / "JPEGImages", "Ref-YouTube-VOS train frames")
    require_dir(raw / "train" / "Annotations", "Ref-YouTube-VOS train masks")
    train_json = read_expressions(meta / "train" / "meta_expressions.json", need_obj_id=True)
    present = object_frames(raw / "train" / "meta.json") if drop_absent else None
    summary = PrepareSummary(dataset="ytvos", out=out)

    held = held_out_videos(list(train_json), val_fraction, seed)
    jobs = [("val" if vid in held else "train", vid, train_json[vid]) for vid in sorted(train_json)]
    valid_json = meta / "valid" / "meta_expressions.json"
    if valid_json.is_file():
        valid = read_expressions(valid_json, need_obj_id=False)
        test_json = meta / "test" / "meta_expressions.json"
        if test_json.is_file():
            test_videos = set(read_expressions(test_json, need_obj_id=False))
        else:
            test_videos = set()
            summary.warnings.append(f"{test_json} not found: valid_new_pure.txt keeps all {len(valid)} videos of "
                                    "the valid JSON, including the test videos (202 valid videos are expected)")
        jobs += [("valid", vid, valid[vid]) for vid in sorted(set(valid) - test_videos)]
    else:
        summary.warnings.append(f"{valid_json} not found: valid_new_pure.txt is not built")

    records: dict[str, list[ReferRecord]] = {"train": [], "val": []}
    records.update({"valid": []} if valid_json.is_file() else {})
    videos = {split: 0 for split in records}
    written: dict[str, dict] = {}  # video -> its entry in out/meta_expressions.json
    for split, vid, video in progress(jobs, "ytvos videos", show_progress):
        raw_split = raw / ("valid" if split == "valid" else "train")
        info = _place_video(raw_split, out, split, vid, masks=split != "valid", copy=copy, summary=summary)
        if info is None:
            continue
        videos[split] += 1
        written[vid] = {"frames": video["frames"], "expressions": {
            eid: {**e, "exp": clean_sentence(e["exp"])} for eid, e in video["expressions"].items()}}
        available = set(info["frames"])
        for exp_id, exp in video["expressions"].items():
            sentence = clean_sentence(exp["exp"])
            if not sentence:
                summary.skip("expressions with an empty sentence")
                continue
            object_id = exp_id if split == "valid" else str(int(exp["obj_id"]))
            for frame in sorted(video["frames"]):
                if frame not in available:
                    summary.skip("(expression, listed frame) pairs whose frame has no JPEG (or annotation PNG)")
                elif present is not None and split != "valid" and frame not in present.get((vid, object_id), ()):
                    summary.skip("frames where the referred object is absent (drop_absent)")
                else:
                    records[split].append(ReferRecord(
                        video_id=vid, frame_id=frame, object_id=object_id, sentence=sentence,
                        original_size=(info["height"], info["width"]), expression_id=exp_id))
    write_json(out / "meta_expressions.json", {"videos": written})
    for split, recs in records.items():
        name, fmt = SPLIT_FORMATS[split]
        summary.samples[name] = write_list(out / name, recs, fmt)
        summary.videos[split] = videos[split]
    return summary
