"""lbdt.runtime: device and precision decisions, tested by injecting the CPU / GPU they depend on."""

from __future__ import annotations

import io
import platform

import pytest
import torch

from lbdt import runtime
from lbdt.cli import main
from lbdt.engine import fast
from lbdt.errors import LBDTError
from lbdt.models.build import build_model
from lbdt.runtime import CPUFeatures, Precision, autocast, resolve_device, resolve_precision

AVX2 = CPUFeatures("AMD EPYC (AVX2 only)", "x86_64", frozenset({"avx2", "fma3"}))
AVX512_BF16 = CPUFeatures("AMD EPYC (Zen 4)", "x86_64", frozenset({"avx2", "avx512_f", "avx512_bf16"}))
AMX = CPUFeatures("Intel Xeon (Sapphire Rapids)", "x86_64", frozenset({"avx2", "avx512_f", "amx_tile", "amx_bf16"}))
ARM_BF16 = CPUFeatures("Neoverse V1", "aarch64", frozenset({"asimd", "sve", "bf16"}))
ARM = CPUFeatures("Cortex-A72", "aarch64", frozenset({"asimd"}))


@pytest.mark.parametrize("cpu, expected", [(AVX2, "fp32"), (AVX512_BF16, "bf16"), (AMX, "bf16"),
                                           (ARM_BF16, "bf16"), (ARM, "fp32")])
def test_auto_on_cpu_picks_bf16_only_where_it_is_native(cpu, expected):
    p = resolve_precision("auto", "cpu", cpu=cpu)
    assert p.name == expected and not p.emulated and p.reason.startswith("auto:") and cpu.name in p.reason
    assert resolve_precision("auto", "cpu", cpu=cpu, training=True).name == expected  # training: the same rule


@pytest.mark.parametrize("cpu", [AVX2, AVX512_BF16, AMX, ARM_BF16])
def test_evaluation_default_is_fp32_whatever_the_cpu(cpu):
    got = resolve_precision(None, "cpu", evaluation=True, cpu=cpu)
    assert (got.name, got.reason, got.emulated) == ("fp32", runtime.EVALUATION_DEFAULT, False)
    # asked-for precisions are honoured as elsewhere; without `evaluation` no spec still means auto
    assert resolve_precision("auto", "cpu", evaluation=True, cpu=cpu) == resolve_precision("auto", "cpu", cpu=cpu)
    assert resolve_precision(None, "cpu", cpu=cpu).name == ("bf16" if cpu.native_bf16 else "fp32")
    assert resolve_precision("bf16", "cpu", evaluation=True, cpu=cpu).name == "bf16"
    assert resolve_precision(None, "cuda", evaluation=True, cuda_bf16=True).name == "fp32"


def test_explicit_bf16_without_native_bf16_runs_emulated_and_says_so():
    p = resolve_precision("bf16", "cpu", cpu=AVX2)
    assert (p.name, p.emulated) == ("bf16", True)
    assert "emulated" in p.reason and "55×" in p.reason
    out = io.StringIO()
    runtime.announce(p, torch.device("cpu"), stream=out)
    line = out.getvalue()
    assert line.count("\n") == 1 and line.startswith("lbdt: warning: running on cpu in bf16")
    native = resolve_precision("bf16", "cpu", cpu=AVX512_BF16)
    assert not native.emulated and native.reason == "requested"
    assert resolve_precision("fp32", "cpu", cpu=AVX2).as_dict() == {
        "precision": "fp32", "precision_reason": "requested", "precision_emulated": False}


def test_cuda_rules():
    assert resolve_precision("auto", "cuda", cuda_bf16=True).name == "bf16"
    p = resolve_precision("auto", "cuda", cuda_bf16=False)
    assert (p.name, p.grad_scaler) == ("fp16", False)
    t = resolve_precision("auto", "cuda", cuda_bf16=False, training=True)
    assert (t.name, t.grad_scaler) == ("fp16", True) and "grad scaler" in t.reason
    assert resolve_precision("fp16", "cuda", cuda_bf16=True, training=True).grad_scaler
    with pytest.raises(LBDTError, match="does not support bf16"):
        resolve_precision("bf16", "cuda", cuda_bf16=False)


@pytest.mark.parametrize("spec, message", [("fp16", "fp16 needs a CUDA device"), ("int8", "unknown precision 'int8'"),
                                           ("", "unknown precision")])
def test_bad_precisions_are_one_line_errors(spec, message):
    with pytest.raises(LBDTError, match=message):
        resolve_precision(spec, "cpu", cpu=AVX2)


