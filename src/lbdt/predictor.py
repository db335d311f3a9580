"""`VideoSegmenter`: load a model once, then stream any video through it, one `Prediction` per frame.

How a video is processed (docs/inference.md, 'What happens to a video'):

* every frame is resized to the model size (plain bilinear resize as PIL does it, aspect ratio not kept,
  as in training) and ImageNet-normalised;
* frame t is segmented with reference frame t − k, clamped to the first frame (so frame 0 is paired with
  itself: its temporal input is zero);
* the sentence is encoded once per video (`LBDT.encode_text`); frames go through `LBDT.segment_many` in
  batches of `batch_size` (with several sentences, the sentence-independent trunk runs once per batch);
* the probability map σ(logits) is resized bilinearly to the original frame size and thresholded
  (`prob > threshold`), so masks are smooth at any resolution;
* memory stays flat: frames are read one at a time into a ring buffer holding the last k + batch_size
  preprocessed frames, and results are yielded as soon as their batch is done.

`predict_to_folder` (behind `lbdt predict`) writes masks, overlay videos and a JSON summary.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
import unicodedata
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from lbdt.checkpoint import Runnable
from lbdt.cpu_load import load_warning, read_load
from lbdt.data.transforms import normalize, resize_image
from lbdt.data.video import VideoFrame, VideoInput, open_video
from lbdt.engine.fast import prepare_for_inference, to_input
from lbdt.engine.inference import resize_bilinear
from lbdt.errors import LBDTError, LBDTNotice
from lbdt.evaluation.writers import OverlayVideoWriter, SentenceMaskWriter, SentenceStats, drain
from lbdt.io import crash_point, write_json, write_text
from lbdt.models.lbdt import LBDT, STRIDE
from lbdt.models.text_encoder import TextFeatures
from lbdt.onnx_backend import load_exported
from lbdt.paths import check_input_path, check_output_dir
from lbdt.pretrained import load_pretrained
from lbdt.runtime import InferenceSetup, Precision, autocast, resolve_device, resolve_precision
from lbdt.types import Prediction, SampleMeta
from lbdt.words import Coverage, WordVectors, check_sentence, resolve_word_vectors

BACKENDS = ("torch", "onnxruntime")  # onnxruntime: an exported folder (`lbdt export --format onnx`)


class VideoSegmenter:
    """Segment the object a sentence refers to in every frame of a video.

    >>> seg = VideoSegmenter.from_pretrained("synthetic-tiny")
    >>> for pred in seg.segment("clip.mp4", "the red circle moving left"):
    ...     pred.mask  # bool [H0,W0]

    `runnable`: a `Runnable` (from `load_pretrained`) or an `LBDT`; `VideoSegmenter.from_pretrained` loads and
    prepares weights by name, path or URL (or an ONNX export). A prepared runnable (`Runnable.inference`) runs
    where and how it was prepared; otherwise `device` and `precision` (default `auto`, `lbdt.runtime`) say. `size` (H, W),
    `frame_gap` (k) and `word_vectors` default to what the checkpoint says; `word_vectors` may be a table or a
    GloVe-format file (`lbdt.words.resolve_word_vectors` gives the order).
    """

    def __init__(self, runnable: Runnable | LBDT, *, device: str | torch.device = "auto",
                 precision: str | Precision = "auto", size: tuple[int, int] | None = None,
                 frame_gap: int | None = None, batch_size: int = 8,
                 word_vectors: WordVectors | str | os.PathLike | None = None, threshold: float = 0.5):
        if isinstance(runnable, LBDT):  # the caller's model: used as it is
            runnable = Runnable(model=runnable, variant="", source="in-memory model", kind="in-memory")
        if not isinstance(runnable, Runnable):
            raise LBDTError(f"VideoSegmenter takes a Runnable (lbdt.load_pretrained) or an LBDT, got "
                            f"{type(runnable).__name__}; for weights by name, path or URL use "
                            "VideoSegmenter.from_pretrained(...)")
        setup = runnable.inference
        if setup is None:  # as loaded: runs on the device and in the precision asked for, nothing prepared
            self.device = resolve_device(device)
            self.precision = resolve_precision(precision, self.device)
            runnable.model.to(self.device).eval()
            self._channels_last = False
        else:  # prepared (from_pretrained, engine.fast.prepare_for_inference): its device and precision
            for name, asked, have in (("device", device, setup.device), ("precision", precision, setup.precision)):
                if not _same_or_auto(name, asked, have):
                    raise LBDTError(f"{name} {asked!r}: this model was prepared for {name} "
                                    f"{getattr(have, 'name', have)} ({runnable.source})")
            self.device, self.precision, self._channels_last = setup.device, setup.precision, setup.channels_last
        self.runnable = runnable
        self.model = runnable.model
        self.backend = "onnxruntime" if setup is not None and setup.kernels == "onnxruntime" else "torch"
        self.size = _model_size(size or runnable.size)
        self.frame_gap = _whole(frame_gap if frame_gap is not None else runnable.frame_gap, "frame_gap", 0)
        self.batch_size = _whole(batch_size, "batch_size", 1)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise LBDTError(f"threshold must be a number in [0, 1], got {threshold!r}")
        if word_vectors is not None and not isinstance(word_vectors, WordVectors):
            check_input_path(word_vectors, "VideoSegmenter word_vectors")
        self.word_vectors = resolve_word_vectors(word_vectors, embedded=runnable.word_vectors,
                                                 table=runnable.word_table)
        self.max_words = runnable.max_words
        self.threshold = float(threshold)
        self.source = runnable.source
        self.max_buffered = 0  # most preprocessed frames held at once during the last run (≤ k + batch_size)
        # what to know before any frame is segmented, warned as `LBDTNotice`s (`lbdt predict` prints them)
        self.notices = [device_notice(self.device, self.precision)]
        if runnable.card.get("notice"):
            self.notices.append(" ".join(str(runnable.card["notice"]).split()))
        if self.frame_gap == 0:
            self.notices.append("frame_gap 0: every frame is its own reference, so the temporal input is zero "
                                "(the spatial-only ablation)")
        for text in self.notices:
            warnings.warn(text, LBDTNotice, stacklevel=2)

    @classmethod
    def from_pretrained(cls, name: str | os.PathLike, *, device: str | torch.device = "auto",
                        precision: str | Precision = "auto", backend: str = "torch", **options: Any) -> VideoSegmenter:
        """Load weights by name, path or URL (`lbdt.load_pretrained`) and prepare them for fast inference (folded
        BatchNorm, channels-last, oneDNN kernels where they pay: `engine.fast.prepare_for_inference`); with
        `backend="onnxruntime"`, `name` is a folder written by `lbdt export --format onnx` (docs/export.md), run
        in its fp32 graphs. `options` are the constructor's (size, frame_gap, batch_size, word_vectors, threshold)."""
        if backend not in BACKENDS:
            raise LBDTError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        check_input_path(name, "VideoSegmenter.from_pretrained name")  # not a file object, not ''
        dev = resolve_device(device)
        if backend == "onnxruntime":
            if precision not in ("auto", "fp32"):
                raise LBDTError(f"the ONNX Runtime backend runs the exported fp32 graphs; precision {precision!r} "
                                "is for the PyTorch backend")
            runnable = load_exported(name, device=dev)
            runnable.inference = InferenceSetup(
                device=dev, precision=Precision("fp32", "the ONNX Runtime backend runs the exported fp32 graphs"),
                channels_last=False, kernels="onnxruntime", folded_bn=True, compiled=False)
        else:
            prec = resolve_precision(precision, dev)
            runnable = load_pretrained(name)
            runnable.inference = prepare_for_inference(runnable.model, device=dev, precision=prec)
        return cls(runnable, **options)

    # ---------------------------------------------------------------- public API
    def encode(self, sentence: str) -> TextFeatures:
        """The sentence's `TextFeatures` (batch 1); a clear error for an empty one. Long sentences are
        truncated to the checkpoint's N tokens (`max_words`, 25 by default); unknown words get zero vectors."""
        every = check_sentence(sentence, "VideoSegmenter text")  # tokenized once
        tokens = every[: self.max_words]
        known = self.word_vectors.coverage_of(tokens)
        known = Coverage(known.tokens, known.unknown, tuple(every[self.max_words:]))
        if known.none_known:
            raise LBDTError(f"no word of {sentence!r} is in this model's vocabulary ({len(self.word_vectors)} words): "
                            f"{', '.join(repr(t) for t in known.unknown)}")
        for text in sentence_notices(sentence, known, self.max_words):
            warnings.warn(text, LBDTNotice, stacklevel=3)
        vectors, mask = self.word_vectors.encode_tokens(tokens, max_len=self.max_words)
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.model.encode_text(vectors[None].to(self.device), mask[None].to(self.device))

    def segment(self, video: VideoInput, sentence: str, *, return_prob: bool = False,
                return_frames: bool = False) -> Iterator[Prediction]:
        """One `Prediction` per frame, in order: `mask` bool [H0,W0], `score` (mean probability inside the
        mask), `prob` float32 [H0,W0] when `return_prob`, `frame` (the RGB frame) when `return_frames`,
        `frame_index` (its position in the video)."""
        stream = self.segment_many(video, [sentence], return_prob=return_prob, return_frames=return_frames)
        return (preds[0] for preds in stream)

    def segment_many(self, video: VideoInput, sentences: Sequence[str], *, return_prob: bool = False,
                     return_frames: bool = False) -> Iterator[list[Prediction]]:
        """Several sentences over one video in one pass: the video is decoded **once** and each batch of
        frames is segmented once per sentence. Yields, per frame, one `Prediction` per sentence (in order);
        `sentence_index` is the sentence's position. The sentence-independent trunk of the model runs once per
        batch of frames for all sentences (`LBDT.segment_many`)."""
        sentences = sentence_list(sentences)
        texts = [self.encode(s) for s in sentences]  # errors (empty sentence, no table) before any decoding
        reader = open_video(video)
        return self._stream(reader.name, iter(reader), sentences, texts, return_prob, return_frames)

    # ---------------------------------------------------------------- internals
    def _stream(self, name: str, frames: Iterator[VideoFrame], sentences: list[str], texts: list[TextFeatures],
                return_prob: bool, return_frames: bool) -> Iterator[list[Prediction]]:
        k = self.frame_gap
        ring: deque[tuple[int, str, Tensor]] = deque(maxlen=k + self.batch_size)  # (index, id, [3,H,W]), newest last
        pending: list[_Pending] = []
        self.max_buffered = 0
        for frame in frames:
            ring.append((frame.index, frame.frame_id, self._preprocess(frame.image)))
            self.max_buffered = max(self.max_buffered, len(ring))
            pending.append(_Pending(frame.index, frame.frame_id, frame.image.shape[:2],
                                    frame.image if return_frames else None))
            if len(pending) == self.batch_size:
                yield from self._run_batch(name, pending, ring, sentences, texts, return_prob)
                pending = []
        if pending:
            yield from self._run_batch(name, pending, ring, sentences, texts, return_prob)

    def _run_batch(self, name: str, pending: list[_Pending], ring: deque, sentences: list[str],
                   texts: list[TextFeatures], return_prob: bool) -> Iterator[list[Prediction]]:
        held = {index: (frame_id, x) for index, frame_id, x in ring}  # holds every t and t - k of the batch
        ref_index = [max(f.index - self.frame_gap, 0) for f in pending]
        frames = to_input(torch.stack([held[f.index][1] for f in pending]), device=self.device,
                          channels_last=self._channels_last)  # [B,3,H,W]
        refs = to_input(torch.stack([held[r][1] for r in ref_index]), device=self.device,
                        channels_last=self._channels_last)  # [B,3,H,W]
        # the sentence-independent trunk once per batch, the rest per sentence (LBDT.segment_many);
        # float32 [S,B,H,W] on the CPU: one transfer per batch, not one per frame
        with torch.inference_mode(), autocast(self.device, self.precision):
            probs = self.model.segment_many(frames, refs, texts).float().sigmoid().cpu()
        for b, frame in enumerate(pending):
            out = []
            h0, w0 = frame.size
            for j, sentence in enumerate(sentences):
                prob = resize_bilinear(probs[j][b], (h0, w0))
                mask = prob > self.threshold
                meta = SampleMeta(dataset="video", video_id=name, object_id="", frame_id=frame.frame_id,
                                  ref_frame_id=held[ref_index[b]][0], sentence=sentence,
                                  original_size=(h0, w0))
                out.append(Prediction(meta=meta, mask=mask, score=float(prob[mask].mean()) if mask.any() else 0.0,
                                      prob=prob if return_prob else None, sentence_index=j,
                                      frame_index=frame.index, frame=frame.image))
            yield out

    def _preprocess(self, image: np.ndarray) -> Tensor:
        """uint8 [H0,W0,3] → ImageNet-normalised float32 [3,H,W] on the device (the training transform)."""
        return normalize(resize_image(image, self.size)).to(self.device)


