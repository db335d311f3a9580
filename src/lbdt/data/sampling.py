"""Which earlier frame pairs with an annotated frame: the reference frame t − k
(docs/training.md, 'Reference frame').

Per dataset (the sources' `default_frame_gap` and `numbered_frames`):

* A2D-Sentences: k = 6 *frame numbers* back (frames are every native frame, named 00001, 00002, …).
* J-HMDB-Sentences: k = 5 frame numbers back.
* Ref-YouTube-VOS: k = 1 *stored* frame back (JPEGImages keeps every 5th raw frame, so the previous stored
  frame is the original's t − 5).

The original crashed when t − k fell before the first frame; here the reference is clamped to the first
stored frame instead (for t = first frame the temporal input is then all zero, as in the original's YTVOS
fallback). When frame number t − k is not stored, the closest stored frame before it is used.
"""

from __future__ import annotations

from collections.abc import Sequence


def reference_frame(frame_ids: Sequence[str], target: str, k: int, *, numbered: bool = False) -> str:
    """The reference frame id for `target`.

    `frame_ids` are the video's stored frames, sorted. With `numbered=True` the ids are frame numbers
    and the reference is the last stored frame whose number is <= number(target) - k; otherwise it is
    the frame k positions before `target` in `frame_ids`. Either way clamped to the first stored frame.
    Raises `KeyError` if `target` is not stored, `ValueError` for a negative k.
    """
    if k < 0:
        raise ValueError(f"frame gap must be >= 0, got {k}")
    if not frame_ids:
        raise KeyError(target)
    if numbered:
        want = int(target) - k
        if target not in frame_ids:
            raise KeyError(target)
        best = frame_ids[0]
        for fid in frame_ids:
            if int(fid) <= want:
                best = fid
            else:
                break
        return best
    try:
        i = list(frame_ids).index(target)
    except ValueError:
        raise KeyError(target) from None
    return frame_ids[max(i - k, 0)]
