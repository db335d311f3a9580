"""Training: the data order, atomic checkpoints, the CLI, DDP on CPU, and exact kill-and-resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lbdt.engine.checkpointing import load_checkpoint, save_checkpoint
from lbdt.engine.distributed import EpochSampler
from lbdt.errors import LBDTError

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# ---------------------------------------------------------------- data order


def test_sampler_order_is_a_function_of_seed_and_epoch():
    a = EpochSampler(10, seed=3, shuffle=True)
    b = EpochSampler(10, seed=3, shuffle=True)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)
    a.set_epoch(2, start=4)  # resume mid-epoch: the same order, minus what was consumed
    b.set_epoch(2)
    assert list(a) == list(b)[4:] and len(a) == 6


def test_sampler_shards_like_distributed_sampler():
    shards = []
    for rank in range(3):
        s = EpochSampler(10, seed=0, rank=rank, world_size=3)
        s.set_epoch(1)
        shards.append(list(s))
    assert [len(x) for x in shards] == [4, 4, 4]  # padded to 12
    full = EpochSampler(10, seed=0)
    full.set_epoch(1)
    order = list(full)
    assert [x for t in zip(*shards) for x in t] == (order + order[:2])


# ---------------------------------------------------------------- atomic checkpoints


def _state(v: float) -> dict:
    return {"format": "lbdt", "version": 1, "model": {"w": torch.full((4,), v)}, "step": int(v)}


def test_exception_during_save_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(_state(2.0), path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # temp file removed


def test_sigkill_during_save_keeps_previous(tmp_path):
    """A process killed (SIGKILL) after writing the temp file, before the rename, leaves the old file."""
    path = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from lbdt.engine import checkpointing as c
        c.save_checkpoint({{"format": "lbdt", "version": 1, "step": 1, "w": torch.ones(1000)}}, {str(path)!r})
        real_replace = os.replace
        def die(src, dst):
            assert os.path.getsize(src) > 4000  # the new checkpoint is fully in the temp file
            os.kill(os.getpid(), signal.SIGKILL)
        c.os.replace = die
        c.save_checkpoint({{"format": "lbdt", "version": 1, "step": 2, "w": torch.zeros(1000)}}, {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / ".last.pt.tmp").is_file()  # the interrupted write
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(1000))
    save_checkpoint(_state(3.0), path)  # the next save simply overwrites the stale temp file
    assert load_checkpoint(path)["step"] == 3 and not (tmp_path / ".last.pt.tmp").exists()


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(LBDTError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(LBDTError, match="torn.pt: not a readable lbdt checkpoint"):
        load_checkpoint(torn)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(1)}, other)
    with pytest.raises(LBDTError, match="not an lbdt checkpoint"):
        load_checkpoint(other)