def device_notice(device: torch.device, precision: Precision) -> str:
    """"running on cpu in fp32 (why)": the device and precision line, with "warning: " when bf16 is emulated."""
    head = "warning: " if precision.emulated else ""
    return f"{head}running on {device} in {precision.name} ({precision.reason})"


def sentence_notices(sentence: str, coverage: Coverage, max_words: int) -> list[str]:
    """What the model will not see of `sentence`: its unknown words (zero vectors) and the words past its
    `max_words` tokens (cut off)."""
    out = []
    if coverage.unknown:
        out.append(f"{sentence!r}: not in the model's vocabulary (zero vectors): {', '.join(coverage.unknown)} "
                   f"({coverage.unknown_fraction:.0%} of the sentence)")
    if coverage.cut:
        out.append(f"{sentence!r}: longer than the model's {max_words} tokens; cut off: "
                   f"{' '.join(t.strip() or repr(t) for t in coverage.cut)}")
    return out


def _same_or_auto(name: str, asked: Any, have: Any) -> bool:
    """Whether a device / precision argument leaves a prepared model's choice as it is ("auto", or the same)."""
    if asked is None or (isinstance(asked, str) and asked == "auto"):
        return True
    if name == "device":
        return resolve_device(asked) == have
    return (asked.name if isinstance(asked, Precision) else str(asked)) == have.name


