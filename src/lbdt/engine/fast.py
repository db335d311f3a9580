"""The fast inference path: prepare a trained model once, then segment under `autocast`.

`prepare_for_inference` puts a model in eval mode on its device, optionally folds every BatchNorm
that directly follows a convolution into that convolution, converts it to channels-last and compiles
its per-frame path with `torch.compile`. Run it under `lbdt.runtime.autocast(device, precision)`;
`to_input(x, ...)` gives frames the memory format the model expects.

On a CPU in fp32 the linear layers and attention projections run through oneDNN's matrix product
(`torch.ops.mkldnn._linear_pointwise`, the kernel inductor uses on CPU) instead of ATen's BLAS call:
`onednn_linear_status()` decides at run time whether that kernel exists here and agrees with `F.linear`,
and `use_onednn_linear` swaps the modules. Measured on a 2-core AMD EPYC with AVX-512, MKL's sgemm
ran a 400x512x512 product at 212 GFLOP/s and oneDNN at 466 (docs/performance.md).

fp32 stays fp32 everywhere (channels-last and folding only change float rounding); bf16 / fp16 run the
convolutions and matrix products in reduced precision through `torch.autocast`; the text encoder (LSTM)
always runs in fp32 with autocast off (`LBDT.encode_text`), and normalisation and soft-max stay in fp32.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn
from torch.nn import functional as F

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


@functools.cache
def onednn_linear_status() -> tuple[bool, str]:
    """(usable, why): whether oneDNN's fp32 linear kernel exists in this torch build and gives F.linear's result.

    Decided by running it once (cached): a build without oneDNN, a torch whose private op is gone or has
    another signature, or a kernel that disagrees all give False, and the fast path keeps F.linear.
    """
    if not torch.backends.mkldnn.is_available():
        return False, "this torch build has no oneDNN"
    try:
        op = torch.ops.mkldnn._linear_pointwise
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(shape, generator=gen) for shape in ((2, 5, 24), (40, 24), (40,)))
        out = op(x, w, b, "none", [], "")
    except (AttributeError, RuntimeError, TypeError) as exc:
        return False, f"oneDNN's linear kernel is not callable here ({type(exc).__name__})"
    if out.shape != (2, 5, 40) or not torch.allclose(out, F.linear(x, w, b), rtol=1e-4, atol=1e-4):
        return False, "oneDNN's linear kernel disagrees with F.linear here"
    return True, "oneDNN linear kernel (fp32, CPU)"


class OneDNNLinear(nn.Module):
    """`nn.Linear` for inference through oneDNN's fp32 matrix product (same weight and bias, same result up to
    float rounding). Use only where `onednn_linear_status()` is usable."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().contiguous(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().contiguous(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return _linear(x, self.weight, self.bias)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """oneDNN's fp32 product; under autocast, F.linear (so a cast to bf16 / fp16 happens as for nn.Linear)."""
    if _autocast_enabled(x.device.type):
        return F.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, "none", [], "")


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device argument and has a CPU-specific query
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class InferenceAttention(nn.Module):
    """`nn.MultiheadAttention` (sequence-first, no extra bias / zero-attention keys) for inference, with its four
    projections as `OneDNNLinear`; keys and values from one tensor are projected in one product, as there.

    `forward(query [L,B,d], key [S,B,d], value [S,B,d], key_padding_mask=None (bool [B,S], True = pad),
    need_weights=False) -> (output [L,B,d], None)`: the call `LBDTLayer` makes, without attention dropout.
    """

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        if (attention.batch_first or not attention._qkv_same_embed_dim or attention.bias_k is not None
                or attention.add_zero_attn or attention.in_proj_bias is None):
            raise LBDTError("InferenceAttention covers sequence-first attention with one packed, biased in-projection")
        d = attention.embed_dim
        w, b = attention.in_proj_weight.detach(), attention.in_proj_bias.detach()
        self.query = OneDNNLinear(w[:d], b[:d])
        self.key_value = OneDNNLinear(w[d:], b[d:])
        self.out = OneDNNLinear(attention.out_proj.weight, attention.out_proj.bias)
        self.num_heads = attention.num_heads

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, None]:
        if need_weights:
            raise LBDTError("InferenceAttention does not return attention weights")
        length, batch, d = query.shape
        heads = self.num_heads

        def split(x: Tensor) -> Tensor:  # [L,B,d] -> [B,heads,L,d/heads]
            return x.view(x.shape[0], batch, heads, d // heads).permute(1, 2, 0, 3)

        if key is value:
            k, v = self.key_value(key).chunk(2, dim=-1)
        else:
            weight, bias = self.key_value.weight, self.key_value.bias
            k, v = _linear(key, weight[:d], bias[:d]), _linear(value, weight[d:], bias[d:])
        mask = None if key_padding_mask is None else ~key_padding_mask.bool()[:, None, None, :]  # True = attend
        out = F.scaled_dot_product_attention(split(self.query(query)), split(k), split(v), attn_mask=mask)
        return self.out(out.permute(2, 0, 1, 3).reshape(length, batch, d)), None


def use_onednn_linear(model: nn.Module) -> int:
    """Replace (in place) every `nn.MultiheadAttention` by `InferenceAttention` and every other `nn.Linear` by
    `OneDNNLinear`; returns how many modules. Inference only: the replacements hold no gradients and drop
    attention dropout."""
    replaced = 0
    for kind, make in ((nn.MultiheadAttention, InferenceAttention), (nn.Linear, _onednn_from_linear)):
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, kind):
                    setattr(module, name, make(child))
                    replaced += 1
    return replaced


