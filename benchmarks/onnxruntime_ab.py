"""PyTorch fast path vs ONNX Runtime, fp32, measured in alternating calls (A, B, A, B, ...).

`lbdt benchmark --backend onnxruntime` times each backend in its own block; on a shared machine the load can
change between blocks. Here the two calls alternate on the same inputs, so both see the same moments, and the
per-pair ratio is reported. Same threads for both (`--threads`, default 2).

    python benchmarks/onnxruntime_ab.py --model lbdt4 --size 320 320

Writes `benchmarks/results/onnxruntime_ab-<model>-<H>.json`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lbdt.atomic import write_text
from lbdt.benchmark import machine_info, synthetic_inputs
from lbdt.engine import fast
from lbdt.export import export_onnx
from lbdt.models.build import build_model
from lbdt.onnx_backend import OnnxRuntimeModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lbdt4")
    parser.add_argument("--size", type=int, nargs=2, default=(320, 320))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, nargs=2, default=(12, 4), metavar=("BATCH1", "BATCH8"),
                        help="alternating pairs at batch 1 and at batch 8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = tuple(args.size)
    base = build_model(args.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export_onnx(base, tmp)
        export_s = time.perf_counter() - start
        graph_mb = os.path.getsize(Path(tmp) / "frame_model.onnx") / 1e6
        ort_model = OnnxRuntimeModel(tmp, threads=args.threads)
    torch_model = fast.prepare_for_inference(copy.deepcopy(base), device="cpu", precision="fp32")
    result = {"machine": machine_info(torch.device("cpu")), "model": args.model, "size": list(size),
              "threads": args.threads, "export_seconds": export_s, "frame_graph_mb": graph_mb, "batches": {}}
    for batch, rounds in zip((1, 8), args.rounds):
        frame, ref, words, mask = synthetic_inputs(batch, size, torch.device("cpu"))
        frame_cl, ref_cl = fast.to_input(frame, device="cpu"), fast.to_input(ref, device="cpu")
        times: dict[str, list[float]] = {"torch_fast": [], "onnxruntime": []}
        with torch.inference_mode():
            torch_text = torch_model.encode_text(words[:1], mask[:1])
            ort_text = ort_model.encode_text(words[:1], mask[:1])
            calls = {"torch_fast": (torch_model, frame_cl, ref_cl, torch_text),
                     "onnxruntime": (ort_model, frame, ref, ort_text)}
            for model, *inputs in calls.values():  # warm-up
                model.segment(*inputs)
            for _ in range(rounds):
                for name, (model, *inputs) in calls.items():
                    start = time.perf_counter()
                    model.segment(*inputs)
                    times[name].append(time.perf_counter() - start)
        ratios = [a / b for a, b in zip(times["torch_fast"], times["onnxruntime"])]
        result["batches"][str(batch)] = {
            **{name: {"seconds_per_batch": t, "median_frames_per_s": batch / statistics.median(t),
                      "best_frames_per_s": batch / min(t)} for name, t in times.items()},
            "median_pairwise_speedup_onnxruntime": statistics.median(ratios)}
        row = result["batches"][str(batch)]
        print(f"batch {batch}: torch fast {row['torch_fast']['median_frames_per_s']:.2f} frames/s, onnxruntime "
              f"{row['onnxruntime']['median_frames_per_s']:.2f} frames/s, pairwise speed-up "
              f"{row['median_pairwise_speedup_onnxruntime']:.2f}x", flush=True)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    out = Path(__file__).parent / "results" / f"onnxruntime_ab-{args.model}-{size[0]}.json"
    write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
