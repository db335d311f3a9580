"""Model + dataset → predictions at original resolution: `run_on_dataset`, the one loop behind `lbdt evaluate`,
validation during training and `benchmarks/synthetic_learning.py`.

`predict` turns batches into (`Prediction`, ground truth) pairs; `run_on_dataset` feeds them to evaluators
(`update` / `compute`) and sinks (`write` / `close`, `abort` on failure), counting every sample.

The resize rules of both evaluation protocols live here and nowhere else:

* ``lbdt`` (docs/evaluation.md, 'The original's per-sample IoU'; reproduces the published A2D/J-HMDB
  numbers): prediction = σ(logits) > threshold at model size, then **nearest** resize to the original
  size; ground truth = the model-size training target (`Batch.masks`) **nearest** resized to the
  original size.
* ``native`` (ReferFormer's inference for Ref-YouTube-VOS and Ref-DAVIS17, which MeViS baselines share):
  the **logits** bilinearly upsampled (align_corners=False) to the original size, *then* σ, then > threshold;
  ground truth = `Batch.original_masks` untouched. (Resizing before the sigmoid is not the same as resizing
  the probabilities: three quarters of the way from a logit of -4 to one of 1, resizing the logits gives
  σ(-0.25) = 0.44, off, where resizing the probabilities gives 0.55, on.)

"Nearest" is PyTorch's `F.interpolate(mode="nearest")` (source index ⌊dst × in / out⌋), which the
original code uses.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler, Subset
from tqdm import tqdm

from lbdt.engine.distributed import DistInfo, describe_share, gather, pack, shard
from lbdt.errors import LBDTError
from lbdt.evaluation.writers import drain
from lbdt.models.lbdt import LBDT
from lbdt.runtime import Precision, autocast, resolve_precision
from lbdt.types import Batch, Prediction

PROTOCOLS = ("lbdt", "native")


def resize_nearest(mask: Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a mask `[H,W]` (bool / {0,1} / prob) to `size` = (H0, W0) → bool `[H0,W0]` (nonzero = on)."""
    t = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask.detach().cpu())
    t = (t != 0).float()[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in size), mode="nearest")[0, 0].numpy() > 0.5


