"""CPU inference paths of one model, fp32, measured in alternating calls (A, B, C, A, B, C, ...).

`lbdt benchmark` times each path in its own block; on a shared machine the load can change between blocks.
Here the calls go round-robin on the same inputs, so every path sees the same moments, and per-round ratios
are reported. The paths, all with the same threads (`--threads`, default 2):

* `plain`: the model as built, `forward` (the original's computation);
* `fast_aten`: `engine.fast.prepare_for_inference(..., onednn=False)`: folded BatchNorm, channels-last, ATen's
  modules (linear layers through `F.linear`, convolutions through `F.conv2d`);
* `fast`: `prepare_for_inference` as lbdt uses it (on a CPU, oneDNN's kernels when `fast.onednn_status()`
  finds them usable: linear layers, packed convolutions with fused ReLU / residual);
* `onnxruntime` (with `--onnxruntime`): the `lbdt export` graphs in ONNX Runtime.

    python benchmarks/paths_ab.py --model lbdt4 --size 320 320 [--onnxruntime]

Writes `benchmarks/results/paths_ab-<model>-<H>[-onnxruntime | -<tag>].json`. To imitate a CPU without AVX-512 on
one with it, cap the libraries' instruction sets (recorded in the JSON as `isa_limits`):

    ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 \
        python benchmarks/paths_ab.py --tag avx2
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lbdt.engine import fast
from lbdt.io import write_text
from lbdt.models.build import build_model
from lbdt.tools.benchmark import machine_info, synthetic_inputs

ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lbdt4")
    parser.add_argument("--size", type=int, nargs=2, default=(320, 320))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, nargs=2, default=(12, 4), metavar=("BATCH1", "BATCH8"),
                        help="rounds at batch 1 and at batch 8")
    parser.add_argument("--onnxruntime", action="store_true", help="also export and time ONNX Runtime")
    parser.add_argument("--tag", default="", help="file name suffix for the JSON (default: onnxruntime with it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = tuple(args.size)
    base = build_model(args.model).eval()
    result: dict[str, Any] = {"machine": machine_info(torch.device("cpu")), "model": args.model, "size": list(size),
                              "threads": args.threads, "kernels": None, "batches": {},
                              "isa_limits": {k: os.environ[k] for k in ISA_LIMITS if k in os.environ}}
    models: dict[str, Any] = {"plain": base, "fast_aten": copy.deepcopy(base), "fast": copy.deepcopy(base)}
    fast.prepare_for_inference(models["fast_aten"], device="cpu", onednn=False)
    result["kernels"] = fast.prepare_for_inference(models["fast"], device="cpu").kernels
    if args.onnxruntime:
        from lbdt.export import export_onnx
        from lbdt.onnx_backend import OnnxRuntimeModel

        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            export_onnx(base, tmp)
            result["export_seconds"] = time.perf_counter() - start
            result["frame_graph_mb"] = os.path.getsize(Path(tmp) / "frame_model.onnx") / 1e6
            models["onnxruntime"] = OnnxRuntimeModel(tmp, threads=args.threads)
    for batch, rounds in zip((1, 8), args.rounds):
        frame, ref, words, mask = synthetic_inputs(batch, size, torch.device("cpu"))
        frame_cl, ref_cl = fast.to_input(frame, device="cpu"), fast.to_input(ref, device="cpu")
        with torch.inference_mode():
            calls = {"plain": functools.partial(base, frame, ref, words, mask)}
            for name in ("fast_aten", "fast"):
                text = models[name].encode_text(words[:1], mask[:1])  # once per video, broadcast over the batch
                calls[name] = functools.partial(models[name].segment, frame_cl, ref_cl, text)
            if "onnxruntime" in models:
                ort_text = models["onnxruntime"].encode_text(words[:1], mask[:1])
                calls["onnxruntime"] = functools.partial(models["onnxruntime"].segment, frame, ref, ort_text)
            times: dict[str, list[float]] = {name: [] for name in calls}
            for call in calls.values():  # warm-up
                call()
            for _ in range(rounds):
                for name, call in calls.items():
                    start = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - start)
        row: dict[str, Any] = {name: {"seconds_per_batch": t, "median_frames_per_s": batch / statistics.median(t),
                                      "best_frames_per_s": batch / min(t)} for name, t in times.items()}
        row["median_per_round_speedup"] = {  # how many times faster than `plain` / than `fast`, round by round
            f"{name}_vs_{other}": statistics.median(a / b for a, b in zip(times[other], times[name]))
            for other in ("plain", "fast") for name in times if name != other and not (other == "fast" and name == "plain")}
        result["batches"][str(batch)] = row
        print(f"batch {batch}: " + ", ".join(f"{n} {row[n]['median_frames_per_s']:.2f}" for n in times)
              + " frames/s; " + ", ".join(f"{k} {v:.2f}x" for k, v in row["median_per_round_speedup"].items()),
              flush=True)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    suffix = f"-{args.tag}" if args.tag else "-onnxruntime" if args.onnxruntime else ""
    out = Path(__file__).parent / "results" / f"paths_ab-{args.model}-{size[0]}{suffix}.json"
    write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
