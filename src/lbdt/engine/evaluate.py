"""`lbdt evaluate`: run a model over a dataset split and report every metric, labelled for what it is.

One stream of predictions (`engine.inference.predict`) feeds the evaluators (when the split has ground
truth) and the writers (PNG masks, the Ref-YouTube-VOS submission zip). Every sample of the split is
predicted and counted: the report's N equals the number of samples in the split.

Under `torchrun --nproc_per_node N` every rank predicts a share of whole videos (`distributed.shard`) and
rank 0 receives every sample in split order (`distributed.gather`) before the evaluators and writers run,
so metrics, masks and the submission zip are exactly those of one process; `metrics.json` records
`world_size`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from lbdt.data.text import MAX_WORDS
from lbdt.engine.distributed import broadcast_object, describe_share, gather, init_distributed, pack, shard
from lbdt.engine.inference import PROTOCOLS, predict
from lbdt.errors import LBDTError

PROTOCOL_DESCRIPTIONS = {
    "lbdt": "LBDT/spec §4.1: prediction > threshold at model size, nearest-resized to the original size; "
            "ground truth = the model-size training target nearest-resized to the original size",
    "native": "prediction bilinearly upsampled to the original size, then > threshold; "
              "ground truth = the original-resolution mask",
}
DEFAULT_PROTOCOL = {"a2d": "lbdt", "jhmdb": "lbdt", "ytvos": "native"}
GLOVE = "glove.840B.300d.txt"


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
    on list `split` of dataset `root` laid out in format `dataset` (a2d | jhmdb | ytvos).

    protocol: "lbdt" | "native" (default: lbdt for a2d/jhmdb, native for ytvos). Metrics need ground truth;
    a split without it (Ref-YTVOS `valid`) only produces masks and, in `output_dir`, `submission.zip`.
    `jf` adds DAVIS J&F (default: on for ytvos). `size` / `frame_gap` default to the checkpoint's input size
    and the dataset's k. `limit` evaluates only the first `limit` samples (smoke tests).
    Writes `metrics.json` (and `masks/`, `submission.zip`) into `output_dir` when given. Returns the report.
    Under torchrun it joins the process group (`init_distributed`; destroying it is the caller's), every rank
    predicts its share of the videos, rank 0 evaluates and writes, and every rank returns rank 0's report.
    """
    from lbdt.data.build import build_source
    from lbdt.data.collate import collate
    from lbdt.data.dataset import ReferringVideoDataset
    from lbdt.evaluation.evaluators import METRIC_LABELS, JFEvaluator, ReferSegEvaluator
    from lbdt.evaluation.writers import PngMaskWriter, YTVOSSubmissionWriter, save_metrics_json
    from lbdt.pretrained import load_pretrained

    source = build_source(dataset, root)
    protocol = protocol or DEFAULT_PROTOCOL.get(dataset, "lbdt")
    if protocol not in PROTOCOLS:
        raise LBDTError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if batch_size < 1:
        raise LBDTError(f"batch size must be at least 1, got {batch_size}")
    ranks = init_distributed(device)  # one process unless started by torchrun (the group is left to the caller)
    dev = ranks.device
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
    video_ids = [r.video_id for r in records]
    indices = shard(video_ids, rank=ranks.rank, world_size=ranks.world_size)
    if ranks.distributed:
        print(describe_share(indices, video_ids, ranks), file=sys.stderr, flush=True)
    share = Subset(data, indices) if ranks.distributed else data
    loader = DataLoader(share, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers,
                        collate_fn=collate)

    evaluators = {}
    if has_gt:
        evaluators["refer"] = ReferSegEvaluator(strict=strict_precision, coco=coco)
        if jf if jf is not None else dataset == "ytvos":
            evaluators["jf"] = JFEvaluator()
    out = Path(output_dir) if output_dir and ranks.is_main else None  # only rank 0 writes
    sinks = []
    if out is not None and save_masks:
        sinks.append(PngMaskWriter(root=out / "masks"))
    submission = None
    if out is not None and dataset == "ytvos" and not has_gt:
        submission = YTVOSSubmissionWriter(zip_path=out / "submission.zip")
        sinks.append(submission)

    count = 0
    stream = predict(model, loader, protocol=protocol, threshold=threshold, device=dev, precision=precision)
    if ranks.distributed:  # predict this rank's share, then rank 0 takes every sample in split order
        packed = [(indices[k], pack(pred, gt)) for k, (pred, gt) in enumerate(
            tqdm(stream, total=len(share), desc=f"rank {ranks.rank} {dataset}/{split}", unit="sample",
                 disable=not (progress and ranks.is_main), dynamic_ncols=True))]
        gathered = gather(packed, ranks, total=len(data))
        stream = (sample.unpack() for sample in gathered or [])
        progress = False
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
    if not ranks.is_main:
        return broadcast_object(None, ranks)  # rank 0's report
    if count != len(data):  # cannot happen with drop_last=False; guards against a silent loss
        raise LBDTError(f"predicted {count} of {len(data)} samples")

    report: dict = {
        "checkpoint": str(checkpoint), "dataset": dataset, "root": str(root), "split": split, "N": count,
        "protocol": protocol, "protocol_description": PROTOCOL_DESCRIPTIONS[protocol], "threshold": threshold,
        "input_size": list(size), "precision": precision, "world_size": ranks.world_size,
    }
    if "refer" in evaluators:
        report["metrics"] = evaluators["refer"].compute()
    if "jf" in evaluators:
        report["jf"] = evaluators["jf"].compute()
    report["labels"] = {k: v for k, v in METRIC_LABELS.items()
                        if k in report.get("metrics", {}) or k in report.get("jf", {})}
    outputs = {}
    if out is not None:
        if save_masks:
            outputs["masks"] = str(out / "masks")
        if submission is not None:
            outputs["submission"] = str(submission.zip_path)
        outputs["metrics_json"] = str(out / "metrics.json")
        report["outputs"] = outputs
        save_metrics_json(out / "metrics.json", report)
    return broadcast_object(report, ranks)


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
        parts.append(format_metrics_table(report["jf"], labels=report["labels"]))
    if "metrics" not in report and "jf" not in report:
        parts.append("no ground truth in this split: predictions only")
    for name, path in report.get("outputs", {}).items():
        parts.append(f"{name}: {path}")
    return "\n".join(parts)
