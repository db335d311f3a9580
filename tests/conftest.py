"""Shared fixtures: a tiny synthetic benchmark in each on-disk format, written once per test session
through `lbdt synth` (the real CLI). Treat the trees as read-only; copy one (`copy_benchmark`) to mutate it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lbdt.data.synth import FORMATS

# small and fast: 3/2/2 videos of 10 frames at 64x96 (H x W, non-square), 3 annotated frames each
TINY = {"seed": 7, "videos": (3, 2, 2), "frames": 10, "size": (64, 96), "annotated": 3}


@pytest.fixture(scope="session")
def synth_roots(tmp_path_factory) -> dict[str, Path]:
    """{"a2d" | "jhmdb" | "ytvos": root of the tiny benchmark written in that format}."""
    from lbdt.cli import main

    base = tmp_path_factory.mktemp("synth")
    roots = {}
    for fmt in FORMATS:
        out = base / fmt
        args = ["synth", "--format", fmt, "--out", str(out), "--seed", str(TINY["seed"]), "--no-progress",
                "--videos", *map(str, TINY["videos"]), "--frames", str(TINY["frames"]),
                "--size", *map(str, TINY["size"]), "--annotated", str(TINY["annotated"])]
        assert main(args) == 0
        roots[fmt] = out
    return roots


@pytest.fixture
def copy_benchmark(synth_roots, tmp_path):
    """copy_benchmark(fmt) -> a private copy of the tiny benchmark of that format."""

    def copy(fmt: str) -> Path:
        dst = tmp_path / f"{fmt}_copy"
        shutil.copytree(synth_roots[fmt], dst)
        return dst

    return copy


GPU_SKIP_REASON = ("needs a CUDA device: torch.cuda.is_available() is False here "
                   "(run benchmarks/gpu_check.sh OUTDIR on a GPU machine)")


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped, with one clear reason, where CUDA is not available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=GPU_SKIP_REASON)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
