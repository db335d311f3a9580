"""Ref-DAVIS17 with the protocol of ReferFormer (and SgMg, SAMWISE, ReferDINO): docs/datasets/davis.md.

For each of the four expression groups (`lbdt.data.sources.davis.GROUPS`), every object's expression is
segmented over the whole video; the objects' probability maps of a frame are merged into one index mask
(`merge_objects`), and the index masks are scored with the DAVIS 2017 *unsupervised* protocol
(davis2017-evaluation): predicted objects are matched one-to-one to ground-truth objects by the Hungarian
assignment maximising the mean over frames of (J + F) / 2 (`match_objects`), then J and F are averaged over
frames per ground-truth object and over all objects of the split. A group's J&F = (J + F) / 2; the reported
number is the mean of the four groups' J&F.

Each rule as the organisers' code has it (ReferFormer `inference_davis.py`, davis2017-evaluation
`davis2017/davis.py` and `evaluation.py`):

* merging: probabilities below the threshold are zeroed, then argmax against a constant background of 0.1
  (`BACKGROUND`), so a pixel whose highest probability *equals* the threshold stays with that object, and the
  first object (record order) wins a tie between objects (`foreground`, `merge_objects`);
* the probabilities are σ of the logits bilinearly resized to the frame size (the `native` protocol of
  `lbdt.engine.inference`);
* the ground-truth objects of a video are ids 1 .. the largest id of its **first** frame's annotation (frames
  in sorted order, void = 255 read as 0): an object that first appears later with a larger id is not scored,
  and an id below that maximum missing from the first frame is still an object (`score_video`);
* `DAVISIndexWriter` (`lbdt evaluate --save-masks`) writes each group's merged index masks as paletted PNGs,
  `<root>/anno_<i>/<video>/<frame>.png` with anno_0..3 = `GROUPS` in order (ReferFormer's `anno_0..3`); each
  `anno_<i>` folder is a `--results_path` for the toolkit's `evaluation_method.py --task unsupervised`.

Predictions arrive video by video (the order of `DAVISSource.records`); only the current video's merged maps
(one float32 max-probability and one uint8 label per frame and group) are held (`VideoMerger`).
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from lbdt.data.sources.davis import GROUPS, VOID, DAVISSource
from lbdt.errors import LBDTError
from lbdt.evaluation import metrics
from lbdt.io import write_bytes
from lbdt.paths import check_name
from lbdt.types import Prediction

BACKGROUND = 0.1  # ReferFormer's constant background score in the per-frame argmax

PROTOCOL = ("Ref-DAVIS17, ReferFormer protocol: per group, objects' maps merged into index masks, DAVIS 2017 "
            "unsupervised J&F (Hungarian object matching); J&F = mean of the 4 groups")
LABELS = {"J": "region similarity J (per ground-truth object over its frames, then mean)",
          "F": "boundary F (DAVIS; per ground-truth object, then mean)",
          "J&F": "(J + F) / 2 (top level: mean over the 4 groups)",
          "num_objects": "ground-truth objects scored", "num_videos": "videos scored",
          "frames_without_prediction": "(group, frame) pairs with no prediction, scored as background"}


def foreground(best: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Where the highest object probability `best` keeps its object under ReferFormer's merge: values below
    `threshold` are zeroed, then argmax against `BACKGROUND` (the background comes first, so it wins ties)."""
    return (best >= threshold) & (best > BACKGROUND)


