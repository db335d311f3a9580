"""Language encoder (docs/model.md, 'Language encoder'): an LSTM over GloVe word vectors; the sentence is
the un-masked sum."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class TextFeatures:
    """Encoded sentence(s); batch 1 broadcasts over a batch of frames in `LBDT.segment`."""

    words: Tensor  # float [B,N,d_text]: LSTM outputs at every position, pads included
    sentence: Tensor  # float [B,d_text]: sum of all N LSTM outputs (no masking, as the original)
    mask: Tensor  # bool [B,N]: True for real tokens

    def __len__(self) -> int:
        return self.words.shape[0]

    def expand(self, batch: int) -> TextFeatures:
        """Repeat batch-1 features to `batch` (views, no copy); other sizes are returned as they are."""
        if self.words.shape[0] == batch:  # not len(self), which would fix an exported (symbolic) batch
            return self
        return TextFeatures(
            words=self.words.expand(batch, -1, -1),
            sentence=self.sentence.expand(batch, -1),
            mask=self.mask.expand(batch, -1),
        )


class TextEncoder(nn.Module):
    """Single-layer unidirectional LSTM, batch first, run over all N positions (no packing)."""

    def __init__(self, *, word_dim: int = 300, hidden: int = 512) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=word_dim, hidden_size=hidden, num_layers=1, bias=True, batch_first=True)

    def forward(self, word_vectors: Tensor, word_mask: Tensor) -> TextFeatures:
        """word_vectors [B,N,word_dim], word_mask [B,N] (non-zero = real token) -> TextFeatures."""
        words, _ = self.lstm(word_vectors)  # [B,N,hidden]
        return TextFeatures(words=words, sentence=words.sum(dim=1), mask=word_mask != 0)
