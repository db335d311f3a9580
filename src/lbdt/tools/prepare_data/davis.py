"""Build the Ref-DAVIS17 layout (`lbdt.data.sources.davis`) from DAVIS 2017 and the Khoreva et al. expressions.

Input (``raw``; the DAVIS files may also sit directly in ``raw``, the text files too)::

    DAVIS/JPEGImages/480p/<video>/<frame>.jpg                 DAVIS 2017 unsupervised trainval 480p
    DAVIS/Annotations_unsupervised/480p/<video>/<frame>.png
    DAVIS/ImageSets/2017/{train,val}.txt                      60 / 30 video names
    davis_text_annotations/Davis17_annot1.txt                 annotator 1, first-frame expressions (UTF-8)
    davis_text_annotations/Davis17_annot1_full_video.txt      annotator 1, full-video expressions (UTF-8)
    davis_text_annotations/Davis17_annot2.txt                 annotator 2, first-frame (Latin-1)
    davis_text_annotations/Davis17_annot2_full_video.txt      annotator 2, full-video (Latin-1)

A text line is ``video obj_id "expression"``. Output: ``out/{train,val}/{JPEGImages,Annotations}/<video>/`` (links)
and ``out/{train,val}/meta_expressions.json`` with every expression of the four groups.

The expression files name three videos differently from the DAVIS 2017 release; `RENAMED` maps them (the same
three renames the ReferFormer conversion applies) and the summary lists each rename that was applied.
"""

from __future__ import annotations

from pathlib import Path

from lbdt.data.sources.davis import GROUPS, VOID
from lbdt.errors import LBDTError
from lbdt.io import read_text, write_json
from lbdt.paths import check_name
from lbdt.tools.prepare_data.common import (
    PrepareSummary,
    clean_sentence,
    marker_path,
    place_file,
    progress,
    read_marker,
)

# group -> (file name, encoding)
TEXT_FILES = {"annot1_first": ("Davis17_annot1.txt", "utf-8"),
              "annot1_full": ("Davis17_annot1_full_video.txt", "utf-8"),
              "annot2_first": ("Davis17_annot2.txt", "latin-1"),
              "annot2_full": ("Davis17_annot2_full_video.txt", "latin-1")}
# name in the expression files -> DAVIS 2017 video name
RENAMED = {"clasic-car": "classic-car", "dog-scale": "dogs-scale", "motor-bike": "motorbike"}
SPLITS = ("train", "val")


def read_expression_file(path: Path, encoding: str) -> list[tuple[int, str, int, str]]:
    """(line number, video, object id, sentence) of every non-empty line; a malformed line is an `LBDTError`."""
    if not path.is_file():
        raise LBDTError(f"Ref-DAVIS17 expression file not found: {path}")
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise LBDTError(f"{path}: not {encoding} text ({e})") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[1].isdigit() or int(parts[1]) < 1:
            raise LBDTError(f"{path}:{n}: expected 'video obj_id \"expression\"', got {line.strip()!r}")
        if int(parts[1]) >= VOID:
            raise LBDTError(f"{path}:{n}: object id {int(parts[1])} is not in 1..{VOID - 1} (DAVIS index masks)")
        check_name(parts[0], "video name", f"{path}:{n}")  # it becomes a folder name under --out
        sentence = parts[2].strip()
        if len(sentence) >= 2 and sentence[0] == sentence[-1] == '"':
            sentence = sentence[1:-1]
        out.append((n, parts[0], int(parts[1]), clean_sentence(sentence)))
    return out


def _davis_root(raw: Path) -> Path:
    return raw / "DAVIS" if (raw / "DAVIS").is_dir() else raw


def _text_dir(raw: Path) -> Path:
    return raw / "davis_text_annotations" if (raw / "davis_text_annotations").is_dir() else raw


def _split_videos(davis: Path) -> dict[str, str]:
    """video -> split from ImageSets/2017/{train,val}.txt."""
    out: dict[str, str] = {}
    for split in SPLITS:
        path = davis / "ImageSets" / "2017" / f"{split}.txt"
        text = read_text(path, "DAVIS 2017 split list")
        for n, line in enumerate(text.splitlines(), start=1):
            for name in line.split():
                check_name(name, "video name", f"{path}:{n}")  # it becomes a folder name under --out
                if out.get(name, split) != split:
                    raise LBDTError(f"{path}:{n}: video {name!r} is also in the {out[name]} list")
                out[name] = split
    return out


