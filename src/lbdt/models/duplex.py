"""Language-Bridged Duplex Transfer: the LBDT layer and the LBDT module around a stage
(docs/model.md, 'LBDT layer and LBDT module').

Official names (official.py maps them): `self_attn_words` = words_self_attn,
`cross_attn_img` = words_from_source_attn, `cross_attn_flo` = target_from_words_attn,
`norm_words_1/2` = words_norm1/2, `norm_flo` = target_norm1, `norm_flo2` = target_norm2.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from lbdt.models.position import sine_1d, sine_2d
from lbdt.models.text_encoder import TextFeatures


class LBDTLayer(nn.Module):
    """f(source, target; words): moves source-stream information into the target stream via the words.

    Post-norm, dropout on attention weights and on every residual branch. Tensors are sequence-first.
    """

    def __init__(self, *, d_model: int = 512, nhead: int = 8, dim_feedforward: int = 512, dropout: float = 0.1):
        super().__init__()
        self.words_self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.words_from_source_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.target_from_words_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.words_norm1 = nn.LayerNorm(d_model)
        self.words_norm2 = nn.LayerNorm(d_model)
        self.target_norm1 = nn.LayerNorm(d_model)
        self.target_norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, source: Tensor, target: Tensor, words: Tensor, visual_pos: Tensor, word_pos: Tensor,
                word_padding: Tensor) -> Tensor:
        """source, target [HW,B,d]; words [N,B,d]; visual_pos [HW,1|B,d]; word_pos [N,1|B,d];
        word_padding bool [B,N] (True = pad) -> new target [HW,B,d]. The bridged words are discarded."""
        qk = words + word_pos
        w = self.words_self_attn(qk, qk, words, key_padding_mask=word_padding, need_weights=False)[0]
        words = self.words_norm1(words + self.dropout(w))  # 1. word self-attention
        src = source + visual_pos
        w = self.words_from_source_attn(words, src, src, need_weights=False)[0]
        words = self.words_norm2(words + self.dropout(w))  # 2. words gather from the source stream
        t = self.target_from_words_attn(target + visual_pos, words, words, key_padding_mask=word_padding,
                                        need_weights=False)[0]
        target = self.target_norm1(target + self.dropout(t))  # 3. target reads the bridged words
        t = self.linear2(self.dropout(F.relu(self.linear1(target))))
        return self.target_norm2(target + self.dropout(t))  # 4. feed-forward


def _conv1x1_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class LBDTModule(nn.Module):
    """LBDT module after one ResNet stage: reduce, L duplex layers, expand, residual ReLU.

    Layer l is applied twice with the same weights: T_l = f(S_{l-1} -> T_{l-1}) and
    S_l = f(T_{l-1} -> S_{l-1}); both read layer l-1 only. Every call starts from the LSTM words.
    """

    def __init__(self, *, in_channels: int, d_model: int = 512, nhead: int = 8, dim_feedforward: int = 512,
                 num_layers: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.spatial_reduce = _conv1x1_bn(in_channels, d_model)
        self.temporal_reduce = _conv1x1_bn(in_channels, d_model)
        self.layers = nn.ModuleList(
            LBDTLayer(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward, dropout=dropout)
            for _ in range(num_layers)
        )
        self.spatial_expand = _conv1x1_bn(d_model, in_channels)
        self.temporal_expand = _conv1x1_bn(d_model, in_channels)
        self.d_model = d_model

    def forward(self, spatial: Tensor, temporal: Tensor, text: TextFeatures) -> tuple[Tensor, Tensor]:
        """spatial, temporal [B,C,h,w]; text with words [B,N,d] -> updated (spatial, temporal) [B,C,h,w]."""
        b, _, h, w = spatial.shape
        d = self.d_model
        # Token tensors are made contiguous: for B > 1 a permuted (or, for one sentence broadcast over frames,
        # stride-0) [L,B,d] input turns every attention projection into a batched matmul against an L-times
        # expanded weight, several times slower than one matrix product.
        s = self.spatial_reduce(spatial).flatten(2).permute(2, 0, 1).contiguous()  # [hw,B,d]
        t = self.temporal_reduce(temporal).flatten(2).permute(2, 0, 1).contiguous()  # [hw,B,d]
        visual_pos = sine_2d(h, w, d, device=s.device, dtype=s.dtype).flatten(1).T[:, None]  # [hw,1,d]
        words = text.words.transpose(0, 1).contiguous()  # [N,B,d]
        word_pos = sine_1d(words.shape[0], d, device=words.device, dtype=words.dtype)[:, None]  # [N,1,d]
        padding = ~text.mask  # [B,N]
        for layer in self.layers:
            t_next = layer(s, t, words, visual_pos, word_pos, padding)  # spatial -> temporal
            s_next = layer(t, s, words, visual_pos, word_pos, padding)  # temporal -> spatial
            s, t = s_next, t_next
        s = s.permute(1, 2, 0).reshape(b, d, h, w)
        t = t.permute(1, 2, 0).reshape(b, d, h, w)
        return F.relu(spatial + self.spatial_expand(s)), F.relu(temporal + self.temporal_expand(t))
