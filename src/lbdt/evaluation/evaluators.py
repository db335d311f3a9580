"""Evaluators: accumulate per-sample statistics from a stream of predictions, then aggregate.

Contract (docs/architecture.md): `reset()`, `update(pred: Prediction, gt: np.ndarray | None)`,
`compute() -> dict`. Every sample fed to `update` is counted; `compute()` reports that count as N.
Metric keys are short and stable; `METRIC_LABELS` says what each one is, for tables and docs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from lbdt.errors import LBDTError
from lbdt.evaluation import metrics
from lbdt.types import Prediction, SampleMeta

METRIC_LABELS: dict[str, str] = {
    "N": "samples evaluated (none dropped)",
    **{f"P@{t}": f"precision at IoU {t} (fraction of samples)" for t in metrics.PRECISION_THRESHOLDS},
    "lbdt_ap": "LBDT-AP (mean precision over IoU 0.50:0.05:0.95; not COCO AP)",
    "overall_iou": "overall IoU (sum of intersections / sum of unions)",
    "mean_iou": "mean IoU (mean of per-sample IoUs)",
    "region_f": "mean pixel F1 (the original's YTVOS 'F'; not the DAVIS boundary F)",
    "coco_map": "COCO mAP (pycocotools segm, IoU 0.50:0.95)",
    "coco_ap50": "COCO AP at IoU 0.50",
    "coco_ap75": "COCO AP at IoU 0.75",
    "J": "region similarity J (per expression, then mean)",
    "F": "boundary F (DAVIS, per expression, then mean)",
    "J&F": "(J + F) / 2",
    "tIoU": "temporal IoU (Long-RVOS): frames where prediction and truth are both non-empty / where either is; "
            "per expression, then mean",
    "vIoU": "volume IoU (Long-RVOS): sum of J over those shared frames / frames where either is non-empty; "
            "per expression, then mean",
    "num_expressions": "expressions evaluated",
}


def _require_gt(pred: Prediction, gt: np.ndarray | None, who: str) -> np.ndarray:
    if gt is None:
        m = pred.meta
        raise LBDTError(f"{who}: no ground truth for {m.dataset} {m.video_id}/{m.object_id}/{m.frame_id}")
    if gt.shape != pred.mask.shape:
        raise LBDTError(f"{who}: prediction {pred.mask.shape} and ground truth {gt.shape} differ in size "
                        f"for {pred.meta.video_id}/{pred.meta.frame_id}")
    return gt


class ReferSegEvaluator:
    """A2D / J-HMDB style metrics: P@0.5..0.9, LBDT-AP, overall IoU, mean IoU, region F, optional COCO mAP.

    `strict=True` counts P@K with IoU > K (MTTR) instead of ≥ K (LBDT). With `coco=True` every sample
    is also kept (as RLE) for COCO mask AP with score = `Prediction.score`. When samples carry a
    `meta.group` (A2D actor-action, the synthetic benchmark's sentence type, ...), each group is also
    reported on its own under "by_group".
    """

    def __init__(self, *, strict: bool = False, coco: bool = False):
        self.strict = strict
        self.coco = coco
        self.reset()

    def reset(self) -> None:
        self._inter: list[int] = []
        self._union: list[int] = []
        self._ious: list[float] = []
        self._region_f: list[float] = []
        self._groups: list[str] = []
        self._gt_rles: list[dict] = []
        self._pred_rles: list[dict] = []
        self._scores: list[float] = []

    def update(self, pred: Prediction, gt: np.ndarray | None) -> None:
        gt = _require_gt(pred, gt, "ReferSegEvaluator")
        inter, union = metrics.intersection_union(pred.mask, gt)
        self._inter.append(inter)
        self._union.append(union)
        self._ious.append((inter + metrics.SMOOTH) / (union + metrics.SMOOTH))
        self._region_f.append(metrics.region_f(pred.mask, gt))
        self._groups.append(pred.meta.group)
        if self.coco:
            self._gt_rles.append(metrics.rle_encode(gt))
            self._pred_rles.append(metrics.rle_encode(pred.mask))
            self._scores.append(float(pred.score))

    def __len__(self) -> int:
        return len(self._ious)

    def _summary(self, idx: np.ndarray) -> dict:
        ious = np.asarray(self._ious)[idx]
        out: dict = {"N": int(idx.size)}
        for t, v in metrics.precision_at(ious, strict=self.strict).items():
            out[f"P@{t}"] = v
        out["lbdt_ap"] = metrics.lbdt_ap(ious)
        out["overall_iou"] = metrics.overall_iou(np.asarray(self._inter)[idx], np.asarray(self._union)[idx])
        out["mean_iou"] = metrics.mean_iou(ious)
        out["region_f"] = float(np.mean(np.asarray(self._region_f)[idx]))
        return out

    def compute(self) -> dict:
        if not self._ious:
            raise LBDTError("ReferSegEvaluator: no samples were evaluated")
        out = self._summary(np.arange(len(self._ious)))
        out["precision_rule"] = "IoU > K" if self.strict else "IoU >= K"
        if self.coco:
            out.update({f"coco_{k.lower()}": v for k, v in
                        metrics.coco_mask_map(self._gt_rles, self._pred_rles, self._scores).items()})
        groups = np.asarray(self._groups)
        if any(groups != ""):
            out["by_group"] = {g: self._summary(np.flatnonzero(groups == g)) for g in sorted(set(self._groups)) if g}
        return out


class JFEvaluator:
    """DAVIS-style J and F per frame, averaged per (video, expression) then over expressions; with Long-RVOS's
    tIoU and vIoU of each expression (`metrics.temporal_iou` / `volume_iou`: which frames the target is in),
    averaged the same way.

    An expression is (video, `meta.expression_id`), or (video, object, sentence) where there is no
    expression id. `bound_th` is the boundary tolerance of `metrics.boundary_f`. Per frame only four numbers
    are kept (J, F and whether each mask is non-empty), never a mask: memory is flat in the video's length.
    """

    def __init__(self, *, bound_th: float = metrics.BOUND_TH):
        self.bound_th = bound_th
        self.reset()

    def reset(self) -> None:
        self._scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._presence: dict[str, list[tuple[float, bool, bool]]] = defaultdict(list)  # (J, pred any, gt any)
        self._frames = 0

    @staticmethod
    def key(meta: SampleMeta) -> str:
        """The expression a sample belongs to: 'video/exp_id' (or 'video/object/sentence')."""
        return f"{meta.video_id}/{meta.expression_id}" if meta.expression_id else \
            f"{meta.video_id}/{meta.object_id}/{meta.sentence}"

    def update(self, pred: Prediction, gt: np.ndarray | None) -> None:
        gt = _require_gt(pred, gt, "JFEvaluator")
        key = self.key(pred.meta)
        j = metrics.region_similarity(pred.mask, gt)
        f = metrics.boundary_f(pred.mask, gt, self.bound_th)
        self._scores[key].append((j, f))
        self._presence[key].append((j, bool(np.any(pred.mask)), bool(np.any(gt))))
        self._frames += 1

    def __len__(self) -> int:
        return self._frames

    def summary(self, keys: Iterable[str] | None = None) -> dict:
        """J, F, J&F, num_expressions, tIoU, vIoU over the expressions `keys` (default: all)."""
        keys = list(self._scores) if keys is None else list(keys)
        return {**metrics.jf_per_expression({k: self._scores[k] for k in keys}),
                **metrics.temporal_per_expression({k: self._presence[k] for k in keys})}

    def compute(self) -> dict:
        if not self._frames:
            raise LBDTError("JFEvaluator: no frames were evaluated")
        return {"N": self._frames, **self.summary()}
