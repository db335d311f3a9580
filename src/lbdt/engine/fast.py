"""The fast inference path: prepare a trained model once, then segment under `autocast`.

`prepare_for_inference` puts a model in eval mode on its device, optionally folds every BatchNorm
that directly follows a convolution into that convolution, converts it to channels-last and compiles
its per-frame path with `torch.compile`. Run it under `lbdt.runtime.autocast(device, precision)`;
`to_input(x, ...)` gives frames the memory format the model expects.

fp32 stays fp32 everywhere (channels-last and folding only change float rounding); bf16 / fp16 run the
convolutions and matrix products in reduced precision through `torch.autocast`; the text encoder (LSTM)
always runs in fp32 with autocast off (`LBDT.encode_text`), and normalisation and soft-max stay in fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lbdt.errors import LBDTError
from lbdt.runtime import Precision, resolve_precision

def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold eval-mode `bn` (running statistics) into `conv` in place: conv'(x) = bn(conv(x)).

    w' = w * g / sqrt(v + eps) per output channel, b' = (b - m) * g / sqrt(v + eps) + beta.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise LBDTError("cannot fold a BatchNorm without running statistics")
    with torch.no_grad():
        scale = bn.running_var.double().add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
        bias = (bias - bn.running_mean.double()) * scale
        if bn.bias is not None:
            bias = bias + bn.bias.double()
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        conv.weight.copy_((conv.weight.double() * scale.reshape(shape)).to(conv.weight.dtype))
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """Child names (conv, bn) where the BN directly consumes the conv's output inside `module.forward`.

    Two patterns cover the whole LBDT network: consecutive children of an `nn.Sequential`, and the
    torchvision naming `convK` -> `bnK` of the ResNet stem and its bottleneck blocks.
    """
    from lbdt.models.backbone import Bottleneck, ResNet

    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        return [(a, b) for a, b in zip(names, names[1:])
                if type(children[a]) is nn.Conv2d and type(children[b]) is nn.BatchNorm2d]
    if isinstance(module, (Bottleneck, ResNet)):
        return [(f"conv{k}", f"bn{k}") for k in (1, 2, 3) if f"conv{k}" in children and f"bn{k}" in children]
    return []


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d into it (in place); returns how many.

    The BatchNorm modules are replaced by `nn.Identity`, so the state dict loses their keys: fold only
    a model used for inference, never one you train or save.
    """
    if model.training:
        raise LBDTError("fold_batchnorm needs a model in eval mode (BatchNorm must use running statistics)")
    folded = 0
    for module in list(model.modules()):
        for conv_name, bn_name in _conv_bn_pairs(module):
            fold_conv_bn(getattr(module, conv_name), getattr(module, bn_name))
            setattr(module, bn_name, nn.Identity())
            folded += 1
    return folded


def cast_matmul_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Store convolution, linear and attention-projection weights in `dtype` (in place); returns how many modules.

    These are exactly the tensors `torch.autocast` would cast to `dtype` at every call, so results under
    autocast are unchanged; only the per-call casts (a full pass over the weights) disappear.
    Normalisation layers and the LSTM keep their fp32 parameters.
    """
    n = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.to(dtype)
            n += 1
        elif isinstance(module, nn.MultiheadAttention):  # its packed input projection is not a Linear
            for name in ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                param = getattr(module, name, None)
                if param is not None:
                    param.data = param.data.to(dtype)
            n += 1
    return n


def prepare_for_inference(model: nn.Module, *, device: torch.device | str, precision: str | Precision = "fp32",
                          channels_last: bool = True, fold_bn: bool = True, compile: bool = False) -> nn.Module:
    """Make `model` (in place) ready for fast inference and return it.

    eval mode, no gradients, moved to `device`; `fold_bn` folds conv + BatchNorm pairs; `channels_last`
    converts 4-D weights (feed inputs through `to_input`); for bf16 / fp16 the convolution, linear and
    attention weights are stored in that dtype (`cast_matmul_weights`); `compile` compiles `model.segment`
    (the per-frame path; `forward` goes through it) and `model.segment_many` (compiled on its first call)
    with `torch.compile`, which needs a C++ compiler on CPU.
    Run it under `torch.inference_mode()` and `autocast(device, precision)` (required for bf16 / fp16).
    """
    device = torch.device(device)
    dtype = resolve_precision(precision, device).dtype
    model.eval().requires_grad_(False).to(device)
    if fold_bn:
        fold_batchnorm(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if dtype != torch.float32:
        cast_matmul_weights(model, dtype)
    if compile:
        # instance attribute, so `forward` uses it too; freezing lets inductor fold weights and fuse conv + ReLU
        model.segment = torch.compile(model.segment, dynamic=False, options={"freezing": True})
        model.segment_many = torch.compile(model.segment_many, dynamic=False, options={"freezing": True})  # lazy
    return model


def to_input(x: Tensor, *, device: torch.device | str, channels_last: bool = True) -> Tensor:
    """Frames [B,3,H,W] on `device`, in channels-last layout when the model was prepared that way."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
