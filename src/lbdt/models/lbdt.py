"""The LBDT network: two ResNet streams bridged by language at res4 and res5, two decoders, BCA, head.

Only composes the boxes of `backbone`, `text_encoder`, `duplex`, `decoder` and `bca`. The temporal
input |frame - ref_frame| is formed here, so training and inference share it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

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
    `segment(frame, ref_frame, encode_text(word_vectors, word_mask))`. `segment_many` shares the
    sentence-independent trunk (`_trunk`) across several sentences; both run the rest through `_head`.
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
        return self._head(self._trunk(frame, ref_frame), _expand_text(text, frame.shape[0]))

    def segment_many(self, frame: Tensor, ref_frame: Tensor, texts: Sequence[TextFeatures], *,
                     chunk: int = 4) -> Tensor:
        """Several sentences over the same frames: logits [S,B,H,W], [s] equal to `segment(frame, ref_frame, texts[s])`.

        The sentence-independent trunk (the temporal input, stem and layer1-3 of both streams) runs once;
        the rest (LBDT modules, layer4, decoders, BCA, head) runs on the trunk features repeated for up to
        `chunk` sentences at a time (batch chunk x B), so memory grows with `chunk`, not with S.
        Each of `texts` has batch B or 1.
        """
        check_frames(frame, ref_frame)
        if isinstance(texts, TextFeatures) or len(texts) == 0:
            raise LBDTError("segment_many needs a non-empty sequence of TextFeatures (one per sentence)")
        if chunk < 1:
            raise LBDTError(f"chunk must be >= 1 sentence, got {chunk}")
        b = frame.shape[0]
        texts = [_expand_text(t, b) for t in texts]
        trunk = self._trunk(frame, ref_frame)
        out = []
        for start in range(0, len(texts), chunk):
            group = texts[start:start + chunk]
            repeated = _Trunk(*(_repeat(x, len(group)) for x in trunk))
            text = TextFeatures(words=torch.cat([t.words for t in group]),
                                sentence=torch.cat([t.sentence for t in group]),
                                mask=torch.cat([t.mask for t in group]))
            out.append(self._head(repeated, text))
        return torch.cat(out).reshape(len(texts), b, *frame.shape[-2:])

    def segment_shared(self, frame: Tensor, ref_frame: Tensor, text: TextFeatures, index: Tensor) -> Tensor:
        """Logits [B,H,W] for B samples that show G <= B distinct frames: `frame`, `ref_frame` [G,3,H,W], `text` of
        batch B, `index` [B] the frame of each sample. Equal to `segment(frame[index], ref_frame[index], text)`,
        with the sentence-independent trunk computed once per distinct frame (how evaluation batches the several
        sentences of one annotated frame)."""
        check_frames(frame, ref_frame)
        b = text.words.shape[0]
        if index.dim() != 1 or index.shape[0] != b:
            raise LBDTError(f"index must be [B] with B = {b} (the text batch), got {list(index.shape)}")
        trunk = self._trunk(frame, ref_frame)
        if index.shape[0] != frame.shape[0] or not torch.equal(index, torch.arange(b, device=index.device)):
            trunk = _Trunk(*(_keep_format(x, x.index_select(0, index)) for x in trunk))
        return self._head(trunk, text)

    def _trunk(self, frame: Tensor, ref_frame: Tensor) -> _Trunk:
        """The sentence-independent part: |frame - ref_frame|, stem and layer1-3 of both ResNet streams."""
        temporal = torch.zeros_like(frame) if self.zero_temporal else (frame - ref_frame).abs()
        sb, tb = self.spatial_backbone, self.temporal_backbone
        s2, t2 = sb.layer1(sb.stem(frame)), tb.layer1(tb.stem(temporal))  # [B,4w,H/4,W/4]
        s3, t3 = sb.layer2(s2), tb.layer2(t2)  # [B,8w,H/8,W/8]
        return _Trunk(s2, s3, sb.layer3(s3), t2, t3, tb.layer3(t3))  # layer3: [B,16w,H/16,W/16]

    def _head(self, trunk: _Trunk, text: TextFeatures) -> Tensor:
        """Everything the sentence reaches: LBDT modules at res4 / res5, layer4, decoders, BCA, head -> [B,H,W]."""
        sb, tb = self.spatial_backbone, self.temporal_backbone
        s4, t4 = self.lbdt_res4(trunk.s4, trunk.t4, text)  # [B,16w,H/16,W/16]
        s5, t5 = self.lbdt_res5(sb.layer4(s4), tb.layer4(t4), text)  # [B,32w,H/32,W/32]
        d_s = self.spatial_decoder([trunk.s2, trunk.s3, s4, s5])  # [B,dim,H/4,W/4]
        d_t = self.temporal_decoder([trunk.t2, trunk.t3, t4, t5])
        return self.head(self.bca(d_s, d_t, text.sentence))  # [B,H,W]

    def forward(self, frame: Tensor, ref_frame: Tensor, word_vectors: Tensor, word_mask: Tensor) -> Tensor:
        """frame, ref_frame [B,3,H,W]; word_vectors [B,N,word_dim]; word_mask [B,N] -> logits [B,H,W]."""
        check_frames(frame, ref_frame)
        if word_vectors.dim() >= 1 and word_vectors.shape[0] != frame.shape[0]:
            raise LBDTError(f"word_vectors have batch {word_vectors.shape[0]} but frames have batch {frame.shape[0]}")
        return self.segment(frame, ref_frame, self.encode_text(word_vectors, word_mask))


class _Trunk(NamedTuple):
    """Sentence-independent features of both streams: res2, res3 and the layer3 output (before the LBDT module)."""

    s2: Tensor
    s3: Tensor
    s4: Tensor
    t2: Tensor
    t3: Tensor
    t4: Tensor


def _repeat(x: Tensor, n: int) -> Tensor:
    """[B,...] -> [n*B,...] (n copies, copy-major), keeping x's memory format (channels-last stays channels-last)."""
    if n == 1:
        return x
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    out = x.repeat(n, *([1] * (x.dim() - 1)))
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def _keep_format(like: Tensor, x: Tensor) -> Tensor:
    """`x` in `like`'s memory format (channels-last stays channels-last)."""
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _expand_text(text: TextFeatures, batch: int) -> TextFeatures:
    n_text = text.words.shape[0]  # not len(text): an exported (ONNX) batch must stay symbolic
    if n_text not in (1, batch):
        raise LBDTError(f"text features have batch {n_text} but frames have batch {batch}")
    return text.expand(batch)


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
