"""Model size and cost: parameter count and multiply-accumulates (MACs) per frame."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lbdt.models.build import build_model


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (all are used: the model has no dead towers)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: tuple[int, int] = (320, 320), n_words: int = 25) -> int:
    """MACs (= FLOPs / 2 from `torch.utils.flop_counter`) of one eval-mode forward, B = 1, `n_words` tokens.

    Counts convolutions, linear layers, attention and the LSTM's matrix products on the model's
    device; element-wise work (BN, ReLU, softmax, upsampling) is not counted, as usual. Attention runs
    on the math backend and the LSTM without cuDNN/oneDNN while counting, so that their matrix
    products are visible to the counter (fused kernels are not).
    """
    param = next(model.parameters())
    h, w = size
    kw = {"device": param.device, "dtype": param.dtype}
    frame, ref_frame = torch.randn(1, 3, h, w, **kw), torch.randn(1, 3, h, w, **kw)
    words = torch.randn(1, n_words, model.word_dim, **kw)
    mask = torch.ones(1, n_words, **kw)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the oneDNN switch warns about TF32 on Intel GPUs
            with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), torch.backends.cudnn.flags(enabled=False), \
                    torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as counter:
                model(frame, ref_frame, words, mask)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def model_summary(name: str, size: tuple[int, int] = (320, 320), n_words: int = 25) -> dict[str, float | int | str]:
    """Build variant `name` on the CPU and report its parameters and GMACs at `size` (H, W)."""
    model = build_model(name)
    return {
        "model": name,
        "size": f"{size[0]}x{size[1]}",
        "parameters": count_parameters(model),
        "gmacs": count_macs(model, size=size, n_words=n_words) / 1e9,
    }
