"""The LBDT network: two ResNet streams bridged by language at res4 and res5, two decoders, BCA, head.

Only composes the boxes of `backbone`, `text_encoder`, `duplex`, `decoder` and `bca`. The temporal
input |frame - ref_frame| is formed here, so training and inference share it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lbdt.errors import LBDTError
from lbdt.models.backbone import ResNet
from lbdt.models.bca import BCA
from lbdt.models.decoder import MaskHead, StreamDecoder
from lbdt.models.duplex import LBDTModule
from lbdt.models.text_encoder import TextEncoder, TextFeatures

STRIDE = 32  # H and W must be multiples of the res5 stride


class LBDT(nn.Module):
    """Language-Bridged Duplex Transfer network (docs/model.md, 'The method, box by box').

    `forward(frame, ref_frame, word_vectors, word_mask) -> logits [B,H,W]`, equal to
    `segment(frame, ref_frame, encode_text(word_vectors, word_mask))`.
    """

    def __init__(self, *, backbone_depth: int = 50, backbone_width: int = 64, d_model: int = 512, nhead: int = 8,
                 dim_feedforward: int = 512, num_layers: int = 4, decoder_dim: int = 128, text_hidden: int = 512,
                 word_dim: int = 300, dropout: float = 0.1, zero_temporal: bool = False) -> None:
        super().__init__()
        if text_hidden != d_model:
            raise LBDTError(f"text_hidden ({text_hidden}) must equal d_model ({d_model}): words are attention tokens")
        if d_model % 4 or d_model % nhead:
            raise LBDTError(f"d_model ({d_model}) must be divisible by 4 and by nhead ({nhead})")
        self.config: dict[str, Any] = {  # constructor arguments, plain types: `LBDT.from_config` rebuilds
            "backbone_depth": backbone_depth, "backbone_width": backbone_width, "d_model": d_model,
            "nhead": nhead, "dim_feedforward": dim_feedforward, "num_layers": num_layers,
            "decoder_dim": decoder_dim, "text_hidden": text_hidden, "word_dim": word_dim, "dropout": dropout,
            "zero_temporal": zero_temporal,
        }
        self.spatial_backbone = ResNet(depth=backbone_depth, width=backbone_width)
        self.temporal_backbone = ResNet(depth=backbone_depth, width=backbone_width)
        channels = self.spatial_backbone.channels  # res2..res5
        self.text_encoder = TextEncoder(word_dim=word_dim, hidden=text_hidden)
        module_kw = {"d_model": d_model, "nhead": nhead, "dim_feedforward": dim_feedforward,
                     "num_layers": num_layers, "dropout": dropout}
        self.lbdt_res4 = LBDTModule(in_channels=channels[2], **module_kw)
        self.lbdt_res5 = LBDTModule(in_channels=channels[3], **module_kw)
        self.spatial_decoder = StreamDecoder(in_channels=channels, dim=decoder_dim)
        self.temporal_decoder = StreamDecoder(in_channels=channels, dim=decoder_dim)
        self.bca = BCA(dim=decoder_dim, text_dim=text_hidden)
        self.head = MaskHead(dim=decoder_dim)
        self.zero_temporal = zero_temporal
        self.word_dim = word_dim

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LBDT:
        """Rebuild a model from `model.config` (e.g. stored in a checkpoint)."""
        return cls(**dict(config))

    def load_imagenet(self, path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> None:
        """Initialise both ResNet streams from one torchvision ImageNet state dict
        (docs/training.md, 'Initialisation')."""
        self.spatial_backbone.load_torchvision_state_dict(path_or_state_dict)
        self.temporal_backbone.load_torchvision_state_dict(path_or_state_dict)

    def encode_text(self, word_vectors: Tensor, word_mask: Tensor) -> TextFeatures:
        """word_vectors [B,N,word_dim], word_mask [B,N] (1 = real token) -> TextFeatures."""
        check_text_inputs(word_vectors, word_mask, self.word_dim)
        # The LSTM runs in fp32 with autocast off whatever the caller's precision: under CPU autocast PyTorch
        # would run nn.LSTM in bf16, which oneDNN cannot do without native bf16 (AVX2); it is ~0.04 GMAC.
        with torch.autocast(word_vectors.device.type, enabled=False):
            return self.text_encoder(word_vectors.float(), word_mask)

    def segment(self, frame: Tensor, ref_frame: Tensor, text: TextFeatures) -> Tensor:
        """frame, ref_frame: ImageNet-normalised [B,3,H,W] (H, W divisible by 32); text of batch B or 1.

        Returns logits [B,H,W].
        """
        check_frames(frame, ref_frame)
        b, n_text = frame.shape[0], text.words.shape[0]  # not len(text): an exported batch must stay symbolic
        if n_text not in (1, b):
            raise LBDTError(f"text features have batch {n_text} but frames have batch {b}")
        text = text.expand(b)

        temporal = torch.zeros_like(frame) if self.zero_temporal else (frame - ref_frame).abs()
        sb, tb = self.spatial_backbone, self.temporal_backbone
        s2, t2 = sb.layer1(sb.stem(frame)), tb.layer1(tb.stem(temporal))  # [B,4w,H/4,W/4]
        s3, t3 = sb.layer2(s2), tb.layer2(t2)  # [B,8w,H/8,W/8]
        s4, t4 = self.lbdt_res4(sb.layer3(s3), tb.layer3(t3), text)  # [B,16w,H/16,W/16]
        s5, t5 = self.lbdt_res5(sb.layer4(s4), tb.layer4(t4), text)  # [B,32w,H/32,W/32]
        d_s = self.spatial_decoder([s2, s3, s4, s5])  # [B,dim,H/4,W/4]
        d_t = self.temporal_decoder([t2, t3, t4, t5])
        return self.head(self.bca(d_s, d_t, text.sentence))  # [B,H,W]

    def forward(self, frame: Tensor, ref_frame: Tensor, word_vectors: Tensor, word_mask: Tensor) -> Tensor:
        """frame, ref_frame [B,3,H,W]; word_vectors [B,N,word_dim]; word_mask [B,N] -> logits [B,H,W]."""
        check_frames(frame, ref_frame)
        if word_vectors.dim() >= 1 and word_vectors.shape[0] != frame.shape[0]:
            raise LBDTError(f"word_vectors have batch {word_vectors.shape[0]} but frames have batch {frame.shape[0]}")
        return self.segment(frame, ref_frame, self.encode_text(word_vectors, word_mask))


def check_text_inputs(word_vectors: Tensor, word_mask: Tensor, word_dim: int) -> None:
    """word_vectors must be [B,N,word_dim] with N >= 1, word_mask [B,N] with a real token in every sample."""
    if word_vectors.dim() != 3 or word_vectors.shape[-1] != word_dim:
        raise LBDTError(f"word_vectors must be [B,N,{word_dim}], got {list(word_vectors.shape)}")
    if word_mask.dim() != 2 or word_mask.shape[0] != word_vectors.shape[0]:
        raise LBDTError(f"word_mask must be [B,N] with B = {word_vectors.shape[0]}, got {list(word_mask.shape)}")
    if word_mask.shape[1] != word_vectors.shape[1]:
        raise LBDTError(f"word_mask has length {word_mask.shape[1]} but word_vectors has "
                        f"{word_vectors.shape[1]} words")
    if word_vectors.shape[1] < 1:
        raise LBDTError("the sentence needs at least one word position (N >= 1)")
    empty = ~(word_mask != 0).any(dim=1)
    if bool(empty.any()):
        raise LBDTError(f"sample(s) {empty.nonzero().flatten().tolist()} have no real token in word_mask "
                        "(attention over only padding is undefined)")


def check_frames(frame: Tensor, ref_frame: Tensor) -> None:
    """Frames must be [B,3,H,W], equal in shape, with H and W positive multiples of 32."""
    if frame.dim() != 4 or frame.shape[1] != 3:
        raise LBDTError(f"frame must be [B,3,H,W], got {list(frame.shape)}")
    if ref_frame.shape != frame.shape:
        raise LBDTError(f"ref_frame shape {list(ref_frame.shape)} differs from frame shape {list(frame.shape)}")
    h, w = frame.shape[-2:]
    if h % STRIDE or w % STRIDE or h == 0 or w == 0:
        raise LBDTError(f"frame height and width must be positive multiples of {STRIDE}, got {h}x{w}")
