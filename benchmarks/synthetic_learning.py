""""It learns": train the `synthetic_tiny` preset on the synthetic benchmark, then its spatial-only ablation.

Each run trains for at most `--minutes` of wall time (the preset's schedule usually ends sooner), keeps
the checkpoint that is best on the validation split, and is evaluated on the held-out **test** split with
mean IoU split by sentence type (appearance vs motion: the benchmark's record group). The motion sentences name one of two identical
objects by how it moves, so only a model that uses the temporal stream can get them right.

    lbdt synth --out datasets/synthetic --seed 0              # the data (once)
    python benchmarks/synthetic_learning.py                # both runs, 15 min each at most
    python benchmarks/synthetic_learning.py --minutes 5 --runs full

Writes `benchmarks/results/synthetic_learning.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from lbdt.checkpoint import read_checkpoint, runnable_from_state
from lbdt.config import load_config, to_dict
from lbdt.engine.datasets import build_dataset, make_loader
from lbdt.engine.inference import run_on_dataset
from lbdt.engine.train import train
from lbdt.evaluation.evaluators import ReferSegEvaluator
from lbdt.runtime import cpu_features

RUNS = {"full": [], "spatial_only": ["model.zero_temporal=true"]}


def evaluate(checkpoint: Path, split: str, overrides: list[str]) -> dict:
    """ReferSegEvaluator report of `checkpoint` on `split` of the preset's dataset."""
    runnable = runnable_from_state(read_checkpoint(checkpoint), where=str(checkpoint), source=str(checkpoint))
    cfg = load_config("synthetic_tiny", overrides)
    dataset = build_dataset(cfg.data, split, train=False, with_original_mask=cfg.eval.protocol == "native")
    loader = make_loader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=0)
    return run_on_dataset(runnable.model, loader, evaluators={"refer": ReferSegEvaluator()},
                          protocol=cfg.eval.protocol, threshold=cfg.eval.threshold, precision="fp32")["refer"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="wall-time cap per training run")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--run-dir", default="runs/synthetic_learning")
    ap.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = ap.parse_args()

    results = {"machine": f"{cpu_features().name}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                          f"{torch.get_num_threads()} threads",
               "minutes_cap": args.minutes, "runs": {}}
    for name in args.runs:
        overrides = RUNS[name] + args.overrides + [f"train.output_dir={args.run_dir}/{name}",
                                                   f"train.max_minutes={args.minutes}"]
        cfg = load_config("synthetic_tiny", overrides)
        print(f"== {name}: training (at most {args.minutes} min)")
        start = time.monotonic()
        summary = train(cfg)
        minutes = (time.monotonic() - start) / 60
        out_dir = Path(cfg.train.output_dir)
        ckpt = out_dir / "best.pt" if (out_dir / "best.pt").is_file() else out_dir / "last.pt"
        report = evaluate(ckpt, "test", overrides)
        by_type = report.get("by_group", {})
        results["runs"][name] = {
            "train_minutes": round(minutes, 2), "steps": summary["step"], "epochs": summary["epoch"],
            "checkpoint": str(ckpt), "best_val": summary["best"],
            "test": {k: v for k, v in report.items() if k != "by_group"},
            "test_by_sentence_type": by_type, "config": to_dict(cfg),
        }
        print(f"   {name}: {minutes:.1f} min, test mean IoU {report['mean_iou']:.3f} "
              + " ".join(f"{t} {v['mean_iou']:.3f}" for t, v in by_type.items()))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "synthetic_learning.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"Synthetic benchmark, held-out test split ({results['machine']}; cap {args.minutes} min per run)", "",
             "| run | train min | steps | mean IoU | appearance mIoU | motion mIoU | overall IoU | P@0.5 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        t, bt = r["test"], r["test_by_sentence_type"]
        lines.append(f"| {name} | {r['train_minutes']} | {r['steps']} | {t['mean_iou']:.3f} | "
                     f"{bt.get('appearance', {}).get('mean_iou', float('nan')):.3f} | "
                     f"{bt.get('motion', {}).get('mean_iou', float('nan')):.3f} | {t['overall_iou']:.3f} | "
                     f"{t['P@0.5']:.3f} |")
    (out / "synthetic_learning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
