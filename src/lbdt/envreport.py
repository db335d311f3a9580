"""`lbdt env`: the machine as lbdt sees it, and what `--device auto` / `--precision auto` pick here and why.

The decisions are `lbdt.runtime`'s and the fp32 kernel choice is `lbdt.engine.fast`'s; this module only
reports them.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

from lbdt.engine.fast import onednn_status
from lbdt.runtime import CPUFeatures, cpu_features, resolve_device, resolve_precision

# ISA flags worth showing in `lbdt env`, as torch.cpu.get_capabilities() names them
SHOWN_FLAGS = ("avx2", "fma3", "avx512_f", "avx512_bw", "avx512_vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
               "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "bf16", "sve", "asimd")


def environment(cpu: CPUFeatures | None = None) -> dict[str, Any]:
    """The machine as lbdt sees it: CPU and ISA flags, torch and its threads, CUDA devices, and what `auto`
    picks for device and precision (with the reason)."""
    cpu = cpu if cpu is not None else cpu_features()
    device = resolve_device("auto")
    inference = resolve_precision("auto", device, cpu=cpu)
    training = resolve_precision("auto", device, training=True, cpu=cpu)
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            cuda.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
    return {
        "cpu": {"name": cpu.name, "architecture": cpu.architecture, "logical_cores": os.cpu_count(),
                "flags": [f for f in SHOWN_FLAGS if f in cpu.flags],
                "absent": [f for f in ("avx2", "avx512_f", "avx512_bf16", "amx_bf16") if f not in cpu.flags],
                "native_bf16": cpu.native_bf16},
        "python": platform.python_version(),
        "torch": {"version": torch.__version__, "threads": torch.get_num_threads(),
                  "interop_threads": torch.get_num_interop_threads(), "cuda_build": torch.version.cuda},
        "cuda_devices": cuda,
        "fp32_kernels": _fp32_kernels(device),
        "auto": {"device": str(device), "precision": inference.name, "reason": inference.reason,
                 "training_precision": training.name + (" + grad scaler" if training.grad_scaler else ""),
                 "device_reason": "CUDA is usable" if device.type == "cuda" else "no usable CUDA device"},
    }


def _fp32_kernels(device: torch.device) -> dict[str, str]:
    """Which kernels the fp32 fast path runs on `device` (`engine.fast` decides)."""
    if device.type != "cpu":
        return {"kernel": "aten", "reason": f"{device.type}: ATen's modules"}
    usable, why = onednn_status()
    return {"kernel": "onednn" if usable else "aten", "reason": why}


def format_environment(env: dict[str, Any]) -> str:
    """`lbdt env` output."""
    c, t, a = env["cpu"], env["torch"], env["auto"]
    flags = " ".join(c["flags"]) + (f"  (absent: {' '.join(c['absent'])})" if c["absent"] else "")
    lines = [
        f"cpu:        {c['name']} ({c['architecture']}, {c['logical_cores']} logical cores)",
        f"isa:        {flags}",
        f"native bf16: {'yes' if c['native_bf16'] else 'no'}",
        f"python:     {env['python']}",
        (f"torch:      {t['version']} ({t['threads']} threads, {t['interop_threads']} inter-op; "
         f"CUDA build: {t['cuda_build'] or 'none'})"),
        "cuda:       " + ("; ".join(f"{d['index']}: {d['name']} ({d['memory_gib']} GiB, sm {d['capability']})"
                                    for d in env["cuda_devices"]) or "no usable device"),
        (f"auto:       device {a['device']} ({a['device_reason']}); precision {a['precision']} ({a['reason']}); "
         f"training {a['training_precision']}"),
        f"fp32 fast path: {env['fp32_kernels']['kernel']} ({env['fp32_kernels']['reason']})",
    ]
    return "\n".join(lines)
