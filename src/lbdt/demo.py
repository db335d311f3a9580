"""`lbdt demo`: a fresh synthetic clip, the shipped weights, a motion-dependent sentence, IoU against
the clip's known ground truth. Needs nothing from the network.

The clip comes from the synthetic benchmark's generator (`lbdt.data.synth.make_clip`) at the size and
speed the shipped model was trained on, with a seed the training never used. Its referred object is one of
the clip's *motion pair*: two shapes of identical appearance that differ only in how they move, so the
sentence cannot be resolved from one frame.

Beside it, in the same pass, the clip's first appearance sentence ("the big green square"): the case the
shipped model gets right, so the strip shows a success next to the harder motion case.

The default clip (`DEMO_SEED`) is a representative one, not a flattering one: the median of the shipped
model's motion IoU over clip seeds 0-23 (a "right vs left" pair, 0.45; its appearance sentence: 0.93).
`seed="random"` draws a fresh clip; any int picks that clip. The result carries what the model scores on
motion sentences in the benchmark (from its model card), so one clip's IoU is read against the model's average.
Predictions and truths are tinted in colours picked away from the clip's own (`SynthClip.palette`).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lbdt.data.synth import SPEED, make_clip
from lbdt.errors import LBDTError
from lbdt.evaluation.metrics import iou, mean_iou
from lbdt.evaluation.writers import OverlayVideoWriter, SentenceMaskWriter, drain
from lbdt.io import write_json
from lbdt.paths import check_output_dir
from lbdt.predictor import VideoSegmenter, notices_to_stderr
from lbdt.visualize import VideoWriter, highlight_colors, overlay, save_image, side_by_side, upscale

DEMO_FRAMES = 20
DEMO_SEED = 3  # median clip of seeds 0-23 for synthetic-tiny (IoU 0.452; 8 of 24 clips ~0.85, 16 ~0.45)
STRIP_ROWS = 4
DISPLAY_SCALE = 2  # the overlay video and the strip are drawn at 2x (nearest), shapes stay sharp
HIGHLIGHT_ALPHA = 0.7  # masks tinted in colours that are not in the scene (`lbdt.visualize.highlight_colors`)


@dataclass
class DemoResult:
    seed: int  # clip seed (pass it back as --seed to get the same clip)
    sentence: str  # the motion-dependent sentence that was segmented
    frames: int
    ious: list[float]  # per frame
    mean_iou: float  # over all frames
    mean_iou_full_cue: float  # over frames t >= k, whose reference frame t - k exists (not clamped)
    frame_gap: int
    out_dir: Path
    seconds: float
    benchmark_motion_iou: float | None  # the weights' mean IoU on the benchmark's motion sentences (model card)
    device: str = "cpu"  # where it ran
    precision: str = "fp32"  # the precision it ran in (lbdt.runtime)
    appearance_sentence: str = ""  # the clip's first appearance sentence, segmented in the same pass
    appearance_mean_iou: float = 0.0
    notices: list[str] = field(default_factory=list)  # printed before the work (device, demonstration model)


def run_demo(*, out_dir: str | os.PathLike = "out/demo", seed: int | str = DEMO_SEED, weights: str = "synthetic-tiny",
             device: str = "auto", precision: str = "auto", frames: int = DEMO_FRAMES) -> DemoResult:
    """Generate a clip, segment its motion-dependent sentence and one appearance sentence with `weights` (one
    pass over the clip), write `out_dir/`: `clip.mp4` (the raw clip, at its own size), `overlay.mp4` (the motion
    sentence), `masks/<frame>.png` (its masks), `strip.png` (frame | prediction | truth of each sentence for a
    few frames, in highlight colours that are not in the scene) and `summary.json`. Returns the per-frame and
    mean IoU. `seed`: a clip seed, or "random". The segmenter's notices (device, demonstration model) are
    printed on stderr before the work (`lbdt.predictor.notices_to_stderr`)."""

    check_output_dir(out_dir)  # before any work (lbdt.paths)
    started = time.perf_counter()
    if seed == "random":
        seed = secrets.randbelow(2**31 - 1)
    given = seed
    try:
        seed = int(seed)
    except ValueError:
        seed = -1
    if seed < 0:  # checked before the weights are loaded
        raise LBDTError(f"--seed must be a non-negative integer or 'random', got {given!r}")
    with notices_to_stderr() as notices:
        segmenter = VideoSegmenter.from_pretrained(weights, device=device, precision=precision)
    size = segmenter.size
    speed = SPEED.get(segmenter.runnable.dataset, SPEED["a2d"]) * min(size)  # as in the training clips
    try:
        clip = make_clip(seed, frames=frames, size=size, speed=speed)
    except ValueError as e:
        raise LBDTError(f"cannot draw a {frames}-frame demo clip at {size[0]}x{size[1]}: {e}") from None
    pair = [i for i, o in enumerate(clip.objects) if o.sentence_type == "motion"]
    target = next((i for i in pair if clip.objects[i].motion != "still"), pair[0])  # prefer the one that moves
    single = next(i for i, o in enumerate(clip.objects) if o.sentence_type == "appearance")  # the first one
    sentences = [clip.objects[target].sentence, clip.objects[single].sentence]
    with notices_to_stderr() as more:  # words the model does not know (none for synthetic-tiny)
        stream = segmenter.segment_many(clip.frames, sentences, return_frames=True)
    notices += more
    prediction_color, truth_color = highlight_colors(clip.palette, 2)

    out = Path(out_dir)
    with VideoWriter(out / "clip.mp4", fps=8) as raw:  # the input itself, for `lbdt predict` and the README
        for frame in clip.frames:
            raw.write(frame)
    ious: list[list[float]] = [[], []]
    rows_at = set(np.linspace(min(segmenter.frame_gap, frames - 1), frames - 1, STRIP_ROWS).round().astype(int).tolist())
    rows = []
    masks = SentenceMaskWriter(out, ["masks", "appearance_masks"])  # per sentence
    video = OverlayVideoWriter(out / "overlay.mp4", fps=8, sentences=[0], scale=DISPLAY_SCALE,
                               caption=lambda pred: f"{sentences[0]}  (frame {pred.frame_index})",
                               colors=[prediction_color], alpha=HIGHLIGHT_ALPHA)

    def tint(frame: np.ndarray, mask: np.ndarray, color) -> np.ndarray:
        return overlay(frame, upscale(mask, DISPLAY_SCALE), color=color, alpha=HIGHLIGHT_ALPHA, outline=DISPLAY_SCALE)

    def frames_and_strip(stream):  # IoU per frame and sentence, and the strip's rows, as the predictions go by
        for preds in stream:
            t = preds[0].frame_index
            for j, pred in enumerate(preds):
                ious[j].append(iou(pred.mask, clip.masks[(target, single)[j]][t]))
            if t in rows_at:
                frame = upscale(preds[0].frame, DISPLAY_SCALE)
                truths = [clip.masks[i][t] for i in (target, single)]
                rows.append([frame, tint(frame, preds[0].mask, prediction_color), tint(frame, truths[0], truth_color),
                             tint(frame, preds[1].mask, prediction_color), tint(frame, truths[1], truth_color)])
            yield preds

    drain(frames_and_strip(stream), [masks, video])
    titles = [f"frame ({', '.join(str(t) for t in sorted(rows_at))})", "motion: prediction", "motion: truth",
              "appearance: prediction", "appearance: truth"]
    heading = (f'seed {seed}   motion: "{sentences[0]}" (mean IoU {mean_iou(ious[0]):.2f})   '
               f'appearance: "{sentences[1]}" (mean IoU {mean_iou(ious[1]):.2f})')
    save_image(out / "strip.png", side_by_side(rows, titles=titles, heading=heading))
    k = segmenter.frame_gap
    motion = ious[0]
    result = DemoResult(seed=seed, sentence=sentences[0], frames=len(motion), ious=motion, mean_iou=mean_iou(motion),
                        mean_iou_full_cue=mean_iou(motion[k:] or motion), frame_gap=k, out_dir=out,
                        seconds=time.perf_counter() - started,
                        benchmark_motion_iou=_benchmark_motion_iou(segmenter.runnable.card),
                        device=str(segmenter.device), precision=segmenter.precision.name,
                        appearance_sentence=sentences[1], appearance_mean_iou=mean_iou(ious[1]), notices=notices)
    write_json(out / "summary.json", {
        "seed": seed, "sentence": sentences[0], "sentence_type": "motion", "weights": segmenter.source,
        "device": str(segmenter.device), **segmenter.precision.as_dict(),
        "frames": result.frames, "size": list(size), "frame_gap": segmenter.frame_gap,
        "mean_iou": result.mean_iou, "mean_iou_from_frame_k": result.mean_iou_full_cue, "iou_per_frame": motion,
        "appearance": {"sentence": sentences[1], "mean_iou": result.appearance_mean_iou, "iou_per_frame": ious[1]},
        "benchmark_motion_mean_iou": result.benchmark_motion_iou, "notices": notices,
        "colors": {"prediction": prediction_color, "truth": truth_color},
        "clip": "clip.mp4", "seconds": round(result.seconds, 3)})
    return result


def _benchmark_motion_iou(card: dict) -> float | None:
    """The weights' mean IoU on the synthetic benchmark's motion sentences, from their model card (None when
    they have no card with that number)."""
    return card.get("metrics", {}).get("synthetic_test_by_sentence_type", {}).get("motion_mean_iou")
