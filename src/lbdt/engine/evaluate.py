"""`lbdt evaluate`: run a model over a dataset split and report every metric, labelled for what it is.

One stream of predictions (`engine.inference.predict`) feeds the evaluators (when the split has ground
truth) and the writers (PNG masks, the Ref-YouTube-VOS submission zip). Every sample of the split is
predicted and counted: the report's N equals the number of samples in the split.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lbdt.data.text import MAX_WORDS
from lbdt.engine.inference import PROTOCOLS, predict
from lbdt.errors import LBDTError

PROTOCOL_DESCRIPTIONS = {
    "lbdt": "LBDT/spec §4.1: prediction > threshold at model size, nearest-resized to the original size; "
            "ground truth = the model-size training target nearest-resized to the original size",
    "native": "prediction bilinearly upsampled to the original size, then > threshold; "
              "ground truth = the original-resolution mask",
}
DEFAULT_PROTOCOL = {"a2d": "lbdt", "jhmdb": "lbdt", "ytvos": "native", "davis": "native", "mevis": "native"}
GLOVE = "glove.840B.300d.txt"


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _word_vectors(explicit: str | None, model, root: Path):
    """The word-vector table: `explicit` file > the checkpoint's own table > the synthetic benchmark's file >
    `<root>/glove.840B.300d.txt`."""
    from lbdt.data.synth import read_summary
    from lbdt.data.text import WordVectors

    if explicit:
        return WordVectors.from_glove(explicit)
    info = getattr(model, "checkpoint_info", None)
    if info is not None and info.word_vectors is not None:
        return info.word_vectors
    summary = read_summary(root)
    candidates = ([root / summary["word_vectors"]] if summary and summary.get("word_vectors") else []) + [root / GLOVE]
    for path in candidates:
        if path.is_file():
            return WordVectors.from_glove(path)
    hint = f" ({info.word_vectors_hint})" if info is not None and info.word_vectors_hint else ""
    raise LBDTError(f"no word vectors: the checkpoint holds none and {root / GLOVE} does not exist; "
                    f"pass --word-vectors PATH{hint}")


def evaluate(
    checkpoint: str, *, dataset: str, root: str, split: str, protocol: str | None = None, threshold: float = 0.5,
    batch_size: int = 8, device: str = "auto", precision: str = "fp32", num_workers: int = 0,
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
    """
    from lbdt.data.build import build_source
    from lbdt.data.collate import collate
    from lbdt.data.dataset import ReferringVideoDataset
    from lbdt.evaluation.evaluators import METRIC_LABELS, JFEvaluator, ReferSegEvaluator
    from lbdt.evaluation.writers import (
        MeViSSubmissionWriter,
        PngMaskWriter,
        YTVOSSubmissionWriter,
        save_metrics_json,
    )
    from lbdt.pretrained import load_pretrained

    source = build_source(dataset, root)
    protocol = protocol or DEFAULT_PROTOCOL.get(dataset, "lbdt")
    if protocol not in PROTOCOLS:
        raise LBDTError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if batch_size < 1:
        raise LBDTError(f"batch size must be at least 1, got {batch_size}")
    dev = _device(device)
    model = load_pretrained(checkpoint, device=dev)
    info = getattr(model, "checkpoint_info", None)
    size = tuple(size) if size else (tuple(info.size) if info is not None else (320, 320))
    records = source.records(split)
    if limit is not None:
        records = records[: max(0, int(limit))]
    if not records:
        raise LBDTError(f"{root}: split {split!r} has no samples")
    has_gt = source.has_masks(split)
    data = ReferringVideoDataset(source, records, word_vectors=_word_vectors(word_vectors, model, Path(root)),
                                 size=size, frame_gap=frame_gap,
                                 max_words=info.max_words if info is not None else MAX_WORDS,
                                 with_original_mask=has_gt and protocol == "native", with_masks=has_gt)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers,
                        collate_fn=collate)

    evaluators = {}
    benchmark = None  # davis / mevis: their protocol's evaluator only (lbdt.evaluation.davis / .mevis)
    if has_gt and dataset == "davis":
        from lbdt.evaluation import davis as benchmark

        evaluators["jf"] = benchmark.RefDAVISEvaluator(source, split, threshold=threshold)
    elif has_gt and dataset == "mevis":
        from lbdt.evaluation import mevis as benchmark

        evaluators["jf"] = benchmark.MeViSEvaluator(no_target=source.no_target_keys(split))
    elif has_gt:
        evaluators["refer"] = ReferSegEvaluator(strict=strict_precision, coco=coco)
        if jf if jf is not None else dataset == "ytvos":
            evaluators["jf"] = JFEvaluator()
    out = Path(output_dir) if output_dir else None
    sinks = []
    if out is not None and save_masks:
        sinks.append(PngMaskWriter(root=out / "masks"))
    submission = None
    if out is not None and dataset in ("ytvos", "mevis") and not has_gt:
        writer = MeViSSubmissionWriter if dataset == "mevis" else YTVOSSubmissionWriter
        submission = writer(zip_path=out / "submission.zip")
        sinks.append(submission)

    count = 0
    stream = predict(model, loader, protocol=protocol, threshold=threshold, device=dev, precision=precision,
                     keep_prob=dataset == "davis" and has_gt)
    try:
        for pred, gt in tqdm(stream, total=len(data), desc=f"evaluate {dataset}/{split}", unit="sample",
                             disable=not progress, dynamic_ncols=True):
            for ev in evaluators.values():
                ev.update(pred, gt)
            for sink in sinks:
                sink.write(pred)
            count += 1
    except BaseException:
        if submission is not None:
            submission.abort()
        raise
    for sink in sinks:
        sink.close()
    if count != len(data):  # cannot happen with drop_last=False; guards against a silent loss
        raise LBDTError(f"predicted {count} of {len(data)} samples")

    report: dict = {
        "checkpoint": str(checkpoint), "dataset": dataset, "root": str(root), "split": split, "N": count,
        "protocol": protocol, "protocol_description": PROTOCOL_DESCRIPTIONS[protocol], "threshold": threshold,
        "input_size": list(size), "precision": precision,
    }
    if benchmark is not None:
        report["benchmark_protocol"] = benchmark.PROTOCOL
    if "refer" in evaluators:
        report["metrics"] = evaluators["refer"].compute()
    if "jf" in evaluators:
        report["jf"] = evaluators["jf"].compute()
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
        save_metrics_json(out / "metrics.json", report)
    return report


def _keys(node) -> set[str]:
    """Every key of a nested dict, at any depth."""
    if not isinstance(node, dict):
        return set()
    return set(node) | {k for v in node.values() for k in _keys(v)}


def format_report(report: dict) -> str:
    """The printed table: what was evaluated, how, and every metric with its meaning (per sentence type compactly)."""
    from lbdt.evaluation.writers import format_metrics_table

    head = (f"{report['dataset']}/{report['split']}: N = {report['N']} samples, protocol {report['protocol']} "
            f"({report['protocol_description']}), threshold {report['threshold']}")
    parts = [head]
    metrics = dict(report.get("metrics", {}))
    by_type = metrics.pop("by_sentence_type", None)
    if metrics:
        parts.append(format_metrics_table(metrics, labels=report["labels"]))
    if by_type:
        cols = ["N", "P@0.5", "lbdt_ap", "overall_iou", "mean_iou"]
        width = max(len("sentence type"), *(len(t) for t in by_type))
        parts.append(f"{'sentence type':<{width}}" + "".join(f"  {c:>11}" for c in cols))
        for kind, sub in by_type.items():
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
