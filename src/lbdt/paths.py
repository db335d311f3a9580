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


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check an output folder before any work: it is a writable folder, or can be created. Returns it as a Path."""
    if isinstance(path, str) and path.strip() == "":  # Path("") would be "." (the current folder)
        raise LBDTError(f"{what}: empty path")
    path = Path(path)
    if str(path).strip() == "":
        raise LBDTError(f"{what}: empty path")
    if path.exists() and not path.is_dir():
        raise LBDTError(f"{what} {path}: exists and is not a folder")
    _writable_ancestor(path, what)
    return path


def check_output_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """Check an output file path before any work: not a folder, and its folder is writable or can be created."""
    path = Path(path)
    if str(path).strip() == "" or path.name == "":
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
    if not isinstance(name, str) or name.strip() == "":
        raise LBDTError(f"{where}: empty {what}")
    if name in (".", "..") or any(c in name for c in "/\\\0\n\r") or name != name.strip():
        raise LBDTError(f"{where}: {what} {name!r} is not a plain name (no '/', '\\', '..', line breaks or "
                        "surrounding spaces)")
    return name