def _marker_frames(done: dict | None) -> list[str] | None:
    """The frame names a finished-video marker lists, or None when it is absent or not a list of plain names
    (a damaged or foreign marker: the video is redone)."""
    frames = done.get("frames") if done else None
    if not isinstance(frames, list) or not frames:
        return None
    try:
        return [check_name(f, "frame name", "marker") for f in frames]
    except LBDTError:
        return None


def _place_video(davis: Path, out: Path, split: str, vid: str, *, copy: bool, summary: PrepareSummary) -> list[str] | None:
    """Link one video's frames and unsupervised annotations; its frame names, or None when it has none."""
    marker = marker_path(out, "davis", split, vid)
    done = read_marker(marker)
    dest = out / split
    if _marker_frames(done) and all((dest / d / vid / f"{f}.{e}").is_file() for f in done["frames"]
                                           for d, e in (("JPEGImages", "jpg"), ("Annotations", "png"))):
        summary.reused += 1
        return done["frames"]
    jpgs = sorted((davis / "JPEGImages" / "480p" / vid).glob("*.jpg"))
    frames = []
    for jpg in jpgs:
        check_name(jpg.stem, "frame name", str(jpg))  # listed in meta_expressions.json, read back by the source
        png = davis / "Annotations_unsupervised" / "480p" / vid / f"{jpg.stem}.png"
        if not png.is_file():
            summary.skip("frames without an unsupervised annotation PNG")
            continue
        place_file(jpg, dest / "JPEGImages" / vid / jpg.name, copy=copy)
        place_file(png, dest / "Annotations" / vid / png.name, copy=copy)
        frames.append(jpg.stem)
    if not frames:
        summary.skip("videos without frames in JPEGImages/480p")
        return None
    write_json(marker, {"frames": frames})
    return frames


def prepare_davis(raw: str | Path, out: str | Path, *, copy: bool = False, show_progress: bool = True) -> PrepareSummary:
    """Build ``out`` from the DAVIS 2017 release and the four expression files at ``raw`` (module docstring).

    Skipped (and counted): expression lines of videos that are not in DAVIS 2017 trainval, repeated
    (video, object) lines of one file, frames without an annotation PNG.
    """
    raw, out = Path(raw), Path(out)
    davis, text = _davis_root(raw), _text_dir(raw)
    split_of = _split_videos(davis)
    summary = PrepareSummary(dataset="davis", out=out)
    expressions: dict[str, dict[int, dict[str, str]]] = {}  # video -> object -> group -> sentence
    renamed: dict[str, int] = {}
    for group in GROUPS:
        name, encoding = TEXT_FILES[group]
        for _, vid, obj, sentence in read_expression_file(text / name, encoding):
            if vid not in split_of and RENAMED.get(vid) in split_of:
                renamed[vid] = renamed.get(vid, 0) + 1
                vid = RENAMED[vid]
            if vid not in split_of:
                summary.skip("expression lines of videos not in DAVIS 2017 trainval")
                continue
            if not sentence:
                summary.skip("expression lines with an empty sentence")
                continue
            slot = expressions.setdefault(vid, {}).setdefault(obj, {})
            if group in slot:
                summary.skip("repeated (video, object) lines in one expression file")
                continue
            slot[group] = sentence
    for old, n in sorted(renamed.items()):
        summary.notes.append(f"renamed video {old!r} -> {RENAMED[old]!r} in {n} expression lines (name in the "
                             "expression files differs from DAVIS 2017)")
    metas: dict[str, dict] = {s: {} for s in SPLITS}
    samples = {s: 0 for s in SPLITS}
    for vid in progress(sorted(expressions), "davis videos", show_progress):
        split = split_of[vid]
        frames = _place_video(davis, out, split, vid, copy=copy, summary=summary)
        if frames is None:
            continue
        exps = {}
        for obj in sorted(expressions[vid]):
            for group in GROUPS:
                if group in expressions[vid][obj]:
                    exps[str(len(exps))] = {"exp": expressions[vid][obj][group], "obj_id": str(obj), "group": group}
        metas[split][vid] = {"frames": frames, "expressions": exps}
        samples[split] += len(exps) * len(frames)
    for split in SPLITS:
        write_json(out / split / "meta_expressions.json", {"videos": metas[split]})
        summary.videos[split] = len(metas[split])
        summary.samples[f"{split}/meta_expressions.json"] = samples[split]
    return summary
