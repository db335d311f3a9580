"""The fast inference path: prepare a trained model once, then segment under `autocast`.

`prepare_for_inference` puts a model in eval mode on its device, optionally folds every BatchNorm
that directly follows a convolution into that convolution, converts it to channels-last and compiles
its per-frame path with `torch.compile`. Run it under `lbdt.runtime.autocast(device, precision)`;
`to_input(x, ...)` gives frames the memory format the model expects.

On a CPU in fp32 the network runs on oneDNN's own kernels (`use_onednn_kernels`): linear layers and
attention projections through its matrix product (`torch.ops.mkldnn._linear_pointwise`) instead of ATen's BLAS
call, and convolutions with their weights packed once into oneDNN's layout, each ReLU fused into the
convolution before it and each bottleneck's residual addition + ReLU fused into its last convolution
(`torch.ops.mkldnn._convolution_pointwise`) -- the kernels `torch.compile` uses on CPU, without compiling.
`onednn_status()` decides at run time whether those kernels exist here and agree with ATen. Measured on a
2-core AMD EPYC with AVX-512, MKL's sgemm ran a 400x512x512 product at 212 GFLOP/s and oneDNN at 466
(docs/performance.md).

fp32 stays fp32 everywhere (channels-last and folding only change float rounding); bf16 / fp16 run the
convolutions and matrix products in reduced precision through `torch.autocast`; the text encoder (LSTM)
always runs in fp32 with autocast off (`LBDT.encode_text`), and normalisation and soft-max stay in fp32.
"""

from __future__ import annotations

import functools
import itertools

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lbdt.errors import LBDTError
from lbdt.models.backbone import Bottleneck, ResNet
from lbdt.runtime import InferenceSetup, Precision, resolve_precision


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

    children = dict(module.named_children())
    if isinstance(module, nn.Sequential):
        names = list(children)
        return [(a, b) for a, b in itertools.pairwise(names)
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
def onednn_status() -> tuple[bool, str]:
    """(usable, why): whether oneDNN's fp32 linear and convolution kernels exist in this torch build and give
    ATen's results (F.linear, F.conv2d + ReLU, F.conv2d + residual + ReLU, with a packed weight).

    Decided by running each once on small inputs (cached): a build without oneDNN, a torch whose private ops
    are gone or have another signature, or a kernel that disagrees all give False, and the fast path keeps
    ATen's modules.
    """
    if not torch.backends.mkldnn.is_available():
        return False, "this torch build has no oneDNN"
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(shape, generator=gen) for shape in ((2, 5, 24), (40, 24), (40,)))
    image = torch.randn(1, 8, 6, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    kernel = torch.randn(8, 8, 3, 3, generator=gen).contiguous(memory_format=torch.channels_last)
    try:
        checks = [("linear", torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], ""), F.linear(x, w, b))]
        conv = OneDNNConv(nn.Conv2d(8, 8, 3, padding=1).requires_grad_(False), relu=True)
        with torch.no_grad():
            conv.weight.copy_(kernel)
            reference = F.conv2d(image, kernel, conv.bias, padding=1)
            checks.append(("convolution", conv(image), F.relu(reference)))
            checks.append(("convolution + residual", conv(image, residual=image), F.relu(reference + image)))
    except Exception as exc:  # noqa: BLE001 -- a probe: whatever a build without these kernels raises means "no"
        return False, f"oneDNN's kernels are not callable here ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
    for name, got, expected in checks:
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
            return False, f"oneDNN's {name} kernel disagrees with ATen here"
    return True, "oneDNN kernels (fp32, CPU): linear, packed convolutions with fused ReLU / residual"


class OneDNNLinear(nn.Module):
    """`nn.Linear` for inference through oneDNN's fp32 matrix product (same weight and bias, same result up to
    float rounding). Use only where `onednn_status()` is usable."""

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


class OneDNNConv(nn.Module):
    """A (BatchNorm-folded) `nn.Conv2d` for inference through oneDNN, its weight packed once into oneDNN's layout
    (on the first call, for that input's shape; any later shape works). `relu` fuses a following ReLU;
    `forward(x, residual)` computes ReLU(conv(x) + residual) in one kernel (a bottleneck's end).
    Under autocast it runs F.conv2d, so it casts like `nn.Conv2d`. Use only where `onednn_status()` is usable."""

    def __init__(self, conv: nn.Conv2d, *, relu: bool = False) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise LBDTError("OneDNNConv covers convolutions with numeric zero padding")
        self.weight = nn.Parameter(conv.weight.detach(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), requires_grad=False)
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu = relu
        self._packed: Tensor | None = None  # oneDNN's layout of `weight`; not state (rebuilt after a copy)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_packed"] = None  # an opaque oneDNN tensor cannot be copied or pickled
        return state

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if _autocast_enabled(x.device.type):
            out = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            out = out if residual is None else out + residual
            return F.relu(out) if self.relu or residual is not None else out
        if self._packed is None:
            self._packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.contiguous().to_mkldnn(), self.padding, self.stride, self.dilation, self.groups,
                list(x.shape))
        args = (self._packed, self.bias, self.padding, self.stride, self.dilation, self.groups)
        if residual is not None:
            return torch.ops.mkldnn._convolution_pointwise.binary(x, residual, *args, "add", None, "relu", [], "")
        return torch.ops.mkldnn._convolution_pointwise(x, *args, "relu" if self.relu else "none", [], "")


