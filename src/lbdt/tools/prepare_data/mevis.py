"""`lbdt prepare-data mevis`: check a MeViS download and link it into ``out`` in the layout the source reads.

The source reads the released layout as it is (`lbdt.data.sources.mevis`), so ``--out`` may simply be the
download itself; this builder checks every split found in ``raw`` (train, valid_u, valid): each meta entry
(`MeViSSource` rules), a JPEG for every listed frame, a `mask_dict.json` entry of the right length for every
`anno_id` (train, valid_u) whose RLE sizes match their frames, and links the files into ``out`` (nothing is linked when ``out`` is ``raw``).
"""

from __future__ import annotations

from pathlib import Path

from lbdt.data.sources.mevis import MeViSSource, rle_size
from lbdt.errors import LBDTError
from lbdt.tools.prepare_data.common import PrepareSummary, image_size, place_file, progress


def prepare_mevis(raw: str | Path, out: str | Path, *, copy: bool = False, show_progress: bool = True) -> PrepareSummary:
    """Check (and link) the MeViS splits at ``raw`` into ``out``; an `LBDTError` names the first problem."""
    raw, out = Path(raw), Path(out)
    source = MeViSSource(raw)
    summary = PrepareSummary(dataset="mevis", out=out)
    same = out.resolve() == raw.resolve()
    found = [s for s in source.splits if (raw / s / "meta_expressions.json").is_file()]
    if not found:
        raise LBDTError(f"{raw}: no MeViS split found (expected train/, valid_u/ or valid/ with meta_expressions.json)")
    for split in found:
        videos = source.videos(split)
        masks = source.mask_dict(split) if source.has_masks(split) else None
        checked: set[str] = set()
        for vid, video in progress(videos.items(), f"mevis {split}", show_progress, total=len(videos)):
            sizes = []
            for frame in video["frames"]:
                jpg = source.frame_path(vid, frame)
                if not jpg.is_file():
                    raise LBDTError(f"{jpg}: frame listed in {source.meta_path(split)} not found")
                sizes.append(image_size(jpg))
            for eid, e in video["expressions"].items():
                for anno in e["anno_id"] if masks is not None else ():
                    entry = masks.get(anno)
                    where = f"{raw / split / 'mask_dict.json'}: anno_id {anno!r}"
                    if not isinstance(entry, list) or len(entry) != len(video["frames"]):
                        raise LBDTError(f"{where} (video {vid!r}, expression {eid!r}) needs a list of "
                                        f"{len(video['frames'])} RLEs or nulls")
                    if anno in checked:
                        continue
                    for t, rle in enumerate(entry):  # each mask agrees with its frame (decoded when used)
                        if rle is not None and not isinstance(rle, dict):
                            raise LBDTError(f"{where}, frame {t}: expected a COCO RLE object or null")
                        if rle is not None:
                            rle_size(rle, f"{where}, frame {t}", expected=sizes[t])
                    checked.add(anno)
            for frame in video["frames"] if not same else ():
                jpg = source.frame_path(vid, frame)
                place_file(jpg, out / split / "JPEGImages" / vid / jpg.name, copy=copy)
        for name in ("meta_expressions.json", "mask_dict.json"):
            if not same and (raw / split / name).is_file():
                place_file(raw / split / name, out / split / name, copy=copy)
        summary.videos[split] = len(videos)
        summary.samples[f"{split}/meta_expressions.json"] = sum(
            len(v["frames"]) * len(v["expressions"]) for v in videos.values())
        n_none = len(source.no_target_keys(split))
        if n_none:
            summary.notes.append(f"{split}: {n_none} no-target expressions (MeViS v2)")
    missing = [s for s in source.splits if s not in found]
    if missing:
        summary.warnings.append(f"splits not found in {raw}: {', '.join(missing)}")
    return summary
