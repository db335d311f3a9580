"""Model variants: small builder functions with literal hyper-parameters, in a plain dict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lbdt.errors import LBDTError
from lbdt.models.lbdt import LBDT


def lbdt4(**overrides: Any) -> LBDT:
    """LBDT-4: ResNet-50 streams, 4 LBDT layers per module (the released A2D model)."""
    kw: dict[str, Any] = {"backbone_depth": 50, "backbone_width": 64, "d_model": 512, "nhead": 8,
                          "dim_feedforward": 512, "num_layers": 4, "decoder_dim": 128, "text_hidden": 512,
                          "word_dim": 300, "dropout": 0.1}
    return LBDT(**{**kw, **overrides})


def lbdt1(**overrides: Any) -> LBDT:
    """LBDT-1: as LBDT-4 with 1 LBDT layer per module."""
    return lbdt4(**{"num_layers": 1, **overrides})


def lbdt4_r101(**overrides: Any) -> LBDT:
    """LBDT-4 with ResNet-101 streams (supported by the original code, not released)."""
    return lbdt4(**{"backbone_depth": 101, **overrides})


def tiny(**overrides: Any) -> LBDT:
    """Small network for tests and CPU training: 1 block per stage, width 8, d 64, 1 layer, dim 32."""
    kw: dict[str, Any] = {"backbone_depth": 14, "backbone_width": 8, "d_model": 64, "nhead": 4,
                          "dim_feedforward": 64, "num_layers": 1, "decoder_dim": 32, "text_hidden": 64,
                          "word_dim": 300, "dropout": 0.1}
    return LBDT(**{**kw, **overrides})


VARIANTS: dict[str, Callable[..., LBDT]] = {"lbdt4": lbdt4, "lbdt1": lbdt1, "lbdt4_r101": lbdt4_r101, "tiny": tiny}


def build_model(name: str, **overrides: Any) -> LBDT:
    """Build variant `name` (a key of `VARIANTS`), with constructor keyword overrides."""
    if name not in VARIANTS:
        raise LBDTError(f"unknown model variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name](**overrides)
