"""Official LBDT checkpoints (`JointModel` state dicts of dzh19990407/LBDT) -> our LBDT, loaded strictly.

The key map is explicit (one literal prefix pair per official module). The official dead towers
(`decoder.spa_tower.*`, `decoder.tem_tower.*`, `decoder.mask_head.*`) are the only keys dropped; any
other missing, unexpected or mis-shaped key is an `LBDTError` listing the keys by their official names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lbdt.atomic import save_torch
from lbdt.errors import LBDTError
from lbdt.models.build import build_model
from lbdt.models.lbdt import LBDT
from lbdt.models.strict_load import load_strict, mismatch_report, read_state_dict

DROPPED_PREFIXES = ("decoder.spa_tower.", "decoder.tem_tower.", "decoder.mask_head.")

# (official LBDT layers per module, ResNet blocks in res4) -> our variant
_VARIANT_BY_SHAPE = {(4, 6): "lbdt4", (1, 6): "lbdt1", (4, 23): "lbdt4_r101"}

# official name inside one `TransformerEncoderLayer` -> our name inside `LBDTLayer`
LAYER_NAMES = {
    "self_attn_words": "words_self_attn",  # MHA1: word self-attention
    "cross_attn_img": "words_from_source_attn",  # MHA2: words (query) gather from the source stream
    "cross_attn_flo": "target_from_words_attn",  # MHA3: target stream (query) reads the words
    "norm_words_1": "words_norm1",
    "norm_words_2": "words_norm2",
    "norm_flo": "target_norm1",
    "norm_flo2": "target_norm2",
    "linear1": "linear1",
    "linear2": "linear2",
}

# "img"/"spa"/"_1" = spatial stream; "flo"/"tem"/"_2" = temporal stream
_FIXED_PREFIXES = {
    "text_encoder.lstm.": "text_encoder.lstm.",
    "decoder.refine_spa.": "spatial_decoder.levels.",
    "decoder.refine_tem.": "temporal_decoder.levels.",
    "decoder.fusion.img_flo_fc.0.": "bca.joint.",
    "decoder.fusion.img_txt_fc.": "bca.spatial_language_gate.",
    "decoder.fusion.flo_txt_fc.": "bca.temporal_language_gate.",
    "decoder.fusion.img_enhance_fc.": "bca.spatial_consistency_gate.",
    "decoder.fusion.flo_enhance_fc.": "bca.temporal_consistency_gate.",
    "decoder.fusion.fusion_cat_conv.": "bca.fuse.",
    "decoder.fuse_tower.": "head.tower.",
}


def official_prefixes(num_layers: int) -> dict[str, str]:
    """Official key prefix -> our key prefix, for a model with `num_layers` LBDT layers per module."""
    pairs = dict(_FIXED_PREFIXES)
    for k, stream in ((1, "spatial"), (2, "temporal")):
        pairs[f"conv1_{k}."] = f"{stream}_backbone.conv1."
        pairs[f"bn1_{k}."] = f"{stream}_backbone.bn1."
        for n in (2, 3, 4, 5):
            pairs[f"res{n}_{k}."] = f"{stream}_backbone.layer{n - 1}."
        for n in (4, 5):
            pairs[f"conv_r{n}_{k}_reduce."] = f"lbdt_res{n}.{stream}_reduce."
            pairs[f"conv_r{n}_{k}_up."] = f"lbdt_res{n}.{stream}_expand."
    for n in (4, 5):
        for i in range(num_layers):
            for theirs, ours in LAYER_NAMES.items():
                pairs[f"transformer.stage{n}.layers.{i}.{theirs}."] = f"lbdt_res{n}.layers.{i}.{ours}."
    return pairs


def _rename(key: str, prefixes: Mapping[str, str]) -> str | None:
    for src, dst in prefixes.items():
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def infer_variant(state_dict: Mapping[str, Any]) -> str:
    """Tell LBDT-4 / LBDT-1 / LBDT-4-R101 apart from the layer and ResNet block keys of an official state dict."""
    def count(pattern: str) -> int:
        found = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
        return max(found) + 1 if found else 0

    layers4 = count(r"transformer\.stage4\.layers\.(\d+)\.")
    layers5 = count(r"transformer\.stage5\.layers\.(\d+)\.")
    blocks = count(r"res4_1\.(\d+)\.")
    variant = _VARIANT_BY_SHAPE.get((layers4, blocks))
    if variant is None or layers4 != layers5:
        raise LBDTError(
            f"not a known official LBDT state dict: {layers4} / {layers5} LBDT layers at stage4 / stage5 and "
            f"{blocks} ResNet blocks in res4 (known: LBDT-4 and LBDT-1 with ResNet-50, LBDT-4 with ResNet-101)"
        )
    return variant


def convert_official_state_dict(state_dict: Mapping[str, Tensor], *, source: str = "official state dict"
                                ) -> tuple[str, dict[str, Tensor]]:
    """Official `JointModel` state dict -> (variant name, our state dict), checked against our model.

    Raises `LBDTError` naming (by official name) every unexpected, missing or mis-shaped key.
    """
    variant = infer_variant(state_dict)
    with torch.device("meta"):  # shapes only, no memory
        reference = build_model(variant)
    expected = reference.state_dict()
    prefixes = official_prefixes(reference.config["num_layers"])
    back = {v: k for k, v in prefixes.items()}
    ours: dict[str, Tensor] = {}
    unexpected, misshaped = [], []
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES):
            continue
        name = _rename(key, prefixes)
        if name is None or name not in expected:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(expected[name].shape):
            misshaped.append(f"{key} (got {tuple(value.shape)}, expected {tuple(expected[name].shape)})")
        else:
            ours[name] = value
    missing = [_rename(k, back) or k for k in expected if k not in ours and _rename(k, back) not in state_dict]
    problems = mismatch_report(missing, unexpected, misshaped)
    if problems:
        raise LBDTError(f"{source}: official LBDT state dict ({variant}) does not match; {problems}")
    return variant, ours


def _load(path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> tuple[str, LBDT]:
    source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else "official state dict"
    state_dict = read_state_dict(path_or_state_dict, what="official LBDT checkpoint")
    variant, ours = convert_official_state_dict(state_dict, source=source)
    model = build_model(variant)
    load_strict(model, ours, source=source)
    return variant, model.eval()


def load_official(path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> LBDT:
    """Build the right variant and load an official checkpoint strictly; the model is returned in eval mode.

    Accepts a state dict or a path (read with `weights_only=True`); `module.` prefixes (DDP) and
    `state_dict` / `model` wrappers are removed.
    """
    return _load(path_or_state_dict)[1]


def convert_official_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Convert an official checkpoint file into an lbdt checkpoint (`{"format": "lbdt", ...}`); returns the variant.

    Written atomically (temp file + `os.replace`); readable with `torch.load(weights_only=True)`.
    """
    try:
        variant, model = _load(src)
    except LBDTError as e:
        raise e if str(Path(src)) in str(e) else LBDTError(f"{src}: {e}") from None
    state = {"format": "lbdt", "version": 1, "variant": variant, "model_config": dict(model.config),
             "model": model.state_dict(), "source": f"official LBDT checkpoint {Path(src).name}"}
    save_torch(state, dst)
    return variant
