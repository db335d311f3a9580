"""What Ref-DAVIS17 and MeViS share: split folders with a `meta_expressions.json`, one record per (expression, frame).

```
<root>/<split>/JPEGImages/<video>/<frame>.jpg
<root>/<split>/meta_expressions.json   {"videos": {video: {"frames": [names], "expressions": {exp_id: {"exp": text, ...}}}}}
```
Every frame of every expression is a sample (both benchmarks score whole videos). Video ids, frame names and
expression ids become folder and file names (masks, submission zips), so each must be a plain name: no '/',
no '\\', not '.' or '..', not empty. A malformed entry is an `LBDTError` naming the file and the entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from lbdt.data.records import ReferRecord
from lbdt.data.sources.base import Source
from lbdt.errors import LBDTError
from lbdt.io import read_json
from lbdt.paths import check_name


class ExpressionSource(Source):
    """A root of split folders described by `meta_expressions.json` files (see the module docstring).

    Subclasses set `splits` and implement `check_expression` (validate and normalise one expression entry)
    and `read_mask`.
    """

    splits: ClassVar[tuple[str, ...]] = ()
    numbered_frames = False  # k counts stored frames

    def __init__(self, root):
        super().__init__(root)
        self._meta: dict[str, dict[str, dict]] = {}
        self._video_split: dict[str, str] = {}

    # ---------------------------------------------------------------- meta
    def meta_path(self, split: str) -> Path:
        return self.root / split / "meta_expressions.json"

    def list_file(self, split: str) -> tuple[Path, str]:
        return self.meta_path(split), "meta_expressions"

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise LBDTError(f"{self.root}: unknown {self.name} split {split!r}; expected one of {', '.join(self.splits)}")

    def check_expression(self, path: Path, video: str, exp_id: str, entry: dict) -> dict:
        """The normalised entry {"exp": str, ...}; an `LBDTError` naming `path` and the entry when malformed."""
        raise NotImplementedError

    def videos(self, split: str) -> dict[str, dict]:
        """video -> {"frames": [names], "expressions": {exp_id: checked entry}} of `split`, read once."""
        self.check_split(split)
        if split not in self._meta:
            path = self.meta_path(split)
            data = read_json(path, f"{self.name} {split} meta_expressions.json")
            videos = data.get("videos") if isinstance(data, dict) else None
            if not isinstance(videos, dict):
                raise LBDTError(f"{path}: expected an object with a 'videos' object")
            checked = {}
            for vid, video in videos.items():
                where = f"{path}: video {vid!r}"
                check_name(vid, "video id", f"{path}")
                if not isinstance(video, dict) or not isinstance(video.get("frames"), list) \
                        or not isinstance(video.get("expressions"), dict):
                    raise LBDTError(f"{where}: expected 'frames': [names] and 'expressions': {{id: {{...}}}}")
                frames = [check_name(f, "frame name", where) for f in video["frames"]]
                if not frames:
                    raise LBDTError(f"{where}: 'frames' is empty (every listed video needs its frames)")
                if len(set(frames)) != len(frames):
                    raise LBDTError(f"{where}: repeated frame names")
                exps = {}
                for eid, entry in video["expressions"].items():
                    check_name(eid, "expression id", where)
                    if not isinstance(entry, dict) or not isinstance(entry.get("exp"), str) or not entry["exp"].strip():
                        raise LBDTError(f"{where}, expression {eid!r}: expected {{'exp': non-empty text, ...}}")
                    exps[eid] = self.check_expression(path, vid, eid, entry)
                checked[vid] = {"frames": frames, "expressions": exps}
                self._video_split.setdefault(vid, split)
            self._meta[split] = checked
        return self._meta[split]

    def records(self, split: str) -> list[ReferRecord]:
        """One record per (video, expression, listed frame), in video, expression, frame order."""
        path = self.meta_path(split)
        out = []
        for vid, video in self.videos(split).items():
            self._video_split[vid] = split
            for eid, e in video["expressions"].items():
                sentence = " ".join(e["exp"].split())
                out += [ReferRecord(video_id=vid, frame_id=f, object_id=eid, sentence=sentence, original_size=(0, 0),
                                    expression_id=eid, source_line=f"{path}: video {vid!r}, expression {eid!r}")
                        for f in video["frames"]]
        return out

    # ---------------------------------------------------------------- frames
    def split_of(self, video_id: str) -> str:
        split = self._video_split.get(video_id)
        if split is None:  # not read yet: the first split folder holding the video
            split = next((s for s in self.splits if (self.root / s / "JPEGImages" / video_id).is_dir()), self.splits[0])
            self._video_split[video_id] = split
        return split

    def video_dir(self, video_id: str) -> Path:
        return self.root / self.split_of(video_id) / "JPEGImages" / video_id

    def listed_frames(self, video_id: str) -> list[str]:
        """The video's frames as its meta file lists them."""
        return self.videos(self.split_of(video_id))[video_id]["frames"]
