"""`collate`: a list of `ClipSample`s → one `Batch` (for `torch.utils.data.DataLoader(collate_fn=collate)`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lbdt.types import Batch, ClipSample


def collate(samples: Sequence[ClipSample]) -> Batch:
    """Stack tensors along a new batch dimension B; masks only when every sample has one."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    has_mask = [s.mask is not None for s in samples]
    if any(has_mask) and not all(has_mask):
        raise ValueError("some samples have a target mask and some do not; do not mix splits in one batch")
    originals = [s.original_mask for s in samples]
    return Batch(
        frames=torch.stack([s.frame for s in samples]),  # [B,3,H,W]
        ref_frames=torch.stack([s.ref_frame for s in samples]),  # [B,3,H,W]
        word_vectors=torch.stack([s.word_vectors for s in samples]),  # [B,N,300]
        word_mask=torch.stack([s.word_mask for s in samples]),  # [B,N]
        metas=[s.meta for s in samples],
        masks=torch.stack([s.mask for s in samples]) if all(has_mask) else None,  # [B,H,W]
        original_masks=originals if all(o is not None for o in originals) else None,
    )
