"""Where and in which precision lbdt runs: the one owner of device and precision choices.

* `resolve_device("auto")` → CUDA when it is usable, else the CPU. `cuda` without CUDA, `mps` on a build
  without it, or a typo is one clear `LBDTError`.
* `resolve_precision("auto", device)` → a `Precision` saying what runs and why:

  - CUDA: bf16 where `torch.cuda.is_bf16_supported()`, else fp16 (training adds a grad scaler);
  - CPU: bf16 **only** where the CPU computes bf16 natively (x86: `avx512_bf16` or `amx_bf16`; arm64:
    `bf16`), else fp32. An explicit `bf16` on a CPU without native bf16 still runs (oneDNN emulates it),
    with `emulated=True` and a warning: LBDT-4 took 58 s per frame that way on an AVX2-only EPYC, against
    1.06 s in fp32 (55×), so it is never chosen implicitly.

* `autocast(device, precision)`: the mixed-precision context the predictor, the evaluation loop and
  training run under (fp32 = no autocast). The text encoder (an LSTM) always runs in fp32 with autocast
  disabled (`LBDT.encode_text`): oneDNN has no bf16 LSTM on AVX2, and it is ~0.04 GMAC.

CPU features are read at run time (`cpu_features()`), never assumed; every decision takes the features
as an argument so that tests inject the CPU they want.
"""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch

from lbdt.errors import LBDTError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CHOICES = ("auto", *PRECISIONS)
EMULATED_BF16_SLOWDOWN = "55× slower than fp32 for LBDT-4 at 320×320, measured on an AVX2-only AMD EPYC"


@dataclass(frozen=True)
class CPUFeatures:
    """What the CPU can do, as far as lbdt's choices go."""

    name: str  # model name, e.g. "AMD EPYC"
    architecture: str  # x86_64 | aarch64 | ...
    flags: frozenset[str] = field(default_factory=frozenset)  # ISA flags that are present

    @property
    def native_bf16(self) -> bool:
        """True where bf16 matrix products run natively (x86 AVX512-BF16 / AMX-BF16, arm64 BF16)."""
        if self.architecture in ("aarch64", "arm64"):
            return "bf16" in self.flags
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)


def cpu_features() -> CPUFeatures:
    """This machine's CPU: `torch.cpu.get_capabilities()` where the installed torch has it (2.6+), else the
    kernel's flag list (`/proc/cpuinfo` on Linux, with the kernel's spellings mapped to torch's)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            caps = get()
        except Exception:  # noqa: BLE001 -- a torch build whose probe fails: fall back to the kernel's view
            caps = None
        if isinstance(caps, Mapping):
            flags = frozenset(k for k, v in caps.items() if v is True)
            return CPUFeatures(name=str(caps.get("cpu_name") or platform.processor() or "unknown"),
                               architecture=str(caps.get("architecture") or platform.machine()), flags=flags)
    return _features_from_proc()


_PROC_NAMES = {"avx512f": "avx512_f", "avx512bw": "avx512_bw", "avx512vl": "avx512_vl", "avx512_vnni": "avx512_vnni",
               "avx512_bf16": "avx512_bf16", "amx_bf16": "amx_bf16", "amx_tile": "amx_tile", "amx_int8": "amx_int8",
               "avx2": "avx2", "fma": "fma3", "avx_vnni": "avx_vnni", "bf16": "bf16", "sve": "sve", "asimd": "asimd",
               "avx512_fp16": "avx512_fp16"}


def _cpuinfo() -> Iterator[tuple[str, str]]:
    """(key in lower case, value) for every line of /proc/cpuinfo, every processor in turn; nothing without it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                yield key.strip().lower(), value.strip()
    except OSError:
        return


def _features_from_proc() -> CPUFeatures:
    name, flags = platform.processor() or "unknown", set()
    for key, value in _cpuinfo():
        if key == "model name" and name in ("", "unknown", platform.machine()):
            name = value
        elif key in ("flags", "features"):
            flags.update(_PROC_NAMES[w] for w in value.split() if w in _PROC_NAMES)
    return CPUFeatures(name=name, architecture=platform.machine(), flags=frozenset(flags))


def cpu_family_model() -> str | None:
    """"family/model" of the first processor in /proc/cpuinfo (x86 Linux; e.g. "26/2", AMD family 26 = Zen 5),
    else None: the model name alone ("AMD EPYC") does not say which CPU a measurement ran on."""
    fields: dict[str, str] = {}
    for key, value in _cpuinfo():
        if key in ("cpu family", "model"):
            fields.setdefault(key, value)
        if len(fields) == 2:
            return f"{fields['cpu family']}/{fields['model']}"
    return None


@dataclass(frozen=True)
class Precision:
    """The precision something runs in, and why."""

    name: str  # fp32 | bf16 | fp16
    reason: str  # one line, e.g. "auto: this CPU has no native bf16 (avx512_bf16/amx_bf16)"
    emulated: bool = False  # bf16 on a CPU without native bf16: correct but very slow
    grad_scaler: bool = False  # training in fp16: scale the loss

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.name]

    def as_dict(self) -> dict[str, Any]:
        """What output JSON files record."""
        return {"precision": self.name, "precision_reason": self.reason, "precision_emulated": self.emulated}


