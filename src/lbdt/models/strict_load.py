"""Strict state-dict loading with one readable error listing every offending key."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from lbdt.errors import LBDTError
from lbdt.io import load_weights


def read_state_dict(path_or_state_dict: str | os.PathLike | Mapping[str, Any], *, what: str) -> dict[str, Tensor]:
    """Return a flat `{name: tensor}` dict from a mapping or a `torch.load(weights_only=True)`-able file.

    Accepts dicts wrapped under `state_dict` / `model` and strips a leading `module.` (DDP).
    """
    source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else what
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        obj = load_weights(path_or_state_dict)  # the one weights-only reader (its errors are one line)
    else:
        obj = path_or_state_dict
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise LBDTError(f"{source}: not a state dict of tensors ({what})")
    keys = list(obj.keys())
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], *, source: str,
                optional: Iterable[str] = ()) -> None:
    """Copy `state_dict` into `module`; any missing, unexpected or mis-shaped key is an `LBDTError`.

    `optional` names keys of `module` that may be absent (they keep their current value).
    """
    own = module.state_dict()
    optional = set(optional)
    missing = sorted(k for k in own if k not in state_dict and k not in optional)
    unexpected = sorted(k for k in state_dict if k not in own)
    misshaped = sorted(
        f"{k} (got {tuple(v.shape)}, expected {tuple(own[k].shape)})"
        for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
    )
    problems = mismatch_report(missing, unexpected, misshaped)
    if problems:
        raise LBDTError(f"{source}: state dict does not match the model; {problems}")
    # Every non-optional key is present and shaped right; optional absent keys keep their value.
    module.load_state_dict({**{k: own[k] for k in optional if k not in state_dict}, **state_dict}, strict=True)


def mismatch_report(missing: list[str], unexpected: list[str], misshaped: list[str]) -> str:
    """One line listing every missing, unexpected and mis-shaped key ("" when there are none)."""
    parts = [f"{what} keys: {', '.join(sorted(keys))}"
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys]
    return "; ".join(parts)
