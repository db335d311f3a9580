"""`ReferringVideoDataset`: records of any source → `ClipSample`s (target frame, reference frame, sentence, mask)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import Dataset

from lbdt.data.records import ReferRecord
from lbdt.data.sources.base import Source
from lbdt.data.transforms import ClipTransform, side_words, swap_left_right
from lbdt.errors import LBDTError
from lbdt.types import ClipSample, SampleMeta
from lbdt.words import MAX_WORDS, WordVectors, check_sentence, tokenize


class ReferringVideoDataset(Dataset):
    """One sample per record: frames t and t − k (k = `frame_gap`, default the source's), the sentence's word
    vectors and, when the split has masks, the target at model resolution.

    Augmentation randomness is drawn from `numpy.random.default_rng([seed, epoch, index])`: reproducible,
    and different per epoch when the training loop calls `set_epoch`.
    """

    def __init__(self, source: Source, records: Sequence[ReferRecord], *, word_vectors: WordVectors,
                 size: tuple[int, int] = (320, 320), frame_gap: int | None = None,
                 transform: ClipTransform | None = None, max_words: int = MAX_WORDS,
                 with_original_mask: bool = False, with_masks: bool = True, seed: int = 0):
        self.source = source
        self.records = list(records)
        self.transform = transform if transform is not None else ClipTransform(size)
        if tuple(self.transform.size) != tuple(size):
            raise ValueError(f"transform size {self.transform.size} differs from size {tuple(size)}")
        self.size = tuple(size)
        self.frame_gap = source.default_frame_gap if frame_gap is None else int(frame_gap)
        self.max_words = max_words
        self.with_original_mask = with_original_mask
        self.with_masks = with_masks
        self.seed = seed
        self.epoch = 0
        for r in self.records:
            check_sentence(r.sentence, r.source_line or r.video_id)
        self.word_vectors = _subset(word_vectors, self.records)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Make the augmentation draws of this epoch differ from the others' (no effect without augmentation)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> ClipSample:
        r = self.records[index]
        src = self.source
        ref_id = src.reference_frame_id(r.video_id, r.frame_id, self.frame_gap)
        frame = src.read_frame(r.video_id, r.frame_id)
        ref = frame if ref_id == r.frame_id else src.read_frame(r.video_id, ref_id)
        if ref.shape != frame.shape:
            raise LBDTError(f"{src.frame_path(r.video_id, ref_id)}: size {ref.shape[:2]} differs from frame "
                            f"{r.frame_id} ({frame.shape[:2]})")
        h0, w0 = r.original_size  # 0x0: the source does not state one (DAVIS, MeViS read it from the frame)
        if (h0, w0) != (0, 0) and (h0, w0) != frame.shape[:2]:  # a stated size must be the frame's
            raise LBDTError(f"{r.source_line or r.video_id}: size {r.original_size[0]}x{r.original_size[1]} differs "
                            f"from the frame's {frame.shape[0]}x{frame.shape[1]} ({src.frame_path(r.video_id, r.frame_id)})")
        mask = src.read_mask(r) if self.with_masks else None
        if mask is not None and mask.shape != frame.shape[:2]:  # never stretched to fit
            raise LBDTError(f"{src.mask_path(r)}: mask size {mask.shape} differs from its frame's {frame.shape[:2]} "
                            f"({r.source_line})")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        clip = self.transform(frame, ref, mask, r.sentence, rng)
        vectors, word_mask = self.word_vectors.encode(clip.sentence, self.max_words)
        meta = SampleMeta(
            dataset=src.name, video_id=r.video_id, object_id=r.object_id, frame_id=r.frame_id, ref_frame_id=ref_id,
            sentence=r.sentence, original_size=tuple(frame.shape[:2]),
            expression_id=r.expression_id, group=r.category)
        return ClipSample(frame=clip.frame, ref_frame=clip.ref_frame, word_vectors=vectors, word_mask=word_mask,
                          meta=meta, mask=clip.mask,
                          original_mask=mask if self.with_original_mask else None)


def _subset(table: WordVectors, records: Sequence[ReferRecord]) -> WordVectors:
    """Only the rows the records' sentences (and their left/right swaps) can use: cheap to send to workers
    even when `table` is the 2.2M-word GloVe."""
    vocab = set(side_words())
    for r in records:
        vocab.update(tokenize(r.sentence, None))
        vocab.update(tokenize(swap_left_right(r.sentence), None))
    words = sorted(w for w in vocab if w in table)
    rows = np.asarray(table.vectors[[table.index[w] for w in words]], dtype=np.float32).reshape(len(words), table.dim)
    return WordVectors(words, rows)