def _onednn_from_linear(linear: nn.Linear) -> OneDNNLinear:
    return OneDNNLinear(linear.weight, linear.bias)


def prepare_for_inference(model: nn.Module, *, device: torch.device | str, precision: str | Precision = "fp32",
                          channels_last: bool = True, fold_bn: bool = True, compile: bool = False,
                          onednn_linear: bool | None = None) -> nn.Module:
    """Make `model` (in place) ready for fast inference and return it.

    eval mode, no gradients, moved to `device`; `fold_bn` folds conv + BatchNorm pairs; `channels_last`
    converts 4-D weights (feed inputs through `to_input`); for bf16 / fp16 the convolution, linear and
    attention weights are stored in that dtype (`cast_matmul_weights`); `compile` compiles `model.segment`
    (the per-frame path; `forward` goes through it) and `model.segment_many` (compiled on its first call)
    with `torch.compile`, which needs a C++ compiler on CPU. `onednn_linear` (None = where it applies: CPU, fp32,
    not compiled, and `onednn_linear_status()` usable) swaps linear layers and attention for their oneDNN
    versions (`use_onednn_linear`); the choice is kept in `model.linear_kernel` ("onednn" or "aten").
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
    if onednn_linear is None:
        onednn_linear = device.type == "cpu" and dtype == torch.float32 and not compile and onednn_linear_status()[0]
    elif onednn_linear and not (device.type == "cpu" and dtype == torch.float32 and onednn_linear_status()[0]):
        raise LBDTError("the oneDNN linear kernel runs fp32 on a CPU where it is usable: "
                        f"{onednn_linear_status()[1]}, device {device}, precision dtype {dtype}")
    if onednn_linear:
        use_onednn_linear(model)
    model.linear_kernel = "onednn" if onednn_linear else "aten"
    if compile:
        # instance attribute, so `forward` uses it too; freezing lets inductor fold weights and fuse conv + ReLU
        model.segment = torch.compile(model.segment, dynamic=False, options={"freezing": True})
        model.segment_many = torch.compile(model.segment_many, dynamic=False, options={"freezing": True})  # lazy
    return model


def to_input(x: Tensor, *, device: torch.device | str, channels_last: bool = True) -> Tensor:
    """Frames [B,3,H,W] on `device`, in channels-last layout when the model was prepared that way."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
