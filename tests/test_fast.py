"""The fast inference path (`lbdt.engine.fast`) and the benchmark harness (`lbdt.tools.benchmark`).

The equivalence tests use a tiny model briefly trained on a synthetic clip (so its mask follows the
referred object, with logits well away from 0 except at the object's border) and folded BatchNorm
statistics that are not the identity.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lbdt.data.synth import make_clip, vocabulary
from lbdt.data.transforms import normalize
from lbdt.engine import fast
from lbdt.errors import LBDTError
from lbdt.losses import segmentation_loss
from lbdt.models.build import build_model
from lbdt.runtime import autocast
from lbdt.tools.benchmark import (
    BenchmarkSettings,
    format_table,
    matmul_rate,
    peak_memory,
    run_benchmark,
    write_json,
)
from lbdt.words import WordVectors

SIZE = (64, 64)
FRAMES = 8
OBJECT = 0  # the clip's first object: a moving shape referred to by its motion


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


@pytest.fixture(scope="module")
def trained():
    """(model in eval mode, frames [T,3,H,W], ref_frames, word_vectors [T,N,300], word_mask [T,N], gt bool [T,H,W])."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        clip = make_clip(0, frames=FRAMES, size=SIZE)
        frames = torch.stack([normalize(torch.from_numpy(f).permute(2, 0, 1).float() / 255) for f in clip.frames])
        refs = torch.cat([frames[:1], frames[:-1]])  # reference frame t-1, clamped
        vectors, mask = WordVectors.seeded(vocabulary()).encode(clip.objects[OBJECT].sentence)
        vectors, mask = vectors[None].expand(FRAMES, -1, -1), mask[None].expand(FRAMES, -1)
        gt = torch.from_numpy(clip.masks[OBJECT])
        model = build_model("tiny", dropout=0.0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
        for step in range(60):
            idx = torch.arange(step % 2, FRAMES, 2)
            loss = segmentation_loss(model(frames[idx], refs[idx], vectors[idx], mask[idx]), gt[idx].float())["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    return model, frames, refs, vectors, mask, gt


def _plain_logits(model, frames, refs, vectors, mask) -> torch.Tensor:
    """The reference: the unprepared fp32 model, one frame at a time, the sentence encoded every call."""
    with torch.inference_mode():
        return torch.cat([model(frames[i:i + 1], refs[i:i + 1], vectors[i:i + 1], mask[i:i + 1])
                          for i in range(len(frames))])


def _fast_logits(model, frames, refs, vectors, mask, *, precision: str, **prepare) -> torch.Tensor:
    """The fast path: prepared copy, the sentence encoded once, all frames in one batch."""
    prepared = copy.deepcopy(model)
    fast.prepare_for_inference(prepared, device="cpu", precision=precision, **prepare)
    channels_last = prepare.get("channels_last", True)
    with torch.inference_mode(), autocast("cpu", precision):
        text = prepared.encode_text(vectors[:1], mask[:1])
        return prepared.segment(fast.to_input(frames, device="cpu", channels_last=channels_last),
                                fast.to_input(refs, device="cpu", channels_last=channels_last), text).float()


# ---------------------------------------------------------------- BatchNorm folding


def test_fold_conv_bn_hand_computed():
    conv = nn.Conv2d(1, 1, 1, bias=False)
    bn = nn.BatchNorm2d(1, eps=1.0).eval()
    with torch.no_grad():
        conv.weight.fill_(2.0)
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(3.0)  # sqrt(3 + eps) = 2
        bn.weight.fill_(0.5)
        bn.bias.fill_(0.25)
    fast.fold_conv_bn(conv, bn)
    # w' = 2 * 0.5 / 2 = 0.5; b' = (0 - 1) * 0.5 / 2 + 0.25 = 0
    assert conv.weight.item() == pytest.approx(0.5)
    assert conv.bias.item() == pytest.approx(0.0)


def test_fold_conv_bn_matches_conv_then_bn():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    bn.eval()
    x = torch.randn(2, 4, 8, 8)
    expected = bn(conv(x))
    fast.fold_conv_bn(conv, bn)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_removes_every_batchnorm(trained):
    model, frames, refs, vectors, mask, _ = trained
    folded_model = copy.deepcopy(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in folded_model.modules())
    assert n_bn > 0
    assert fast.fold_batchnorm(folded_model) == n_bn  # every BN of LBDT directly follows a conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded_model.modules())
    with torch.inference_mode():
        torch.testing.assert_close(folded_model(frames, refs, vectors, mask), model(frames, refs, vectors, mask),
                                   rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_needs_eval_mode():
    with pytest.raises(LBDTError, match="eval mode"):
        fast.fold_batchnorm(build_model("tiny").train())


# ---------------------------------------------------------------- masks: fast path vs plain model


def test_trained_fixture_is_meaningful(trained):
    model, frames, refs, vectors, mask, gt = trained
    logits = _plain_logits(model, frames, refs, vectors, mask)
    assert _iou(logits > 0, gt) > 0.5  # the mask follows the referred object
    assert float((logits.abs() < 0.05).float().mean()) < 0.01  # logits are not hovering around 0


@pytest.mark.parametrize("prepare", [{}, {"fold_bn": False}, {"channels_last": False}],
                         ids=["fold+channels_last", "channels_last", "fold"])
def test_fp32_fast_path_gives_identical_masks(trained, prepare):
    model, frames, refs, vectors, mask, _ = trained
    plain = _plain_logits(model, frames, refs, vectors, mask)
    quick = _fast_logits(model, frames, refs, vectors, mask, precision="fp32", **prepare)
    torch.testing.assert_close(quick, plain, rtol=1e-4, atol=1e-4)
    assert torch.equal(quick > 0, plain > 0)


def test_bf16_masks_agree_with_fp32(trained):
    model, frames, refs, vectors, mask, _ = trained
    plain = _plain_logits(model, frames, refs, vectors, mask)
    low = _fast_logits(model, frames, refs, vectors, mask, precision="bf16")
    assert float((low - plain).abs().max()) > 1e-3  # reduced precision really ran
    assert _iou(low > 0, plain > 0) >= 0.99
    for t in range(FRAMES):  # and frame by frame, not only over the clip
        assert _iou(low[t] > 0, plain[t] > 0) >= 0.97


def test_prepared_model_is_ready_for_inference(trained):
    model = copy.deepcopy(trained[0])
    fast.prepare_for_inference(model, device="cpu")
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert model.spatial_backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.spatial_backbone.conv1.bias is not None  # BN folded into it


@pytest.mark.slow
def test_compiled_fast_path_gives_identical_masks(trained):
    model, frames, refs, vectors, mask, _ = trained
    plain = _plain_logits(model, frames, refs, vectors, mask)
    compiled = _fast_logits(model, frames, refs, vectors, mask, precision="fp32", compile=True)
    assert torch.equal(compiled > 0, plain > 0)


# ---------------------------------------------------------------- oneDNN kernels (CPU, fp32)

needs_onednn = pytest.mark.skipif(not fast.onednn_status()[0], reason="no usable oneDNN kernels here")


@needs_onednn
def test_onednn_linear_equals_linear_layer():
    torch.manual_seed(2)
    linear = nn.Linear(24, 40)
    swapped = fast.OneDNNLinear(linear.weight, linear.bias)
    for x in (torch.randn(7, 24), torch.randn(5, 3, 24), torch.randn(3, 5, 24).transpose(0, 1)):  # last: strided
        torch.testing.assert_close(swapped(x), linear(x), rtol=1e-5, atol=1e-5)
    x = torch.randn(2, 24)  # under autocast it casts like nn.Linear does
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert swapped(x).dtype is torch.bfloat16
        torch.testing.assert_close(swapped(x), linear(x))


@needs_onednn
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("call", ["key_is_value", "separate", "padded"])
def test_inference_attention_equals_multihead_attention(batch, call):
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(32, 4, dropout=0.1).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    ours = fast.InferenceAttention(mha)
    query, key, value = torch.randn(9, batch, 32), torch.randn(6, batch, 32), torch.randn(6, batch, 32)
    padding = None
    if call == "key_is_value":
        value = key
    elif call == "padded":
        padding = torch.zeros(batch, 6, dtype=torch.bool)
        padding[:, 4:] = True
        padding[0, 1] = True
    with torch.inference_mode():
        expected = mha(query, key, value, key_padding_mask=padding, need_weights=False)[0]
        got, weights = ours(query, key, value, key_padding_mask=padding)
    assert weights is None
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("conv_args", [(8, 12, 3, 1, 1), (8, 12, 3, 2, 1), (3, 16, 7, 2, 3), (12, 6, 1, 1, 0)],
                         ids=["3x3", "3x3/2", "7x7/2", "1x1"])
def test_onednn_conv_equals_conv(conv_args):
    cin, cout, k, stride, pad = conv_args
    torch.manual_seed(4)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad).to(memory_format=torch.channels_last)
    plain, fused = fast.OneDNNConv(conv), fast.OneDNNConv(conv, relu=True)
    x = torch.randn(1, cin, 20, 16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for inp in (x, torch.randn(3, cin, 12, 24).contiguous(memory_format=torch.channels_last), torch.randn(2, cin, 8, 8)):
            # packed for the first shape; later shapes and an NCHW input still give the convolution
            expected = conv(inp)
            torch.testing.assert_close(plain(inp), expected, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(fused(inp), F.relu(expected), rtol=1e-4, atol=1e-4)
            residual = torch.randn_like(expected)
            torch.testing.assert_close(plain(inp, residual=residual), F.relu(expected + residual), rtol=1e-4, atol=1e-4)
        copied = copy.deepcopy(fused)  # the packed weight is rebuilt, not copied
        torch.testing.assert_close(copied(x), F.relu(conv(x)), rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast it casts like nn.Conv2d does
        assert fused(x).dtype is torch.bfloat16


@needs_onednn
@pytest.mark.parametrize("stride", [1, 2])
def test_inference_bottleneck_equals_folded_bottleneck(stride):
    from lbdt.models.backbone import Bottleneck

    torch.manual_seed(5)
    block = Bottleneck(in_channels=16, width=8 if stride == 2 else 4, stride=stride).eval()
    with torch.no_grad():
        for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.bias.normal_()
    x = torch.randn(2, 16, 12, 12).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = block(x)
        fast.fold_batchnorm(block)
        ours = fast.InferenceBottleneck(block.to(memory_format=torch.channels_last))
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)
    assert (block.downsample is not None) == (stride == 2) == (ours.downsample is not None)


def test_kernels_are_decided_at_run_time(trained, monkeypatch):
    model = trained[0]
    usable = fast.onednn_status()[0]
    prepared = copy.deepcopy(model)
    prepared_setup = fast.prepare_for_inference(prepared, device="cpu", precision="fp32")
    assert prepared_setup.kernels == ("onednn" if usable else "aten")
    if usable:  # every convolution, linear layer and attention replaced; ReLUs fused where BN was folded
        aten = (nn.Conv2d, nn.Linear, nn.MultiheadAttention, nn.ReLU)
        assert not [name for name, m in prepared.named_modules() if type(m) in aten]
        assert sum(isinstance(m, fast.InferenceBottleneck) for m in prepared.modules()) == 2 * 4  # tiny: 4 blocks
        assert prepared.head.tower[0][0].relu and not prepared.head.tower[-1].relu
    low = copy.deepcopy(model)
    low_setup = fast.prepare_for_inference(low, device="cpu", precision="bf16")
    assert low_setup.kernels == "aten"  # bf16 products already go through oneDNN in F.linear
    # A torch without the kernels (injected): the fast path keeps ATen's modules, and asking for oneDNN is refused.
    monkeypatch.setattr(fast, "onednn_status", lambda: (False, "oneDNN's kernels are not callable here"))
    kept = copy.deepcopy(model)
    kept_setup = fast.prepare_for_inference(kept, device="cpu", precision="fp32")
    assert kept_setup.kernels == "aten"
    assert not any(isinstance(m, (fast.OneDNNLinear, fast.InferenceAttention, fast.OneDNNConv)) for m in kept.modules())
    with pytest.raises(LBDTError, match="not callable here"):
        fast.prepare_for_inference(copy.deepcopy(model), device="cpu", precision="fp32", onednn=True)


def test_onednn_status_refuses_a_missing_or_broken_kernel(monkeypatch):
    real = torch.ops.mkldnn
    fast.onednn_status.cache_clear()
    try:
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert fast.onednn_status() == (False, "this torch build has no oneDNN")
        fast.onednn_status.cache_clear()
        monkeypatch.undo()

        class Missing:  # a torch whose private kernels are gone
            pass

        monkeypatch.setattr(torch.ops, "mkldnn", Missing())
        usable, why = fast.onednn_status()
        assert not usable and why.startswith("oneDNN's kernels are not callable here (AttributeError")
        fast.onednn_status.cache_clear()

        class Wrong:  # a linear kernel that answers, but not with the product
            _linear_pointwise = staticmethod(lambda x, w, b, *rest: torch.zeros(x.shape[:-1] + (w.shape[0],)))
            _convolution_pointwise = real._convolution_pointwise

        monkeypatch.setattr(torch.ops, "mkldnn", Wrong())
        assert fast.onednn_status() == (False, "oneDNN's linear kernel disagrees with ATen here")
    finally:
        monkeypatch.undo()
        fast.onednn_status.cache_clear()


# ---------------------------------------------------------------- benchmark harness


def test_peak_memory_sees_an_allocation():
    with peak_memory(torch.device("cpu")) as mem:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        del block
    if mem["peak_mib"] is None:
        pytest.skip("this kernel cannot reset the peak resident set")
    assert 60 <= mem["peak_mib"] < 1024


def test_matmul_rate_is_a_rate():
    rate = matmul_rate(torch.device("cpu"), "fp32", sizes=(256,), repeats=2)
    assert 1e8 < rate < 1e14  # FLOP/s


def test_benchmark_quick_run(tmp_path):
    settings = BenchmarkSettings(model="tiny", size=(64, 64), precisions=("fp32", "bf16", "fp16"), batches=(1, 2),
                                 frames=4, repeats=1, train_step=True, train_batch=1, matmul_sizes=(512,),
                                 loader_samples=8, loader_workers=0)
    result = run_benchmark(settings)
    assert result["model"]["parameters"] == sum(p.numel() for p in build_model("tiny").parameters())
    assert result["model"]["gflops_per_frame"] == pytest.approx(2 * result["model"]["gmacs_per_frame"])
    assert result["matmul_gflops"]["fp16"] is None and "fp16: n/a on cpu" in result["notes"]
    for p in ("fp32", "bf16"):  # sampled at the start and after each of its measurements; the best is kept
        assert len(result["matmul_gflops_samples"][p]) == 1 + 2 * (1 + (p == "fp32"))
        assert result["matmul_gflops"][p] == max(result["matmul_gflops_samples"][p])
    rows = {(r["path"], r["precision"], r["batch"]) for r in result["inference"]}
    assert rows == {(p, q, b) for b in (1, 2) for p, q in [("plain", "fp32"), ("fast", "fp32"), ("fast", "bf16")]}
    for row in result["inference"]:
        expected = row["frames_per_s"] * result["model"]["gflops_per_frame"] / result["matmul_gflops"][row["precision"]]
        assert row["achieved_share"] == pytest.approx(expected)
        assert row["frames_per_s"] == pytest.approx(row["batch"] / row["median_seconds_per_batch"])
    assert [r["frames"] for r in result["streaming"]] == [4, 4]
    assert [r["precision"] for r in result["train"]] == ["fp32", "bf16"]
    assert result["data_loader"]["samples"] >= 8
    assert result["machine"]["torch"] == torch.__version__
    out = tmp_path / "bench.json"
    write_json(result, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    table = format_table(result)
    assert "fp16 n/a" in table and table.count("\nfast ") == 4 and "data loader:" in table
    assert result["kernels"]["bf16"] == "aten"
    assert result["kernels"]["fp32"] == ("onednn" if fast.onednn_status()[0] else "aten")
    assert f"kernels on the fast path: fp32 {result['kernels']['fp32']}, bf16 aten" in table


def test_benchmark_rejects_bad_settings():
    with pytest.raises(LBDTError, match="precision"):
        run_benchmark(BenchmarkSettings(model="tiny", precisions=("fp64",)))
    with pytest.raises(LBDTError, match="variant"):
        run_benchmark(BenchmarkSettings(model="huge"))


def test_stored_reduced_precision_weights_change_nothing_under_autocast(trained):
    model, frames, refs, vectors, mask, _ = trained
    ref_model = copy.deepcopy(model)
    ref_model_setup = fast.prepare_for_inference(ref_model, device="cpu")  # fp32 weights, cast per call
    assert ref_model_setup.kernels == "aten" or isinstance(ref_model.bca.joint, fast.OneDNNLinear)  # casts too
    low_model = copy.deepcopy(model)
    fast.prepare_for_inference(low_model, device="cpu", precision="bf16")
    assert low_model.spatial_backbone.layer1[0].conv2.weight.dtype is torch.bfloat16
    assert low_model.lbdt_res4.layers[0].words_self_attn.in_proj_weight.dtype is torch.bfloat16
    assert low_model.text_encoder.lstm.weight_ih_l0.dtype is torch.float32
    x, r = fast.to_input(frames, device="cpu"), fast.to_input(refs, device="cpu")
    with torch.inference_mode(), autocast("cpu", "bf16"):
        expected = ref_model.segment(x, r, ref_model.encode_text(vectors[:1], mask[:1]))
        got = low_model.segment(x, r, low_model.encode_text(vectors[:1], mask[:1]))
    assert torch.equal(got, expected)