def resolve_device(spec: str | torch.device | None = "auto", *, local_rank: int | None = None) -> torch.device:
    """`auto` → `cuda` (or `cuda:<local_rank>` under torchrun) when CUDA is usable, else `cpu`; an explicit
    device is checked: unknown names, CUDA without CUDA, MPS without MPS are one-line errors."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank or 0)
        return torch.device("cpu")
    if isinstance(spec, torch.device):
        dev = spec
    else:
        text = str(spec).strip()
        try:
            dev = torch.device(text)
        except (RuntimeError, ValueError):
            raise LBDTError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LBDTError(f"device {spec!r} requested, but this torch build or machine has no usable CUDA; "
                            "use --device cpu (or auto)")
        index = dev.index if dev.index is not None else (local_rank or 0)
        if index >= torch.cuda.device_count():
            raise LBDTError(f"device {spec!r} requested, but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise LBDTError(f"device {spec!r} requested, but MPS is not available in this torch build or machine; "
                            "use --device cpu (or auto)")
        raise LBDTError("device 'mps' is not supported by lbdt yet; use --device cpu (or auto)")
    raise LBDTError(f"device {spec!r} is not supported by lbdt: use auto, cpu, cuda or cuda:N")


def resolve_precision(spec: str | Precision | None = "auto", device: torch.device | str = "cpu", *,
                      training: bool = False, cpu: CPUFeatures | None = None,
                      cuda_bf16: bool | None = None) -> Precision:
    """The precision to run in on `device` (see the module docstring). `cpu` / `cuda_bf16` override what
    the machine says (tests inject them)."""
    if isinstance(spec, Precision):
        return spec
    name = "auto" if spec is None else str(spec).strip().lower()
    if name not in CHOICES:
        raise LBDTError(f"unknown precision {spec!r}; choose one of {', '.join(CHOICES)}")
    kind = torch.device(device).type
    if kind == "cuda":
        if cuda_bf16 is None:
            cuda_bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if name == "auto":
            if cuda_bf16:
                return Precision("bf16", "auto: this GPU supports bf16")
            return Precision("fp16", "auto: this GPU has no bf16; fp16" + (" with a grad scaler" if training else ""),
                             grad_scaler=training)
        if name == "bf16" and not cuda_bf16:
            raise LBDTError("precision bf16 requested, but this GPU does not support bf16; use fp16 or fp32 (or auto)")
        return Precision(name, "requested", grad_scaler=training and name == "fp16")
    if kind != "cpu":
        raise LBDTError(f"precision cannot be chosen for device {str(device)!r}; use cpu or cuda")
    cpu = cpu if cpu is not None else cpu_features()
    if name == "fp16":
        raise LBDTError("precision fp16 needs a CUDA device; on the CPU use auto, bf16 or fp32")
    if name == "auto":
        if cpu.native_bf16:
            return Precision("bf16", f"auto: this CPU ({cpu.name}) computes bf16 natively")
        return Precision("fp32", f"auto: this CPU ({cpu.name}) has no native bf16 (avx512_bf16/amx_bf16/arm bf16)")
    if name == "bf16" and not cpu.native_bf16:
        return Precision("bf16", f"requested; this CPU ({cpu.name}) has no native bf16, so bf16 is emulated "
                                 f"({EMULATED_BF16_SLOWDOWN})", emulated=True)
    return Precision(name, "requested")


def announce(precision: Precision, device: torch.device, *, stream: Any = None) -> None:
    """Print the choice on stderr, one line (the emulated-bf16 warning included)."""
    stream = stream if stream is not None else sys.stderr
    head = "warning: " if precision.emulated else ""
    print(f"lbdt: {head}running on {device} in {precision.name} ({precision.reason})", file=stream)


def autocast(device: torch.device | str, precision: str | Precision) -> AbstractContextManager:
    """The mixed-precision context for `precision` (fp32 = no autocast at all)."""
    name = precision.name if isinstance(precision, Precision) else str(precision)
    if name not in PRECISIONS:
        raise LBDTError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)} (resolve 'auto' first)")
    kind = torch.device(device).type
    if name == "fp16" and kind != "cuda":
        raise LBDTError("fp16 needs a CUDA device; on the CPU use bf16 or fp32")
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=kind, dtype=PRECISIONS[name])


@dataclass(frozen=True)
class InferenceSetup:
    """What `prepare_for_inference` made of a model: where and how it runs (`lbdt.engine.fast`); kept on `Runnable.inference`."""

    device: torch.device
    precision: Precision
    channels_last: bool  # 4-D weights in channels-last layout: feed inputs through `to_input(channels_last=True)`
    kernels: str  # "onednn" (oneDNN linear, attention and convolution modules) | "aten"
    folded_bn: bool
    compiled: bool

    def as_dict(self) -> dict:
        return {"device": str(self.device), **self.precision.as_dict(), "channels_last": self.channels_last,
                "kernels": self.kernels, "folded_bn": self.folded_bn, "compiled": self.compiled}
