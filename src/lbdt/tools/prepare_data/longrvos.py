"""`lbdt prepare-data longrvos`: check a Long-RVOS download and link it into ``out`` in the layout the source reads.

The source reads the released layout as it is (`lbdt.data.sources.longrvos`), so ``--out`` may simply be the
download itself. This builder checks every split found in ``raw`` (train, valid, test): each meta entry
(`LongRVOSSource` rules: plain names, an object number, a known type), a JPEG for every listed frame and, where
the split has `Annotations/`, a mask folder for every referred object; it then links the frames, the masks of
listed frames and the meta file into ``out`` (nothing is linked when ``out`` is ``raw``). Every path it writes
is built from names checked by `lbdt.paths.check_name`, so nothing lands outside ``out``. Mask files of frames
the meta file does not list are not linked (counted under "skipped").
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lbdt.data.sources.longrvos import LongRVOSSource
from lbdt.errors import LBDTError
from lbdt.tools.prepare_data.common import PrepareSummary, place_file, progress


def prepare_longrvos(raw: str | Path, out: str | Path, *, copy: bool = False,
                     show_progress: bool = True) -> PrepareSummary:
    """Check (and link) the Long-RVOS splits at ``raw`` into ``out``; an `LBDTError` names the first problem."""
    raw, out = Path(raw), Path(out)
    source = LongRVOSSource(raw)
    summary = PrepareSummary(dataset="longrvos", out=out)
    same = out.resolve() == raw.resolve()
    found = [s for s in source.splits if source.meta_path(s).is_file()]
    if not found:
        raise LBDTError(f"{raw}: no Long-RVOS split found (expected train/, valid/ or test/ with meta_expressions.json)")
    for split in found:
        videos = source.videos(split)
        masks = source.has_masks(split)
        types: Counter = Counter()
        for vid, video in progress(videos.items(), f"longrvos {split}", show_progress, total=len(videos)):
            listed = set(video["frames"])
            for frame in video["frames"]:
                jpg = source.frame_path(vid, frame)
                if not jpg.is_file():
                    raise LBDTError(f"{jpg}: frame listed in {source.meta_path(split)} not found")
                if not same:
                    place_file(jpg, out / split / "JPEGImages" / vid / jpg.name, copy=copy)
            objects = {e["obj_id"] for e in video["expressions"].values()}
            types.update(e["kind"] or "untyped" for e in video["expressions"].values())
            for obj in sorted(objects) if masks else ():
                folder = raw / split / "Annotations" / vid / obj
                if not folder.is_dir():
                    raise LBDTError(f"{folder}: mask folder of object {obj!r} (video {vid!r} in "
                                    f"{source.meta_path(split)}) not found")
                for png in folder.iterdir():
                    if not (png.suffix == ".png" and png.stem in listed):
                        summary.skip("mask file of a frame the meta file does not list")
                    elif not same:
                        place_file(png, out / split / "Annotations" / vid / obj / png.name, copy=copy)
        if not same:
            place_file(source.meta_path(split), out / split / "meta_expressions.json", copy=copy)
        summary.videos[split] = len(videos)
        summary.samples[f"{split}/meta_expressions.json"] = sum(
            len(v["frames"]) * len(v["expressions"]) for v in videos.values())
        summary.notes.append(f"{split}: expressions by type: " + ", ".join(f"{k} {n}" for k, n in sorted(types.items()))
                             + ("" if masks else "; no Annotations/ (no ground truth)"))
    missing = [s for s in source.splits if s not in found]
    if missing:
        summary.warnings.append(f"splits not found in {raw}: {', '.join(missing)}")
    return summary
