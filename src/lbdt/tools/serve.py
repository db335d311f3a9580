"""`lbdt serve`: a local web page (Gradio) where a video and a few sentences go in and the masks come out.

Two layers:

* `segment_clip(segmenter, video, sentences, out_dir=...)` is plain library code (no Gradio): it runs a
  `VideoSegmenter` over the video (every `stride`-th frame) and writes one overlay video with every
  sentence's mask in its own colour (H.264 / yuv420p through `lbdt.visualize.VideoWriter`, so browsers
  play it) and a zip of per-frame 0/255 mask PNGs (`<NN>_<sentence>/<frame>.png`, as `lbdt predict`
  names its folders); it returns the per-frame mask area and score of each sentence and the warnings
  (unknown words, empty masks).
* `build_app(weights, ...)` wraps it in a Gradio page; `ServeApp.start()` launches it and `serve()` is
  `lbdt serve`.

Safety: the server binds to 127.0.0.1 unless told otherwise; Gradio's upload folder, its examples cache
and every output live in the app's own temporary folder, the only place files are served from
(`allowed_paths` is that folder and nothing else; `GRADIO_TEMP_DIR` points into it); uploads over
`max_upload_mb` are refused by Gradio before they are stored; one job runs at a time (queue,
concurrency 1, at most `max_queue` waiting). Every request is bounded (`Limits`): sentences per request,
frame size (the size a video declares is checked before decoding, by `lbdt.data.video`), frame count and
duration; a refused request is one message and the next one is served. `check_address` tries the host and
port before anything is loaded, so a port in use or a host that is not on this machine is one line.
Gradio's analytics are switched off and the page uses system fonts, so nothing is fetched from the network.
"""

from __future__ import annotations

import copy
import errno
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lbdt.data.synth import SPEED, make_clip
from lbdt.data.video import VideoFrame, VideoReader, open_video
from lbdt.errors import LBDTError, LBDTNotice
from lbdt.evaluation.writers import MaskZipWriter, OverlayVideoWriter, SentenceStats, drain
from lbdt.predictor import VideoSegmenter, sentence_folders
from lbdt.runtime import announce
from lbdt.visualize import VideoWriter
from lbdt.words import check_sentence, tokenize

UPLOAD_TYPES = (".mp4", ".webm", ".mov", ".gif")
INSTALL_HINT = "lbdt serve needs Gradio: pip install 'lbdt[serve]'"
EXAMPLE_SEED = 5  # the bundled synthetic example clip (drawn with lbdt.data.synth at start-up)
EXAMPLE_FRAMES = 20
EXAMPLE_FPS = 8.0
EXAMPLE_SCALE = 2  # the example clip is written at 2x the model size (nearest), so its caption is legible


MAX_TEXT_CHARS = 10_000  # a request's sentences together (the model reads at most N tokens of each anyway)
STRIDES = (1, 10)  # the page's frame-stride slider


