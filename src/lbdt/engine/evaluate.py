"""`lbdt evaluate`: run a model over a dataset split and report every metric, labelled for what it is.

The dataset is built by the same builder as training (`lbdt.data.build.build_dataset`, so `holdout:<f>`
splits can be evaluated too) and run through the one dataset loop (`engine.inference.run_on_dataset`),
which feeds the evaluators (when the split has ground truth) and the writers (PNG masks, the
Ref-YouTube-VOS submission zip). Every sample of the split is predicted and counted.

Under `torchrun --nproc_per_node N` every rank predicts a share of whole videos and rank 0 receives every
sample in split order before the evaluators and writers run (`run_on_dataset`), so metrics, masks and the
submission zip are exactly those of one process; `metrics.json` records `world_size`.
"""

from __future__ import annotations

from pathlib import Path

from lbdt.engine.distributed import broadcast_object, init_distributed
from lbdt.engine.inference import PROTOCOLS, run_on_dataset
from lbdt.errors import LBDTError
from lbdt.paths import check_output_dir

PROTOCOL_DESCRIPTIONS = {
    "lbdt": "prediction > threshold at model size, nearest-resized to the original size; "
            "ground truth = the model-size training target nearest-resized to the original size (docs/evaluation.md)",
    "native": "prediction bilinearly upsampled to the original size, then > threshold; "
              "ground truth = the original-resolution mask",
}
DEFAULT_PROTOCOL = {"a2d": "lbdt", "jhmdb": "lbdt", "ytvos": "native", "davis": "native", "mevis": "native"}


