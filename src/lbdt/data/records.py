"""`ReferRecord`: one (annotated frame, object, sentence) entry of a dataset list."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReferRecord:
    """What a list-file line says; sources turn a dataset root into these."""

    video_id: str
    frame_id: str  # annotated frame name without extension, e.g. "00017"
    object_id: str  # instance id (A2D / J-HMDB), object id (YTVOS train/val) or expression id (YTVOS valid)
    sentence: str
    original_size: tuple[int, int]  # (H0, W0)
    category: str = ""  # a grouping label evaluators report by: A2D / J-HMDB 6th field, synthetic sentence type
    expression_id: str = ""  # Ref-YouTube-VOS expression id where known
    source_line: str = ""  # "<list file>:<line number>", for error messages