class InferenceBottleneck(nn.Module):
    """A BatchNorm-folded ResNet `Bottleneck` as three `OneDNNConv`: 1x1 + ReLU, 3x3 + ReLU, and 1x1 + residual +
    ReLU in one kernel (the downsampling 1x1, where there is one, feeds the residual)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1 = OneDNNConv(block.conv1, relu=True)
        self.conv2 = OneDNNConv(block.conv2, relu=True)
        self.conv3 = OneDNNConv(block.conv3)
        self.downsample = None if block.downsample is None else OneDNNConv(block.downsample[0])

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.conv3(self.conv2(self.conv1(x)), residual=identity)


def use_onednn_kernels(model: nn.Module) -> int:
    """Replace (in place) ATen modules by their oneDNN versions; returns how many modules were replaced.

    `nn.MultiheadAttention` -> `InferenceAttention`, `nn.Linear` -> `OneDNNLinear`; where BatchNorm has been
    folded (`fold_batchnorm`): each `Bottleneck` -> `InferenceBottleneck`, the ResNet stem's conv + ReLU and every
    conv + (folded BN) + ReLU sequence -> one `OneDNNConv(relu=True)`; every other `nn.Conv2d` -> `OneDNNConv`.
    Inference only: the replacements hold no gradients and drop attention dropout.
    """

    def folded(*modules: nn.Module) -> bool:
        return all(isinstance(m, nn.Identity) for m in modules)

    replaced = 0
    for module in list(model.modules()):
        if isinstance(module, ResNet) and folded(module.bn1) and type(module.conv1) is nn.Conv2d:
            module.conv1, module.relu = OneDNNConv(module.conv1, relu=True), nn.Identity()  # relu: the stem's only
            replaced += 1
        for name, child in list(module.named_children()):
            if isinstance(child, Bottleneck) and folded(child.bn1, child.bn2, child.bn3, *(child.downsample or [])[1:]):
                setattr(module, name, InferenceBottleneck(child))
                replaced += 1
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b, c in zip(names, names[1:], names[2:]):
                conv, bn, relu = module._modules[a], module._modules[b], module._modules[c]
                if type(conv) is nn.Conv2d and folded(bn) and isinstance(relu, nn.ReLU):
                    setattr(module, a, OneDNNConv(conv, relu=True))
                    setattr(module, c, nn.Identity())
                    replaced += 1

    def linear(module: nn.Linear) -> OneDNNLinear:
        return OneDNNLinear(module.weight, module.bias)

    for kind, make in ((nn.MultiheadAttention, InferenceAttention), (nn.Linear, linear), (nn.Conv2d, OneDNNConv)):
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, kind):
                    setattr(module, name, make(child))
                    replaced += 1
    return replaced


def prepare_for_inference(model: nn.Module, *, device: torch.device | str, precision: str | Precision = "fp32",
                          channels_last: bool = True, fold_bn: bool = True, compile: bool = False,
                          onednn: bool | None = None) -> InferenceSetup:
    """Make `model` (in place) ready for fast inference; returns what was done (`InferenceSetup`).

    eval mode, no gradients, moved to `device`; `fold_bn` folds conv + BatchNorm pairs; `channels_last`
    converts 4-D weights (feed inputs through `to_input`); for bf16 / fp16 the convolution, linear and
    attention weights are stored in that dtype (`cast_matmul_weights`); `compile` compiles `model.segment`
    (the per-frame path; `forward` goes through it) and `model.segment_many` (compiled on its first call)
    with `torch.compile`, which needs a C++ compiler on CPU. `onednn` (None = where it applies: CPU, fp32, not
    compiled, and `onednn_status()` usable) swaps linear, attention and convolution modules for their oneDNN
    versions (`use_onednn_kernels`); the choice is `InferenceSetup.kernels` ("onednn" or "aten").
    Run it under `torch.inference_mode()` and `autocast(device, precision)` (required for bf16 / fp16).
    """
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    dtype = precision.dtype
    model.eval().requires_grad_(False).to(device)
    if fold_bn:
        fold_batchnorm(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if dtype != torch.float32:
        cast_matmul_weights(model, dtype)
    if onednn is None:
        onednn = device.type == "cpu" and dtype == torch.float32 and not compile and onednn_status()[0]
    elif onednn and not (device.type == "cpu" and dtype == torch.float32 and onednn_status()[0]):
        raise LBDTError("the oneDNN kernels run fp32 on a CPU where they are usable: "
                        f"{onednn_status()[1]}, device {device}, precision dtype {dtype}")
    if onednn:
        use_onednn_kernels(model)
    if compile:
        # instance attribute, so `forward` uses it too; freezing lets inductor fold weights and fuse conv + ReLU
        model.segment = torch.compile(model.segment, dynamic=False, options={"freezing": True})
        model.segment_many = torch.compile(model.segment_many, dynamic=False, options={"freezing": True})  # lazy
    return InferenceSetup(device=device, precision=precision, channels_last=channels_last,
                          kernels="onednn" if onednn else "aten", folded_bn=fold_bn, compiled=compile)


def to_input(x: Tensor, *, device: torch.device | str, channels_last: bool = True) -> Tensor:
    """Frames [B,3,H,W] on `device`, in channels-last layout when the model was prepared that way."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