def evaluate(
    checkpoint: str, *, dataset: str, root: str, split: str, protocol: str | None = None, threshold: float = 0.5,
    batch_size: int = 8, device: str = "auto", precision: str = "auto", num_workers: int = 0,
    word_vectors: str | None = None, output_dir: str | None = None, save_masks: bool = False,
    coco: bool = True, strict_precision: bool = False, jf: bool | None = None, size: tuple[int, int] | None = None,
    frame_gap: int | None = None, limit: int | None = None, progress: bool = True,
) -> dict:
    """Evaluate `checkpoint` (ours, an official LBDT checkpoint, a shipped name or a URL: `load_pretrained`)
    on list `split` of dataset `root` laid out in format `dataset` (a2d | jhmdb | ytvos | davis | mevis).
    davis and mevis are scored only with their benchmark's protocol (lbdt.evaluation.davis / .mevis), and
    MeViS `valid` (no ground truth) writes the MeViS server zip.

    protocol: "lbdt" | "native" (default: lbdt for a2d/jhmdb, native for ytvos). Metrics need ground truth;
    a split without it (Ref-YTVOS `valid`) only produces masks and, in `output_dir`, `submission.zip`.
    `jf` adds DAVIS J&F (default: on for ytvos). `size` / `frame_gap` default to the checkpoint's input size
    and the dataset's k. `limit` evaluates only the first `limit` samples (smoke tests).
    Writes `metrics.json` (and `masks/`, `submission.zip`) into `output_dir` when given. Returns the report.
    The model runs on the fast inference path (`engine.fast.prepare_for_inference`), as `lbdt predict` does.
    Under torchrun it joins the process group (`init_distributed`; destroying it is the caller's), every rank
    predicts its share of the videos, rank 0 evaluates and writes, and every rank returns rank 0's report.
    """
    from torch.utils.data import Subset

    from lbdt.config import DataConfig
    from lbdt.data.build import HOLDOUT, build_dataset, build_source
    from lbdt.words import resolve_word_vectors
    from lbdt.engine.fast import prepare_for_inference
    from lbdt.evaluation.evaluators import METRIC_LABELS, JFEvaluator, ReferSegEvaluator
    from lbdt.evaluation.writers import (
        MeViSSubmissionWriter,
        PngMaskWriter,
        YTVOSSubmissionWriter,

    )
    from lbdt.pretrained import load_pretrained
    from lbdt.runtime import resolve_precision

    if output_dir is not None:
        check_output_dir(output_dir)  # before any work (lbdt.paths)
    source = build_source(dataset, root)
    protocol = protocol or DEFAULT_PROTOCOL.get(dataset, "lbdt")
    if protocol not in PROTOCOLS:
        raise LBDTError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if batch_size < 1:
        raise LBDTError(f"batch size must be at least 1, got {batch_size}")
    ranks = init_distributed(device)  # one process unless started by torchrun (the group is left to the caller)
    dev = ranks.device
    prec = resolve_precision(precision, dev)
    runnable = load_pretrained(checkpoint, device=dev)
    prepare_for_inference(runnable.model, device=dev, precision=prec)  # folded BN, channels-last, oneDNN kernels
    size = tuple(size) if size else tuple(runnable.size)
    table = resolve_word_vectors(word_vectors, embedded=runnable.word_vectors, table=runnable.word_table, root=root)
    list_split = "train" if split.startswith(HOLDOUT) else split
    has_gt = source.has_masks(list_split)
    cfg = DataConfig(dataset=dataset, root=str(root), size=size, frame_gap=frame_gap, max_words=runnable.max_words,
                     val_split=split if split.startswith(HOLDOUT) else "")
    data = build_dataset(cfg, split, train=False, word_vectors=table, with_original_mask=has_gt and protocol == "native")
    if limit is not None:
        data = Subset(data, range(min(max(0, int(limit)), len(data))))
    if len(data) == 0:
        raise LBDTError(f"{root}: split {split!r} has no samples")

    evaluators = {}
    benchmark = None  # davis / mevis: their protocol's evaluator only (lbdt.evaluation.davis / .mevis)
    if has_gt and dataset == "davis":
        from lbdt.evaluation import davis as benchmark

        evaluators["jf"] = benchmark.RefDAVISEvaluator(source, split, threshold=threshold)
    elif has_gt and dataset == "mevis":
        from lbdt.evaluation import mevis as benchmark

        evaluators["jf"] = benchmark.MeViSEvaluator(no_target=source.no_target_keys(split))
    elif has_gt:
        evaluators["metrics"] = ReferSegEvaluator(strict=strict_precision, coco=coco)
        if jf if jf is not None else dataset == "ytvos":
            evaluators["jf"] = JFEvaluator()
    out = Path(output_dir) if output_dir and ranks.is_main else None  # only rank 0 writes
    sinks = []
    if out is not None and save_masks:
        sinks.append(PngMaskWriter(root=out / "masks"))
    submission = None
    if out is not None and dataset in ("ytvos", "mevis") and not has_gt:
        writer = MeViSSubmissionWriter if dataset == "mevis" else YTVOSSubmissionWriter
        submission = writer(zip_path=out / "submission.zip")
        sinks.append(submission)

    results = run_on_dataset(runnable.model, data, evaluators=evaluators, sinks=sinks, protocol=protocol,
                             threshold=threshold, device=dev, precision=prec, batch_size=batch_size,
                             num_workers=num_workers, keep_prob=dataset == "davis" and has_gt, progress=progress,
                             desc=f"evaluate {dataset}/{split}", ranks=ranks)
    if not ranks.is_main:
        return broadcast_object(None, ranks)  # rank 0's report
    report: dict = {
        "checkpoint": str(checkpoint), "model": runnable.describe(), "dataset": dataset, "root": str(root),
        "split": split, "N": results["N"], "protocol": protocol, "protocol_description": PROTOCOL_DESCRIPTIONS[protocol],
        "threshold": threshold, "input_size": list(size), "device": str(dev), **prec.as_dict(),
        "world_size": ranks.world_size,
    }
    report.update({name: results[name] for name in evaluators})
    if benchmark is not None:
        report["benchmark_protocol"] = benchmark.PROTOCOL
    labels = {**METRIC_LABELS, **getattr(benchmark, "LABELS", {})}
    used = _keys(report.get("metrics", {})) | _keys(report.get("jf", {}))
    report["labels"] = {k: v for k, v in labels.items() if k in used}
    outputs = {}
    if out is not None:
        if save_masks:
            outputs["masks"] = str(out / "masks")
        if submission is not None:
            outputs["submission"] = str(submission.zip_path)
        outputs["metrics_json"] = str(out / "metrics.json")
        report["outputs"] = outputs
        write_json(out / "metrics.json", report)
    return broadcast_object(report, ranks)


def _keys(node) -> set[str]:
    """Every key of a nested dict, at any depth."""
    if not isinstance(node, dict):
        return set()
    return set(node) | {k for v in node.values() for k in _keys(v)}


def format_report(report: dict) -> str:
    """The printed table: what was evaluated, how, and every metric with its meaning (per group compactly, when the samples carry one)."""
    from lbdt.evaluation.writers import format_metrics_table

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
    for name, path in report.get("outputs", {}).items():
        parts.append(f"{name}: {path}")
    return "\n".join(parts)
