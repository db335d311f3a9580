"""File I/O, the one owner: atomic writes, JSON read/write, weights-only reads.

Writes go beside the target, then `os.replace` it into place: a crash or kill at any point leaves either the
previous file or the new one under the final name, never a torn one. The temporary file is `.<name>.tmp` in the
target's folder, so a later write overwrites a stale one. Reads of data files (JSON, torch weights) turn a
missing, torn or foreign file into one `LBDTError` line naming it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import shutil
import signal
import sys
import warnings
import zipfile
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


def read_text(path: str | os.PathLike, what: str) -> str:
    """A UTF-8 data file's text (list files, split lists); missing or not UTF-8 is an `LBDTError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise LBDTError(f"{what} not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LBDTError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_json(path: str | os.PathLike, what: str, *, max_bytes: int | None = None) -> Any:
    """A JSON data file (meta expressions, mask dicts, annotations, manifests); a missing or malformed file is an
    `LBDTError` naming it (`what` says which file it is). `max_bytes`: a larger file is refused unread (for
    files that are always small, such as manifests)."""
    path = Path(path)
    if not path.is_file():
        raise LBDTError(f"{what} not found: {path}")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise LBDTError(f"{path}: {path.stat().st_size:,} bytes, too large for {what} (at most {max_bytes:,})")
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
        raise LBDTError(f"{path}: not a readable weights-only checkpoint ({_what_it_is(path, e, first)})") from None


def _what_it_is(path: Path, error: Exception, first: str) -> str:
    """Why `torch.load` failed, in words: empty, a damaged torch file, not a torch file at all, or refused."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            torch_zip = any(n.endswith("/data.pkl") for n in z.namelist())
        return (f"a damaged PyTorch file ({type(error).__name__}: {first})" if torch_zip
                else "a zip archive, not a PyTorch file")
    if head.startswith(b"PK"):
        return "a truncated or damaged zip / PyTorch file"
    if head[:1] == b"\x80":  # a pickle (legacy torch format): read, but refused or torn
        return f"{type(error).__name__}: {first}"
    return f"not a PyTorch file (it starts with {head!r})"


@contextmanager
def atomic_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final` to fill; on success it takes `final`'s place whole, on any
    error it is removed. At every instant `final` names the previous folder (or nothing, if there was none) or
    the new one, never a mix: the swap is one `renameat2(RENAME_EXCHANGE)` where the system has it (decided at
    run time), else two renames, whose one gap (`final` absent, the old folder beside it) the next
    `atomic_folder` on `final` repairs. Leftovers of killed runs (`.<name>.staging-<pid>`) are removed then.
    `final`, when it exists, must be a folder the caller has agreed to replace."""
    final = Path(final)
    if final.name in ("", ".", ".."):
        raise ValueError(f"atomic_folder needs a named folder, got {final}")  # callers check their output paths
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    stage = final.with_name(f".{final.name}.staging-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        crash_point("folder-staged")
        _swap_in(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _swap_in(stage: Path, final: Path) -> None:
    if not final.exists() or (final.is_dir() and not any(final.iterdir())):
        os.replace(stage, final)  # onto nothing or an empty folder: one atomic rename
    elif _exchange(stage, final):
        crash_point("folder-swapped")
        shutil.rmtree(stage)  # it now holds the previous folder
    else:
        old = final.with_name(f".{final.name}.replaced-{os.getpid()}")
        os.replace(final, old)
        crash_point("folder-swapped")
        os.replace(stage, final)
        shutil.rmtree(old)
    _fsync_dir(final.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without it (glibc < 2.28, some musl builds)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale(final: Path) -> None:
    """Remove what killed `atomic_folder` runs on `final` left beside it; put back a previous folder that a kill
    between the two fallback renames left aside."""
    for leftover in final.parent.glob(f".{final.name}.*-*"):
        kind, _, pid = leftover.name[len(final.name) + 2:].rpartition("-")
        if kind not in ("staging", "replaced") or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if kind == "replaced" and not final.exists():
            os.replace(leftover, final)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def crash_point(name: str) -> None:
    """Test hook for the kill -9 tests: when the environment variable `LBDT_CRASH_AT` equals `name`, the process
    kills itself here with SIGKILL (no cleanup runs, exactly as `kill -9`). Does nothing otherwise."""
    if os.environ.get("LBDT_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
