"""MeViS evaluation: the organisers' metric (MeViS `tools/eval_mevis.py`), docs/datasets/mevis.md.

Per expression, J (region similarity) and F (DAVIS boundary F) of every frame at the original resolution,
averaged over the frames; then averaged over expressions; J&F = (J + F) / 2. The target is the union of the
expression's objects; a frame where it is absent has an empty ground truth: an empty prediction there scores
J = F = 1, a non-empty one 0 (and an empty prediction of a present target 0). MeViS v2 no-target expressions
(empty in every frame) are also scored separately ("no_target"), next to the expressions with a target
("target"); the headline J, F, J&F average over all expressions, as the organisers' script does over the meta
file. The v2 summary scores N-acc / T-acc are not computed (docs/datasets/mevis.md says why). Long-RVOS's
tIoU and vIoU (`metrics.temporal_iou` / `volume_iou`) are reported beside them, as extra numbers: MeViS
targets leave and enter frames too (not part of the MeViS organisers' metric).
"""

from __future__ import annotations

from lbdt.evaluation import metrics
from lbdt.evaluation.evaluators import JFEvaluator

PROTOCOL = "MeViS: J and F per frame (original resolution), mean over frames, then over expressions"


class MeViSEvaluator(JFEvaluator):
    """`JFEvaluator` (expressions keyed 'video/exp_id') with the no-target expressions also reported apart."""

    def __init__(self, *, no_target: set[str] = frozenset(), bound_th: float = metrics.BOUND_TH):
        self.no_target = set(no_target)
        super().__init__(bound_th=bound_th)

    def compute(self) -> dict:
        out = super().compute()
        absent = [k for k in self._scores if k in self.no_target]
        if absent:
            present = [k for k in self._scores if k not in self.no_target]
            if present:
                out["target"] = self.summary(present)
            out["no_target"] = self.summary(absent)
        return out