def merge_objects(probs: Mapping[int, np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """uint8 [H,W] index mask from object id -> float [H,W] probability map: the id of the most probable object
    (the first given on ties) where `foreground`, else 0."""
    if not probs:
        raise ValueError("no probability maps to merge")
    ids = list(probs)
    stack = np.stack([np.asarray(probs[i], dtype=np.float32) for i in ids])
    best = np.argmax(stack, axis=0)
    out = np.asarray(ids, dtype=np.uint8)[best]
    out[~foreground(stack.max(axis=0), threshold)] = 0
    return out


def match_objects(j: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DAVIS 2017 unsupervised matching. `j`, `f`: [P,G,T] per-frame J and F of predicted object p against
    ground-truth object g (P >= G; pad with empty predictions first). Returns the matched [G,T] J and F:
    ground-truth object g gets the prediction of the Hungarian assignment maximising Σ mean_t (J + F) / 2."""
    if j.shape != f.shape or j.ndim != 3 or j.shape[0] < j.shape[1]:
        raise ValueError(f"expected [P,G,T] J and F with P >= G, got {j.shape} and {f.shape}")
    rows, cols = linear_sum_assignment(-(j.mean(axis=2) + f.mean(axis=2)) / 2)
    order = np.argsort(cols)
    return j[rows[order], cols[order]], f[rows[order], cols[order]]


def score_video(pred: np.ndarray, gt: np.ndarray, bound_th: float = metrics.BOUND_TH) -> tuple[np.ndarray, np.ndarray]:
    """Per ground-truth object mean J and F over the frames of one video, DAVIS 2017 unsupervised.

    `pred`, `gt`: uint8 [T,H,W] index masks, frames in sorted order (gt value 255 = void, ignored). The
    ground-truth objects are ids 1 .. the largest id of the first frame, as the toolkit counts them; predicted
    objects are ids 1 .. the largest id anywhere (an id missing is an empty object). Returns two [G] arrays.
    """
    void = gt == VOID
    n_gt = int(np.where(void[0], 0, gt[0]).max(initial=0))
    n_pred = max(int(pred.max(initial=0)), n_gt)
    t = gt.shape[0]
    j = np.zeros((n_pred, n_gt, t))
    f = np.zeros((n_pred, n_gt, t))
    for g in range(n_gt):
        gt_g = (gt == g + 1) & ~void
        for p in range(n_pred):
            pred_p = (pred == p + 1) & ~void
            for k in range(t):
                j[p, g, k] = metrics.region_similarity(pred_p[k], gt_g[k])
                f[p, g, k] = metrics.boundary_f(pred_p[k], gt_g[k], bound_th)
    if n_gt == 0:
        return np.zeros(0), np.zeros(0)
    jm, fm = match_objects(j, f)
    return jm.mean(axis=1), fm.mean(axis=1)


class VideoMerger:
    """Merges, per (group, frame), the object probability maps of one video at a time (ReferFormer's rule,
    `foreground`). Predictions must arrive video by video; `update` and `finish` hand back a finished video as
    (video id, {group: {frame: uint8 [H0,W0] index mask}}), for the frames that had predictions."""

    def __init__(self, source: DAVISSource, split: str, *, threshold: float = 0.5):
        self.source = source
        self.split = split
        self.groups = source.expression_groups(split)
        self.threshold = threshold
        self._video: str | None = None
        self._done: set[str] = set()
        self._best: dict[tuple[str, str], np.ndarray] = {}  # (group, frame) -> max probability so far
        self._label: dict[tuple[str, str], np.ndarray] = {}  # (group, frame) -> object id of that maximum

    def update(self, pred: Prediction) -> tuple[str, dict[str, dict[str, np.ndarray]]] | None:
        m = pred.meta
        if pred.prob is None:
            raise LBDTError("Ref-DAVIS merging needs probability maps: predict with keep_prob=True")
        if (m.video_id, m.expression_id) not in self.groups:
            raise LBDTError(f"{self.source.meta_path(self.split)}: no expression {m.expression_id!r} in video {m.video_id!r}")
        finished = None
        if m.video_id != self._video:
            if m.video_id in self._done:
                raise LBDTError(f"DAVIS predictions of video {m.video_id!r} must arrive together (record order)")
            finished = self.finish()
            self._video = m.video_id
        group, obj = self.groups[(m.video_id, m.expression_id)]
        prob = np.asarray(pred.prob, dtype=np.float32)
        key = (group, m.frame_id)
        if key not in self._best:
            self._best[key] = prob.copy()
            self._label[key] = np.full(prob.shape, obj, dtype=np.uint8)
        else:
            better = prob > self._best[key]  # strict: the earlier object wins ties, as argmax does
            self._best[key][better] = prob[better]
            self._label[key][better] = obj
        return finished

    def finish(self) -> tuple[str, dict[str, dict[str, np.ndarray]]] | None:
        """The current video's merged index masks (None when there is none), and forget them."""
        vid = self._video
        if vid is None:
            return None
        merged: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
        for (group, frame), label in self._label.items():
            merged[group][frame] = np.where(foreground(self._best[(group, frame)], self.threshold), label, 0
                                            ).astype(np.uint8)
        self._done.add(vid)
        self._video = None
        self._best.clear()
        self._label.clear()
        return vid, dict(merged)


class RefDAVISEvaluator:
    """Sink for the predictions of a DAVIS split, in record order; needs `Prediction.prob` (keep_prob=True).

    The ground truth is read from `source` (all objects of each frame's index PNG), not taken from `update`.
    """

    def __init__(self, source: DAVISSource, split: str, *, threshold: float = 0.5, bound_th: float = metrics.BOUND_TH):
        self.source = source
        self.split = split
        self.threshold = threshold
        self.bound_th = bound_th
        self.reset()

    def reset(self) -> None:
        self._merger = VideoMerger(self.source, self.split, threshold=self.threshold)
        self._videos = 0
        self._j: dict[str, list[float]] = defaultdict(list)  # group -> per-object mean J
        self._f: dict[str, list[float]] = defaultdict(list)
        self._samples = 0
        self._missing = 0

    def update(self, pred: Prediction, gt: np.ndarray | None = None) -> None:
        finished = self._merger.update(pred)
        if finished is not None:
            self._score(*finished)
        self._samples += 1

    def __len__(self) -> int:
        return self._samples

    def _score(self, vid: str, merged: dict[str, dict[str, np.ndarray]]) -> None:
        frames = sorted(self.source.listed_frames(vid))  # the toolkit's order: sorted annotation files
        gt = np.stack([self.source.read_index(vid, fr) for fr in frames])
        for group in GROUPS:
            labels = merged.get(group)
            if not labels:
                continue  # the video has no expression in this group
            pred = np.zeros_like(gt)
            for k, fr in enumerate(frames):
                label = labels.get(fr)
                if label is None:
                    self._missing += 1
                    continue
                if label.shape != gt.shape[1:]:
                    raise LBDTError(f"{self.source.index_path(vid, fr)}: prediction {label.shape} and ground truth "
                                    f"{gt.shape[1:]} differ in size")
                pred[k] = label
            jm, fm = score_video(pred, gt, self.bound_th)
            self._j[group] += jm.tolist()
            self._f[group] += fm.tolist()
        self._videos += 1

    def compute(self) -> dict:
        finished = self._merger.finish()
        if finished is not None:
            self._score(*finished)
        if not self._samples:
            raise LBDTError("RefDAVISEvaluator: no samples were evaluated")
        groups = {}
        for group in GROUPS:
            if self._j[group]:
                j, f = float(np.mean(self._j[group])), float(np.mean(self._f[group]))
                groups[group] = {"J": j, "F": f, "J&F": (j + f) / 2, "num_objects": len(self._j[group])}
        if not groups:
            raise LBDTError("RefDAVISEvaluator: no ground-truth object in the evaluated videos")
        out = {"N": self._samples, "num_videos": self._videos, "groups": groups}
        for k in ("J", "F", "J&F"):
            out[k] = float(np.mean([g[k] for g in groups.values()]))
        if self._missing:
            out["frames_without_prediction"] = self._missing
        return out


def result_folder(group: str) -> str:
    """The results folder of an expression group: anno_0 .. anno_3 in `GROUPS` order (ReferFormer's names)."""
    return f"anno_{GROUPS.index(group)}"


def default_palette() -> list[int]:
    """The 256-colour palette DAVIS annotations use (PASCAL VOC's: the bits of the index, three at a time,
    spread from the high bit down over red, green and blue)."""
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        value = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette += rgb
    return palette


class DAVISIndexWriter:
    """Sink: every group's merged index masks as paletted PNGs, `<root>/anno_<i>/<video>/<frame>.png` (the
    davis2017-evaluation results layout, one folder per group; see the module docstring). The palette is the
    video's annotation palette where it has one, else `default_palette()`. Each file is written atomically;
    a frame without any prediction of a group (`--limit`) gets no file."""

    def __init__(self, *, root, source: DAVISSource, split: str, threshold: float = 0.5):
        self.root = Path(root)
        self.source = source
        self._merger = VideoMerger(source, split, threshold=threshold)
        self.count = 0
        self.folders = {group: self.root / result_folder(group) for group in GROUPS}

    def write(self, pred: Prediction) -> None:
        finished = self._merger.update(pred)
        if finished is not None:
            self._write_video(*finished)

    def close(self) -> None:
        finished = self._merger.finish()
        if finished is not None:
            self._write_video(*finished)

    def _palette(self, vid: str, frame: str) -> list[int]:
        path = self.source.index_path(vid, frame)
        try:
            with Image.open(path) as im:
                palette = im.getpalette() if im.mode == "P" else None
        except (OSError, ValueError, SyntaxError):
            palette = None
        return palette or default_palette()

    def _write_video(self, vid: str, merged: dict[str, dict[str, np.ndarray]]) -> None:
        where = f"index mask writer under {self.root}"
        check_name(vid, "video id", where)
        palette = None
        for group, labels in merged.items():
            for frame, label in labels.items():
                check_name(frame, "frame id", where)
                palette = palette or self._palette(vid, frame)
                im = Image.fromarray(label)  # "L"; putpalette makes it a "P" (index) image
                im.putpalette(palette)
                buffer = io.BytesIO()
                im.save(buffer, format="PNG")
                write_bytes(self.folders[group] / vid / f"{frame}.png", buffer.getvalue())
                self.count += 1