def test_autocast_contexts():
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", Precision("bf16", "requested")):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") is torch.bfloat16
    with pytest.raises(LBDTError, match="resolve 'auto' first"):
        autocast("cpu", "auto")
    with pytest.raises(LBDTError, match="fp16 needs a CUDA device"):
        autocast("cpu", "fp16")


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for spec, message in [("cuda", "no usable CUDA"), ("cuda:1", "no usable CUDA"), ("mps", "MPS"),
                          ("gpu0", "unknown device 'gpu0'"), ("tpu", "unknown device|not supported")]:
        with pytest.raises(LBDTError, match=message):
            resolve_device(spec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(LBDTError, match="only 2 CUDA device"):
        resolve_device("cuda:3")


def test_cpu_family_model_is_the_first_processors(monkeypatch):
    x86 = [("processor", "0"), ("cpu family", "26"), ("model", "2"), ("model name", "AMD EPYC"),
           ("processor", "1"), ("cpu family", "25"), ("model", "17")]
    monkeypatch.setattr(runtime, "_cpuinfo", lambda: iter(x86))
    assert runtime.cpu_family_model() == "26/2"
    monkeypatch.setattr(runtime, "_cpuinfo", lambda: iter([("processor", "0"), ("features", "fp asimd")]))
    assert runtime.cpu_family_model() is None  # arm64: no family / model lines


def test_cpu_features_fall_back_to_the_kernel_flags(monkeypatch):
    direct = runtime.cpu_features()
    assert direct.architecture in (platform.machine(), "x86_64", "aarch64", "arm64")

    def broken():
        raise RuntimeError("no cpuinfo")

    monkeypatch.setattr(torch.cpu, "get_capabilities", broken, raising=False)
    fallback = runtime.cpu_features()
    assert fallback.architecture == platform.machine()
    if platform.system() == "Linux":  # both views of this CPU agree on what matters here
        assert fallback.native_bf16 == direct.native_bf16
        assert ("avx2" in fallback.flags) == ("avx2" in direct.flags)


def test_text_encoder_runs_in_fp32_with_autocast_off_under_bf16():
    """Under CPU autocast PyTorch would run nn.LSTM in bf16 (a oneDNN error on AVX2 CPUs)."""
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    seen = {}

    def hook(module, inputs):
        seen["dtype"] = inputs[0].dtype
        seen["autocast"] = torch.is_autocast_enabled("cpu")

    model.text_encoder.lstm.register_forward_pre_hook(hook)
    words, mask = torch.randn(2, 7, 300), torch.ones(2, 7)
    with torch.inference_mode():
        reference = model.encode_text(words, mask)
        with autocast("cpu", "bf16"):
            mixed = model.encode_text(words, mask)
    assert seen == {"dtype": torch.float32, "autocast": False}
    assert mixed.words.dtype == torch.float32 and torch.equal(mixed.words, reference.words)
    assert torch.equal(mixed.sentence, reference.sentence)


def test_lbdt_env_reports_the_auto_choice(capsys, monkeypatch):
    from lbdt import envreport

    monkeypatch.setattr(envreport, "cpu_features", lambda: AVX2)  # the report reads the machine through these
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "AMD EPYC (AVX2 only)" in out and "native bf16: no" in out
    assert "precision fp32 (auto: this CPU" in out and "avx512_bf16" in out  # listed as absent
    assert main(["env", "--json"]) == 0
    import json

    env = json.loads(capsys.readouterr().out)
    assert env["auto"]["precision"] == "fp32" and env["cpu"]["native_bf16"] is False
    usable, why = fast.onednn_status()
    assert env["fp32_kernels"] == {"kernel": "onednn" if usable else "aten", "reason": why}
    monkeypatch.setattr(envreport, "onednn_status", lambda: (False, "this torch build has no oneDNN"))
    assert main(["env"]) == 0
    assert "fp32 fast path: aten (this torch build has no oneDNN)" in capsys.readouterr().out


def _clip_mp4(path):
    from lbdt.data.synth import make_clip
    from media import write_mp4

    clip = make_clip(11, frames=12, size=(96, 128))
    write_mp4(path, list(clip.frames))
    return clip


def test_predict_on_an_avx2_only_cpu_picks_fp32_and_emulated_bf16_agrees(tmp_path, capsys, monkeypatch):
    """The issue's scenario: an AVX2-only CPU (injected) — auto runs fp32 and says so; an explicit bf16 runs
    (emulated, with a warning) and its masks agree with fp32 over the clip (IoU >= 0.97)."""
    import json

    import numpy as np
    from PIL import Image

    monkeypatch.setattr(runtime, "cpu_features", lambda: AVX2)
    clip = _clip_mp4(tmp_path / "clip.mp4")
    sentence = next(o.sentence for o in clip.objects if o.sentence_type == "appearance")
    outs = {}
    for precision in ("auto", "bf16"):
        outs[precision] = tmp_path / precision
        capsys.readouterr()
        assert main(["predict", str(tmp_path / "clip.mp4"), "--text", sentence, "--precision", precision,
                     "--out", str(outs[precision]), "--no-overlay"]) == 0
        err = capsys.readouterr().err
        summary = json.loads((outs[precision] / "summary.json").read_text())["model"]
        if precision == "auto":
            assert (summary["precision"], summary["precision_emulated"]) == ("fp32", False)
            assert "running on cpu in fp32 (auto: this CPU (AMD EPYC (AVX2 only)) has no native bf16" in err
        else:
            assert (summary["precision"], summary["precision_emulated"]) == ("bf16", True)
            assert "lbdt: warning: running on cpu in bf16" in err and "emulated" in err
    inter = union = 0
    for png in sorted((outs["auto"]).rglob("*.png")):
        a = np.asarray(Image.open(png)) > 0
        b = np.asarray(Image.open(outs["bf16"] / png.relative_to(outs["auto"]))) > 0
        inter, union = inter + int((a & b).sum()), union + int((a | b).sum())
    assert union > 0 and inter / union >= 0.97, inter / max(union, 1)


def test_benchmark_default_precisions_follow_the_machine(monkeypatch):
    from lbdt.tools.benchmark import machine_precisions

    monkeypatch.setattr(runtime, "cpu_features", lambda: AVX2)
    assert machine_precisions(("machine",), torch.device("cpu")) == ("fp32",)  # no emulated bf16 by default
    monkeypatch.setattr(runtime, "cpu_features", lambda: AVX512_BF16)
    assert machine_precisions(("machine",), torch.device("cpu")) == ("bf16", "fp32")
    assert machine_precisions(("fp32", "bf16"), torch.device("cpu")) == ("fp32", "bf16")
    with pytest.raises(LBDTError, match="unknown precision 'int4'"):
        machine_precisions(("int4",), torch.device("cpu"))
