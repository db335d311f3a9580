"""`lbdt benchmark`: how fast a model runs here, and how close that is to what this machine can do.

One run measures, on synthetic inputs:

* parameters, MACs and FLOPs per frame (`torch.utils.flop_counter`; FLOPs = 2 x MACs);
* the machine's own matrix-multiply rate per precision (square `torch.mm`, best of several, sampled
  again after every inference measurement so a busy moment does not set it);
* inference frames/s at each batch size: the plain model (`forward`, fp32, as built) and the fast path
  (`engine.fast`: folded BatchNorm, channels-last, the sentence encoded once, autocast) per precision,
  with the achieved share = frames/s x FLOPs per frame / measured matmul FLOP/s;
* with `onnxruntime`: the same model exported to ONNX (`lbdt.export`) and run by ONNX Runtime (fp32,
  as many intra-op threads as PyTorch uses), one row per batch size (path "onnxrt") next to the PyTorch rows;
* whole-video streaming frames/s through `VideoSegmenter` (decode, resize, model, upsampling, masks);
* sentences per frame (E = 1, 4, 16 by default): (frame, sentence) pairs/s with the sentence-independent
  trunk shared (`LBDT.segment_many`) vs one `segment` call per sentence on the fast path, and the plain
  model as built (`forward` per sentence, fp32: the original's computation), with the ratios between them;
* data-loader samples/s on the synthetic benchmark, when `lbdt.engine.datasets` exists;
* training step time (forward + backward + AdamW) when asked;
* peak memory of each measurement (CUDA: `max_memory_allocated`; CPU: peak resident set growth).

Timings: warm-up iterations first, then the median of `repeats` timed iterations, under
`torch.inference_mode()` for inference. Results are written as JSON (atomically) and as a table.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import gc
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from lbdt.config import DataConfig
from lbdt.cpu_load import load_warning, read_load
from lbdt.data.synth import WORD_VECTORS, make_clip, vocabulary, write_benchmark
from lbdt.engine import fast
from lbdt.engine.datasets import build_dataset, make_loader
from lbdt.errors import LBDTError, LBDTNotice
from lbdt.export import export_onnx, require
from lbdt.io import write_text
from lbdt.losses import segmentation_loss
from lbdt.models.build import build_model
from lbdt.onnx_backend import OnnxRuntimeModel
from lbdt.paths import check_output_file
from lbdt.predictor import VideoSegmenter
from lbdt.runtime import (
    PRECISIONS,
    autocast,
    cpu_family_model,
    cpu_features,
    resolve_device,
    resolve_precision,
)
from lbdt.words import WordVectors

N_WORDS = 25  # tokens per sentence
N_REAL_WORDS = 8  # real (unpadded) tokens in the synthetic sentence


@dataclass(frozen=True)
class BenchmarkSettings:
    """What `run_benchmark` measures."""

    model: str = "lbdt4"  # variant name (lbdt.models.build.VARIANTS)
    size: tuple[int, int] = (320, 320)  # (H, W) model input
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # fp32 / bf16 / fp16 (fp16 is reported n/a off CUDA); "machine" = what `auto` picks here, plus fp32
    precisions: tuple[str, ...] = ("machine",)
    batches: tuple[int, ...] = (1, 8)  # inference batch sizes
    frames: int = 16  # streaming video length (0 = skip streaming)
    warmup: int = 1  # untimed iterations before each measurement
    repeats: int = 3  # timed iterations; the median is reported
    train_step: bool = False  # also time forward + backward + AdamW
    train_batch: int = 2  # batch of the training step
    compile: bool = False  # torch.compile the fast path
    threads: int | None = None  # torch.set_num_threads; None = leave as it is
    matmul_sizes: tuple[int, ...] = (2048, 3072)  # square matmul sizes for the machine rate
    loader_samples: int = 48  # samples read from the data loader (0 = skip)
    loader_workers: int = 2  # DataLoader worker processes
    onnxruntime: bool = False  # also export the model and time ONNX Runtime (fp32) at each batch size
    sentences: tuple[int, ...] = (1, 4, 16)  # sentences per frame for the shared-trunk rows (() = skip)
    sentence_batch: int = 2  # frames per model call in the sentence rows


def quick_settings(settings: BenchmarkSettings) -> BenchmarkSettings:
    """A short run (smoke test, CI): batches capped at 2, 1 repeat, a 4-frame video, small matmuls."""
    return replace(settings, batches=tuple(sorted({min(b, 2) for b in settings.batches})), frames=min(settings.frames, 4),
                   warmup=1, repeats=1, train_batch=min(settings.train_batch, 1), matmul_sizes=(1024,),
                   loader_samples=min(settings.loader_samples, 8),
                   sentences=tuple(sorted({min(e, 4) for e in settings.sentences})),
                   sentence_batch=min(settings.sentence_batch, 2))


# ---------------------------------------------------------------- machine


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model, cores, threads, torch build, accelerator; the load average says how busy the machine was."""
    cpu = cpu_features()
    info: dict[str, Any] = {
        "cpu_model": cpu.name,
        "cpu_family_model": cpu_family_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_bf16_instructions": sorted(cpu.flags & {"avx512_bf16", "amx_bf16", "amx_tile", "bf16"}),
        "cpu_native_bf16": cpu.native_bf16,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], *, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of `fn` for `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_rate(device: torch.device, precision: str, *, sizes: tuple[int, ...] = (2048, 3072),
                repeats: int = 4) -> float:
    """The best FLOP/s of square matrix products (2 n^3 FLOPs) over `sizes`, after a warm-up product: `torch.mm`,
    and for fp32 on a CPU also oneDNN's product where the fast path uses it (`fast.onednn_status`), since
    BLAS and oneDNN can differ by 2x on one machine (MKL's sgemm on AMD EPYC)."""
    dtype = PRECISIONS[precision]
    onednn = device.type == "cpu" and precision == "fp32" and fast.onednn_status()[0]
    best = 0.0
    gen = torch.Generator(device="cpu").manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device, dtype)
        b = torch.randn(n, n, generator=gen).to(device, dtype)
        inner = max(1, int(2e12 // (2 * n**3))) if device.type == "cuda" else 1  # GPU: long enough to time

        def products(a: Tensor = a, b: Tensor = b, inner: int = inner) -> None:
            for _ in range(inner):
                torch.mm(a, b)

        steps = [products]
        if onednn:
            steps.append(functools.partial(fast.OneDNNLinear(b.T.contiguous(), None), a))  # a @ b
        for step in steps:
            times = _time(step, device=device, warmup=1, repeats=repeats)
            best = max(best, inner * 2 * n**3 / min(times))
    return best


# ---------------------------------------------------------------- memory


def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc `malloc_trim`), so the next block's growth is visible."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Yields a dict whose "peak_mib" is filled on exit.

    CUDA: `torch.cuda.max_memory_allocated` during the block. CPU: growth of the peak resident set
    (VmHWM, reset through /proc/self/clear_refs) over the resident set at entry, after freed heap memory
    went back to the OS; None where the kernel offers neither.
    """
    out: dict[str, float | None] = {"peak_mib": None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    _release_free_memory()
    base = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        resettable = True
    except OSError:
        resettable = False
    yield out
    peak = _status_kib("VmHWM")
    if resettable and base is not None and peak is not None:
        out["peak_mib"] = max(0, peak - base) / 1024


# ---------------------------------------------------------------- inputs


def synthetic_inputs(batch: int, size: tuple[int, int], device: torch.device,
                     seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Deterministic (frame, ref_frame [B,3,H,W], word_vectors [B,N,300], word_mask [B,N])."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    frame = torch.randn(batch, 3, h, w, generator=gen)
    ref = frame + 0.3 * torch.randn(batch, 3, h, w, generator=gen)
    words = torch.randn(batch, N_WORDS, 300, generator=gen) / 300**0.5
    mask = torch.zeros(batch, N_WORDS)
    mask[:, :N_REAL_WORDS] = 1
    words[:, N_REAL_WORDS:] = 0
    return frame.to(device), ref.to(device), words.to(device), mask.to(device)


# ---------------------------------------------------------------- measurements


def count_flops(model: torch.nn.Module, size: tuple[int, int]) -> int:
    """FLOPs of one frame's `segment` (batch 1, fp32, CPU copy not needed: counted on the model's device)."""

    device = next(model.parameters()).device
    frame, ref, words, mask = synthetic_inputs(1, size, device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode():
        text = model.encode_text(words, mask)
        with counter:
            model.segment(frame, ref, text)
    return int(counter.get_total_flops())


def _inference_row(model: torch.nn.Module, *, path: str, precision: str, batch: int, settings: BenchmarkSettings,
                   device: torch.device, channels_last: bool) -> dict[str, Any]:
    frame, ref, words, mask = synthetic_inputs(batch, settings.size, device)
    if channels_last:
        frame = fast.to_input(frame, device=device)
        ref = fast.to_input(ref, device=device)
    with torch.inference_mode(), autocast(device, precision):
        if path == "plain":
            def step() -> Tensor:
                return model(frame, ref, words, mask)
        else:
            text = model.encode_text(words[:1], mask[:1])  # once per video, broadcast over the batch

            def step() -> Tensor:
                return model.segment(frame, ref, text)
        with peak_memory(device) as mem:
            times = _time(step, device=device, warmup=settings.warmup, repeats=settings.repeats)
    median = statistics.median(times)
    return {"path": path, "precision": precision, "batch": batch, "seconds_per_batch": times,
            "median_seconds_per_batch": median, "frames_per_s": batch / median,
            "frames_per_s_best": batch / min(times), "peak_mib": mem["peak_mib"]}


def _sentence_rows(plain: torch.nn.Module, prepared: torch.nn.Module, *, precision: str, settings: BenchmarkSettings,
                   device: torch.device) -> list[dict[str, Any]]:
    """Per E in `settings.sentences`, E different sentences over one batch of frames, timed three ways:
    `shared` = `prepared.segment_many` (the trunk once), `separate` = E `prepared.segment` calls (sentences
    encoded once, as a video is), `plain` (fp32 only) = E calls of the plain model's `forward`.
    One warm-up call per path (its peak memory is reported), then `repeats` rounds timing each path once."""
    batch = settings.sentence_batch
    frame, ref, words, mask = synthetic_inputs(batch, settings.size, device)
    fast_frame, fast_ref = fast.to_input(frame, device=device), fast.to_input(ref, device=device)
    rows = []
    for e in settings.sentences:
        sentences = [torch.roll(words, shifts=j, dims=-1) for j in range(e)]  # E different sentences
        with torch.inference_mode(), autocast(device, precision):
            texts = [prepared.encode_text(w, mask) for w in sentences]
            paths: dict[str, Callable[[], Any]] = {
                "shared": lambda texts=texts: prepared.segment_many(fast_frame, fast_ref, texts),
                "separate": lambda texts=texts: [prepared.segment(fast_frame, fast_ref, t) for t in texts],
            }
            if precision == "fp32":
                paths["plain"] = lambda sentences=sentences: [plain(frame, ref, w, mask) for w in sentences]
            peak = {}
            for path, step in paths.items():  # one warm-up call each, which also gives its peak memory
                with peak_memory(device) as mem:
                    _time(step, device=device, warmup=0, repeats=1)
                peak[path] = mem["peak_mib"]
            times: dict[str, list[float]] = {path: [] for path in paths}
            for _ in range(settings.repeats):  # interleaved, so a busy moment slows every path alike
                for path, step in paths.items():
                    times[path] += _time(step, device=device, warmup=0, repeats=1)
        for path in paths:
            median = statistics.median(times[path])
            rows.append({"path": path, "precision": precision, "batch": batch, "sentences": e,
                         "seconds_per_call": times[path], "median_seconds_per_call": median,
                         "frame_sentences_per_s": batch * e / median,
                         "frame_sentences_per_s_best": batch * e / min(times[path]), "peak_mib": peak[path]})
    return rows


def sentence_ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Speed-ups per (frame, sentence) from the sentence rows, per precision and E: `shared_vs_separate`
    (what sharing the trunk buys) and, for fp32, `default_vs_plain` (lbdt's default inference path, the
    fast path with the trunk shared, against the plain model as built). From each path's fastest round
    (`frame_sentences_per_s_best`): other processes can only slow a call down, and the rounds interleave
    the paths, so the fastest rounds compare like with like."""
    rate = {(r["path"], r["precision"], r["sentences"]): r["frame_sentences_per_s_best"] for r in rows}
    out: dict[str, dict[str, float]] = {}
    for (path, p, e), shared in rate.items():
        if path != "shared":
            continue
        out.setdefault(f"shared_vs_separate_{p}", {})[str(e)] = shared / rate[("separate", p, e)]
        if ("plain", p, e) in rate:
            out.setdefault(f"default_vs_plain_{p}", {})[str(e)] = shared / rate[("plain", p, e)]
    return out


def _streaming_row(model: torch.nn.Module, *, precision: str, batch: int, settings: BenchmarkSettings,
                   device: torch.device) -> dict[str, Any]:

    clip = make_clip(0, frames=settings.frames, size=settings.size)
    video, sentence = clip.frames, clip.objects[0].sentence  # uint8 [T,H,W,3] at the model size
    with warnings.catch_warnings():  # its notices (device, precision) are the table's own columns
        warnings.simplefilter("ignore", LBDTNotice)
        segmenter = VideoSegmenter(model, device=device, precision=precision, size=settings.size, batch_size=batch,
                                   word_vectors=WordVectors.seeded(vocabulary(), dim=300))
        for _ in segmenter.segment(video[:batch], sentence):  # warm-up on one batch
            pass
    with peak_memory(device) as mem:
        _sync(device)
        start = time.perf_counter()
        n = sum(1 for _ in segmenter.segment(video, sentence))
        _sync(device)
        elapsed = time.perf_counter() - start
    return {"path": "stream", "precision": precision, "batch": batch, "frames": n, "seconds": elapsed,
            "frames_per_s": n / elapsed, "peak_mib": mem["peak_mib"]}


def _train_row(base: torch.nn.Module, *, precision: str, settings: BenchmarkSettings,
               device: torch.device) -> dict[str, Any]:

    model = copy.deepcopy(base).train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=5e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    frame, ref, words, mask = synthetic_inputs(settings.train_batch, settings.size, device)
    target = (frame[:, 0] > 0).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(frame, ref, words, mask)
        loss = segmentation_loss(logits, target)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    with peak_memory(device) as mem:
        times = _time(step, device=device, warmup=settings.warmup, repeats=settings.repeats)
    median = statistics.median(times)
    return {"path": "train", "precision": precision, "batch": settings.train_batch, "seconds_per_step": times,
            "median_seconds_per_step": median, "samples_per_s": settings.train_batch / median,
            "peak_mib": mem["peak_mib"]}


def _loader_row(settings: BenchmarkSettings) -> dict[str, Any]:
    """Training samples/s of `lbdt.engine.datasets` on a small synthetic benchmark (A2D layout, 96x128 frames)
    resized to `settings.size`, through a DataLoader with `settings.loader_workers` workers, batch 8."""


    with tempfile.TemporaryDirectory(prefix="lbdt-bench-") as tmp:
        root = Path(tmp) / "synthetic"
        write_benchmark(root, fmt="a2d", seed=0, videos=(max(1, settings.loader_samples // 6), 1, 1),
                        annotated=3, progress=False)
        cfg = DataConfig(dataset="a2d", root=str(root), size=settings.size, word_vectors=WORD_VECTORS,
                         num_workers=settings.loader_workers)
        dataset = build_dataset(cfg, "train", train=True)
        loader = make_loader(dataset, batch_size=8, shuffle=True, num_workers=cfg.num_workers)
        n = 0
        start = time.perf_counter()
        for batch in loader:
            n += len(batch)
            if n >= settings.loader_samples:
                break
        elapsed = time.perf_counter() - start
    return {"samples": n, "seconds": elapsed, "samples_per_s": n / elapsed, "size": list(settings.size),
            "workers": settings.loader_workers, "batch": 8,
            "note": "includes starting the worker processes; the synthetic frames are 96x128 PNG/JPEG"}


def _onnxruntime_model(base: torch.nn.Module, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """`base` exported to ONNX in a temporary folder and loaded into ONNX Runtime sessions with as many
    intra-op threads as PyTorch uses; returns the model and facts for the result (version, threads, export time)."""


    ort = require("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="lbdt-bench-onnx-") as tmp:
        start = time.perf_counter()
        export_onnx(base, tmp)  # exports a CPU copy
        exported = time.perf_counter() - start
        model = OnnxRuntimeModel(tmp, device=device, threads=torch.get_num_threads())  # sessions hold the graphs
    return model, {"version": ort.__version__, "threads": model.threads, "export_seconds": exported}


# ---------------------------------------------------------------- the run


def machine_precisions(requested: tuple[str, ...], device: torch.device) -> tuple[str, ...]:
    """The precisions to time: "machine" stands for what `auto` picks on `device` plus fp32 (so a CPU without
    native bf16 is not kept busy by emulated bf16 unless asked); unknown names are an error."""
    out: list[str] = []
    for p in requested:
        names = [resolve_precision("auto", device).name, "fp32"] if p == "machine" else [p]
        for name in names:
            if name not in PRECISIONS:
                raise LBDTError(f"unknown precision {name!r}; choose from machine, {', '.join(PRECISIONS)}")
            if name not in out:
                out.append(name)
    return tuple(out)


def run_benchmark(settings: BenchmarkSettings, *, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure everything `settings` asks for; returns the JSON-ready result (see module docstring)."""

    device = resolve_device(settings.device)
    if any(b < 1 for b in settings.batches) or settings.repeats < 1 or settings.warmup < 0:
        raise LBDTError("batches and repeats must be >= 1, warmup >= 0")
    precisions = machine_precisions(settings.precisions, device)
    settings = replace(settings, precisions=precisions)
    if any(e < 1 for e in settings.sentences) or settings.sentence_batch < 1:
        raise LBDTError("sentences per frame and the sentence batch must be >= 1")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    usable = [p for p in precisions if p != "fp16" or device.type == "cuda"]
    if settings.onnxruntime and "fp32" not in usable:
        raise LBDTError("the ONNX Runtime rows are fp32: include fp32 in --precision")
    notes: list[str] = [f"{p}: n/a on {device.type}" for p in precisions if p not in usable]
    chosen = {p: resolve_precision(p, device) for p in usable}
    notes += [f"{p}: {c.reason}" for p, c in chosen.items() if c.emulated]

    torch.manual_seed(0)
    base = build_model(settings.model).eval().to(device)
    progress("counting FLOPs")
    flops = count_flops(base, settings.size)
    params = sum(p.numel() for p in base.parameters())
    result: dict[str, Any] = {
        "settings": asdict(settings),
        "machine": machine_info(device),
        "model": {"name": settings.model, "size": list(settings.size), "parameters": params,
                  "gmacs_per_frame": flops / 2e9, "gflops_per_frame": flops / 1e9},
        "precisions": {p: c.as_dict() for p, c in chosen.items()},
        "auto_precision": resolve_precision("auto", device).as_dict(),
        "matmul_gflops": {},  # precision -> best sampled GFLOP/s (None where n/a)
        "matmul_gflops_samples": {},
        "inference": [],
        "streaming": [],
        "train": [],
        "sentences": [],
        "sentence_ratios": {},
        "data_loader": None,
        "notes": notes,
    }
    # The machine's rate is sampled before and after every inference measurement and the best sample is
    # kept: other processes can only lower a sample, and the share must compare like with like.
    samples: dict[str, list[float]] = {p: [] for p in usable}

    def sample_rate(p: str, sizes: tuple[int, ...]) -> None:
        samples[p].append(matmul_rate(device, p, sizes=sizes) / 1e9)

    for p in usable:
        progress(f"matmul rate {p}")
        sample_rate(p, settings.matmul_sizes)
    prepared = {p: copy.deepcopy(base) for p in usable}
    setups = {p: fast.prepare_for_inference(prepared[p], device=device, precision=p, compile=settings.compile)
              for p in usable}
    ort_model = None
    if settings.onnxruntime:
        progress("exporting to ONNX")
        ort_model, result["onnxruntime"] = _onnxruntime_model(base, device)
    for batch in settings.batches:
        if "fp32" in usable:
            progress(f"inference plain fp32 B={batch}")
            result["inference"].append(_inference_row(base, path="plain", precision="fp32", batch=batch,
                                                      settings=settings, device=device, channels_last=False))
            sample_rate("fp32", settings.matmul_sizes[:1])
        for p in usable:
            progress(f"inference fast {p} B={batch}")
            result["inference"].append(_inference_row(prepared[p], path="fast", precision=p, batch=batch,
                                                      settings=settings, device=device, channels_last=True))
            sample_rate(p, settings.matmul_sizes[:1])
        if ort_model is not None:
            progress(f"inference onnxruntime fp32 B={batch}")
            result["inference"].append(_inference_row(ort_model, path="onnxrt", precision="fp32", batch=batch,
                                                      settings=settings, device=device, channels_last=False))
            sample_rate("fp32", settings.matmul_sizes[:1])
    result["matmul_gflops"] = {p: max(samples[p]) if p in usable else None for p in settings.precisions}
    result["matmul_gflops_samples"] = samples
    for row in result["inference"]:
        rate = result["matmul_gflops"][row["precision"]]
        row["gflops_per_s"] = row["frames_per_s"] * flops / 1e9
        row["achieved_share"] = row["gflops_per_s"] / rate
        row["achieved_share_best"] = row["frames_per_s_best"] * flops / 1e9 / rate  # fastest repeat: least disturbed

    result["kernels"] = {p: setups[p].kernels for p in usable}  # fast path: oneDNN or ATen kernels
    result["effective_precision"] = {  # what each precision really runs as here (lbdt.runtime decides)
        p: c.name + (" (emulated: this CPU has no bf16 instructions)" if c.emulated else "") for p, c in chosen.items()}
    for p in usable if settings.sentences else []:
        progress(f"sentences per frame {p} E={','.join(map(str, settings.sentences))}")
        result["sentences"] += _sentence_rows(base, prepared[p], precision=p, settings=settings, device=device)
    result["sentence_ratios"] = sentence_ratios(result["sentences"])
    if settings.frames > 0:
        for p in usable:
            progress(f"streaming {p}")
            result["streaming"].append(_streaming_row(prepared[p], precision=p, batch=max(settings.batches),
                                                      settings=settings, device=device))
    if settings.train_step:
        for p in usable:
            progress(f"training step {p}")
            result["train"].append(_train_row(base, precision=p, settings=settings, device=device))
    if settings.loader_samples > 0:
        progress("data loader")
        result["data_loader"] = _loader_row(settings)
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return result


# ---------------------------------------------------------------- output


def write_json(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `result` to `path` atomically (temp file + `os.replace`)."""
    write_text(path, json.dumps(result, indent=2) + "\n")


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """The result as a plain-text report: header lines, then one row per measurement."""
    m, mach = result["model"], result["machine"]
    lines = [
        f"machine: {mach['cpu_model']} ({mach['cpus_available']} cores, {mach['torch_threads']} threads"
        + (f", GPU {mach['gpu']}" if "gpu" in mach else "") + f"), torch {mach['torch']}",
        (f"model: {m['name']} at {m['size'][0]}x{m['size'][1]}: {m['parameters'] / 1e6:.1f} M parameters, "
         f"{m['gmacs_per_frame']:.1f} GMACs = {m['gflops_per_frame']:.1f} GFLOPs per frame"),
        "matmul rate (GFLOP/s): " + ", ".join(f"{p} {_fmt(v, '.0f')}" for p, v in result["matmul_gflops"].items()),
        "kernels on the fast path: " + ", ".join(f"{p} {k}" for p, k in result.get("kernels", {}).items()),
        "",
        (f"{'what':<10}{'precision':<10}{'batch':>6}{'frames/s':>10}{'ms/frame':>10}{'GFLOP/s':>9}"
         f"{'share':>7}{'peak MiB':>10}{'best f/s':>10}{'share':>7}"),
    ]
    for r in result["inference"]:
        lines.append(f"{r['path']:<10}{r['precision']:<10}{r['batch']:>6}{r['frames_per_s']:>10.2f}"
                     f"{1000 / r['frames_per_s']:>10.0f}{r['gflops_per_s']:>9.0f}{100 * r['achieved_share']:>6.0f}%"
                     f"{_fmt(r['peak_mib'], '.0f'):>10}{r['frames_per_s_best']:>10.2f}"
                     f"{100 * r['achieved_share_best']:>6.0f}%")
    for r in result["streaming"]:
        lines.append(f"{'stream':<10}{r['precision']:<10}{r['batch']:>6}{r['frames_per_s']:>10.2f}"
                     f"{1000 / r['frames_per_s']:>10.0f}{'':>9}{'':>7}{_fmt(r['peak_mib'], '.0f'):>10}")
    if result.get("sentences"):
        lines += ["", (f"{'sentences':<10}{'precision':<10}{'batch':>6}{'E':>4}{'frame*sentence/s':>18}"
                       f"{'ms/(frame*sentence)':>21}{'peak MiB':>10}{'best f*s/s':>12}")]
        for r in result["sentences"]:
            lines.append(f"{r['path']:<10}{r['precision']:<10}{r['batch']:>6}{r['sentences']:>4}"
                         f"{r['frame_sentences_per_s']:>18.2f}{1000 / r['frame_sentences_per_s']:>21.0f}"
                         f"{_fmt(r['peak_mib'], '.0f'):>10}{r['frame_sentences_per_s_best']:>12.2f}")
        for name, by_e in result["sentence_ratios"].items():
            lines.append(f"{name} (fastest rounds): " + ", ".join(f"E={e} {v:.2f}x" for e, v in by_e.items()))
        lines.append("")
    for r in result["train"]:
        lines.append(f"{'train':<10}{r['precision']:<10}{r['batch']:>6}{r['samples_per_s']:>10.2f}"
                     f"{1000 * r['median_seconds_per_step']:>10.0f}{'':>9}{'':>7}{_fmt(r['peak_mib'], '.0f'):>10}"
                     "  (samples/s, ms/step)")
    loader = result["data_loader"]
    if loader:
        lines.append(f"data loader: {loader['samples_per_s']:.1f} samples/s at {loader['size'][0]}x{loader['size'][1]} "
                     f"({loader['workers']} workers, batch {loader['batch']})")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)


def benchmark(settings: BenchmarkSettings, *, out: str | os.PathLike | None = None, quick: bool = False,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """`lbdt benchmark`: run (`quick_settings` when `quick`), write JSON to `out` if given, print the table.
    On a CPU whose load leaves too few cores for torch's threads, it says so first (`lbdt.cpu_load`) and notes it
    in the result."""
    if out is not None:
        check_output_file(out)  # before minutes of measuring
    if quick:
        settings = quick_settings(settings)
    if settings.threads:
        torch.set_num_threads(settings.threads)  # before the load check, which weighs the threads against the load
    busy = load_warning(read_load()) if resolve_device(settings.device).type == "cpu" else None
    if busy:
        echo(f"warning: {busy}" + ("; --quick takes one sample per row, so its ratios (precision against precision, "
                                   "batch against batch) are meaningless under this load" if quick else ""))
    result = run_benchmark(settings, progress=lambda s: echo(f"... {s}"))
    if busy:
        result["notes"].append(f"measured on a busy machine: {busy}")
    if out is not None:
        write_json(result, out)
    echo(format_table(result))
    if out is not None:
        echo(f"wrote {out}")
    return result
