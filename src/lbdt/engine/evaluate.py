"""`lbdt evaluate`: run a model over a dataset split and report every metric, labelled for what it is.

The dataset is built by the same builder as training (`lbdt.engine.datasets.build_dataset`, so `holdout:<f>`
splits can be evaluated too) and run through the one dataset loop (`engine.inference.run_on_dataset`),
which feeds the evaluators (when the split has ground truth) and the writers (PNG masks, the
Ref-YouTube-VOS submission zip). Every sample of the split is predicted and counted.

Under `torchrun --nproc_per_node N` every rank predicts a share of whole videos and rank 0 receives every
sample in split order before the evaluators and writers run (`run_on_dataset`), so metrics, masks and the
submission zip are exactly those of one process; `metrics.json` records `world_size`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Subset

from lbdt.config import DataConfig
from lbdt.data.sources import SOURCES, Source
from lbdt.engine.datasets import HOLDOUT, build_dataset, build_source, make_loader
from lbdt.engine.distributed import broadcast_object, init_distributed
from lbdt.engine.fast import prepare_for_inference
from lbdt.engine.inference import PROTOCOLS, run_on_dataset
from lbdt.errors import LBDTError
from lbdt.evaluation import davis, longrvos, mevis
from lbdt.evaluation.evaluators import METRIC_LABELS, JFEvaluator, ReferSegEvaluator
from lbdt.evaluation.writers import PngMaskWriter, SubmissionWriter, format_metrics_table
from lbdt.io import write_json
from lbdt.paths import check_output_dir
from lbdt.pretrained import load_pretrained
from lbdt.runtime import announce, resolve_precision
from lbdt.words import resolve_word_vectors

PROTOCOL_DESCRIPTIONS = {
    "lbdt": "prediction > threshold at model size, nearest-resized to the original size; "
            "ground truth = the model-size training target nearest-resized to the original size (docs/evaluation.md)",
    "native": "logits bilinearly upsampled to the original size, then sigmoid > threshold (ReferFormer); "
              "ground truth = the original-resolution mask",
}


@dataclass(frozen=True)
class EvaluateSettings:
    """What `evaluate` runs: the dataset split, the protocol, the runtime and the outputs (`lbdt evaluate`'s
    options, one field each)."""

    dataset: str  # a name of `lbdt.data.sources.SOURCES`: the on-disk format of `root`
    root: str  # dataset root (docs/datasets/)
    split: str  # list to evaluate (test, valid, val, valid_u, holdout:<fraction>, ...)
    protocol: str | None = None  # lbdt | native; None: the dataset's (`Source.default_protocol`)
    threshold: float = 0.5  # probability threshold of the binary mask
    batch_size: int = 8  # samples per forward pass (none is ever dropped)
    device: str = "auto"
    precision: str | None = None  # None: fp32 whatever the machine (`lbdt.runtime.EVALUATION_DEFAULT`); auto | bf16 | fp16
    num_workers: int = 0  # DataLoader worker processes
    word_vectors: str | None = None  # a word table overriding the checkpoint's (`--word-vectors`)
    output_dir: str | None = None  # metrics.json, masks/, submission.zip
    save_masks: bool = False  # every mask as a 0/255 PNG under output_dir/masks/ (davis: also output_dir/anno_<i>/)
    coco: bool = True  # COCO mask mAP (pycocotools)
    strict_precision: bool = False  # P@K counts IoU > K (MTTR) instead of >= K (LBDT)
    jf: bool | None = None  # DAVIS J&F per expression; None: the dataset's (`Source.jf_by_default`)
    size: tuple[int, int] | None = None  # model input (H, W); None: the checkpoint's
    frame_gap: int | None = None  # k; None: the dataset's
    limit: int | None = None  # only the first `limit` samples (smoke tests)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.dataset not in SOURCES:
            raise LBDTError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(SOURCES)}")
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise LBDTError(f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.batch_size < 1:
            raise LBDTError(f"batch size must be at least 1, got {self.batch_size}")


def evaluate(checkpoint: str, settings: EvaluateSettings) -> dict:
    """Evaluate `checkpoint` (ours, an official LBDT checkpoint, a shipped name or a URL: `load_pretrained`)
    on list `settings.split` of the dataset root `settings.root`, scored as its source says (`Source.scoring`:
    P@K / IoU / mAP, Ref-DAVIS17's protocol (lbdt.evaluation.davis), MeViS's (lbdt.evaluation.mevis) or
    Long-RVOS's (lbdt.evaluation.longrvos: J, F, tIoU, vIoU per type, also at the top level of the report)).

    A split without ground truth (Ref-YTVOS `valid`, MeViS `valid`) only produces masks and, in `output_dir`,
    the server's `submission.zip` (`Source.submission_top`). Writes `metrics.json` (and `masks/`,
    `submission.zip`; for Ref-DAVIS17 with `save_masks` each group's index masks, `anno_<i>/`) into `output_dir`
    when given. Returns the report.
    `settings.precision` None (the default) runs in fp32 whatever the machine, so the numbers do not depend on
    it (`lbdt.runtime.EVALUATION_DEFAULT`); the choice and its reason go to stderr and to the report.
    The model runs on the fast inference path (`engine.fast.prepare_for_inference`), as `lbdt predict` does.
    Under torchrun it joins the process group (`init_distributed`; destroying it is the caller's), every rank
    predicts its share of the videos, rank 0 evaluates and writes, and every rank returns rank 0's report.
    """
    s = settings
    if s.output_dir is not None:
        check_output_dir(s.output_dir)  # before any work (lbdt.paths)
    source = build_source(s.dataset, s.root)
    protocol = s.protocol or source.default_protocol
    ranks = init_distributed(s.device)  # one process unless started by torchrun (the group is left to the caller)
    dev = ranks.device
    prec = resolve_precision(s.precision, dev, evaluation=True)  # fp32 unless asked: numbers machine-independent
    runnable = load_pretrained(checkpoint, device=dev)
    runnable.inference = prepare_for_inference(runnable.model, device=dev, precision=prec)  # folded BN, channels-last
    size = tuple(s.size) if s.size else tuple(runnable.size)
    table = resolve_word_vectors(s.word_vectors, embedded=runnable.word_vectors, table=runnable.word_table,
                                 root=s.root)
    list_split = "train" if s.split.startswith(HOLDOUT) else s.split
    has_gt = source.has_masks(list_split)
    cfg = DataConfig(dataset=s.dataset, root=str(s.root), size=size, frame_gap=s.frame_gap,
                     max_words=runnable.max_words, val_split=s.split if s.split.startswith(HOLDOUT) else "")
    data = build_dataset(cfg, s.split, train=False, word_vectors=table,
                         with_original_mask=has_gt and protocol == "native")
    full = len(data)
    if s.limit is not None:
        data = Subset(data, range(min(max(0, int(s.limit)), len(data))))
    partial = len(data) < full  # --limit: a submission of this run is not one the server can score as a whole
    if len(data) == 0:
        raise LBDTError(f"{s.root}: split {s.split!r} has no samples")

    evaluators, benchmark_protocol, labels = _scoring(source, s, has_gt)
    out = Path(s.output_dir) if s.output_dir and ranks.is_main else None  # only rank 0 writes
    sinks = []
    if out is not None and s.save_masks:
        sinks.append(PngMaskWriter(root=out / "masks"))
    index_writer = None  # davis: each group's merged index masks, in the DAVIS toolkit's results layout
    if out is not None and s.save_masks and source.scoring == "davis":
        index_writer = davis.DAVISIndexWriter(root=out, source=source, split=s.split, threshold=s.threshold)
        sinks.append(index_writer)
    submission = None
    if out is not None and source.submission_top is not None and not has_gt:
        # a partial zip says so in its name and its comment, so it is not uploaded by mistake
        submission = SubmissionWriter(zip_path=out / ("submission.partial.zip" if partial else "submission.zip"),
                                      top=source.submission_top,
                                      comment=f"partial: the first {len(data)} of {full} samples (--limit {s.limit})"
                                      if partial else "")
        sinks.append(submission)

    loader = make_loader(data, batch_size=s.batch_size, shuffle=False, num_workers=s.num_workers)
    results = run_on_dataset(runnable.model, loader, evaluators=evaluators, sinks=sinks, protocol=protocol,
                             threshold=s.threshold, device=dev, precision=prec,
                             keep_prob=source.scoring == "davis" and (has_gt or index_writer is not None),
                             progress=s.progress,
                             desc=f"evaluate {s.dataset}/{s.split}", ranks=ranks)
    if not ranks.is_main:
        return broadcast_object(None, ranks)  # rank 0's report
    announce(prec, dev)  # one stderr line once the run succeeded (a bad input stays one line): what ran and why
    report: dict = {
        "checkpoint": str(checkpoint), "model": runnable.describe(), "dataset": s.dataset, "root": str(s.root),
        "split": s.split, "N": results["N"], "protocol": protocol,
        "protocol_description": PROTOCOL_DESCRIPTIONS[protocol], "threshold": s.threshold,
        "input_size": list(size), "device": str(dev), **prec.as_dict(), "world_size": ranks.world_size,
    }
    if partial:
        report["partial"] = {"samples": len(data), "of": full, "limit": s.limit}
    report.update({name: results[name] for name in evaluators})
    if source.scoring == "longrvos" and "jf" in report:  # the organisers' five numbers, overall and per type, on top
        report.update(longrvos.headline(report["jf"]))
    if benchmark_protocol:
        report["benchmark_protocol"] = benchmark_protocol
    used = _keys(report.get("metrics", {})) | _keys(report.get("jf", {}))
    report["labels"] = {k: v for k, v in labels.items() if k in used}
    outputs = {}
    if out is not None:
        if s.save_masks:
            outputs["masks"] = str(out / "masks")
        if index_writer is not None:
            outputs.update({f"index_masks/{group}": str(folder) for group, folder in index_writer.folders.items()
                            if folder.is_dir()})
        if submission is not None:
            outputs["submission"] = str(submission.zip_path)
        outputs["metrics_json"] = str(out / "metrics.json")
        report["outputs"] = outputs
        write_json(out / "metrics.json", report)
    return broadcast_object(report, ranks)


def _scoring(source: Source, s: EvaluateSettings, has_gt: bool) -> tuple[dict, str, dict[str, str]]:
    """(evaluators by report key, the benchmark protocol's description or "", metric labels) for the source's
    scoring kind (`Source.scoring`); no evaluators for a split without ground truth."""
    if not has_gt:
        return {}, "", dict(METRIC_LABELS)
    if source.scoring == "davis":
        return ({"jf": davis.RefDAVISEvaluator(source, s.split, threshold=s.threshold)}, davis.PROTOCOL,
                {**METRIC_LABELS, **davis.LABELS})
    if source.scoring == "mevis":
        return {"jf": mevis.MeViSEvaluator(no_target=source.no_target_keys(s.split))}, mevis.PROTOCOL, dict(METRIC_LABELS)
    if source.scoring == "longrvos":
        split = "train" if s.split.startswith(HOLDOUT) else s.split
        ev = longrvos.LongRVOSEvaluator(source.expression_types(split), where=str(source.meta_path(split)))
        return {"jf": ev}, longrvos.PROTOCOL, {**METRIC_LABELS, **longrvos.LABELS}
    evaluators: dict = {"metrics": ReferSegEvaluator(strict=s.strict_precision, coco=s.coco)}
    if s.jf if s.jf is not None else source.jf_by_default:
        evaluators["jf"] = JFEvaluator()
    return evaluators, "", dict(METRIC_LABELS)


def _keys(node) -> set[str]:
    """Every key of a nested dict, at any depth."""
    if not isinstance(node, dict):
        return set()
    return set(node) | {k for v in node.values() for k in _keys(v)}


def format_report(report: dict) -> str:
    """The printed table: what was evaluated, how, and every metric with its meaning (per group compactly, when the samples carry one)."""

    head = (f"{report['dataset']}/{report['split']}: N = {report['N']} samples, protocol {report['protocol']} "
            f"({report['protocol_description']}), threshold {report['threshold']}, {report['precision']} on "
            f"{report['device']}")
    parts = [head]
    metrics = dict(report.get("metrics", {}))
    by_group = metrics.pop("by_group", None)
    if metrics:
        parts.append(format_metrics_table(metrics, labels=report["labels"]))
    if by_group:
        cols = ["N", "P@0.5", "lbdt_ap", "overall_iou", "mean_iou"]
        width = max(len("group"), *(len(t) for t in by_group))
        parts.append(f"{'group':<{width}}" + "".join(f"  {c:>11}" for c in cols))
        for kind, sub in by_group.items():
            cells = "".join(f"  {sub[c]:>11}" if c == "N" else f"  {sub[c]:>11.4f}" for c in cols)
            parts.append(f"{kind:<{width}}{cells}")
    if "jf" in report:
        if "benchmark_protocol" in report:
            parts.append(report["benchmark_protocol"])
        parts.append(format_metrics_table(report["jf"], labels=report["labels"]))
    if "metrics" not in report and "jf" not in report:
        parts.append("no ground truth in this split: predictions only")
    if "partial" in report:
        p = report["partial"]
        parts.append(f"partial: only the first {p['samples']} of {p['of']} samples (--limit {p['limit']}); metrics and "
                     "any submission zip (submission.partial.zip) cover those alone")
    for name, path in report.get("outputs", {}).items():
        parts.append(f"{name}: {path}")
    return "\n".join(parts)