def sentence_list(sentences: str | Iterable[str], what: str = "sentences") -> list[str]:
    """The caller's sentences as a list, read once (a generator is not read twice): one str is one sentence;
    anything else must be an iterable of str with at least one item."""
    if isinstance(sentences, str):
        return [sentences]
    if not isinstance(sentences, Iterable) or isinstance(sentences, (bytes, bytearray, Mapping)):
        raise LBDTError(f"{what}: expected a str or a sequence of str, got {type(sentences).__name__}")
    out = list(sentences)
    bad = next((s for s in out if not isinstance(s, str)), None)
    if bad is not None:
        raise LBDTError(f"{what}: every sentence must be a string, got {type(bad).__name__} {bad!r}")
    if not out:
        raise LBDTError(f"{what}: no sentence given")
    return out


def _whole(value: Any, name: str, minimum: int) -> int:
    """An integer argument >= `minimum` (bools and floats are refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LBDTError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _model_size(size: Any) -> tuple[int, int]:
    """(H, W), both positive multiples of the model stride."""
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2 or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 or s % STRIDE for s in size):
        raise LBDTError(f"size must be (H, W), two positive multiples of {STRIDE}, got {size!r}")
    return int(size[0]), int(size[1])


@dataclass
class _Pending:
    """A frame waiting for its batch: its pixels are kept only when the caller asked for frames."""

    index: int
    frame_id: str
    size: tuple[int, int]  # (H0, W0)
    image: np.ndarray | None  # uint8 [H0,W0,3] or None


# ---------------------------------------------------------------- lbdt predict
def _slug(text: str, limit: int = 40) -> str:
    """A portable folder name: ASCII letters and digits joined by "-" (accents dropped, e.g. "ñandú" → "nandu")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    return "-".join(words)[:limit].strip("-")


