"""File I/O, the one owner: atomic writes, JSON read/write, weights-only reads.

Writes go beside the target, then `os.replace` it into place: a crash or kill at any point leaves either the
previous file or the new one under the final name, never a torn one. The temporary file is `.<name>.tmp` in the
target's folder, so a later write overwrites a stale one. Reads of data files (JSON, torch weights) turn a
missing, torn or foreign file into one `LBDTError` line naming it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lbdt.errors import LBDTError


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
    with atomic_write(path, fsync=fsync) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def json_safe(value: Any) -> Any:
    """numpy scalars and arrays → Python numbers and lists; NaN/inf → None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data: Any, *, indent: int = 2, sort_keys: bool = False,
               fsync: bool = False) -> None:
    """Write `data` as JSON atomically (numbers made JSON-safe: numpy → Python, NaN/inf → null)."""
    write_text(path, json.dumps(json_safe(data), indent=indent, sort_keys=sort_keys) + "\n", fsync=fsync)


def read_json(path: str | os.PathLike, what: str) -> Any:
    """A JSON data file (meta expressions, mask dicts, annotations, manifests); a missing or malformed file is an
    `LBDTError` naming it (`what` says which file it is)."""
    path = Path(path)
    if not path.is_file():
        raise LBDTError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as e:
        raise LBDTError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise LBDTError(f"{path}: malformed JSON ({e})") from None
    except _DuplicateKey as e:
        raise LBDTError(f"{path}: malformed JSON (key {e.args[0]!r} appears twice in one object)") from None
    except RecursionError:
        raise LBDTError(f"{path}: malformed JSON (nested too deeply)") from None


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a key given twice (which `json` would silently resolve to the last) raises."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def load_weights(path: str | os.PathLike) -> Any:
    """`torch.load(path, weights_only=True)` with one clear error for a missing, torn or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise LBDTError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before failing: the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torn file, a full pickle, not a torch file: all one error
        first = str(e).splitlines()[0] if str(e) else ""
        raise LBDTError(f"{path}: not a readable weights-only checkpoint ({type(e).__name__}: {first})") from None


def crash_point(name: str) -> None:
    """Test hook for the kill -9 tests: when the environment variable `LBDT_CRASH_AT` equals `name`, the process
    kills itself here with SIGKILL (no cleanup runs, exactly as `kill -9`). Does nothing otherwise."""
    if os.environ.get("LBDT_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