def resize_bilinear(prob: Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (align_corners=False) of a probability map `[H,W]` to `size` → float32 `[H0,W0]`."""
    t = torch.as_tensor(np.asarray(prob) if isinstance(prob, np.ndarray) else prob.detach().cpu()).float()[None, None]
    return F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)[0, 0].numpy()


def to_original(
    logits: Tensor, target: Tensor | None, original_mask: np.ndarray | None, size: tuple[int, int], *,
    protocol: str, threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Apply a protocol to one sample.

    logits: float `[H,W]` at model size; target: `{0,1} [H,W]` model-size GT or None;
    original_mask: bool `[H0,W0]` or None; size: (H0, W0).
    Returns (pred bool `[H0,W0]`, gt bool `[H0,W0]` or None, prob float32 `[H0,W0]`).
    """
    logits = torch.as_tensor(logits).detach().float().cpu()
    if protocol == "lbdt":
        prob = torch.sigmoid(logits)
        pred = resize_nearest(prob > threshold, size)
        gt = None if target is None else resize_nearest(target > 0.5, size)
        prob_full = resize_bilinear(prob, size)
    elif protocol == "native":
        prob_full = torch.sigmoid(torch.from_numpy(resize_bilinear(logits, size))).numpy()
        pred = prob_full > threshold
        gt = None if original_mask is None else np.asarray(original_mask).astype(bool)
    else:
        raise LBDTError(f"unknown evaluation protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if gt is not None and gt.shape != pred.shape:
        raise LBDTError(f"ground truth of shape {gt.shape} does not match the original size {tuple(size)}")
    return pred, gt, prob_full


@torch.no_grad()
def predict(
    model: nn.Module, loader: Iterable[Batch], *, protocol: str = "lbdt", threshold: float = 0.5,
    device: torch.device | str = "cpu", precision: str | Precision = "fp32", keep_prob: bool = False,
) -> Iterator[tuple[Prediction, np.ndarray | None]]:
    """Run `model` over every batch and yield (`Prediction`, ground truth bool `[H0,W0]` or None) per sample.

    `model(frames, ref_frames, word_vectors, word_mask)` must return logits `[B,H,W]`. An `LBDT` computes the
    sentence-independent trunk once per distinct (frame, reference frame) of a batch (`LBDT.segment_shared`): the
    samples of one frame with several sentences (A2D, Ref-YTVOS, MeViS) share it. The ground truth
    follows `protocol` (module docstring); it is None where the batch carries none (e.g. YTVOS valid).
    `Prediction.score` is the mean probability inside the predicted mask (0 when empty);
    `Prediction.prob` (float32 `[H0,W0]`) is filled when `keep_prob`.
    """
    if protocol not in PROTOCOLS:
        raise LBDTError(f"unknown evaluation protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    model.eval()
    for batch in loader:
        on_device = batch.to(device)
        with autocast(device, precision):
            logits = _forward(model, on_device)
        if logits.dim() != 3 or logits.shape[0] != len(batch):
            raise LBDTError(f"model returned logits of shape {tuple(logits.shape)}; expected [B,H,W] with B={len(batch)}")
        logits = logits.float().cpu()
        masks = None if batch.masks is None else batch.masks.cpu()
        for i, meta in enumerate(batch.metas):
            original = None if batch.original_masks is None else batch.original_masks[i]
            pred, gt, prob_full = to_original(
                logits[i], None if masks is None else masks[i], original, meta.original_size,
                protocol=protocol, threshold=threshold,
            )
            score = float(prob_full[pred].mean()) if pred.any() else 0.0
            yield Prediction(meta=meta, mask=pred, score=score, prob=prob_full if keep_prob else None), gt


def _forward(model: nn.Module, batch: Batch) -> Tensor:
    """Logits of a batch; for an `LBDT`, samples that show the same frame (same video, frame and reference
    frame, identical pixels) share one trunk computation."""

    if not isinstance(model, LBDT):
        return model(batch.frames, batch.ref_frames, batch.word_vectors, batch.word_mask)
    first: dict[tuple[str, str, str], int] = {}
    index = []
    for i, m in enumerate(batch.metas):
        j = first.setdefault((m.video_id, m.frame_id, m.ref_frame_id), i)
        if j != i and not (torch.equal(batch.frames[i], batch.frames[j])
                           and torch.equal(batch.ref_frames[i], batch.ref_frames[j])):
            j = first[(m.video_id, m.frame_id, m.ref_frame_id)] = i  # same names, other pixels: its own trunk
        index.append(j)
    unique = sorted(set(index))
    if len(unique) == len(index):  # nothing shared: the plain forward, no copies
        return model(batch.frames, batch.ref_frames, batch.word_vectors, batch.word_mask)
    position = {j: k for k, j in enumerate(unique)}
    text = model.encode_text(batch.word_vectors, batch.word_mask)
    rows = torch.tensor(unique, device=batch.frames.device)
    return model.segment_shared(batch.frames.index_select(0, rows), batch.ref_frames.index_select(0, rows), text,
                                torch.tensor([position[j] for j in index], device=batch.frames.device))


class Evaluator(Protocol):
    def update(self, pred: Prediction, gt: np.ndarray | None) -> None: ...
    def compute(self) -> dict: ...


class Sink(Protocol):
    def write(self, pred: Prediction) -> None: ...
    def close(self) -> None: ...


def run_on_dataset(
    model: nn.Module, loader: DataLoader, *, evaluators: Mapping[str, Evaluator] | None = None,
    sinks: Sequence[Sink] = (), protocol: str = "lbdt", threshold: float = 0.5,
    device: torch.device | str = "cpu", precision: str | Precision = "fp32", keep_prob: bool = False,
    progress: bool = False, desc: str = "evaluate", ranks: DistInfo | None = None,
) -> dict[str, Any] | None:
    """Run `model` over every batch of `loader` (`lbdt.engine.datasets.make_loader`: its dataset in order, none
    dropped) and return
    `{"N": samples, <evaluator name>: evaluator.compute(), ...}`; each prediction also goes to every sink.

    Sinks are closed at the end; on any error, sinks that have an `abort()` are aborted instead (a
    submission zip is then never left half-written under its final name).

    With `ranks` of a torchrun group (world size > 1), each rank predicts a share of whole videos
    (`distributed.shard`, logged on stderr), rank 0 gathers every sample in dataset order and alone runs the
    evaluators and sinks, so results equal one process's; other ranks return None. Probability maps are not
    sent between ranks: `keep_prob` (Ref-DAVIS) runs in one process.
    """


    if loader.drop_last or not isinstance(loader.sampler, SequentialSampler):
        raise ValueError("run_on_dataset needs a loader over its dataset in order, dropping nothing")
    dataset = loader.dataset
    evaluators = dict(evaluators or {})
    distributed = ranks is not None and ranks.distributed
    if distributed and keep_prob:
        raise LBDTError("this evaluation merges probability maps per video (Ref-DAVIS): run it in one process, "
                        "not under torchrun")
    if distributed:  # predict this rank's share of whole videos, then rank 0 takes every sample in order
        video_ids = _video_ids(dataset)
        indices = shard(video_ids, rank=ranks.rank, world_size=ranks.world_size)
        print(describe_share(indices, video_ids, ranks), file=sys.stderr, flush=True)
        share = Subset(dataset, indices)
        local_loader = DataLoader(share, batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
                                  collate_fn=loader.collate_fn)
        local = predict(model, local_loader, protocol=protocol, threshold=threshold, device=device, precision=precision)
        packed = [(indices[k], pack(pred, gt)) for k, (pred, gt) in enumerate(
            tqdm(local, total=len(share), desc=f"rank {ranks.rank} {desc}", unit="sample",
                 disable=not (progress and ranks.is_main), leave=False, dynamic_ncols=True))]
        gathered = gather(packed, ranks, total=len(dataset))
        if not ranks.is_main:
            return None
        stream = (sample.unpack() for sample in gathered)
        progress = False
    else:
        stream = predict(model, loader, protocol=protocol, threshold=threshold, device=device, precision=precision,
                         keep_prob=keep_prob)
    def scored(pairs):  # each prediction to the evaluators, then on to the sinks
        for pred, gt in tqdm(pairs, total=len(dataset), desc=desc, unit="sample", disable=not progress,
                             leave=False, dynamic_ncols=True):
            for ev in evaluators.values():
                ev.update(pred, gt)
            yield [pred]

    count = drain(scored(stream), sinks)  # sinks closed at the end, aborted on any error
    if count != len(dataset):  # cannot happen with drop_last=False; guards against a silent loss
        raise LBDTError(f"predicted {count} of {len(dataset)} samples")
    return {"N": count, **{name: ev.compute() for name, ev in evaluators.items()}}


def _video_ids(dataset: Any) -> list[str]:
    """The video id of every sample of a `ReferringVideoDataset` (or a `Subset` of one), without reading frames."""

    if isinstance(dataset, Subset):
        return [_video_ids(dataset.dataset)[i] for i in dataset.indices]
    records = getattr(dataset, "records", None)
    if records is None:
        raise LBDTError(f"{type(dataset).__name__}: sharding across processes needs a dataset with records")
    return [r.video_id for r in records]
