"""Path safety at the boundaries: output locations checked before any work starts, and names read from data
files (list files, meta JSON, zips) checked before they become parts of a path.
"""

from __future__ import annotations

import os
from pathlib import Path

from lbdt.errors import LBDTError


def _writable_ancestor(path: Path, what: str) -> None:
    """The nearest existing folder at or above `path` must be a writable folder (so `path` can be created)."""
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise LBDTError(f"{what} {path}: {probe} is a dangling symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise LBDTError(f"{what} {path}: {probe} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LBDTError(f"{what} {path}: folder {probe} is not writable")


def _as_path(path: object, what: str) -> Path:
    """`path` as a Path: a str or os.PathLike that is not empty (an empty string would mean the current folder)."""
    if not isinstance(path, (str, os.PathLike)):
        raise LBDTError(f"{what}: expected a path (str or os.PathLike), got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise LBDTError(f"{what}: expected a path as text, got {type(text).__name__}")
    if text.strip() == "":
        raise LBDTError(f"{what}: empty path")
    return Path(text)


def check_input_path(path: object, what: str) -> Path:
    """An input file or folder named by the caller (a dataset root, a video, a zip): a non-empty str or
    os.PathLike (not a file object, not bytes; an empty string is refused, not read as the current folder)."""
    return _as_path(path, what)


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check an output folder before any work: it is a writable folder, or can be created. Returns it as a Path."""
    path = _as_path(path, what)
    if path.exists() and not path.is_dir():
        raise LBDTError(f"{what} {path}: exists and is not a folder")
    _writable_ancestor(path, what)
    return path


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check an output file path before any work: not a folder, and its folder is writable or can be created."""
    path = _as_path(path, what)
    if path.name == "":
        raise LBDTError(f"{what}: empty file name")
    if path.is_dir():
        raise LBDTError(f"{what} {path}: is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise LBDTError(f"{what} {path}: file is not writable")
    _writable_ancestor(path.parent, what)
    return path


def check_name(name: str, what: str, where: str) -> str:
    """A name that becomes one path component (a video id, a frame id, an expression id): not empty, not
    `.`/`..`, no `/` or `\\`, no NUL or line break, no surrounding spaces. `where` ("file:line") and `what`
    ("video id") name it."""
    if not isinstance(name, str):
        raise LBDTError(f"{where}: {what} must be text, got {type(name).__name__} {name!r}")
    if name.strip() == "":
        raise LBDTError(f"{where}: empty {what}")
    if name in (".", "..") or any(c in name for c in "/\\\0\n\r") or name != name.strip():
        raise LBDTError(f"{where}: {what} {name!r} is not a plain name (no '/', '\\', '..', line breaks or "
                        "surrounding spaces)")
    return name
