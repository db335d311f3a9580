"""Long-RVOS evaluation: the organisers' protocol (iSEE-Laboratory/Long_RVOS `eval/eval_long_rvos/`),
docs/datasets/longrvos.md.

Per expression, over **all** frames the meta file lists: J (region similarity; 1 where both masks are empty)
and DAVIS boundary F of every frame at the original resolution, averaged over the frames; tIoU (frames where
prediction and ground truth are both non-empty / frames where either is) and vIoU (Σ J over those shared
frames / frames where either is), both 1 when neither is ever non-empty. Each number is then averaged over the
expressions of a type (static, dynamic, hybrid = `static+dynamic`) and over all expressions together (the
overall numbers pool every expression; they are not the mean of the three types); J&F = (J + F) / 2.
"""

from __future__ import annotations

from collections.abc import Mapping

from lbdt.data.sources.longrvos import TYPES
from lbdt.errors import LBDTError
from lbdt.evaluation import metrics
from lbdt.evaluation.evaluators import JFEvaluator
from lbdt.types import Prediction

PROTOCOL = ("Long-RVOS: per expression over all listed frames J, F, tIoU, vIoU (original resolution); "
            "mean over each type's expressions and over all expressions")
HEADLINE = ("J", "F", "J&F", "tIoU", "vIoU")  # what the organisers' scripts print, overall and per type
LABELS = {"static": "expressions of type static", "dynamic": "expressions of type dynamic",
          "hybrid": "expressions of type static+dynamic"}


class LongRVOSEvaluator(JFEvaluator):
    """`JFEvaluator` (tIoU / vIoU included) whose expressions ('video/exp_id') are also reported per type.

    `types` maps every expression key to static | dynamic | hybrid (`LongRVOSSource.expression_types`);
    an expression without a type cannot be scored (the organisers' scripts select expressions by type).
    """

    def __init__(self, types: Mapping[str, str], *, where: str = "meta_expressions.json",
                 bound_th: float = metrics.BOUND_TH):
        self.types = dict(types)
        self.where = where
        super().__init__(bound_th=bound_th)

    def update(self, pred: Prediction, gt=None) -> None:
        key = self.key(pred.meta)
        if not self.types.get(key):
            raise LBDTError(f"{self.where}: expression {key!r} has no 'type' (one of {', '.join(TYPES)}); "
                            "Long-RVOS scores expressions by type")
        super().update(pred, gt)

    def compute(self) -> dict:
        out = super().compute()
        for kind in TYPES.values():
            keys = [k for k in self._scores if self.types[k] == kind]
            if keys:
                out[kind] = self.summary(keys)
        return out


def headline(jf: Mapping) -> dict:
    """The organisers' numbers of a `LongRVOSEvaluator.compute()` result: the five `HEADLINE` metrics overall
    and under each type's name (what `lbdt evaluate` also puts at the top level of metrics.json)."""
    out = {k: jf[k] for k in HEADLINE}
    out.update({kind: {k: jf[kind][k] for k in HEADLINE} for kind in TYPES.values() if kind in jf})
    return out
