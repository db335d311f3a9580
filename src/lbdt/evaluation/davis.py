"""Ref-DAVIS17 with the protocol of ReferFormer (and SgMg, SAMWISE, ReferDINO): docs/datasets/davis.md.

For each of the four expression groups (`lbdt.data.sources.davis.GROUPS`), every object's expression is
segmented over the whole video; the objects' probability maps of a frame are merged into one index mask
(`merge_objects`: background where no object is above the threshold, else the most probable object), and the
index masks are scored with the DAVIS 2017 *unsupervised* protocol (davis2017-evaluation): predicted objects
are matched one-to-one to ground-truth objects by the Hungarian assignment maximising the mean over frames of
(J + F) / 2 (`match_objects`), then J and F are averaged over frames per ground-truth object and over all
objects of the split. A group's J&F = (J + F) / 2; the reported number is the mean of the four groups' J&F.

Predictions arrive video by video (the order of `DAVISSource.records`); only the current video's merged maps
(one float32 max-probability and one uint8 label per frame and group) are held.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np
from scipy.optimize import linear_sum_assignment

from lbdt.data.sources.davis import GROUPS, VOID, DAVISSource
from lbdt.errors import LBDTError
from lbdt.evaluation import metrics
from lbdt.types import Prediction

PROTOCOL = ("Ref-DAVIS17, ReferFormer protocol: per group, objects' maps merged into index masks, DAVIS 2017 "
            "unsupervised J&F (Hungarian object matching); J&F = mean of the 4 groups")
LABELS = {"J": "region similarity J (per ground-truth object over its frames, then mean)",
          "F": "boundary F (DAVIS; per ground-truth object, then mean)",
          "J&F": "(J + F) / 2 (top level: mean over the 4 groups)",
          "num_objects": "ground-truth objects scored", "num_videos": "videos scored",
          "frames_without_prediction": "(group, frame) pairs with no prediction, scored as background"}


def merge_objects(probs: Mapping[int, np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """uint8 [H,W] index mask from object id -> float [H,W] probability map: 0 where no object's probability
    exceeds `threshold`, else the id of the most probable object (the first given on ties)."""
    if not probs:
        raise ValueError("no probability maps to merge")
    ids = list(probs)
    stack = np.stack([np.asarray(probs[i], dtype=np.float32) for i in ids])
    best = np.argmax(stack, axis=0)
    out = np.asarray(ids, dtype=np.uint8)[best]
    out[stack.max(axis=0) <= threshold] = 0
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

    `pred`, `gt`: uint8 [T,H,W] index masks (gt value 255 = void, ignored). Objects are ids 1..max id of each
    video (an id missing from a video is an empty object, as the toolkit reads PNGs). Returns two [G] arrays.
    """
    void = gt == VOID
    n_gt = int(gt[~void].max(initial=0))
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


class RefDAVISEvaluator:
    """Sink for the predictions of a DAVIS split, in record order; needs `Prediction.prob` (keep_prob=True).

    The ground truth is read from `source` (all objects of each frame's index PNG), not taken from `update`.
    """

    def __init__(self, source: DAVISSource, split: str, *, threshold: float = 0.5, bound_th: float = metrics.BOUND_TH):
        self.source = source
        self.split = split
        self.groups = source.expression_groups(split)
        self.threshold = threshold
        self.bound_th = bound_th
        self.reset()

    def reset(self) -> None:
        self._video: str | None = None
        self._done: set[str] = set()
        self._best: dict[tuple[str, str], np.ndarray] = {}  # (group, frame) -> max probability so far
        self._label: dict[tuple[str, str], np.ndarray] = {}  # (group, frame) -> object id of that maximum
        self._j: dict[str, list[float]] = defaultdict(list)  # group -> per-object mean J
        self._f: dict[str, list[float]] = defaultdict(list)
        self._samples = 0
        self._missing = 0

    def update(self, pred: Prediction, gt: np.ndarray | None = None) -> None:
        m = pred.meta
        if pred.prob is None:
            raise LBDTError("RefDAVISEvaluator needs probability maps: predict with keep_prob=True")
        if (m.video_id, m.expression_id) not in self.groups:
            raise LBDTError(f"{self.source.meta_path(self.split)}: no expression {m.expression_id!r} in video {m.video_id!r}")
        if m.video_id != self._video:
            if m.video_id in self._done:
                raise LBDTError(f"DAVIS predictions of video {m.video_id!r} must arrive together (record order)")
            self._finish_video()
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
        self._samples += 1

    def __len__(self) -> int:
        return self._samples

    def _finish_video(self) -> None:
        vid = self._video
        if vid is None:
            return
        frames = self.source.listed_frames(vid)
        gt = np.stack([self.source.read_index(vid, fr) for fr in frames])
        for group in GROUPS:
            if not any((group, fr) in self._label for fr in frames):
                continue  # the video has no expression in this group
            pred = np.zeros_like(gt)
            for k, fr in enumerate(frames):
                label = self._label.get((group, fr))
                if label is None:
                    self._missing += 1
                    continue
                if label.shape != gt.shape[1:]:
                    raise LBDTError(f"{self.source.index_path(vid, fr)}: prediction {label.shape} and ground truth "
                                    f"{gt.shape[1:]} differ in size")
                pred[k] = np.where(self._best[(group, fr)] > self.threshold, label, 0)
            jm, fm = score_video(pred, gt, self.bound_th)
            self._j[group] += jm.tolist()
            self._f[group] += fm.tolist()
        self._done.add(vid)
        self._video = None
        self._best.clear()
        self._label.clear()

    def compute(self) -> dict:
        self._finish_video()
        if not self._samples:
            raise LBDTError("RefDAVISEvaluator: no samples were evaluated")
        groups = {}
        for group in GROUPS:
            if self._j[group]:
                j, f = float(np.mean(self._j[group])), float(np.mean(self._f[group]))
                groups[group] = {"J": j, "F": f, "J&F": (j + f) / 2, "num_objects": len(self._j[group])}
        if not groups:
            raise LBDTError("RefDAVISEvaluator: no ground-truth object in the evaluated videos")
        out = {"N": self._samples, "num_videos": len(self._done), "groups": groups}
        for k in ("J", "F", "J&F"):
            out[k] = float(np.mean([g[k] for g in groups.values()]))
        if self._missing:
            out["frames_without_prediction"] = self._missing
        return out
