"""Checkpoints: one `torch.save`d dict of plain types and tensors, written atomically, read with
`weights_only=True`.

Layout (docs/architecture.md): `{"format": "lbdt", "version": 1, "variant", "model_config", "model",
"config", ...}`; training checkpoints add `optimizer`, `scheduler`, `scaler`, `epoch`, `step`,
`epoch_batches` (micro-batches of `epoch` already consumed), `rng` and `history`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lbdt.atomic import save_torch
from lbdt.errors import LBDTError

FORMAT = "lbdt"
VERSION = 1


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write `state` to `path` atomically: temp file, flush + fsync, `os.replace`, fsync the folder.

    A crash or kill at any point leaves either the previous file or the new one, never a torn one.
    """
    save_torch(state, path, fsync=True)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by `save_checkpoint` (`weights_only=True`: no arbitrary pickles)."""
    path = Path(path)
    if not path.is_file():
        raise LBDTError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torn file, foreign pickle, not a torch file
        raise LBDTError(f"{path}: not a readable lbdt checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise LBDTError(f"{path}: not an lbdt checkpoint (no format: {FORMAT!r} entry)")
    if isinstance(state.get("version", 0), bool) or not isinstance(state.get("version", 0), int):
        raise LBDTError(f"{path}: checkpoint version must be an integer, got {state['version']!r}")
    if state.get("version", 0) > VERSION:
        raise LBDTError(f"{path}: checkpoint version {state['version']} is newer than this lbdt ({VERSION})")
    return state


def rng_state() -> dict[str, Any]:
    """torch / CUDA / numpy / python RNG states as tensors and plain types (`weights_only`-safe)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