@dataclass(frozen=True)
class Limits:
    """What one job may ask for, and how many may wait. Each field is checked here (type, range), so a bad
    `--max-...` option or `Limits(...)` argument is one line naming it."""

    max_upload_mb: float = 50.0  # largest accepted upload (Gradio refuses bigger files before storing them)
    max_seconds: float = 60.0  # longest accepted video (frames / fps)
    max_frames: int = 1800  # most frames decoded per video (60 s at 30 fps)
    max_frame_pixels: int = 3840 * 2160  # largest frame (width × height; 4K UHD)
    max_sentences: int = 8  # sentences per request
    max_queue: int = 16  # requests waiting behind the running one; more are refused ("queue is full")

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
                raise LBDTError(f"{_option(name)}: must be a finite number > 0, got {value!r}")
        for name in ("max_frames", "max_frame_pixels", "max_sentences", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LBDTError(f"{_option(name)}: must be a whole number >= 1, got {value!r}")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_address(host: str, port: int) -> None:
    """Bind a socket to (`host`, `port`) and let it go: a host name that does not resolve, an address that is
    not on this machine, a port in use or one that needs privileges is one line, before any work."""
    if not isinstance(host, str) or not host.strip():
        raise LBDTError(f"--host: must be an address of this machine (127.0.0.1, 0.0.0.0, ...), got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise LBDTError(f"--port: must be a whole number in 1..65535, got {port!r}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise LBDTError(f"--host {host}: unknown host name or address ({e})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise LBDTError(f"--port {port}: already in use on {host} (another server listens there; "
                                "choose another --port)") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise LBDTError(f"--host {host}: not an address of this machine (127.0.0.1: this machine only; "
                                "0.0.0.0: every interface)") from None
            if e.errno == errno.EACCES:
                raise LBDTError(f"--port {port}: permission denied on {host} (ports below 1024 need "
                                "administrator rights)") from None
            raise LBDTError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None


@dataclass
class ClipResult:
    """What `segment_clip` wrote and measured."""

    video: Path  # overlay mp4 (H.264, yuv420p), every sentence's mask in `pick_color(j)`
    masks_zip: Path  # <NN>_<sentence>/<frame>.png, 0/255, original size
    sentences: list[str]
    frame_ids: list[str]  # the segmented frames (every stride-th frame of the video)
    fps: float  # of the overlay video: the source fps / stride
    size: tuple[int, int]  # (H0, W0) of the frames
    area: list[list[float]]  # [sentence][frame] foreground fraction of the mask
    score: list[list[float]]  # [sentence][frame] mean probability inside the mask (0 when empty)
    warnings: list[str] = field(default_factory=list)


def parse_sentences(text: str, max_sentences: int | None = None) -> list[str]:
    """One sentence per non-blank line; an error when there is none, when one has no word, when there are
    more than `max_sentences`, or when the text is over `MAX_TEXT_CHARS` characters."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise LBDTError(f"sentences: must be text, got {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise LBDTError(f"sentences: {len(text):,} characters, over the limit of {MAX_TEXT_CHARS:,} per request")
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise LBDTError("no sentence: type one sentence per line describing the object to segment")
    if max_sentences is not None and len(sentences) > max_sentences:
        raise LBDTError(f"sentences: {len(sentences)} lines, over the limit of {max_sentences} per request")
    for j, sentence in enumerate(sentences):
        check_sentence(sentence, f"sentence {j + 1}")
    return sentences


def word_notices(segmenter, sentences: Sequence[str]) -> list[str]:
    """Per sentence: the words the model has no vector for (read as zeros) and the tokens cut because the
    sentence is longer than the model's `max_words` tokens. Shown as the sentences are typed, and with the result."""
    return [notice for j, sentence in enumerate(sentences) for notice in _sentence_notices(segmenter, j, sentence)]


def _sentence_notices(segmenter, j: int, sentence: str) -> list[str]:
    notices = []
    tokens = tokenize(sentence, None)
    if len(tokens) > segmenter.max_words:
        notices.append(f"sentence {j + 1}: only its first {segmenter.max_words} of {len(tokens)} tokens reach "
                       f"the model; cut: {' '.join(tokens[segmenter.max_words:])!r}")
    unknown = segmenter.word_vectors.coverage(sentence, max_len=segmenter.max_words).unknown
    if unknown:
        notices.append(f"sentence {j + 1}: the model does not know {', '.join(repr(w) for w in unknown)} "
                       "(read as zero vectors)")
    return notices


def runtime_line(segmenter) -> str:
    """How the weights run, in words: `cpu in fp32 (requested)`."""
    return f"{segmenter.device} in {segmenter.precision.name} ({segmenter.precision.reason})"


def model_warnings(segmenter) -> list[str]:
    """Warnings about the weights themselves, from their model card's notice (shown once, at the top of the page)."""
    notice = segmenter.runnable.card.get("notice")
    return [" ".join(str(notice).split())] if notice else []


def segment_clip(segmenter, video: str | os.PathLike, sentences: Sequence[str], *, out_dir: str | os.PathLike,
                 threshold: float | None = None, stride: int = 1, max_seconds: float | None = None,
                 max_frames: int | None = None, max_frame_pixels: int | None = None,
                 progress: Callable[[int, int | None], None] | None = None) -> ClipResult:
    """Segment every `stride`-th frame of `video` once per sentence with `segmenter` (a `VideoSegmenter`,
    left unchanged) and write `out_dir/overlay.mp4` and `out_dir/masks.zip` (both atomically).

    With a stride s the reference frame stays about k *source* frames back: the segmenter's gap k becomes
    round(k / s) strided frames (at least 1 when k > 0). `max_seconds` bounds the video's duration
    (checked before decoding when the container gives its frame count, else while decoding), `max_frames`
    the frames decoded (likewise) and `max_frame_pixels` their size (`open_video`'s `max_pixels`: the declared
    size before decoding). A video that decodes to fewer frames than it declares adds a warning.
    `progress(done, total)` is called after every frame (total None when unknown).
    """

    sentences = list(sentences)
    if not sentences:
        raise LBDTError("no sentence: type one sentence per line describing the object to segment")
    if isinstance(stride, bool) or not isinstance(stride, (int, float)) or not math.isfinite(stride) \
            or int(stride) != stride or stride < 1:
        raise LBDTError(f"frame stride must be a whole number >= 1, got {stride}")
    stride = int(stride)
    job = copy.copy(segmenter)  # per-job threshold and gap; the model is shared
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise LBDTError(f"threshold must be in [0, 1], got {threshold}")
        job.threshold = float(threshold)
    if segmenter.frame_gap > 0:
        job.frame_gap = max(1, round(segmenter.frame_gap / stride))
    source = open_video(video, max_pixels=max_frame_pixels)
    name = Path(video).name
    fps = source.fps or 25.0
    if max_seconds is not None and source.num_frames and source.num_frames / fps > max_seconds:
        raise LBDTError(f"{name}: {source.num_frames / fps:.1f} s long, over the {max_seconds:g} s limit")
    if max_frames is not None and source.num_frames and source.num_frames > max_frames:
        raise LBDTError(f"{name}: {source.num_frames} frames, over the limit of {max_frames} frames")
    total = math.ceil(source.num_frames / stride) if source.num_frames else None

    def strided():  # renumbered 0, 1, 2, ... (the segmenter's t - k counts kept frames); source frame ids kept
        for frame in source:
            if max_seconds is not None and frame.index / fps >= max_seconds:
                raise LBDTError(f"{name}: longer than the {max_seconds:g} s limit")
            if max_frames is not None and frame.index >= max_frames:
                raise LBDTError(f"{name}: more than the limit of {max_frames} frames")
            if frame.index % stride == 0:
                yield VideoFrame(frame.index // stride, frame.frame_id, frame.image)

    reader = VideoReader(name=source.name, frames=strided, fps=fps / stride, num_frames=total, reiterable=True)
    stream = job.segment_many(reader, sentences, return_frames=True)  # sentence errors before any decoding

    out = Path(out_dir)
    folders = sentence_folders(sentences)
    caption = sentences[0] if len(sentences) == 1 else "  ".join(f"[{j + 1}] {s}" for j, s in enumerate(sentences))
    stats = SentenceStats(sentences)
    sinks = [OverlayVideoWriter(out / "overlay.mp4", fps=fps / stride, sentences=range(len(sentences)),
                                caption=caption), MaskZipWriter(out / "masks.zip", folders), stats]
    drain(stream, sinks, after_frame=None if progress is None else lambda n: progress(n, total))
    area, score, frame_ids = stats.foreground, stats.score, stats.frame_ids
    size = next(iter(stats.sizes), (0, 0))
    warnings = []
    for j, sentence in enumerate(sentences):
        warnings += _sentence_notices(job, j, sentence)
        if stats.all_empty(j):
            warnings.append(f"sentence {j + 1}: the mask is empty on every frame")
    if source.short_by:
        warnings.append(f"{name}: decoded {source.decoded_frames} of the {source.num_frames} frames it declares "
                        "(truncated or damaged file?); the missing frames are not segmented")
    return ClipResult(video=out / "overlay.mp4", masks_zip=out / "masks.zip", sentences=sentences,
                      frame_ids=frame_ids, fps=fps / stride, size=tuple(size), area=area, score=score,
                      warnings=warnings)


def write_example(segmenter, folder: str | os.PathLike) -> tuple[Path, list[str]]:
    """The bundled example: a synthetic clip (`lbdt.data.synth.make_clip`, seed `EXAMPLE_SEED`) at the model's
    size and training speed, written as H.264 mp4 under `folder`; returns its path and two of its sentences
    (a motion-dependent one and an appearance one)."""

    size = segmenter.size
    speed = SPEED.get(segmenter.runnable.dataset, SPEED["a2d"]) * min(size)
    clip = make_clip(EXAMPLE_SEED, frames=EXAMPLE_FRAMES, size=size, speed=speed)
    path = Path(folder) / "synthetic-example.mp4"
    with VideoWriter(path, fps=EXAMPLE_FPS) as writer:
        for frame in clip.frames:
            writer.write(np.repeat(np.repeat(frame, EXAMPLE_SCALE, axis=0), EXAMPLE_SCALE, axis=1))
    motion = next(o.sentence for o in clip.objects if o.sentence_type == "motion" and o.motion != "still")
    appearance = next(o.sentence for o in clip.objects if o.sentence_type == "appearance")
    return path, [motion, appearance]


def describe(segmenter) -> str:
    """Markdown: what the weights are and how they run (the page's model card)."""
    info = segmenter.runnable
    rows = [("weights", f"`{segmenter.source}`"), ("format", info.kind), ("network", info.variant),
            ("dataset format", info.dataset or "unknown")]
    if info.card.get("title"):
        rows.append(("model card", str(info.card["title"])))
    words = f"{len(segmenter.word_vectors):,} words" if segmenter.word_vectors is not None else "none"
    rows += [("input size (H×W)", f"{segmenter.size[0]}×{segmenter.size[1]}"),
             ("reference frame", f"t − {segmenter.frame_gap}"),
             ("sentence length", f"{segmenter.max_words} tokens"),
             ("word table", words),
             ("device", str(segmenter.device)),
             ("precision", f"{segmenter.precision.name} ({segmenter.precision.reason})")]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


# ---------------------------------------------------------------- the Gradio page
@dataclass
class ServeApp:
    """A built page: `start()` serves it, `close()` stops it and removes its temporary folder."""

    blocks: Any  # gradio.Blocks
    workdir: Path  # the app's own temporary folder: uploads, examples, outputs
    limits: Limits
    segmenter: Any  # VideoSegmenter
    url: str = ""
    _owns_workdir: bool = False

    def start(self, host: str = "127.0.0.1", port: int = 7860) -> str:
        """Launch the server in a background thread; returns its URL. The address is tried first
        (`check_address`): a port in use or a host not on this machine is one `LBDTError`."""
        import gradio as gr

        check_address(host, port)
        try:
            self._launch(gr, host, port)
        except OSError as e:  # taken between the check and the launch
            raise LBDTError(f"--host {host} --port {port}: cannot listen there ({e})") from None
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"
        return self.url

    def _launch(self, gr, host: str, port: int) -> None:
        self.blocks.launch(
            server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, share=False,
            show_error=True, ssr_mode=False, mcp_server=False, footer_links=[], enable_monitoring=False,
            max_file_size=int(self.limits.max_upload_mb * 1024 * 1024), allowed_paths=[str(self.workdir)],
            theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                    font_mono=["ui-monospace", "monospace"]))

    def close(self) -> None:
        self.blocks.close()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _require_gradio():
    try:
        import gradio
    except ImportError:
        raise LBDTError(INSTALL_HINT) from None
    return gradio


def build_app(weights: str | os.PathLike = "synthetic-tiny", *, device: str = "auto", precision: str = "auto",
              limits: Limits | None = None, workdir: str | os.PathLike | None = None) -> ServeApp:
    """Load `weights` once and build the page. `workdir`: the app's temporary folder (a fresh one under the
    system temp folder by default, removed by `close()`). Sets `GRADIO_TEMP_DIR` (uploads) and
    `GRADIO_EXAMPLES_CACHE` inside it, and `GRADIO_ANALYTICS_ENABLED=False`, for this process."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    gr = _require_gradio()

    limits = limits or Limits()
    owns = workdir is None
    root = Path(tempfile.mkdtemp(prefix="lbdt-serve-") if owns else workdir).resolve()
    os.environ["GRADIO_TEMP_DIR"] = str(root / "uploads")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(root / "examples-cache")
    with warnings.catch_warnings():  # the page and `lbdt serve`'s start-up lines say these (runtime_line, notes)
        warnings.simplefilter("ignore", LBDTNotice)
        segmenter = VideoSegmenter.from_pretrained(weights, device=device, precision=precision)
    example, example_sentences = write_example(segmenter, root / "examples")
    jobs = root / "jobs"

    def run(upload, text, threshold, stride, progress=gr.Progress()):  # noqa: B008 -- Gradio's idiom
        try:
            if not upload:
                raise LBDTError("no video: upload one (mp4, webm, mov, gif) or pick the example below")
            path = Path(upload)
            sentences = parse_sentences(text, limits.max_sentences)
            shutil.rmtree(jobs, ignore_errors=True)  # the last job's files were copied to Gradio's cache
            jobs.mkdir(parents=True)
            progress(0, desc="reading the video")
            result = segment_clip(
                segmenter, path, sentences, out_dir=tempfile.mkdtemp(dir=jobs),
                threshold=float(threshold), stride=int(stride), max_seconds=limits.max_seconds,
                max_frames=limits.max_frames, max_frame_pixels=limits.max_frame_pixels,
                progress=lambda done, total: progress((done, total) if total else None, desc="segmenting",
                                                      unit="frames"))
        except LBDTError as e:
            raise gr.Error(str(e).replace(str(upload), Path(upload).name) if upload else str(e),
                           print_exception=False) from None
        return (str(result.video), str(result.masks_zip), _plot_table(result, result.area, 100.0),
                _plot_table(result, result.score, 1.0), _notes(result, segmenter))

    def preview(text):  # the word notices while the sentences are typed, before any work
        try:
            sentences = parse_sentences(text, limits.max_sentences)
        except LBDTError as e:
            return "" if not (text or "").strip() else f"**Note:** {e}"
        return "\n\n".join(f"**Note:** {n}" for n in word_notices(segmenter, sentences))

    with gr.Blocks(title="lbdt serve", analytics_enabled=False, delete_cache=(3600, 3600)) as blocks:
        gr.Markdown("# lbdt: segment what a sentence refers to in a video\n"
                    "Upload a short video (or pick the synthetic example), type one sentence per line, press "
                    "**Segment**. Each sentence's mask is drawn in its own colour.")
        with gr.Accordion("Model", open=False):
            gr.Markdown(describe(segmenter), elem_id="model-card")
        for warning in model_warnings(segmenter):
            gr.Markdown(f"**Note:** {warning}", elem_id="model-warning")
        gr.Markdown(f"Runs on {runtime_line(segmenter)}.", elem_id="runtime")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label=f"Video ({', '.join(t[1:] for t in UPLOAD_TYPES)}; at most "
                                 f"{limits.max_upload_mb:g} MB, {limits.max_seconds:g} s, {limits.max_frames} "
                                 f"frames)", file_types=list(UPLOAD_TYPES), elem_id="video-in")
                text = gr.Textbox(label=f"Sentences (one per line, at most {limits.max_sentences})", lines=3,
                                  elem_id="sentences", max_length=MAX_TEXT_CHARS,
                                  placeholder=f"Type what to segment, e.g. “{example_sentences[0]}”")
                words = gr.Markdown(elem_id="words")
                threshold = gr.Slider(0.05, 0.95, value=segmenter.threshold, step=0.05, label="Mask threshold")
                stride = gr.Slider(*STRIDES, value=1, step=1, label="Frame stride (segment every n-th frame)")
                button = gr.Button("Segment", variant="primary", elem_id="run")
                gr.Examples([[str(example), "\n".join(example_sentences)]], inputs=[upload, text],
                            label="Synthetic example (drawn at start-up)")
            with gr.Column():
                gr.Markdown("**Overlay**")  # a heading, not the video's label: that one sits over the caption
                video = gr.Video(label="Overlay", show_label=False, elem_id="overlay", autoplay=True, loop=True,
                                 interactive=False)
                masks = gr.File(label="Masks (zip of per-frame PNGs)", elem_id="masks")
                notes = gr.Markdown(elem_id="notes")
                area = gr.LinePlot(x="frame", y="value", color="sentence", title="Mask area (% of the frame)",
                                   y_title="% of the frame", elem_id="area", visible=False)  # shown with a result
                score = gr.LinePlot(x="frame", y="value", color="sentence", title="Mask score (mean probability)",
                                    y_title="score", y_lim=[0, 1], elem_id="score", visible=False)
        upload.data_model = _OneLineModel(upload.data_model, "video")  # a client may send anything: one
        _check_before(upload, _check_upload)  # message each, not Gradio's multi-line one and a traceback
        _check_before(text, lambda v: isinstance(v, (str, type(None))) or parse_sentences(v))  # not text: refused
        _check_before(threshold, lambda v: _request_number(v, "threshold", threshold.minimum, threshold.maximum))
        _check_before(stride, lambda v: _request_number(v, "frame stride", *STRIDES, whole=True))
        button.click(run, [upload, text, threshold, stride], [video, masks, area, score, notes],
                     api_name="segment", concurrency_limit=1).success(
            lambda: (gr.LinePlot(visible=True), gr.LinePlot(visible=True)), None, [area, score], api_name=False,
            queue=False)  # the plots appear with the first result, not as empty boxes before it
        text.change(preview, [text], [words], api_name=False, queue=False, show_progress="hidden",
                    trigger_mode="always_last")
    blocks.queue(default_concurrency_limit=1, max_size=limits.max_queue)
    return ServeApp(blocks=blocks, workdir=root, limits=limits, segmenter=segmenter, _owns_workdir=owns)


def _plot_table(result: ClipResult, values: list[list[float]], scale: float):
    """A long-format table (frame, value, sentence) for `gr.LinePlot`."""
    import pandas as pd

    rows = [{"frame": t, "value": v * scale, "sentence": f"[{j + 1}] {s}"}
            for j, s in enumerate(result.sentences) for t, v in enumerate(values[j])]
    return pd.DataFrame(rows)


def _check_before(component, check: Callable[[Any], Any]) -> None:
    """Run `check(payload)` before Gradio's own preprocessing of what a request sends for `component`: Gradio
    answers a value of the wrong type with a multi-line message and a server-side traceback; an `LBDTError`
    from `check` becomes one message on the page (or for the client)."""
    import gradio as gr

    original = component.preprocess

    def preprocess(payload):
        try:
            check(payload)
        except LBDTError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return original(payload)

    component.preprocess = preprocess


class _OneLineModel:
    """A component's Gradio data model (e.g. `FileData`) whose validation of a request's value fails with one
    message naming the input (Gradio's own is pydantic's multi-line report plus a server-side traceback)."""

    def __init__(self, model: Any, name: str):
        self._model, self._name = model, name

    def __getattr__(self, attribute: str) -> Any:  # schema, from_json, ...: the model's own
        return getattr(self._model, attribute)

    def model_validate(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        import gradio as gr

        try:
            return self._model.model_validate(value, *args, **kwargs)
        except ValueError:  # pydantic's ValidationError
            raise gr.Error(f"{self._name}: expected an uploaded file, got {type(value).__name__} "
                           f"{str(value)[:40]!r}", print_exception=False) from None


def _check_upload(payload: Any) -> None:
    """The video a request names (Gradio's `FileData`, validated by `_OneLineModel`): a type the page accepts,
    by the name the client gave and by the stored file's name."""
    if payload is None:
        return  # `run` says "no video"
    name = Path(payload.orig_name or payload.path).name
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_TYPES or Path(payload.path).suffix.lower() not in UPLOAD_TYPES:
        raise LBDTError(f"{name}: unsupported file type {suffix or '(none)'!r} "
                        f"(expected {', '.join(t[1:] for t in UPLOAD_TYPES)})")


def _request_number(value: Any, name: str, low: float, high: float, *, whole: bool = False) -> float:
    """A number sent with a request (the page's sliders, or any client): in [low, high], whole if asked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
            or (whole and value != int(value)):
        raise LBDTError(f"{name}: must be a {'whole ' if whole else ''}number in {low:g}..{high:g}, got {value!r}")
    return float(value)


def _notes(result: ClipResult, segmenter) -> str:
    h, w = result.size
    lines = [f"{len(result.frame_ids)} frames at {w}×{h}, {result.fps:g} fps, on {runtime_line(segmenter)}."]
    lines += [f"**Warning:** {w_}" for w_ in result.warnings]
    return "\n\n".join(lines)


def serve(weights: str | os.PathLike = "synthetic-tiny", *, host: str = "127.0.0.1", port: int = 7860,
          device: str = "auto", precision: str = "auto", limits: Limits | None = None) -> None:
    """`lbdt serve`: build the page for `weights` and serve it until interrupted (Ctrl+C). The address and
    the limits are checked before the weights are loaded; the notices (demo model, device and precision)
    are printed before the page is served."""

    def stop(signum, frame):  # SIGTERM ends the server like Ctrl+C, so the temporary folder is removed
        raise KeyboardInterrupt

    limits = limits or Limits()
    check_address(host, port)
    signal.signal(signal.SIGTERM, stop)
    app = build_app(weights, device=device, precision=precision, limits=limits)
    try:
        announce(app.segmenter.precision, app.segmenter.device)
        for warning in model_warnings(app.segmenter):
            print(f"lbdt: note: {warning}", file=sys.stderr)
        url = app.start(host, port)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(f"lbdt serve: listening on {host}: anyone who can reach this machine can use the page")
        print(f"lbdt serve: {app.segmenter.source} on {runtime_line(app.segmenter)} at {url} (Ctrl+C to stop)",
              flush=True)
        app.blocks.block_thread()
    finally:
        app.close()
