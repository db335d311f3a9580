"""Atomic file writes: write beside the target, then `os.replace` it into place.

A crash or kill at any point leaves either the previous file or the new one under the final name, never a
torn one. The temporary file is `.<name>.tmp` in the target's folder, so a later write overwrites a stale one.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any error it is removed.

    Writers that pick a format from the file name must be told the format explicitly (the temporary name
    ends in `.tmp`). With `fsync=True` the data and the folder entry are flushed to disk (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    with atomic_write(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    with atomic_write(path, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_torch(obj: Any, path: str | os.PathLike, *, fsync: bool = False) -> None:
    """`torch.save(obj, path)` atomically (readable with `torch.load(..., weights_only=True)` for plain data)."""
    import torch

    with atomic_write(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def crash_point(name: str) -> None:
    """Test hook for the kill -9 tests: when the environment variable `LBDT_CRASH_AT` equals `name`, the process
    kills itself here with SIGKILL (no cleanup runs, exactly as `kill -9`). Does nothing otherwise."""
    if os.environ.get("LBDT_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
