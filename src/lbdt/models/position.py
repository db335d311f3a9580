"""Fixed sinusoidal position encodings (docs/model.md, 'Position encodings'), built for the actual size
on the input's device."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _frequencies(dim: int, device: torch.device) -> Tensor:
    """omega_i = 10000^(-2i/dim) for i = 0..dim/2-1, as exp(2i * -ln(10000)/dim) in float32. [dim/2]"""
    return torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))


def sine_1d(length: int, dim: int, *, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> Tensor:
    """Word positions 0..length-1 -> [length, dim]: channel 2i = sin(p w_i), 2i+1 = cos(p w_i)."""
    if dim % 2:
        raise ValueError(f"1-D sine encoding needs an even dimension, got {dim}")
    device = torch.device(device)
    angle = torch.arange(length, device=device, dtype=torch.float32)[:, None] * _frequencies(dim, device)
    pe = torch.empty(length, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe.to(dtype)


def sine_2d(height: int, width: int, dim: int, *, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> Tensor:
    """Grid positions -> [dim, height, width].

    Channels 0..dim/2-1 encode the column x, channels dim/2..dim-1 the row y; inside each half,
    channel 2i = sin(pos w_i) and 2i+1 = cos(pos w_i) with w_i = 10000^(-2i/(dim/2)), pos the integer index.
    """
    if dim % 4:
        raise ValueError(f"2-D sine encoding needs a dimension divisible by 4, got {dim}")
    device = torch.device(device)
    half = dim // 2
    freqs = _frequencies(half, device)  # [half/2]
    ax = torch.arange(width, device=device, dtype=torch.float32)[:, None] * freqs  # [W, half/2]
    ay = torch.arange(height, device=device, dtype=torch.float32)[:, None] * freqs  # [H, half/2]
    pe = torch.empty(dim, height, width, device=device, dtype=torch.float32)
    pe[0:half:2] = torch.sin(ax).T[:, None, :].expand(-1, height, -1)
    pe[1:half:2] = torch.cos(ax).T[:, None, :].expand(-1, height, -1)
    pe[half::2] = torch.sin(ay).T[:, :, None].expand(-1, -1, width)
    pe[half + 1::2] = torch.cos(ay).T[:, :, None].expand(-1, -1, width)
    return pe.to(dtype)