INCOMPLETE = "INCOMPLETE"  # marker file of a predict output folder being written (or killed while written)
_RESULT_FOLDER = re.compile(r"\d{2,}_[a-z0-9-]+")  # 00_ .. 99_, then 100_, ...


def sentence_folders(sentences: Sequence[str]) -> list[str]:
    """The per-sentence output name `<NN>_<sentence-slug>` (predict's folders, serve's zip folders)."""
    return [f"{j:02d}_{_slug(s) or 'sentence'}" for j, s in enumerate(sentences)]


def predict_to_folder(video: str | os.PathLike, sentences: Sequence[str], *, out_dir: str | os.PathLike,
                      weights: str = "synthetic-tiny", device: str = "auto", precision: str = "auto",
                      batch_size: int = 8, frame_gap: int | None = None, word_vectors: str | None = None,
                      overlay: bool = True, progress: bool = True, backend: str = "torch") -> dict:
    """Segment `video` once per sentence set and write, under `out_dir`:

    * `<NN>_<sentence-slug>/masks/<frame>.png`: one 0/255 mask per frame at the original size;
    * `<NN>_<sentence-slug>/overlay.mp4`: the video with the mask tinted, its contour and the sentence;
    * `summary.json`: frames, sizes, per-frame foreground fraction and score, the words the model does not
      know (`unknown_words`, `unknown_fraction`), whether every mask came out empty, timings; `frames_declared`
      and `frames_missing` (> 0 when a video file decodes to fewer frames than it declares, see lbdt.data.video).

    On stderr, before the first frame is segmented: the device and precision and why, what a demonstration
    model is (synthetic-tiny), each sentence's unknown words and the words cut off past the model's N tokens
    (the segmenter's `LBDTNotice`s; `summary.json` keeps them as `notices`, and per sentence `unknown_words`,
    `words_cut`), and a warning when the CPU is busy (`lbdt.cpu_load`); after the run, each sentence whose masks
    are all empty.

    Every file is written atomically. The folder is complete or visibly incomplete: an `INCOMPLETE` file is
    written before anything else and removed after `summary.json`, which is written last. A re-run replaces the
    previous result whole: the earlier run's `NN_*` folders, `summary.json` and temporary files are removed
    first (other files in `out_dir` are left alone). Returns the summary dict.
    """


    sentences = sentence_list(sentences, "sentences (--text)")
    reader = open_video(video)  # input errors first, before loading weights
    out = check_output_dir(out_dir)
    started = time.perf_counter()
    with notices_to_stderr() as notices:  # the segmenter's notices, as lines, before any frame is segmented
        segmenter = VideoSegmenter.from_pretrained(weights, device=device, precision=precision, backend=backend,
                                                   batch_size=batch_size, frame_gap=frame_gap,
                                                   word_vectors=word_vectors)
        loaded = time.perf_counter()
        stream = segmenter.segment_many(reader, sentences, return_frames=overlay)  # checks sentences; nothing written
    load = read_load()
    busy = load_warning(load) if segmenter.device.type == "cpu" else None
    if busy:
        print(f"lbdt: warning: {busy}", file=sys.stderr)
        notices.append(f"warning: {busy}")
    coverage = [segmenter.word_vectors.coverage(s, max_len=segmenter.max_words) for s in sentences]
    folders = sentence_folders(sentences)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / INCOMPLETE, "lbdt predict is writing this folder, or was stopped while writing it: "
                                 "re-run it to replace the partial result\n")
    _clear_previous_result(out)
    stats = SentenceStats(sentences)
    sinks: list = [SentenceMaskWriter(out, [f"{f}/masks" for f in folders]), stats]
    if overlay:
        sinks += [OverlayVideoWriter(out / f / "overlay.mp4", fps=reader.fps or 25.0, sentences=[j], caption=s)
                  for j, (s, f) in enumerate(zip(sentences, folders))]
    with tqdm(total=reader.num_frames, unit="frame", disable=not progress, dynamic_ncols=True) as bar:
        def after_frame(n: int) -> None:
            bar.update()
            crash_point("predict-frame")

        drain(stream, sinks, after_frame=after_frame)
    records: list[dict] = [{"sentence": s, "folder": f,
                            "foreground_fraction": [round(v, 6) for v in stats.foreground[j]],
                            "score": [round(v, 6) for v in stats.score[j]]}
                           for j, (s, f) in enumerate(zip(sentences, folders))]
    frame_ids, sizes = stats.frame_ids, stats.sizes
    done = time.perf_counter()
    n = len(frame_ids)
    # the notices (device, demonstration model, words) went out before the first frame; the result's own:
    for r, c in zip(records, coverage):
        r["unknown_words"] = list(c.unknown)
        r["unknown_fraction"] = round(c.unknown_fraction, 6)
        r["words_cut"] = list(c.cut)
        r["all_masks_empty"] = n > 0 and not any(r["foreground_fraction"])
        if r["all_masks_empty"]:
            print(f"lbdt: {r['sentence']!r}: every mask is empty ({n} frames): the model found nothing it relates to "
                  "this sentence", file=sys.stderr)
    summary = {
        "video": str(video),
        "frames": n,
        "frame_ids": frame_ids,
        "fps": reader.fps,
        "frames_declared": reader.num_frames,
        "frames_missing": reader.short_by,
        "original_sizes": sorted([list(s) for s in sizes]),
        "model": {**segmenter.runnable.describe(), "size": list(segmenter.size), "frame_gap": segmenter.frame_gap,
                  "threshold": segmenter.threshold, "device": str(segmenter.device),
                  **segmenter.precision.as_dict(), "batch_size": segmenter.batch_size, "backend": backend},
        "sentences": [{**r, "masks": f"{r['folder']}/masks", "overlay": f"{r['folder']}/overlay.mp4" if overlay else None,
                       "mean_foreground_fraction": float(np.mean(r["foreground_fraction"]))} for r in records],
        "notices": notices,
        "machine_load": load.as_dict(),
        "timings": {"load_s": round(loaded - started, 3), "segment_s": round(done - loaded, 3),
                    "frames_per_s": round(n / max(done - loaded, 1e-9), 3)},
    }
    write_json(out / "summary.json", summary)  # last: its presence means the folder is complete
    (out / INCOMPLETE).unlink()
    return summary


@contextlib.contextmanager
def notices_to_stderr() -> Iterator[list[str]]:
    """For the commands: the `LBDTNotice`s warned inside the block are printed as `lbdt: ...` lines on stderr
    when it ends, and their texts are appended to the yielded list (for the output JSON); any other warning
    is warned again, unchanged."""
    notices: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LBDTNotice)
        yield notices
    for w in caught:
        if issubclass(w.category, LBDTNotice):
            notices.append(str(w.message))
            print(f"lbdt: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _clear_previous_result(out: Path) -> None:
    """Remove what an earlier `predict_to_folder` wrote into `out` (or left there when killed): its
    `NN_<slug>` folders, `summary.json` and hidden temporary files."""
    for entry in out.iterdir():
        if entry.is_dir() and not entry.is_symlink() and _RESULT_FOLDER.fullmatch(entry.name):
            shutil.rmtree(entry)
        elif entry.name == "summary.json" or (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            entry.unlink()
