"""Tiny synthetic a2d and ytvos benchmarks and a tiny checkpoint beside them, for the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import torch

from lbdt.checkpoint import make_state, save_checkpoint
from lbdt.data.synth import write_benchmark
from lbdt.models.build import build_model


def write_tiny_bench(root: Path, *, seed: int, test_videos: int, decisive_head: bool = False) -> Path:
    """`root/a2d`, `root/ytvos` (1 train, 1 val, `test_videos` test videos of 8 frames at 48x64, synthetic `seed`)
    and `root/tiny.pt`, a randomly initialised tiny model (seed 0) at 64x64. `decisive_head` scales its last
    layer so the logits are of order 1 with both signs (masks neither empty nor full)."""
    for fmt in ("a2d", "ytvos"):
        write_benchmark(root / fmt, fmt=fmt, seed=seed, videos=(1, 1, test_videos), frames=8, size=(48, 64),
                        progress=False)
    torch.manual_seed(0)
    model = build_model("tiny")
    if decisive_head:
        with torch.no_grad():
            model.head.tower[-1].weight.mul_(300.0)
            model.head.tower[-1].bias.fill_(0.5)
    save_checkpoint(make_state(model, variant="tiny", config={"data": {"size": [64, 64]}}), root / "tiny.pt")
    return root
