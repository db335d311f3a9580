"""The LBDT network: shapes, gradients, streaming split, building blocks checked against hand formulas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lbdt import LBDT, build_model
from lbdt.errors import LBDTError
from lbdt.models.backbone import ResNet
from lbdt.models.build import VARIANTS
from lbdt.models.complexity import count_macs, count_parameters
from lbdt.models.decoder import aligned_upsample
from lbdt.models.duplex import LBDTLayer, LBDTModule
from lbdt.models.position import sine_1d, sine_2d
from lbdt.models.text_encoder import TextFeatures


def _inputs(b: int = 2, h: int = 64, w: int = 96, n: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    frame = torch.randn(b, 3, h, w, generator=g)
    ref = torch.randn(b, 3, h, w, generator=g)
    words = torch.randn(b, n, 300, generator=g)
    mask = torch.ones(b, n)
    mask[-1, n - 2:] = 0  # the last sample has two pad tokens
    return frame, ref, words, mask


@pytest.fixture(scope="module")
def tiny() -> LBDT:
    torch.manual_seed(0)
    return build_model("tiny").eval()


# ------------------------------------------------------------------ whole network


@pytest.mark.parametrize("b,h,w", [(1, 64, 64), (2, 64, 96), (1, 96, 32)])
def test_output_shape(tiny, b, h, w):
    frame, ref, words, mask = _inputs(b, h, w)
    with torch.no_grad():
        out = tiny(frame, ref, words, mask)
    assert out.shape == (b, h, w)  # B = 1 keeps its batch dimension
    assert torch.isfinite(out).all()


def test_single_word_sentence(tiny):
    frame, ref, words, mask = _inputs(2, 64, 64, n=1)
    mask[:] = 1
    with torch.no_grad():
        assert tiny(frame, ref, words, mask).shape == (2, 64, 64)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(1)
    model = build_model("tiny").train()
    frame, ref, words, mask = _inputs(2, 64, 96)
    model(frame, ref, words, mask).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_forward_equals_encode_text_then_segment(tiny):
    frame, ref, words, mask = _inputs(2, 64, 96)
    with torch.no_grad():
        full = tiny(frame, ref, words, mask)
        split = tiny.segment(frame, ref, tiny.encode_text(words, mask))
    assert torch.equal(full, split)


def test_batch_one_text_broadcasts_over_frames(tiny):
    frame, ref, words, mask = _inputs(3, 64, 64)
    words, mask = words[:1], mask[:1]
    with torch.no_grad():
        text = tiny.encode_text(words, mask)
        assert len(text) == 1
        broadcast = tiny.segment(frame, ref, text)
        repeated = tiny(frame, ref, words.expand(3, -1, -1), mask.expand(3, -1))
    torch.testing.assert_close(broadcast, repeated, rtol=1e-5, atol=1e-5)


def test_temporal_input_is_absolute_frame_difference():
    torch.manual_seed(2)
    seen = []
    for zero in (False, True):
        model = build_model("tiny", zero_temporal=zero).eval()
        hook = model.temporal_backbone.conv1.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
        frame, ref, words, mask = _inputs(1, 64, 64)
        with torch.no_grad():
            model(frame, ref, words, mask)
        hook.remove()
        expected = torch.zeros_like(frame) if zero else (frame - ref).abs()
        assert torch.equal(seen[-1], expected)


def test_zero_temporal_ignores_reference_frame():
    torch.manual_seed(3)
    frame, ref, words, mask = _inputs(1, 64, 64)
    for zero, same in ((True, True), (False, False)):
        model = build_model("tiny", zero_temporal=zero).eval()
        with torch.no_grad():
            a = model(frame, ref, words, mask)
            b = model(frame, ref + 1.0, words, mask)
        assert torch.equal(a, b) == same


def test_config_round_trip(tiny):
    cfg = tiny.config
    assert json.loads(json.dumps(cfg)) == cfg  # plain types only
    clone = LBDT.from_config(cfg)
    assert clone.config == cfg
    clone.load_state_dict(tiny.state_dict())  # same names and shapes
    frame, ref, words, mask = _inputs(1, 64, 64)
    with torch.no_grad():
        assert torch.equal(clone.eval()(frame, ref, words, mask), tiny(frame, ref, words, mask))


def test_tiny_hyper_parameters(tiny):
    assert tiny.spatial_backbone.channels == (32, 64, 128, 256)
    assert len(tiny.spatial_backbone.layer3) == 1
    assert tiny.text_encoder.lstm.hidden_size == 64
    assert tiny.bca.spatial_language_gate.in_features == 32 + 64
    assert len(tiny.lbdt_res4.layers) == 1 and tiny.lbdt_res4.layers[0].words_self_attn.num_heads == 4
    assert set(VARIANTS) >= {"lbdt4", "lbdt1", "tiny"}


@pytest.mark.parametrize("name,expected", [("lbdt4", 94_406_785), ("lbdt1", 72_319_105)])
def test_parameter_counts_match_the_official_used_parameters(name, expected):
    with torch.device("meta"):
        model = build_model(name)
    assert count_parameters(model) == expected


def test_unknown_variant():
    with pytest.raises(LBDTError, match="unknown model variant 'lbdt7'"):
        build_model("lbdt7")


# ------------------------------------------------------------------ input validation


@pytest.mark.parametrize("case,message", [
    ("frame_3d", r"frame must be \[B,3,H,W\]"),
    ("frame_1ch", r"frame must be \[B,3,H,W\]"),
    ("ref_shape", "ref_frame shape .* differs from frame shape"),
    ("not_div32", "multiples of 32, got 64x80"),
    ("batch", "word_vectors have batch 1 but frames have batch 2"),
    ("mask_len", "word_mask has length 6 but word_vectors has 7 words"),
    ("mask_batch", r"word_mask must be \[B,N\] with B = 2"),
    ("word_dim", r"word_vectors must be \[B,N,300\]"),
    ("no_token", r"sample\(s\) \[1\] have no real token"),
])
def test_bad_input_raises_value_error(tiny, case, message):
    frame, ref, words, mask = _inputs(2, 64, 64, n=7)
    if case == "frame_3d":
        frame, ref = frame[0], ref[0]
    elif case == "frame_1ch":
        frame, ref = frame[:, :1], ref[:, :1]
    elif case == "ref_shape":
        ref = ref[:, :, :32]
    elif case == "not_div32":
        frame, ref = F.pad(frame, (0, 16)), F.pad(ref, (0, 16))
    elif case == "batch":
        words, mask = words[:1], mask[:1]
    elif case == "mask_len":
        mask = mask[:, :6]
    elif case == "mask_batch":
        mask = mask[:1]
    elif case == "word_dim":
        words = words[..., :299]
    elif case == "no_token":
        mask[1] = 0
    with pytest.raises(ValueError, match=message):
        tiny(frame, ref, words, mask)


def test_segment_rejects_text_of_another_batch(tiny):
    frame, ref, words, mask = _inputs(3, 64, 64)
    text = tiny.encode_text(words[:2], mask[:2])
    with pytest.raises(LBDTError, match="text features have batch 2 but frames have batch 3"):
        tiny.segment(frame, ref, text)


# ------------------------------------------------------------------ building blocks


def _aligned_reference(x: np.ndarray, f: int) -> np.ndarray:
    """Direct formula: output pixel o samples the input at coordinate max(o - f//2, 0) / f,
    linear interpolation with edge replication, separately along each axis."""
    def axis(a: np.ndarray, n_in: int) -> np.ndarray:
        out = []
        for o in range(f * n_in):
            c = max(o - f // 2, 0) / f
            i0 = min(math.floor(c), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            t = c - math.floor(c)
            out.append((1 - t) * a[i0] + t * a[i1])
        return np.stack(out)

    h, w = x.shape
    rows = axis(x, h)  # [f*h, w]
    return axis(rows.T, w).T  # [f*h, f*w]


def test_aligned_upsample_by_hand():
    x = torch.tensor([[[[0.0, 1.0]]]])  # [1,1,1,2]
    out = aligned_upsample(x, 2)
    assert out.shape == (1, 1, 2, 4)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.0, 0.5, 1.0]] * 2))
    out4 = aligned_upsample(x, 4)[0, 0, 0]
    torch.testing.assert_close(out4, torch.tensor([0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]))


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_aligned_upsample_matches_direct_formula(factor):
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(factor), dtype=torch.float64)
    out = aligned_upsample(x[None, None], factor)[0, 0].numpy()
    np.testing.assert_allclose(out, _aligned_reference(x.numpy(), factor), rtol=1e-12, atol=1e-12)


def test_position_encoding_2d_values():
    pe = sine_2d(3, 5, 8)  # half = 4: frequencies 1 and 10000^(-2/4) = 0.01
    assert pe.shape == (8, 3, 5)
    for y, x in [(0, 0), (2, 4), (1, 3)]:
        expected = [math.sin(x), math.cos(x), math.sin(0.01 * x), math.cos(0.01 * x),
                    math.sin(y), math.cos(y), math.sin(0.01 * y), math.cos(0.01 * y)]
        torch.testing.assert_close(pe[:, y, x], torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_position_encoding_1d_values():
    pe = sine_1d(4, 6)  # frequencies 10000^(-2i/6), i = 0, 1, 2
    w = [10000 ** (-2 * i / 6) for i in range(3)]
    for p in range(4):
        expected = [fn(p * w[i]) for i in range(3) for fn in (math.sin, math.cos)]
        torch.testing.assert_close(pe[p], torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert sine_1d(3, 8, dtype=torch.float64).dtype == torch.float64


def test_sentence_is_the_unmasked_sum_of_lstm_outputs(tiny):
    _, _, words, mask = _inputs(2, n=9)
    with torch.no_grad():
        text = tiny.encode_text(words, mask)
        lstm_out, _ = tiny.text_encoder.lstm(words)
        other = tiny.encode_text(words, torch.ones_like(mask))
    torch.testing.assert_close(text.words, lstm_out)
    torch.testing.assert_close(text.sentence, lstm_out.sum(dim=1))  # pads included, no averaging
    assert text.words[1, -1].abs().sum() > 0  # the LSTM runs over pad positions
    assert torch.equal(text.sentence, other.sentence)  # the mask does not enter the sentence vector
    assert torch.equal(text.mask, mask != 0)


def _layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _attention(q, k, v, mha, key_padding=None):
    """Multi-head attention from its equations; sequence-first [L,B,d] / [S,B,d]."""
    d, h = q.shape[-1], mha.num_heads
    w, b = mha.in_proj_weight, mha.in_proj_bias
    qq, kk, vv = q @ w[:d].T + b[:d], k @ w[d:2 * d].T + b[d:2 * d], v @ w[2 * d:].T + b[2 * d:]

    def heads(x):  # [L,B,d] -> [B,h,L,d/h]
        return x.reshape(x.shape[0], x.shape[1], h, d // h).permute(1, 2, 0, 3)

    scores = heads(qq) @ heads(kk).transpose(-1, -2) / math.sqrt(d // h)  # [B,h,L,S]
    if key_padding is not None:
        scores = scores.masked_fill(key_padding[:, None, None, :], float("-inf"))
    out = scores.softmax(-1) @ heads(vv)  # [B,h,L,d/h]
    out = out.permute(2, 0, 1, 3).reshape(q.shape[0], q.shape[1], d)
    return out @ mha.out_proj.weight.T + mha.out_proj.bias


def test_lbdt_layer_matches_the_spec_equations():
    torch.manual_seed(4)
    d, hw, n, b = 16, 6, 5, 2
    layer = LBDTLayer(d_model=d, nhead=4, dim_feedforward=24, dropout=0.1).eval()
    with torch.no_grad():
        for p in layer.parameters():  # make norms and biases non-trivial
            p.copy_(torch.randn_like(p) * 0.5)
    src, tgt = torch.randn(hw, b, d), torch.randn(hw, b, d)
    words = torch.randn(n, b, d)
    p_x = sine_2d(2, 3, d).flatten(1).T[:, None]  # [hw,1,d]
    p_w = sine_1d(n, d)[:, None]  # [n,1,d]
    pad = torch.tensor([[False] * n, [False] * 3 + [True] * 2])
    with torch.no_grad():
        out = layer(src, tgt, words, p_x, p_w, pad)
        w1 = _layer_norm(words + _attention(words + p_w, words + p_w, words, layer.words_self_attn, pad),
                         layer.words_norm1)
        w2 = _layer_norm(w1 + _attention(w1, src + p_x, src + p_x, layer.words_from_source_attn),
                         layer.words_norm2)
        y = _layer_norm(tgt + _attention(tgt + p_x, w2, w2, layer.target_from_words_attn, pad), layer.target_norm1)
        ffn = F.relu(y @ layer.linear1.weight.T + layer.linear1.bias) @ layer.linear2.weight.T + layer.linear2.bias
        expected = _layer_norm(y + ffn, layer.target_norm2)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def _module_and_inputs(num_layers: int = 2):
    torch.manual_seed(5)
    module = LBDTModule(in_channels=12, d_model=16, nhead=4, dim_feedforward=16, num_layers=num_layers).eval()
    s, t = torch.randn(2, 12, 2, 3), torch.randn(2, 12, 2, 3)
    lstm_words = torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True] * 4 + [False]])
    text = TextFeatures(words=lstm_words, sentence=lstm_words.sum(1), mask=mask)
    return module, s, t, text


def test_duplex_layers_run_in_parallel_and_restart_from_the_lstm_words():
    module, s_in, t_in, text = _module_and_inputs(num_layers=2)
    with torch.no_grad():
        s_out, t_out = module(s_in, t_in, text)
        tokens = lambda x: x.flatten(2).permute(2, 0, 1)
        s, t = tokens(module.spatial_reduce(s_in)), tokens(module.temporal_reduce(t_in))
        p_x = sine_2d(2, 3, 16).flatten(1).T[:, None]
        p_w = sine_1d(5, 16)[:, None]
        words = text.words.transpose(0, 1)  # every call gets the raw LSTM words
        for layer in module.layers:
            s, t = layer(t, s, words, p_x, p_w, ~text.mask), layer(s, t, words, p_x, p_w, ~text.mask)
        grid = lambda x: x.permute(1, 2, 0).reshape(2, 16, 2, 3)
        s_exp = F.relu(s_in + module.spatial_expand(grid(s)))
        t_exp = F.relu(t_in + module.temporal_expand(grid(t)))
    torch.testing.assert_close(s_out, s_exp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(t_out, t_exp, rtol=1e-5, atol=1e-6)


def test_duplex_uses_one_parameter_set_for_both_directions():
    module, s_in, t_in, text = _module_and_inputs(num_layers=2)
    assert sum(isinstance(m, torch.nn.MultiheadAttention) for m in module.modules()) == 3 * 2
    swapped = LBDTModule(in_channels=12, d_model=16, nhead=4, dim_feedforward=16, num_layers=2).eval()
    sd = module.state_dict()
    swap = {"spatial_": "temporal_", "temporal_": "spatial_"}
    renamed = {}
    for k, v in sd.items():
        head = k.split(".")[0]
        stream = next((p for p in swap if head.startswith(p)), None)
        renamed[k if stream is None else swap[stream] + k[len(stream):]] = v
    swapped.load_state_dict(renamed)  # stream-specific reduce/expand swapped, shared layers identical
    with torch.no_grad():
        s_out, t_out = module(s_in, t_in, text)
        t_sw, s_sw = swapped(t_in, s_in, text)
    torch.testing.assert_close(s_sw, s_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(t_sw, t_out, rtol=1e-6, atol=1e-6)


def test_bca_gates_by_hand():
    torch.manual_seed(6)
    tiny_bca = build_model("tiny").bca.eval()
    d_s, d_t = torch.randn(2, 32, 4, 6), torch.randn(2, 32, 4, 6)
    sent = torch.randn(2, 64)
    with torch.no_grad():
        out = tiny_bca(d_s, d_t, sent)
        g_s, g_t = d_s.mean((2, 3)), d_t.mean((2, 3))
        c = F.relu(tiny_bca.joint(torch.cat([g_s, g_t], 1)))
        a_s = torch.sigmoid(tiny_bca.spatial_language_gate(torch.cat([g_s, sent], 1)))
        a_t = torch.sigmoid(tiny_bca.temporal_language_gate(torch.cat([g_t, sent], 1)))
        e_s = torch.sigmoid(tiny_bca.spatial_consistency_gate(c))
        e_t = torch.sigmoid(tiny_bca.temporal_consistency_gate(c))
        gated = torch.cat([d_s * (a_s * e_s)[..., None, None], d_t * (a_t * e_t)[..., None, None]], 1)
        expected = tiny_bca.fuse(gated)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_resnet50_has_torchvision_names_and_size():
    with torch.device("meta"):
        net = ResNet(depth=50)
    names = set(net.state_dict())
    for key in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias",
                "layer2.3.conv3.weight", "layer3.5.bn2.num_batches_tracked", "layer4.2.bn3.weight"):
        assert key in names
    assert "layer4.3.conv1.weight" not in names
    assert count_parameters(net) == 25_557_032 - 2_049_000  # torchvision resnet50 minus its fc
    assert net.channels == (256, 512, 1024, 2048)


def test_resnet_stage_shapes():
    net = ResNet(depth=14, width=8).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 16, 24), (1, 64, 8, 12), (1, 128, 4, 6), (1, 256, 2, 3)]


def test_count_macs_of_a_known_network():
    # tiny at 32x32 has only 1x1 maps at res5: check that MACs grow with the input and words
    torch.manual_seed(7)
    model = build_model("tiny")
    small = count_macs(model, size=(32, 32), n_words=5)
    assert count_macs(model, size=(64, 64), n_words=5) > 3 * small
    assert count_macs(model, size=(32, 32), n_words=10) > small
    assert model.training  # restored


@pytest.mark.slow
def test_lbdt4_forward_and_gmacs():
    torch.manual_seed(8)
    model = build_model("lbdt4").eval()
    frame, ref, words, mask = _inputs(1, 320, 320, n=25)
    with torch.no_grad():
        assert model(frame, ref, words, mask).shape == (1, 320, 320)
    assert abs(count_macs(model) / 1e9 - 38.1) < 0.2  # hand count, docs/model.md 'Variants'
    assert abs(count_macs(build_model("lbdt1")) / 1e9 - 32.6) < 0.2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_on_cuda_matches_cpu(tiny):
    frame, ref, words, mask = _inputs(2, 64, 96)
    gpu = LBDT.from_config(tiny.config)
    gpu.load_state_dict(tiny.state_dict())
    gpu = gpu.cuda().eval()
    with torch.no_grad():
        expected = tiny(frame, ref, words, mask)
        out = gpu(frame.cuda(), ref.cuda(), words.cuda(), mask.cuda()).cpu()
    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)
