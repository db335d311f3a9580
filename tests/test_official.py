"""Official checkpoint key map (names and shapes from the reference TSVs) and torchvision ResNet loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lbdt import build_model, load_official
from lbdt.cli import main
from lbdt.errors import LBDTError
from lbdt.models.backbone import ResNet
from lbdt.models.lbdt import LBDT
from lbdt.models.official import DROPPED_PREFIXES, convert_official_state_dict, infer_variant

# official `JointModel` key names, shapes and dtypes (from the released LBDT-4 / LBDT-1 checkpoints)
REFERENCE = Path(__file__).resolve().parent / "data"
TSVS = {"lbdt4": "lbdt_official_state_dict.tsv", "lbdt1": "lbdt1_official_state_dict.tsv"}


def _official_shapes(variant: str) -> dict[str, tuple[tuple[int, ...], str]]:
    path = REFERENCE / TSVS[variant]
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    return {name: (() if shape == "scalar" else tuple(int(s) for s in shape.split("x")), dtype)
            for name, shape, dtype, _ in rows}


def _random_official(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values with the official names and shapes; BN statistics valid; small weights (finite outputs)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    shapes = _official_shapes(variant)
    for name, (shape, dtype) in shapes.items():
        is_norm_scale = name.endswith(".weight") and (
            name[: -len("weight")] + "running_var" in shapes or "norm" in name)  # BN / LayerNorm gains
        if dtype == "int64":
            sd[name] = torch.randint(0, 100, shape, generator=g)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=g) + 0.5
        elif name.endswith("running_mean"):
            sd[name] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 4:  # conv: variance-preserving scale
            fan_in = shape[1] * shape[2] * shape[3]
            sd[name] = torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5
        else:
            sd[name] = torch.randn(shape, generator=g) * 0.05 + (1.0 if is_norm_scale else 0.0)
    return sd


@pytest.fixture(scope="module")
def official4() -> dict[str, torch.Tensor]:
    return _random_official("lbdt4")


@pytest.fixture(scope="module")
def official1() -> dict[str, torch.Tensor]:
    return _random_official("lbdt1", seed=1)


def test_variant_is_inferred(official4, official1):
    assert infer_variant(official4) == "lbdt4"
    assert infer_variant(official1) == "lbdt1"
    with pytest.raises(LBDTError, match="not a known official LBDT state dict"):
        infer_variant({"conv1.weight": torch.zeros(1)})


@pytest.mark.parametrize("variant", ["lbdt4", "lbdt1"])
def test_conversion_is_one_to_one_and_drops_only_dead_towers(variant, official4, official1):
    official = official4 if variant == "lbdt4" else official1
    name, ours = convert_official_state_dict(official)
    assert name == variant
    dropped = [k for k in official if k.startswith(DROPPED_PREFIXES)]
    assert {k.split(".")[1] for k in dropped} == {"spa_tower", "tem_tower", "mask_head"}
    assert len(ours) == len(official) - len(dropped)
    with torch.device("meta"):
        expected = build_model(variant).state_dict()
    assert set(ours) == set(expected)
    # every converted tensor is one official tensor, used once
    assert len({id(v) for v in ours.values()}) == len(ours)
    assert {id(v) for v in ours.values()} == {id(v) for k, v in official.items() if k not in dropped}


def test_key_map_roles(official4):
    _, ours = convert_official_state_dict(official4)
    pairs = {
        "spatial_backbone.conv1.weight": "conv1_1.weight",
        "temporal_backbone.bn1.running_var": "bn1_2.running_var",
        "spatial_backbone.layer3.5.conv2.weight": "res4_1.5.conv2.weight",
        "temporal_backbone.layer1.0.downsample.1.bias": "res2_2.0.downsample.1.bias",
        "lbdt_res4.spatial_reduce.0.weight": "conv_r4_1_reduce.0.weight",
        "lbdt_res5.temporal_expand.1.weight": "conv_r5_2_up.1.weight",
        "lbdt_res4.layers.2.words_self_attn.in_proj_weight": "transformer.stage4.layers.2.self_attn_words.in_proj_weight",
        "lbdt_res5.layers.3.words_from_source_attn.out_proj.bias":
            "transformer.stage5.layers.3.cross_attn_img.out_proj.bias",
        "lbdt_res4.layers.0.target_from_words_attn.in_proj_bias": "transformer.stage4.layers.0.cross_attn_flo.in_proj_bias",
        "lbdt_res4.layers.1.target_norm1.weight": "transformer.stage4.layers.1.norm_flo.weight",
        "lbdt_res4.layers.1.target_norm2.bias": "transformer.stage4.layers.1.norm_flo2.bias",
        "lbdt_res5.layers.0.words_norm2.weight": "transformer.stage5.layers.0.norm_words_2.weight",
        "text_encoder.lstm.weight_hh_l0": "text_encoder.lstm.weight_hh_l0",
        "spatial_decoder.levels.3.0.weight": "decoder.refine_spa.3.0.weight",
        "temporal_decoder.levels.0.1.running_mean": "decoder.refine_tem.0.1.running_mean",
        "bca.joint.weight": "decoder.fusion.img_flo_fc.0.weight",
        "bca.spatial_language_gate.weight": "decoder.fusion.img_txt_fc.weight",
        "bca.temporal_language_gate.bias": "decoder.fusion.flo_txt_fc.bias",
        "bca.spatial_consistency_gate.weight": "decoder.fusion.img_enhance_fc.weight",
        "bca.temporal_consistency_gate.weight": "decoder.fusion.flo_enhance_fc.weight",
        "bca.fuse.0.weight": "decoder.fusion.fusion_cat_conv.0.weight",
        "head.tower.3.1.weight": "decoder.fuse_tower.3.1.weight",
        "head.tower.4.bias": "decoder.fuse_tower.4.bias",
    }
    for ours_name, official_name in pairs.items():
        assert ours[ours_name] is official4[official_name], ours_name


@pytest.mark.parametrize("damage,named", [
    ("missing", "missing keys: transformer.stage5.layers.1.linear2.weight"),
    ("extra", "unexpected keys: decoder.extra_head.weight"),
    ("shape", r"mis-shaped keys: decoder.fusion.img_txt_fc.weight \(got \(128, 512\), expected \(128, 640\)\)"),
    ("tower_only", "missing keys: decoder.fuse_tower.4.bias"),
])
def test_wrong_state_dict_names_the_offending_keys(official4, damage, named):
    bad = dict(official4)
    if damage == "missing":
        del bad["transformer.stage5.layers.1.linear2.weight"]
    elif damage == "extra":
        bad["decoder.extra_head.weight"] = torch.zeros(3)
    elif damage == "shape":
        bad["decoder.fusion.img_txt_fc.weight"] = torch.zeros(128, 512)
    elif damage == "tower_only":
        del bad["decoder.fuse_tower.4.bias"]  # the used head is not a droppable tower
    with pytest.raises(LBDTError, match=named):
        convert_official_state_dict(bad)
    with pytest.raises(ValueError):
        load_official(bad)


def test_dead_towers_may_be_absent(official1):
    alive = {k: v for k, v in official1.items() if not k.startswith(DROPPED_PREFIXES)}
    assert convert_official_state_dict(alive)[0] == "lbdt1"


def test_load_official_from_a_ddp_file_and_determinism(official4, tmp_path):
    path = tmp_path / "a2d_sota_layer4.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official4.items()}}, path)
    model = load_official(path)
    assert isinstance(model, LBDT) and not model.training
    assert model.config["num_layers"] == 4
    assert torch.equal(model.lbdt_res5.layers[3].words_from_source_attn.in_proj_weight,
                       official4["transformer.stage5.layers.3.cross_attn_img.in_proj_weight"])
    _, ours = convert_official_state_dict(official4)
    twin = build_model("lbdt4")
    twin.load_state_dict(ours, strict=True)
    twin.eval()
    g = torch.Generator().manual_seed(0)
    frame, ref = torch.randn(1, 3, 64, 96, generator=g), torch.randn(1, 3, 64, 96, generator=g)
    words, mask = torch.randn(1, 6, 300, generator=g), torch.tensor([[1, 1, 1, 1, 0, 0.0]])
    with torch.no_grad():
        a = model(frame, ref, words, mask)
        b = twin(frame, ref, words, mask)
    assert a.shape == (1, 64, 96) and torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_convert_official_cli_writes_an_lbdt_checkpoint(official1, tmp_path, capsys):
    src, dst = tmp_path / "lbdt1.pth", tmp_path / "out" / "lbdt1.pt"
    torch.save(official1, src)
    assert main(["convert-official", str(src), str(dst)]) == 0
    assert "lbdt1" in capsys.readouterr().out
    state = torch.load(dst, weights_only=True)
    assert state["format"] == "lbdt" and state["variant"] == "lbdt1"
    model = LBDT.from_config(state["model_config"])
    model.load_state_dict(state["model"], strict=True)
    assert torch.equal(model.head.tower[4].weight, official1["decoder.fuse_tower.4.weight"])
    assert main(["convert-official", str(tmp_path / "nope.pth"), str(dst)]) == 2


def test_load_official_rejects_non_tensor_files(tmp_path):
    path = tmp_path / "junk.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(LBDTError, match="not a state dict of tensors"):
        load_official(path)


# ------------------------------------------------------------------ torchvision ResNet


def _torchvision_like(net: ResNet, with_counters: bool = True) -> dict[str, torch.Tensor]:
    sd = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v.clone()
          for k, v in net.state_dict().items() if with_counters or not k.endswith("num_batches_tracked")}
    sd["fc.weight"] = torch.randn(1000, net.channels[-1])
    sd["fc.bias"] = torch.randn(1000)
    return sd


@pytest.mark.parametrize("with_counters", [True, False])
def test_resnet_loads_a_torchvision_state_dict(tmp_path, with_counters):
    torch.manual_seed(0)
    source = ResNet(depth=14, width=8)
    sd = _torchvision_like(source, with_counters)
    path = tmp_path / "resnet.pth"
    torch.save(sd, path)
    net = ResNet(depth=14, width=8)
    net.load_torchvision_state_dict(path)
    for k, v in net.state_dict().items():
        if k in sd:
            assert torch.equal(v, sd[k]), k


@pytest.mark.parametrize("damage,named", [
    ("missing", "missing keys: layer2.0.bn2.weight"),
    ("extra", "unexpected keys: layer5.0.conv1.weight"),
    ("shape", r"mis-shaped keys: conv1.weight \(got \(64, 3, 7, 7\), expected \(8, 3, 7, 7\)\)"),
])
def test_resnet_rejects_a_wrong_state_dict(damage, named):
    net = ResNet(depth=14, width=8)
    sd = _torchvision_like(net)
    if damage == "missing":
        del sd["layer2.0.bn2.weight"]
    elif damage == "extra":
        sd["layer5.0.conv1.weight"] = torch.zeros(1)
    else:
        sd["conv1.weight"] = torch.zeros(64, 3, 7, 7)
    with pytest.raises(LBDTError, match=named):
        net.load_torchvision_state_dict(sd)


def test_model_loads_imagenet_into_both_streams():
    model = build_model("tiny")
    sd = _torchvision_like(model.spatial_backbone)
    model.load_imagenet(sd)
    assert torch.equal(model.spatial_backbone.layer4[0].conv2.weight, sd["layer4.0.conv2.weight"])
    assert torch.equal(model.temporal_backbone.layer4[0].conv2.weight, sd["layer4.0.conv2.weight"])


# ------------------------------------------------------------------ functional reference on official names


def _reference_forward(sd, frame, ref_frame, words_in, mask, num_layers):
    """Spec §1 written as plain functional ops that read the official key names directly (eval mode)."""
    import math

    import torch.nn.functional as F

    from lbdt.models.position import sine_1d, sine_2d

    def bn(x, p):
        return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], False, 0.0, 1e-5)

    def conv(x, p, stride=1):
        w = sd[f"{p}.weight"]
        return F.conv2d(x, w, sd.get(f"{p}.bias"), stride, w.shape[-1] // 2)

    def stage(x, p):
        i = 0
        while f"{p}.{i}.conv1.weight" in sd:
            stride = 2 if (i == 0 and not p.startswith("res2")) else 1
            b = f"{p}.{i}"
            y = F.relu(bn(conv(x, f"{b}.conv1"), f"{b}.bn1"))
            y = F.relu(bn(conv(y, f"{b}.conv2", stride), f"{b}.bn2"))
            y = bn(conv(y, f"{b}.conv3"), f"{b}.bn3")
            skip = bn(conv(x, f"{b}.downsample.0", stride), f"{b}.downsample.1") if f"{b}.downsample.0.weight" in sd else x
            x = F.relu(y + skip)
            i += 1
        return x

    def mha(q, k, v, p, pad=None):
        d = q.shape[-1]
        return F.multi_head_attention_forward(q, k, v, d, 8, sd[f"{p}.in_proj_weight"], sd[f"{p}.in_proj_bias"],
                                              None, None, False, 0.0, sd[f"{p}.out_proj.weight"],
                                              sd[f"{p}.out_proj.bias"], training=False, key_padding_mask=pad,
                                              need_weights=False)[0]

    def ln(x, p):
        return F.layer_norm(x, x.shape[-1:], sd[f"{p}.weight"], sd[f"{p}.bias"], 1e-5)

    def layer(src, tgt, w, px, pw, pad, p):
        w = ln(w + mha(w + pw, w + pw, w, f"{p}.self_attn_words", pad), f"{p}.norm_words_1")
        w = ln(w + mha(w, src + px, src + px, f"{p}.cross_attn_img"), f"{p}.norm_words_2")
        y = ln(tgt + mha(tgt + px, w, w, f"{p}.cross_attn_flo", pad), f"{p}.norm_flo")
        ffn = F.linear(F.relu(F.linear(y, sd[f"{p}.linear1.weight"], sd[f"{p}.linear1.bias"])),
                       sd[f"{p}.linear2.weight"], sd[f"{p}.linear2.bias"])
        return ln(y + ffn, f"{p}.norm_flo2")

    lstm = torch.nn.LSTM(300, 512, batch_first=True)
    lstm.load_state_dict({k.split(".")[-1]: v for k, v in sd.items() if k.startswith("text_encoder.lstm.")})
    text, _ = lstm(words_in)
    sentence, words, pad = text.sum(1), text.transpose(0, 1), mask == 0

    x = [frame, (frame - ref_frame).abs()]
    feats = [[], []]
    for k in (0, 1):
        x[k] = F.max_pool2d(F.relu(bn(conv(x[k], f"conv1_{k + 1}", 2), f"bn1_{k + 1}")), 3, 2, 1)
        for n in (2, 3):
            x[k] = stage(x[k], f"res{n}_{k + 1}")
            feats[k].append(x[k])
    for n in (4, 5):
        x = [stage(x[k], f"res{n}_{k + 1}") for k in (0, 1)]
        red = [bn(conv(x[k], f"conv_r{n}_{k + 1}_reduce.0"), f"conv_r{n}_{k + 1}_reduce.1") for k in (0, 1)]
        b, d, h, w = red[0].shape
        px = sine_2d(h, w, d).flatten(1).T[:, None]
        pw = sine_1d(words.shape[0], d)[:, None]
        s, t = (r.flatten(2).permute(2, 0, 1) for r in red)
        for i in range(num_layers):
            p = f"transformer.stage{n}.layers.{i}"
            s, t = layer(t, s, words, px, pw, pad, p), layer(s, t, words, px, pw, pad, p)
        for k, tok in ((0, s), (1, t)):
            up = tok.permute(1, 2, 0).reshape(b, d, h, w)
            x[k] = F.relu(x[k] + bn(conv(up, f"conv_r{n}_{k + 1}_up.0"), f"conv_r{n}_{k + 1}_up.1"))
            feats[k].append(x[k])

    def up(t, f):  # aligned bilinear, docs/model.md 'Decoders and aligned upsampling'
        hh, ww = t.shape[-2:]
        t = F.interpolate(F.pad(t, (0, 1, 0, 1), mode="replicate"), size=(f * hh + 1, f * ww + 1),
                          mode="bilinear", align_corners=True)
        return F.pad(t, (f // 2, 0, f // 2, 0), mode="replicate")[:, :, :f * hh, :f * ww]

    dec = []
    for name, fs in (("refine_spa", feats[0]), ("refine_tem", feats[1])):
        out = None
        for i, f in enumerate(fs):
            r = F.relu(bn(conv(f, f"decoder.{name}.{i}.0"), f"decoder.{name}.{i}.1"))
            out = r if out is None else out + up(r, 2**i)
        dec.append(out)
    fc = "decoder.fusion"
    lin = lambda v, p: F.linear(v, sd[f"{fc}.{p}.weight"], sd[f"{fc}.{p}.bias"])
    g_s, g_t = dec[0].mean((2, 3)), dec[1].mean((2, 3))
    c = F.relu(lin(torch.cat([g_s, g_t], 1), "img_flo_fc.0"))
    gs = torch.sigmoid(lin(torch.cat([g_s, sentence], 1), "img_txt_fc")) * torch.sigmoid(lin(c, "img_enhance_fc"))
    gt = torch.sigmoid(lin(torch.cat([g_t, sentence], 1), "flo_txt_fc")) * torch.sigmoid(lin(c, "flo_enhance_fc"))
    z = torch.cat([dec[0] * gs[..., None, None], dec[1] * gt[..., None, None]], 1)
    z = F.relu(bn(conv(z, f"{fc}.fusion_cat_conv.0"), f"{fc}.fusion_cat_conv.1"))
    for i in range(4):
        z = F.relu(bn(conv(z, f"decoder.fuse_tower.{i}.0"), f"decoder.fuse_tower.{i}.1"))
    assert math.isfinite(float(z.sum()))
    return up(conv(z, "decoder.fuse_tower.4"), 4)[:, 0]


@pytest.mark.parametrize("variant", ["lbdt1", "lbdt4"])
def test_loaded_official_weights_compute_the_spec_network(variant, official4, official1):
    """Catches any role mix-up in the key map (e.g. swapping cross_attn_img / cross_attn_flo changes the
    output by ~0.1 with these weights, far above the tolerance)."""
    official = official4 if variant == "lbdt4" else official1
    model = load_official(official)
    g = torch.Generator().manual_seed(1)
    frame, ref = torch.randn(2, 3, 64, 96, generator=g), torch.randn(2, 3, 64, 96, generator=g)
    words = torch.randn(2, 5, 300, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0.0]])
    with torch.no_grad():
        out = model(frame, ref, words, mask)
        expected = _reference_forward(official, frame, ref, words, mask, num_layers=model.config["num_layers"])
    assert out.shape == expected.shape == (2, 64, 96)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
